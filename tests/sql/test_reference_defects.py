"""One test per defect of the Go reference's SQL that teguh does not copy (DESIGN.md section 3).

The seq-scan defect is covered by test_hygiene.py::test_claim_never_scans_the_task_table and
the lock-order defect by the deadlock-free races in test_races.py.
"""

from __future__ import annotations

from datetime import timedelta

from psycopg.types.json import Jsonb

from .conftest import Engine, raises_sqlstate


def test_delayed_retry_runs_attempt_two(eng: Engine) -> None:
    task_id = eng.spawn(max_attempts=3)[0]
    [run] = eng.claim()
    eng.fail(run[0], retry_at=eng.now + timedelta(seconds=30))
    eng.advance(30)
    [retry] = eng.claim()
    assert retry[2] == 2
    assert eng.task(task_id)["attempts"] == 2


def test_waking_does_not_consume_attempts_or_grow_backoff(eng: Engine) -> None:
    task_id = eng.spawn(
        max_attempts=2, retry_strategy={"kind": "exponential", "base_seconds": 10, "factor": 10}
    )[0]
    [run] = eng.claim()
    for _ in range(3):
        eng.conn.execute("select teguh.schedule_run('q', %s, teguh.current_time())", (run[0],))
        [run] = eng.claim()
    eng.one("select * from teguh.wait_event('q', %s, %s, 's', 'e')", task_id, run[0])
    eng.conn.execute("select teguh.emit_event('q', 'e')")
    [run] = eng.claim()
    assert run[2] == 1 and eng.task(task_id)["attempts"] == 1
    eng.fail(run[0])
    assert eng.state(task_id) == "pending"  # the second attempt is still there
    assert eng.one("select teguh.next_wake_at('q')") == eng.now + timedelta(seconds=10)


def test_cancelled_task_is_never_claimed_again(eng: Engine) -> None:
    task_id = eng.spawn(retry_strategy={"kind": "none"})[0]
    [run] = eng.claim(timeout=5)
    eng.conn.execute("select teguh.cancel_task('q', %s)", (task_id,))
    eng.advance(10)  # the lease expires: recovery must not requeue it
    assert eng.claim(qty=5) == []
    assert eng.one("select teguh.ticker()") == 0
    assert eng.state(task_id) == "cancelled" and eng.count("p") == 0 and eng.count("r") == 0
    with raises_sqlstate("AB002"):
        eng.complete(run[0])


def test_worker_call_on_cancelled_run_raises_ab001(eng: Engine) -> None:
    task_id = eng.spawn()[0]
    [run] = eng.claim()
    eng.conn.execute("select teguh.cancel_task('q', %s)", (task_id,))
    with raises_sqlstate("AB001", "was cancelled"):
        eng.conn.execute("select teguh.extend_claim('q', %s, 30)", (run[0],))
    with raises_sqlstate("AB001"):
        eng.complete(run[0], "late")


def test_extend_claim_sets_the_lease_instead_of_adding(eng: Engine) -> None:
    eng.spawn()
    [run] = eng.claim(timeout=30)
    for _ in range(3):
        eng.conn.execute("select teguh.extend_claim('q', %s, 60)", (run[0],))
    assert eng.one("select expires_at from teguh.r_q") == eng.now + timedelta(seconds=60)
    eng.advance(10)
    eng.conn.execute("select teguh.extend_claim('q', %s, 5)", (run[0],))
    assert eng.one("select expires_at from teguh.r_q") == eng.now + timedelta(seconds=5)


def test_timed_out_wait_differs_from_null_payload(eng: Engine) -> None:
    eng.spawn()
    eng.spawn()
    a, b = eng.claim(qty=2)
    eng.one("select * from teguh.wait_event('q', %s, %s, 's', 'x', 5)", a[1], a[0])
    eng.one("select * from teguh.wait_event('q', %s, %s, 's', 'y', 5)", b[1], b[0])
    eng.conn.execute("select teguh.emit_event('q', 'y', %s)", (Jsonb(None),))
    eng.advance(5)
    woken = {r[1]: r for r in eng.claim(qty=2)}
    timed_out = eng.one(
        "select * from teguh.wait_event('q', %s, %s, 's', 'x')", a[1], woken[a[1]][0]
    )
    emitted = eng.one("select * from teguh.wait_event('q', %s, %s, 's', 'y')", b[1], woken[b[1]][0])
    assert timed_out == (False, None, True)
    assert emitted == (False, None, False)


def test_cleanup_and_ticker_use_the_engine_clock_and_finish_time(eng: Engine) -> None:
    task_id = eng.spawn(cancellation={"max_delay": 60})[0]
    eng.advance(60)
    assert eng.one("select teguh.ticker()") == 1  # fake time drives the ticker
    assert eng.task(task_id)["finished_at"] == eng.now
    eng.advance(3599)
    assert eng.one("select teguh.cleanup_tasks('q', 3600, 10)") == 0
    eng.advance(2)
    assert eng.one("select teguh.cleanup_tasks('q', 3600, 10)") == 1
