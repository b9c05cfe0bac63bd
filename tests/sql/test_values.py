"""One task, one queue, one value never breaks the others (issue 8 §1).

Every number and timestamp has a range checked where it enters; the backoff is
capped before it is computed, whatever a stored strategy holds; the sweeps
(lease recovery, ticker, cleanup, stats) isolate a failing row or queue.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from .conftest import Engine, raises_sqlstate
from .test_validation import SPAWN, assert_invalid

MAX_SECONDS = 315_360_000  # 3650 days, the engine's longest duration


def notices(conn: psycopg.Connection[Any]) -> list[tuple[str | None, str | None]]:
    """Collect the (severity, message) of what the server sends on conn from now on."""
    seen: list[tuple[str | None, str | None]] = []

    def keep(diag: psycopg.errors.Diagnostic) -> None:
        # a Diagnostic is only readable inside the handler
        seen.append((diag.severity_nonlocalized, diag.message_primary))

    conn.add_notice_handler(keep)
    return seen


def warnings_text(seen: list[tuple[str | None, str | None]]) -> str:
    return "\n".join(message or "" for severity, message in seen if severity == "WARNING")


# -- ranges where values enter -------------------------------------------------


@pytest.mark.parametrize(
    ("options", "argument"),
    [
        ({"cancellation": {"max_duration": 1e13}}, "cancellation.max_duration"),
        ({"cancellation": {"max_delay": 1e13}}, "cancellation.max_delay"),
        ({"cancellation": {"max_delay": MAX_SECONDS + 1}}, "cancellation.max_delay"),
        (
            {"retry_strategy": {"kind": "fixed", "base_seconds": 1e13}},
            "retry_strategy.base_seconds",
        ),
        ({"retry_strategy": {"factor": 1e300}}, "retry_strategy.factor"),
        ({"retry_strategy": {"factor": 1001}}, "retry_strategy.factor"),
        ({"retry_strategy": {"max_seconds": 1e300}}, "retry_strategy.max_seconds"),
        ({"delay_seconds": 1e13}, "delay_seconds"),
        ({"delay_seconds": MAX_SECONDS + 1}, "delay_seconds"),
        ({"available_at": "infinity"}, "available_at"),
        ({"available_at": "-infinity"}, "available_at"),
        ({"available_at": "9999-12-31T00:00:00Z"}, "available_at"),
        ({"available_at": "0100-01-01T00:00:00Z"}, "available_at"),
        ({"max_attempts": 2**31}, "max_attempts"),
        ({"priority": 2**31}, "priority"),
        ({"priority": -(2**31) - 1}, "priority"),
    ],
)
def test_out_of_range_spawn_options_are_rejected(
    eng: Engine, options: dict[str, Any], argument: str
) -> None:
    assert_invalid(eng, SPAWN, ("t", Jsonb({}), Jsonb(options)), argument)


def test_the_largest_accepted_values_keep_the_queue_working(eng: Engine) -> None:
    far = (eng.now + timedelta(days=3650)).isoformat()
    eng.spawn(
        cancellation={"max_delay": MAX_SECONDS, "max_duration": MAX_SECONDS},
        retry_strategy={"base_seconds": MAX_SECONDS, "factor": 1000, "max_seconds": MAX_SECONDS},
        max_attempts=2**31 - 1,
        priority=2**31 - 1,
    )
    eng.spawn(available_at=far)
    eng.spawn(delay_seconds=MAX_SECONDS)
    [run] = eng.claim(timeout=MAX_SECONDS)
    eng.fail(run[0])  # a retry MAX_SECONDS away
    assert eng.one("select teguh.ticker()") == 0
    assert eng.one("select next_wake_at from teguh.next_wake_at('q')") is not None
    assert eng.rows("select pending, error from teguh.queue_stats()") == [(3, None)]
    eng.set_time(eng.now + timedelta(days=3650))
    assert len(eng.claim(qty=10)) == 2
    assert eng.one("select count(*) from teguh.t_q where state = 'cancelled'") == 1  # max_duration


def run_of(eng: Engine) -> Any:
    eng.spawn()
    [run] = eng.claim()
    return run


@pytest.mark.parametrize("when", ["infinity", "-infinity", "9999-01-01", "1000-01-01"])
def test_fail_run_retry_at_is_range_checked(eng: Engine, when: str) -> None:
    run = run_of(eng)
    assert_invalid(
        eng, "select teguh.fail_run('q', %s, '{}', %s::timestamptz)", (run[0], when), "retry_at"
    )
    assert eng.state(run[1]) == "running"


@pytest.mark.parametrize("when", ["infinity", "-infinity", "9999-01-01", "1000-01-01", None])
def test_schedule_run_wake_at_is_range_checked(eng: Engine, when: str | None) -> None:
    run = run_of(eng)
    assert_invalid(
        eng, "select teguh.schedule_run('q', %s, %s::timestamptz)", (run[0], when), "wake_at"
    )
    assert eng.state(run[1]) == "running"


@pytest.mark.parametrize("function", ["wait_event", "await_event"])
@pytest.mark.parametrize("timeout", [-1, MAX_SECONDS + 1, 2**31 - 1])
def test_event_timeouts_are_range_checked(eng: Engine, function: str, timeout: int) -> None:
    run = run_of(eng)
    assert_invalid(
        eng,
        f"select * from teguh.{function}('q', %s, %s, 's', 'e', %s)",
        (run[1], run[0], timeout),
        "timeout",
    )
    assert eng.state(run[1]) == "running"


@pytest.mark.parametrize(
    ("sql", "argument"),
    [
        ("select * from teguh.claim_task('q', 'w', %s, 1)", "claim_timeout"),
        ("select * from teguh.claim_task('q', 'w', 30, %s)", "qty"),
        ("select teguh.cleanup_tasks('q', %s, 10)", "ttl_seconds"),
        ("select teguh.cleanup_tasks('q', 10, %s)", "limit"),
    ],
)
@pytest.mark.parametrize("value", [-1, 0, MAX_SECONDS + 1, None])
def test_claim_and_cleanup_numbers_are_range_checked(
    eng: Engine, sql: str, argument: str, value: int | None
) -> None:
    if argument == "ttl_seconds" and value in (0, MAX_SECONDS + 1):
        return  # 0 and up to 2**31 - 1 are valid retentions
    if argument == "claim_timeout" and value == 0:
        return  # a lease that never expires (test_go_client.py)
    if argument == "claim_timeout" and value is None:
        return  # the queue policy's lease_timeout (test_policies.py)
    if argument == "limit" and value == MAX_SECONDS + 1:
        return  # any positive limit is valid
    if argument == "qty" and value == MAX_SECONDS + 1:
        value = 10_001
    eng.spawn()
    assert_invalid(eng, sql, (value,), argument)
    assert eng.count("r") == 0


@pytest.mark.parametrize("value", [0, MAX_SECONDS + 1, 2**31 - 1])
def test_lease_extensions_are_range_checked(eng: Engine, value: int) -> None:
    run = run_of(eng)
    expires = eng.one("select expires_at from teguh.r_q")
    assert_invalid(eng, "select teguh.extend_claim('q', %s, %s)", (run[0], value), "extend_by")
    assert_invalid(
        eng,
        "select * from teguh.extend_claims('q', 'w1', %s, %s)",
        ([run[0]], value),
        "extend_by",
    )
    assert_invalid(
        eng,
        "select teguh.set_task_checkpoint_state('q', %s, 's', '1', %s, %s)",
        (run[1], run[0], value),
        "extend_claim_by",
    )
    assert eng.one("select expires_at from teguh.r_q") == expires


# -- backoff -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "attempt", "expected"),
    [
        (
            {"kind": "exponential", "base_seconds": 1, "factor": 2, "max_seconds": 300},
            2**31 - 1,
            300,
        ),
        ({"kind": "exponential", "base_seconds": 1, "factor": 2, "max_seconds": 300}, 3, 4),
        (
            {"kind": "exponential", "base_seconds": 1, "factor": 1000, "max_seconds": 1e6},
            10**6,
            1e6,
        ),
        # stored by an older version or written directly: clamped, never overflowing
        (
            {"kind": "exponential", "base_seconds": 1e13, "factor": 1e300, "max_seconds": 1e300},
            9,
            315360000,
        ),
        (
            {"kind": "exponential", "base_seconds": 2, "factor": 1e300, "max_seconds": 1e13},
            10**9,
            315360000,
        ),
        ({"kind": "fixed", "base_seconds": 1e13}, 5, 315360000),
        ({"kind": "exponential", "base_seconds": "soon"}, 4, 8),  # unreadable: the default
        ({"kind": "exponential", "base_seconds": {"a": 1}}, 1, 1),
        ({}, 2, 2),
        ([1, 2], 2, 2),
        ({"kind": "bogus"}, 7, 0),
        ({"kind": "exponential", "base_seconds": 5, "factor": 2, "max_seconds": 1}, 1, 1),
        ({"kind": "exponential", "base_seconds": 1e-400, "factor": 2, "max_seconds": 1}, 9, 0),
    ],
)
def test_retry_delay_is_capped_before_it_is_computed(
    eng: Engine, strategy: Any, attempt: int, expected: float
) -> None:
    assert eng.one("select teguh._retry_delay(%s, %s)", Jsonb(strategy), attempt) == expected


def test_tiny_numbers_do_not_underflow(eng: Engine) -> None:
    # JSON allows 1e-400; double precision does not
    eng.conn.execute(
        """select * from teguh.spawn_task('q', 't', '{}', '{"delay_seconds": 1e-400,
             "retry_strategy": {"base_seconds": 1e-400, "factor": 1.0000000000001}}')"""
    )
    eng.conn.execute(
        """select * from teguh.spawn_task('q', 't', '{}',
                                         '{"cancellation": {"max_delay": 1e-400}}')"""
    )
    [run] = eng.claim(qty=2)  # the second one's deadline (a nanosecond) has passed
    eng.fail(run[0])
    assert eng.one("select available_at from teguh.p_q") == eng.now


