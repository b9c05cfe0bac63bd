"""Per-key concurrency limits: teguh.set_concurrency_limit and the claims that honour it."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from tests.sql.conftest import Engine, raises_sqlstate


def limit(eng: Engine, key: str, value: int | None) -> None:
    eng.conn.execute("select teguh.set_concurrency_limit(%s, %s, %s)", (eng.q, key, value))


def running(eng: Engine) -> Counter[str | None]:
    """Runs in flight per key, read from the tables the claims count."""
    rows = eng.rows(
        "select t.concurrency_key from teguh.r_q r join teguh.t_q t on t.task_id = r.task_id"
        " where t.state = 'running' and t.current_run_id = r.run_id"
    )
    return Counter(row[0] for row in rows)


def keyed(eng: Engine, key: str | None, n: int = 1, **options: Any) -> list[Any]:
    return [eng.spawn("t", {"i": i}, concurrency_key=key, **options)[0] for i in range(n)]


# -- validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "non-empty"),
        (7, "expected a string"),
        (["a"], "expected a string"),
        ("x" * 256, "at most 255 bytes"),
        ("é" * 128, "at most 255 bytes"),
    ],
)
def test_a_bad_concurrency_key_is_refused_by_both_spawns(
    eng: Engine, value: Any, message: str
) -> None:
    for sql, params in [
        ("select * from teguh.spawn_task('q', 't', '{}', %s)", Jsonb({"concurrency_key": value})),
        ("select * from teguh.spawn_tasks('q', 't', '[1]', %s)", Jsonb({"concurrency_key": value})),
    ]:
        with pytest.raises(psycopg.Error) as info:
            eng.rows(sql, params)
        assert info.value.sqlstate == "22023"
        assert info.value.diag.column_name == "concurrency_key"
        assert message in str(info.value)
    assert eng.count("t") == 0


def test_the_key_is_stored_and_null_means_none(eng: Engine) -> None:
    a = eng.spawn("t", None, concurrency_key="tenant:1")[0]
    b = eng.spawn("t", None, concurrency_key=None)[0]
    ids = eng.one(
        "select array_agg(task_id order by task_id) from teguh.spawn_tasks('q', 't', '[1, 2]', %s)",
        Jsonb({"concurrency_key": "tenant:2"}),
    )
    keys = dict(eng.rows("select task_id, concurrency_key from teguh.t_q"))
    assert keys[a] == "tenant:1" and keys[b] is None
    assert [keys[i] for i in ids] == ["tenant:2", "tenant:2"]


@pytest.mark.parametrize(
    ("key", "value", "argument"),
    [
        (None, 1, "key"),
        ("", 1, "key"),
        ("a*b", 1, "key"),
        ("*a", 1, "key"),
        ("a**", 1, "key"),
        ("x" * 256, 1, "key"),
        ("a", -1, "limit"),
    ],
)
def test_bad_limit_arguments_name_the_argument(
    eng: Engine, key: str | None, value: int, argument: str
) -> None:
    with pytest.raises(psycopg.Error) as info:
        limit(eng, key, value)  # type: ignore[arg-type]
    assert info.value.sqlstate == "22023"
    assert info.value.diag.column_name == argument
    assert eng.one("select count(*) from teguh.concurrency_limits") == 0
    if argument == "key":
        with pytest.raises(psycopg.Error) as info:
            eng.one("select teguh.drop_concurrency_limit('q', %s)", key)
        assert info.value.diag.column_name == "key"


def test_unknown_queue(eng: Engine) -> None:
    with raises_sqlstate("42704"):
        eng.one("select teguh.set_concurrency_limit('nope', 'a', 1)")
    with raises_sqlstate("42704"):
        eng.one("select teguh.drop_concurrency_limit('nope', 'a')")
    with raises_sqlstate("42704"):
        eng.rows("select * from teguh.list_concurrency_limits('nope')")


def test_set_update_list_and_remove(eng: Engine) -> None:
    limit(eng, "tenant:*", 2)
    limit(eng, "reports", 1)
    limit(eng, "reports", 3)  # an upsert
    rows = eng.rows(
        "select queue_name, key, is_prefix, max_running, running"
        " from teguh.list_concurrency_limits()"
    )
    assert rows == [("q", "reports", False, 3, 0), ("q", "tenant:*", True, 2, 0)]
    keys = eng.rows("select key from teguh.list_concurrency_limits('q')")
    assert keys == [("reports",), ("tenant:*",)]
    assert eng.one("select teguh.drop_concurrency_limit('q', 'reports')") is True
    assert eng.one("select teguh.drop_concurrency_limit('q', 'reports')") is False
    limit(eng, "tenant:*", None)  # null removes too
    assert eng.rows("select * from teguh.list_concurrency_limits()") == []


def test_dropping_the_queue_drops_its_limits(eng: Engine) -> None:
    limit(eng, "a", 1)
    eng.conn.execute("select teguh.drop_queue('q')")
    assert eng.one("select count(*) from teguh.concurrency_limits") == 0


# -- the limit holds ---------------------------------------------------------------


def test_a_limited_key_runs_at_most_its_limit(eng: Engine) -> None:
    limit(eng, "k", 2)
    keyed(eng, "k", 5)
    first = eng.claim(10)
    assert len(first) == 2
    assert eng.claim(10) == []
    eng.complete(first[0][0])
    assert len(eng.claim(10)) == 1
    assert running(eng) == {"k": 2}


def test_the_go_claim_honours_limits_too(eng: Engine) -> None:
    limit(eng, "k", 1)
    keyed(eng, "k", 3)
    assert len(eng.claim_go(5)) == 1
    assert eng.claim_go(5) == []


def test_a_key_with_no_limit_is_unlimited_and_keeps_priority_order(eng: Engine) -> None:
    low = keyed(eng, None, 1, priority=0)
    high = keyed(eng, "free", 2, priority=5)
    limit(eng, "other", 1)
    claimed = [row[1] for row in eng.claim(10)]
    assert claimed == [*high, *low]


def test_claims_keep_the_global_order_across_keys(eng: Engine) -> None:
    limit(eng, "a", 5)
    order = []
    for key in ["a", "b", None, "a", "b", "a", None]:
        order += keyed(eng, key)
    assert [row[1] for row in eng.claim(4)] == order[:4]
    assert [row[1] for row in eng.claim(2)] == order[4:6]


def test_limit_zero_holds_a_key_and_raising_it_releases(eng: Engine) -> None:
    limit(eng, "k", 0)
    keyed(eng, "k", 2)
    assert eng.claim(5) == []
    limit(eng, "k", 1)
    assert len(eng.claim(5)) == 1
    limit(eng, "k", None)
    assert len(eng.claim(5)) == 1


def test_lowering_a_limit_interrupts_nothing(eng: Engine) -> None:
    limit(eng, "k", 3)
    keyed(eng, "k", 4)
    assert len(eng.claim(5)) == 3
    limit(eng, "k", 1)
    assert eng.claim(5) == []
    assert running(eng) == {"k": 3}


def test_a_paused_queue_stays_paused(eng: Engine) -> None:
    limit(eng, "k", 5)
    keyed(eng, "k", 2)
    eng.one("""select teguh.set_queue_policy('q', '{"paused": true}')""")
    assert eng.claim(5) == []


# -- prefixes ----------------------------------------------------------------------


def test_a_prefix_limits_each_key_separately(eng: Engine) -> None:
    limit(eng, "tenant:*", 1)
    keyed(eng, "tenant:a", 3)
    keyed(eng, "tenant:b", 3)
    keyed(eng, "other", 2)  # no limit matches
    claimed = eng.claim(10)
    assert running(eng) == {"tenant:a": 1, "tenant:b": 1, "other": 2}
    assert len(claimed) == 4
    rows = eng.rows("select key, running from teguh.list_concurrency_limits('q')")
    assert rows == [("tenant:*", 2)]


def test_an_exact_key_and_a_longer_prefix_win(eng: Engine) -> None:
    limit(eng, "*", 1)  # every key
    limit(eng, "tenant:*", 2)
    limit(eng, "tenant:vip:*", 3)
    limit(eng, "tenant:big", 4)
    for key in ["x", "tenant:a", "tenant:vip:a", "tenant:big"]:
        keyed(eng, key, 6)
    eng.claim(50)
    assert running(eng) == {"x": 1, "tenant:a": 2, "tenant:vip:a": 3, "tenant:big": 4}
    rows = dict(eng.rows("select key, running from teguh.list_concurrency_limits('q')"))
    assert rows == {"*": 1, "tenant:*": 2, "tenant:vip:*": 3, "tenant:big": 4}


# -- every way a run ends frees its slot ---------------------------------------------


def _sleep(eng: Engine, run: tuple[Any, ...]) -> None:
    eng.conn.execute("select teguh.schedule_run('q', %s, %s)", (run[0], eng.now.replace(year=2031)))


def _wait(eng: Engine, run: tuple[Any, ...]) -> None:
    eng.rows("select * from teguh.wait_event('q', %s, %s, 's', 'never', 600)", run[1], run[0])


def _cancel(eng: Engine, run: tuple[Any, ...]) -> None:
    eng.conn.execute("select teguh.cancel_task('q', %s)", (run[1],))


def _hand_back(eng: Engine, run: tuple[Any, ...]) -> None:
    eng.one("select teguh.hand_back_run('q', %s, 60)", run[0])


def _release(eng: Engine, run: tuple[Any, ...]) -> None:
    eng.conn.execute("select teguh.release_run('q', %s, %s)", (run[0], eng.now.replace(year=2031)))


def _expire(eng: Engine, run: tuple[Any, ...]) -> None:
    eng.advance(31)  # the claim's 30 s lease ran out


def _retry(eng: Engine, run: tuple[Any, ...]) -> None:
    eng.fail(run[0], {"name": "Boom"}, eng.now.replace(year=2031))


def _fail(eng: Engine, run: tuple[Any, ...]) -> None:
    eng.fail(run[0], {"name": "Boom", "retryable": False})


def _complete(eng: Engine, run: tuple[Any, ...]) -> None:
    eng.complete(run[0])


@pytest.mark.parametrize(
    "end",
    [_complete, _fail, _retry, _sleep, _wait, _cancel, _hand_back, _release, _expire],
    ids=lambda f: f.__name__.strip("_"),
)
def test_every_way_a_run_ends_frees_its_slot(eng: Engine, end: Callable[..., None]) -> None:
    limit(eng, "k", 1)
    keyed(eng, "k", 2)
    first = eng.claim(5)
    assert len(first) == 1
    assert eng.claim(5) == []
    end(eng, first[0])
    second = eng.claim(5)
    assert len(second) == 1 and second[0][1] != first[0][1]
    assert eng.claim(5) == []


def test_a_resumed_run_counts_again(eng: Engine) -> None:
    limit(eng, "k", 1)
    (task,) = keyed(eng, "k", 1)
    run = eng.claim()[0]
    eng.conn.execute("select teguh.schedule_run('q', %s, %s)", (run[0], eng.now))
    other = keyed(eng, "k", 1)[0]
    resumed = eng.claim(5)  # the sleeper (older) wakes first and takes the only slot
    assert [r[1] for r in resumed] == [task]
    assert eng.claim(5) == []
    eng.complete(resumed[0][0])
    assert [r[1] for r in eng.claim(5)] == [other]


def test_a_manual_retry_keeps_the_key(eng: Engine) -> None:
    limit(eng, "k", 1)
    (task,) = keyed(eng, "k", 1, max_attempts=1)
    eng.fail(eng.claim()[0][0])
    new = eng.one("select task_id from teguh.retry_task('q', %s, '{\"spawn_new\": true}')", task)
    eng.one("select teguh.retry_task('q', %s)", task)
    keys = dict(eng.rows("select task_id, concurrency_key from teguh.t_q"))
    assert keys[new] == "k"
    assert len(eng.claim(5)) == 1


# -- no starvation, no scan ----------------------------------------------------------


def test_a_capped_key_does_not_starve_the_others(eng: Engine) -> None:
    limit(eng, "busy", 1)
    keyed(eng, "busy", 50, priority=10)  # ahead of everything else
    others = keyed(eng, None, 2) + keyed(eng, "quiet", 2)
    claimed = {row[1] for row in eng.claim(10)}
    assert len(claimed) == 5 and set(others) <= claimed
    assert eng.claim(10) == []


def index_reads(eng: Engine) -> int:
    eng.one("select pg_stat_force_next_flush()")
    eng.one("select pg_stat_clear_snapshot()")
    return int(
        eng.one(
            "select sum(idx_tup_read) from pg_stat_user_indexes"
            " where relid in ('teguh.p_q'::regclass, 'teguh.t_q'::regclass, 'teguh.r_q'::regclass)"
        )
    )


@pytest.mark.slow
def test_claims_pass_over_a_capped_key_without_reading_its_tasks(eng: Engine) -> None:
    limit(eng, "busy", 2)
    eng.one(
        "select count(*) from teguh.spawn_tasks('q', 't',"
        " (select jsonb_agg(i) from generate_series(1, 50000) i),"
        ' \'{"concurrency_key": "busy", "priority": 10}\')'
    )
    assert len(eng.claim(5)) == 2  # the key is now capped
    keyed(eng, None, 20)
    keyed(eng, "quiet", 20)
    eng.conn.execute("analyze teguh.p_q")
    before = index_reads(eng)
    for _ in range(10):
        assert len(eng.claim(2)) == 2
    spent = index_reads(eng) - before
    # ten claims of two: a few probes each, nowhere near the 50k waiting tasks
    assert spent < 1000, spent


# -- generated keys and limits -------------------------------------------------------

KEYS = ["a", "b", "t:1", "t:2", "t:x:1", None]
PATTERNS = ["a", "b", "t:*", "t:x:*", "t:2", "*"]


def effective(limits: dict[str, int], key: str | None) -> int | None:
    if key is None:
        return None
    if key in limits and not key.endswith("*"):
        return limits[key]
    best = [(len(p), n) for p, n in limits.items() if p.endswith("*") and key.startswith(p[:-1])]
    return max(best)[1] if best else None


def expected_claim(eng: Engine, limits: dict[str, int], qty: int) -> list[Any]:
    """What a claim of qty must return: the best ready tasks their keys' limits leave room for."""
    now = running(eng)
    taken: Counter[str | None] = Counter()
    out = []
    for task_id, key in eng.rows(
        "select task_id, concurrency_key from teguh.p_q order by priority desc, available_at, seq"
    ):
        cap = effective(limits, key)
        if cap is None or now[key] + taken[key] < cap:
            taken[key] += 1
            out.append(task_id)
        if len(out) == qty:
            break
    return out


