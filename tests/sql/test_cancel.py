"""Cancellation, including deadlines enforced by the ticker."""

from __future__ import annotations

from datetime import timedelta

from .conftest import Engine, raises_sqlstate


def test_cancel_pending_task_is_never_claimed(eng: Engine) -> None:
    task_id = eng.spawn()[0]
    eng.conn.execute("select teguh.cancel_task('q', %s)", (task_id,))
    task = eng.task(task_id)
    assert task["state"] == "cancelled" and task["cancelled_at"] == eng.now
    assert eng.claim() == [] and eng.count("p") == 0
    result = eng.one("select * from teguh.get_task_result('q', %s)", task_id)
    assert result[4] == eng.now


def test_cancel_running_task_raises_ab001_to_the_worker(eng: Engine) -> None:
    task_id = eng.spawn()[0]
    [run] = eng.claim()
    eng.conn.execute("select teguh.cancel_task('q', %s)", (task_id,))
    for call in (
        "select teguh.complete_run('q', %s)",
        "select teguh.fail_run('q', %s, '{}')",
        "select teguh.extend_claim('q', %s, 30)",
        "select teguh.schedule_run('q', %s, now())",
    ):
        with raises_sqlstate("AB001", "cancelled"):
            eng.conn.execute(call, (run[0],))
    with raises_sqlstate("AB001"):
        eng.conn.execute(
            "select teguh.set_task_checkpoint_state('q', %s, 's', '1', %s)", (task_id, run[0])
        )
    with raises_sqlstate("AB001"):
        eng.conn.execute("select * from teguh.wait_event('q', %s, %s, 's', 'e')", (task_id, run[0]))
    assert eng.state(task_id) == "cancelled"
    # the batched heartbeat reports it and releases the lease
    assert eng.rows("select * from teguh.extend_claims('q', 'w1', %s, 30)", [run[0]]) == [
        (run[0], "cancelled")
    ]
    assert eng.count("r") == 0


def test_cancel_sleeping_and_waiting_tasks(eng: Engine) -> None:
    a = eng.spawn()[0]
    b = eng.spawn()[0]
    run_a, run_b = eng.claim(qty=2)
    eng.conn.execute(
        "select teguh.schedule_run('q', %s, %s)", (run_a[0], eng.now + timedelta(seconds=5))
    )
    eng.one("select * from teguh.wait_event('q', %s, %s, 's', 'e', 10)", b, run_b[0])
    for task_id in (a, b):
        eng.conn.execute("select teguh.cancel_task('q', %s)", (task_id,))
    eng.conn.execute("select teguh.emit_event('q', 'e')")
    eng.advance(60)
    assert eng.claim(qty=5) == []
    assert eng.count("p") == 0 and eng.count("w") == 0


def test_cancel_terminal_task_is_a_noop_and_unknown_task_errors(eng: Engine) -> None:
    task_id = eng.spawn()[0]
    [run] = eng.claim()
    eng.complete(run[0], 1)
    eng.conn.execute("select teguh.cancel_task('q', %s)", (task_id,))
    assert eng.state(task_id) == "completed"
    with raises_sqlstate("P0002", "does not exist"):
        eng.conn.execute("select teguh.cancel_task('q', gen_random_uuid())")


def test_max_delay_cancels_a_task_that_did_not_start(eng: Engine) -> None:
    task_id = eng.spawn(cancellation={"max_delay": 10})[0]
    assert eng.one("select teguh.next_wake_at('q')") == eng.now  # it is claimable now
    eng.advance(10)
    assert eng.one("select teguh.ticker('q')") == 1
    assert eng.state(task_id) == "cancelled" and eng.claim() == []


def test_max_duration_cancels_a_long_running_task(eng: Engine) -> None:
    task_id = eng.spawn(cancellation={"max_duration": 60, "max_delay": 5})[0]
    [run] = eng.claim(timeout=600)
    eng.advance(30)
    assert eng.one("select teguh.ticker()") == 0
    eng.advance(30)
    assert eng.one("select teguh.ticker()") == 1
    assert eng.state(task_id) == "cancelled"
    with raises_sqlstate("AB001"):
        eng.complete(run[0])


def test_finished_task_deadline_is_dropped(eng: Engine) -> None:
    task_id = eng.spawn(cancellation={"max_duration": 60})[0]
    [run] = eng.claim()
    eng.complete(run[0])
    eng.advance(120)
    assert eng.one("select teguh.ticker()") == 0
    assert eng.state(task_id) == "completed"


def test_claim_enforces_deadlines_without_a_ticker(eng: Engine) -> None:
    late = eng.spawn("t", "late", cancellation={"max_delay": 10})[0]
    eng.advance(10)
    on_time = eng.spawn("t", "on time")[0]
    # the overdue task is cancelled by the claim itself, not started
    assert [r[1] for r in eng.claim(qty=5)] == [on_time]
    assert eng.state(late) == "cancelled" and eng.count("p") == 0


def test_a_sleeping_task_past_max_duration_is_not_resumed(eng: Engine) -> None:
    task_id = eng.spawn(cancellation={"max_duration": 60})[0]
    [run] = eng.claim()
    eng.conn.execute(
        "select teguh.schedule_run('q', %s, %s)", (run[0], eng.now + timedelta(seconds=90))
    )
    eng.advance(90)
    assert eng.claim() == []
    assert eng.state(task_id) == "cancelled"
