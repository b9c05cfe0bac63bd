"""The teguh Go client's own scenarios (DESIGN.md, "What the Go client relies on").

The Go client calls `claim_task`, `retry_task`, `list_queues` ... directly; these
tests call them the way it does.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from teguh import _queries as Q

from .conftest import Engine, raises_sqlstate

FAR_FUTURE = timedelta(days=3650)


def _sleep(eng: Engine, run_id: Any, seconds: float) -> None:
    eng.conn.execute(
        "select teguh.schedule_run('q', %s, %s)", (run_id, eng.now + timedelta(seconds=seconds))
    )


# -- the run sequence ------------------------------------------------------------


def test_go_sleep_idiom_terminates(eng: Engine) -> None:
    """`if tc.Attempt() == 1 { return tc.SleepFor(ctx, d) }`, nothing checkpointed."""
    task_id = eng.spawn("greet", max_attempts=1)[0]
    seen = []
    for _ in range(5):  # the idiom needs two claims; five would mean it loops
        eng.advance(60)
        [run] = eng.claim_go()
        seen.append(run[2])
        if run[2] == 1:
            _sleep(eng, run[0], 60)
        else:
            eng.complete(run[0], {"done": True})
            break
    assert seen == [1, 2]
    result = eng.one("select state, attempts from teguh.get_task_result('q', %s)", task_id)
    assert result == ("completed", 1)  # the sleep consumed no attempt (max_attempts is 1)


def test_run_sequence_grows_but_only_failures_count_attempts(eng: Engine) -> None:
    task_id = eng.spawn(
        max_attempts=2, retry_strategy={"kind": "exponential", "base_seconds": 10, "factor": 10}
    )[0]
    [first] = eng.claim_go()
    assert first[2] == 1
    _sleep(eng, first[0], 5)
    eng.advance(5)
    [resumed] = eng.claim_go()
    assert (resumed[0], resumed[2]) == (first[0], 2)  # same run, next in the sequence
    eng.conn.execute("select teguh.schedule_run('q', %s, teguh.current_time())", (resumed[0],))
    [resumed] = eng.claim_go()
    assert resumed[2] == 3
    assert eng.task(task_id)["attempts"] == 1
    eng.fail(resumed[0])
    # one failure so far: a second attempt, after the first backoff step (10 s, not 100 s)
    assert eng.state(task_id) == "pending"
    assert eng.one("select teguh.next_wake_at('q')") == eng.now + timedelta(seconds=10)
    eng.advance(10)
    [retry] = eng.claim_go()
    assert retry[0] != first[0] and retry[2] == 4
    assert eng.task(task_id)["attempts"] == 2
    eng.fail(retry[0])
    assert eng.state(task_id) == "failed"  # max_attempts=2 counted failures only


def test_claim_runs_reports_the_attempt_number_a_resume_keeps(eng: Engine) -> None:
    eng.spawn()
    [run] = eng.claim()
    _sleep(eng, run[0], 5)
    eng.advance(5)
    [again] = eng.claim()
    assert (again[0], again[2]) == (run[0], 1)


def test_python_library_claims_see_no_change(eng: Engine) -> None:
    """The Python client and worker claim through claim_runs: a resume keeps attempt 1."""
    eng.spawn()
    for query in (Q.CLAIM_TASK, Q.WORKER_CLAIM_TASK):
        [run] = eng.conn.execute(query, ("q", "py", 30, 1)).fetchall()
        assert run[2] == 1
        eng.conn.execute(Q.RELEASE_RUN, ("q", run[0]))
    [go] = eng.claim_go()
    assert go[2] == 3  # the third claim of the task


def test_claim_task_and_claim_runs_have_the_same_signature(conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute(
        """select p.proname, pg_get_function_result(p.oid), pg_get_function_arguments(p.oid)
             from pg_proc p
            where p.pronamespace = 'teguh'::regnamespace
              and p.proname in ('claim_task', 'claim_runs')
            order by p.proname"""
    ).fetchall()
    assert len(rows) == 2
    assert rows[0][1:] == rows[1][1:]
    assert rows[1][2] == (
        "p_queue_name text, p_worker_id text, p_claim_timeout integer DEFAULT 30,"
        " p_qty integer DEFAULT 1"
    )


# -- claim_timeout = 0 -----------------------------------------------------------


def test_claim_timeout_zero_is_a_lease_that_never_expires(eng: Engine) -> None:
    task_id = eng.spawn()[0]
    [run] = eng.claim_go(timeout=0)
    assert eng.one("select expires_at = 'infinity' from teguh.r_q") is True
    eng.advance(FAR_FUTURE.total_seconds())
    eng.one("select teguh.ticker()")
    assert eng.claim_go() == []
    assert eng.state(task_id) == "running"
    assert eng.one("select teguh.next_wake_at('q')") is None  # nothing to wake up for
    # heartbeats are accepted and leave the lease as it is
    eng.conn.execute("select teguh.extend_claim('q', %s, 30)", (run[0],))
    assert eng.rows("select * from teguh.extend_claims('q', 'w1', %s, 30)", [run[0]]) == []
    eng.conn.execute(
        "select teguh.set_task_checkpoint_state('q', %s, 's', '1', %s, 30)", (task_id, run[0])
    )
    assert eng.one("select expires_at = 'infinity' from teguh.r_q") is True
    eng.complete(run[0], 7)
    assert eng.state(task_id) == "completed"


def test_claim_timeout_still_rejects_negative(eng: Engine) -> None:
    # null (which a Go int cannot send) is the queue policy's lease_timeout:
    # tests/sql/test_policies.py
    eng.spawn()
    for value in (-1, -30):
        with raises_sqlstate("22023", "claim_timeout"):
            eng.conn.execute("select * from teguh.claim_task('q', 'w', %s, 1)", (value,))
    assert eng.count("r") == 0


# -- retry_task, list_queues -----------------------------------------------------


def test_in_place_retry_reports_created(eng: Engine) -> None:
    task_id = eng.spawn(max_attempts=1)[0]
    [run] = eng.claim_go()
    eng.fail(run[0])
    again = eng.one("select * from teguh.retry_task('q', %s)", task_id)
    assert again[0] == task_id and again[1] != run[0] and again[3] is True


def test_list_queues_returns_created_at(conn: psycopg.Connection[Any]) -> None:
    conn.execute("select teguh.create_queue('b'), teguh.create_queue('a')")
    cur = conn.execute("select * from teguh.list_queues()")
    assert cur.description is not None
    assert [c.name for c in cur.description] == ["queue_name", "created_at"]
    rows = cur.fetchall()
    assert [r[0] for r in rows] == ["a", "b"]
    assert (
        rows
        == conn.execute(
            "select queue_name, created_at from teguh.queues order by queue_name"
        ).fetchall()
    )


# -- the ticker's NOTIFY ---------------------------------------------------------


class Listener:
    """A LISTEN connection that tells which NOTIFYs arrived, without timing guesses.

    After the calls under test, `heard()` sends a marker NOTIFY on each channel and
    reads up to it: notifications arrive in commit order, so what precedes the
    marker is exactly what those calls sent.
    """

    def __init__(self, conn: psycopg.Connection[Any], *channels: str) -> None:
        self.conn = conn
        self.channels = channels
        for channel in channels:
            conn.execute(f"listen {channel}")  # test-only identifiers

    def heard(self) -> list[str]:
        for channel in self.channels:
            self.conn.execute("select pg_notify(%s, 'marker')", (channel,))
        got: list[str] = []
        markers = 0
        for notify in self.conn.notifies(timeout=30):
            if notify.payload == "marker":
                markers += 1
                if markers == len(self.channels):
                    break
            else:
                got.append(notify.channel)
        assert markers == len(self.channels), "the marker NOTIFYs never arrived"
        return got


def test_ticker_notifies_queues_whose_work_fell_due(eng: Engine, make_conn: Any) -> None:
    eng.conn.execute("select teguh.create_queue('other')")
    eng.conn.execute("select teguh.spawn_task('other', 'later', null, '{\"delay_seconds\": 3600}')")
    listener = Listener(make_conn(), "teguh_q", "teguh_other")
    eng.spawn(delay_seconds=10)
    [run] = eng.rows("select * from teguh.spawn_task('q', 'sleeper', null)")
    [claimed] = eng.claim_go()
    assert claimed[1] == run[0]
    _sleep(eng, claimed[0], 20)
    listener.heard()  # what spawning and sleeping sent
    eng.one("select teguh.ticker()")
    assert listener.heard() == []  # nothing due yet (a first tick included)
    eng.advance(10)
    eng.one("select teguh.ticker()")
    assert listener.heard() == ["teguh_q"]  # the delayed spawn fell due: one NOTIFY
    eng.advance(5)
    eng.one("select teguh.ticker()")
    assert listener.heard() == []  # due, but not since the last tick
    eng.advance(5)
    eng.one("select teguh.ticker('q')")  # the Python worker's elected ticker
    assert listener.heard() == ["teguh_q"]  # the sleep fell due


def test_ticker_notifies_a_delayed_retry_falling_due(eng: Engine, make_conn: Any) -> None:
    eng.spawn(max_attempts=2, retry_strategy={"kind": "fixed", "base_seconds": 30})
    eng.one("select teguh.ticker()")
    [run] = eng.claim_go()
    eng.fail(run[0])
    listener = Listener(make_conn(), "teguh_q")
    eng.advance(29)
    eng.one("select teguh.ticker()")
    assert listener.heard() == []
    eng.advance(1)
    eng.one("select teguh.ticker()")
    assert listener.heard() == ["teguh_q"]


def test_a_dropped_queue_forgets_its_ticks(eng: Engine) -> None:
    eng.one("select teguh.ticker()")
    assert eng.one("select count(*) from teguh.queues_ticks") == 1
    eng.conn.execute("select teguh.drop_queue('q')")
    assert eng.one("select count(*) from teguh.queues_ticks") == 0


def test_python_claim_queries_stay_in_sync_with_jsonb_params(eng: Engine) -> None:
    eng.conn.execute("select teguh.spawn_task('q', 't', %s)", (Jsonb({"a": 1}),))
    [run] = eng.conn.execute(Q.CLAIM_TASK, ("q", "py", 30, 1)).fetchall()
    assert run[4] == '{"a": 1}'


# -- the reference's calling convention ------------------------------------------

# Every function the Go client (or a psql script written for the reference)
# calls: exact parameter names and defaults (named notation relies on them),
# and the result columns it reads (teguh may add columns, never remove them).
GO_SIGNATURES: dict[str, tuple[str, list[str] | str]] = {
    "create_queue": ("p_queue_name text", "void"),
    "drop_queue": ("p_queue_name text", "void"),
    "list_queues": ("", ["queue_name text", "created_at timestamp with time zone"]),
    "spawn_task": (
        "p_queue_name text, p_task_name text, p_params jsonb, p_options jsonb DEFAULT '{}'::jsonb",
        ["task_id uuid", "run_id uuid", "attempt integer", "created boolean"],
    ),
    "claim_task": (
        "p_queue_name text, p_worker_id text, p_claim_timeout integer DEFAULT 30,"
        " p_qty integer DEFAULT 1",
        [
            "run_id uuid",
            "task_id uuid",
            "attempt integer",
            "task_name text",
            "params jsonb",
            "retry_strategy jsonb",
            "max_attempts integer",
            "headers jsonb",
            "wake_event text",
            "event_payload jsonb",
        ],
    ),
    "complete_run": ("p_queue_name text, p_run_id uuid, p_state jsonb DEFAULT NULL::jsonb", "void"),
    "fail_run": (
        "p_queue_name text, p_run_id uuid, p_reason jsonb,"
        " p_retry_at timestamp with time zone DEFAULT NULL::timestamp with time zone",
        "void",
    ),
    "schedule_run": (
        "p_queue_name text, p_run_id uuid, p_wake_at timestamp with time zone",
        "void",
    ),
    "extend_claim": ("p_queue_name text, p_run_id uuid, p_extend_by integer", "void"),
    "set_task_checkpoint_state": (
        "p_queue_name text, p_task_id uuid, p_step_name text, p_state jsonb, p_owner_run uuid,"
        " p_extend_claim_by integer DEFAULT NULL::integer",
        "void",
    ),
    "get_task_checkpoint_state": (
        "p_queue_name text, p_task_id uuid, p_checkpoint_name text",
        "jsonb",
    ),
    "get_task_checkpoint_states": (
        "p_queue_name text, p_task_id uuid, p_run_id uuid",
        ["checkpoint_name text", "state jsonb"],
    ),
    "await_event": (
        "p_queue_name text, p_task_id uuid, p_run_id uuid, p_step_name text, p_event_name text,"
        " p_timeout integer DEFAULT NULL::integer",
        ["should_suspend boolean", "payload jsonb"],
    ),
    "emit_event": (
        "p_queue_name text, p_event_name text, p_payload jsonb DEFAULT NULL::jsonb",
        "void",
    ),
    "cancel_task": ("p_queue_name text, p_task_id uuid", "void"),
    "retry_task": (
        "p_queue_name text, p_task_id uuid, p_options jsonb DEFAULT '{}'::jsonb",
        ["task_id uuid", "run_id uuid", "attempt integer", "created boolean"],
    ),
    "get_task_result": (
        "p_queue_name text, p_task_id uuid",
        [
            "task_id uuid",
            "state text",
            "attempts integer",
            "completed_payload jsonb",
            "cancelled_at timestamp with time zone",
        ],
    ),
    "ticker": ("p_queue_name text DEFAULT NULL::text", "integer"),
    # a trailing optional argument (issue 10's archive strategy) keeps Go's call
    "cleanup_tasks": (
        "p_queue_name text, p_ttl_seconds integer, p_limit integer DEFAULT 1000,"
        " p_strategy text DEFAULT NULL::text",
        "integer",
    ),
    "start": ("", "void"),
    "stop": ("", "void"),
    "version": ("", "text"),
    "portable_uuidv7": ("", "uuid"),
    "current_time": ("", "timestamp with time zone"),
}


def _same_or_extended(got: str, reference: str) -> bool:
    """The reference's arguments, then only optional ones (DESIGN.md: add, never change)."""
    if got == reference:
        return True
    extra = got.removeprefix(reference).removeprefix(", ") if reference else got
    if reference and not got.startswith(reference + ", "):
        return False
    return all(" DEFAULT " in argument for argument in extra.split(", "))


def test_the_go_reference_calling_convention_holds(conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute(
        """select p.proname, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid)
             from pg_proc p where p.pronamespace = 'teguh'::regnamespace"""
    ).fetchall()
    found: dict[str, list[tuple[str, str]]] = {}
    for name, arguments, result in rows:
        found.setdefault(name, []).append((arguments, result))
    # one function per name, so a positional call from Go cannot become ambiguous
    for name, (arguments, result) in GO_SIGNATURES.items():
        assert len(found.get(name, [])) == 1, f"teguh.{name}: {found.get(name)}"
        [(got_arguments, got_result)] = found[name]
        assert _same_or_extended(got_arguments, arguments), f"teguh.{name}: {got_arguments}"
        if isinstance(result, str):
            assert got_result == result, f"teguh.{name}"
        else:
            columns = got_result.removeprefix("TABLE(").removesuffix(")").split(", ")
            assert columns[: len(result)] == result, f"teguh.{name}"
    # cleanup_all_queues: its arguments (its result rows are the values helper's)
    [(arguments, _)] = found["cleanup_all_queues"]
    assert arguments == "p_queue_name text DEFAULT NULL::text"