@given(
    limits=st.dictionaries(st.sampled_from(PATTERNS), st.integers(0, 3), max_size=4),
    tasks=st.lists(st.tuples(st.sampled_from(KEYS), st.integers(0, 2)), min_size=1, max_size=25),
    steps=st.lists(st.tuples(st.integers(1, 6), st.integers(0, 3)), min_size=1, max_size=8),
)
def test_generated_limits_hold_and_claims_take_the_best_allowed(
    eng: Engine,
    limits: dict[str, int],
    tasks: list[tuple[str | None, int]],
    steps: list[tuple[int, int]],
) -> None:
    eng.conn.execute("delete from teguh.concurrency_limits")
    for table in ["r_q", "p_q", "t_q"]:
        eng.conn.execute(f"delete from teguh.{table}")  # test-only identifiers
    for pattern, n in limits.items():
        limit(eng, pattern, n)
    for key, priority in tasks:
        keyed(eng, key, priority=priority)
    held: list[tuple[Any, ...]] = []
    for qty, finish in steps:
        want = expected_claim(eng, limits, qty)
        claimed = eng.claim(qty)
        assert [run[1] for run in claimed] == want
        held += claimed
        now = running(eng)
        for key, n in now.items():
            cap = effective(limits, key)
            assert cap is None or n <= cap, (key, n, cap)
        if len(claimed) < qty:
            # a short claim means everything still pending is capped
            for (key,) in eng.rows("select concurrency_key from teguh.p_q"):
                cap = effective(limits, key)
                assert cap is not None and now[key] >= cap, (key, now[key], cap)
        for run in held[:finish]:
            eng.complete(run[0])
        held = held[finish:]