def test_a_thousand_failures_do_not_overflow_the_default_backoff(eng: Engine) -> None:
    task_id = eng.spawn(max_attempts=100_000)[0]
    [run] = eng.claim()
    # as if the task had already failed 5000 times
    eng.conn.execute("update teguh.t_q set attempts = 5000")
    eng.fail(run[0])
    retry = eng.one("select available_at from teguh.p_q")
    assert retry == eng.now + timedelta(seconds=300)
    eng.advance(300)
    assert [r[1] for r in eng.claim()] == [task_id]
    assert eng.one("select teguh.ticker()") == 0


def test_a_poisoned_stored_strategy_still_retries(eng: Engine) -> None:
    task_id = eng.spawn()[0]
    [run] = eng.claim()
    eng.conn.execute(
        """update teguh.t_q set retry_strategy = '{"kind": "exponential",
             "base_seconds": 1e13, "factor": 1e300, "max_seconds": 1e400}'"""
    )
    eng.fail(run[0])
    assert eng.state(task_id) == "pending"
    assert eng.one("select available_at from teguh.p_q") == eng.now + timedelta(seconds=MAX_SECONDS)


def test_a_huge_stored_max_duration_does_not_break_claims(eng: Engine) -> None:
    # spawned by an older version that accepted it
    task_id = eng.spawn(cancellation={"max_duration": 60})[0]
    eng.conn.execute("""update teguh.t_q set cancellation = '{"max_duration": 1e13}'""")
    eng.spawn()
    assert len(eng.claim(qty=2)) == 2
    assert eng.task(task_id)["state"] == "running"
    assert eng.one("select teguh.ticker()") == 0


# -- isolation in sweeps -------------------------------------------------------


def poison_updates(eng: Engine, table: str, task_name: str) -> None:
    """Make every update of task_name's row in table fail, as a bad stored value would."""
    eng.conn.execute(
        """create or replace function pg_temp.poison() returns trigger language plpgsql as $$
           begin raise exception 'poisoned row %', old.task_id using errcode = '22003'; end $$"""
    )
    eng.conn.execute(
        f"create trigger poison before update on teguh.{table} for each row"
        f" when (old.task_name = '{task_name}') execute function pg_temp.poison()"
    )


def test_lease_recovery_isolates_a_failing_row(eng: Engine) -> None:
    bad = eng.spawn("poison")[0]
    good = eng.spawn("fine")[0]
    [r1] = eng.claim()
    eng.advance(1)
    [r2] = eng.claim()
    assert {r1[1], r2[1]} == {bad, good}
    poison_updates(eng, "t_q", "poison")
    seen = notices(eng.conn)
    eng.advance(60)

    assert eng.one("select teguh.ticker()") == 1  # the good one is recovered

    assert eng.state(good) == "pending"
    assert eng.state(bad) == "running"
    text = warnings_text(seen)
    assert str(bad) in text and '"q"' in text, text
    # the bad lease is moved out of the way: sweeps reach the others first
    assert eng.one("select expires_at from teguh.r_q") == eng.now + timedelta(hours=1)
    # claims (which recover leases themselves) keep working on the queue
    eng.advance(1)  # the retry's backoff
    assert [r[1] for r in eng.claim()] == [good]


def test_lease_recovery_fails_a_task_it_cannot_retry(eng: Engine) -> None:
    task_id = eng.spawn()[0]
    eng.claim()
    # the attempt's retry cannot be queued (a bad row, a full disk, ...)
    eng.conn.execute(
        """create or replace function pg_temp.refuse() returns trigger language plpgsql as $$
           begin raise exception 'no retry for %', new.task_id; end $$"""
    )
    eng.conn.execute(
        "create trigger refuse before insert on teguh.p_q for each row"
        " execute function pg_temp.refuse()"
    )
    seen = notices(eng.conn)
    eng.advance(60)
    assert eng.one("select teguh.ticker()") == 0
    task = eng.task(task_id)
    assert task["state"] == "failed"
    assert task["last_failure"]["name"] == "RecoveryError"
    assert "no retry for" in task["last_failure"]["message"]
    assert eng.count("r") == 0
    assert str(task_id) in warnings_text(seen)