# -- races ---------------------------------------------------------------------------


def test_concurrent_claims_never_exceed_a_limit(eng: Engine, make_engine: Any) -> None:
    limit(eng, "k", 2)
    limit(eng, "t:*", 1)
    keys = ["k", "t:1", "t:2", None]
    for key in keys:
        keyed(eng, key, 60)
    workers = [make_engine() for _ in range(4)]
    barrier = threading.Barrier(len(workers) + 1)
    held: list[list[tuple[Any, ...]]] = [[] for _ in workers]
    errors: list[BaseException] = []
    rounds = 25

    def work(i: int) -> None:
        rng = random.Random(i)
        try:
            for _ in range(rounds):
                barrier.wait()
                held[i] += workers[i].claim(rng.randint(1, 4), worker=f"w{i}")
                barrier.wait()
                barrier.wait()  # the main thread checks the counts
                rng.shuffle(held[i])
                done = rng.randint(0, 2)
                for run in held[i][:done]:
                    workers[i].complete(run[0])
                held[i] = held[i][done:]
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(workers))]
    for t in threads:
        t.start()
    peak: Counter[str | None] = Counter()
    for _ in range(rounds):
        barrier.wait()
        barrier.wait()
        now = running(eng)
        peak |= now
        assert now["k"] <= 2 and now["t:1"] <= 1 and now["t:2"] <= 1, now
        barrier.wait()
    for t in threads:
        t.join()
    assert not errors, errors
    assert peak["k"] == 2 and peak["t:1"] == 1  # the limits were reached, not just respected