@pytest.fixture
def two_queues(eng: Engine) -> tuple[Engine, Engine]:
    """Queues "a" and "b" (besides "q"), each with one expired lease and one finished task."""
    engines = []
    for name in ("a", "b"):
        eng.conn.execute("select teguh.create_queue(%s)", (name,))
        other = Engine(eng.conn, name)
        other.set_time(eng.now)
        other.spawn()
        [run] = other.claim()
        other.complete(run[0])
        other.spawn()
        other.claim()
        engines.append(other)
    eng.advance(3600)
    return engines[0], engines[1]


def break_queue(eng: Engine, table: str) -> None:
    # a queue whose maintenance fails, whatever the cause
    eng.conn.execute(f"alter table teguh.{table} rename to {table}_gone")


def test_the_ticker_isolates_a_failing_queue(
    eng: Engine, two_queues: tuple[Engine, Engine]
) -> None:
    _, b = two_queues
    break_queue(eng, "t_a")
    seen = notices(eng.conn)
    assert eng.one("select teguh.ticker()") == 1  # queue b's lease
    assert b.count("p") == 1
    assert 'queue "a"' in warnings_text(seen)


def test_cleanup_all_queues_isolates_a_failing_queue(
    eng: Engine, two_queues: tuple[Engine, Engine]
) -> None:
    eng.conn.execute("update teguh.queues set cleanup_ttl_seconds = 60")
    eng.conn.execute("select teguh.emit_event('b', 'done')")
    eng.advance(61)
    break_queue(eng, "e_a")
    seen = notices(eng.conn)
    rows = {r[0]: r[1:] for r in eng.rows("select * from teguh.cleanup_all_queues()")}
    assert rows["b"] == (1, 1, None)
    assert rows["q"] == (0, 0, None)
    assert rows["a"][:2] == (0, 0) and "e_a" in rows["a"][2]
    assert 'queue "a"' in warnings_text(seen)
    # the failed queue was rolled back alone: its finished task is still there
    assert eng.one("select count(*) from teguh.t_a") == 2


def test_queue_stats_isolates_a_failing_queue(
    eng: Engine, two_queues: tuple[Engine, Engine]
) -> None:
    break_queue(eng, "p_a")
    eng.conn.execute("select teguh.register_worker('w', '{a,b}')")
    rows = {r[0]: r[1:] for r in eng.rows("select * from teguh.queue_stats()")}
    assert rows["b"][:5] == (0, 1, 0, 1, 0) and rows["b"][-2:] == (None, 1)
    # the failing queue's workers are still counted: they come from teguh.workers
    assert rows["a"][:-2] == (None,) * 8 and "p_a" in rows["a"][-2] and rows["a"][-1] == 1


def test_infinite_stored_times_break_neither_stats_nor_wake_times(eng: Engine) -> None:
    eng.spawn()
    eng.spawn()
    # rows written before inputs were range-checked
    eng.conn.execute(
        "update teguh.p_q set available_at = '-infinity'"
        " where task_id = (select task_id from teguh.p_q order by task_id limit 1)"
    )
    eng.conn.execute(
        "update teguh.p_q set available_at = 'infinity'"
        " where task_id = (select task_id from teguh.p_q order by task_id desc limit 1)"
    )
    [stats] = eng.rows("select pending, oldest_pending_seconds, error from teguh.queue_stats()")
    assert stats == (2, None, None)
    assert eng.one("select teguh.next_wake_at('q')") == eng.now
    eng.conn.execute("delete from teguh.p_q where available_at = '-infinity'")
    assert eng.one("select teguh.next_wake_at('q')") is None
    assert eng.claim() == []
    assert eng.one("select teguh.ticker()") == 0


# -- the template renderer -----------------------------------------------------


def test_render_substitutes_every_token(eng: Engine) -> None:
    rendered = eng.one(
        "select teguh._render('select {a} from {b} where x = ''{}''', %s)",
        Jsonb({"a": "1", "b": '"t"'}),
    )
    assert rendered == "select 1 from \"t\" where x = '{}'"


def test_render_rejects_an_unknown_token(eng: Engine) -> None:
    with raises_sqlstate("22023", "{tt}"):
        eng.one("select teguh._render('select * from {tt}', %s)", Jsonb({"t": "x"}))


def test_render_rejects_a_leftover_token(eng: Engine) -> None:
    with raises_sqlstate("22023", "{b}"):
        eng.one("select teguh._render('select {a}', %s)", Jsonb({"a": "{b}"}))