def test_a_schedule_spawns_with_its_key(eng: Engine) -> None:
    eng.one(
        "select teguh.create_schedule('q', 's', '@every 60s', 't', '{}', %s)",
        Jsonb({"concurrency_key": "nightly"}),
    )
    with raises_sqlstate("22023", "concurrency_key"):
        eng.one(
            "select teguh.create_schedule('q', 'bad', '@every 60s', 't', '{}', %s)",
            Jsonb({"concurrency_key": ""}),
        )
    eng.advance(61)
    eng.one("select teguh.ticker('q')")
    assert eng.rows("select concurrency_key from teguh.t_q") == [("nightly",)]


def test_a_claim_skips_a_key_another_claim_is_taking_and_never_waits(
    eng: Engine, make_conn: Any
) -> None:
    limit(eng, "k", 2)
    keyed(eng, "k", 3)
    first = Engine(make_conn(autocommit=False), "q")
    taken = first.claim(1)  # holds k's lock until it commits
    assert len(taken) == 1
    other = keyed(eng, None, 1)
    second = Engine(make_conn(), "q")
    second.conn.execute("set lock_timeout = '2s'")  # a wait would fail the test, not hang it
    assert [row[1] for row in second.claim(5)] == other  # k skipped, not waited for
    first.conn.commit()
    assert len(second.claim(5)) == 1  # the slot first left, and no more
    assert second.claim(5) == []
    assert running(eng) == {"k": 2, None: 1}


def notified(conn: psycopg.Connection[Any]) -> bool:
    return any(True for _ in conn.notifies(timeout=0.2, stop_after=1))


def test_a_capped_key_is_not_due_and_a_freed_slot_notifies(eng: Engine, make_conn: Any) -> None:
    listener = make_conn()
    listener.execute("listen teguh_q")
    limit(eng, "k", 1)
    keyed(eng, "k", 2)
    later = eng.spawn("t", None, concurrency_key="k", delay_seconds=90)[0]
    run = eng.claim(5, timeout=300)[0]  # its lease expiry is not the next wake
    notified(listener)  # drain the spawns' notifications
    # k is capped: only the delayed task's time is ahead, not "now"
    wake = eng.one("select teguh.next_wake_at('q')")
    assert wake == eng.one("select available_at from teguh.t_q where task_id = %s", later)
    keyed(eng, None, 1)  # an unkeyed task is claimable: due now
    assert eng.one("select teguh.next_wake_at('q') <= teguh.current_time()") is True
    eng.claim(1, timeout=300)
    notified(listener)
    eng.complete(run[0])
    assert notified(listener)  # the slot k got back wakes the workers
    assert eng.one("select teguh.next_wake_at('q') <= teguh.current_time()") is True
