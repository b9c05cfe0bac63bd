"""Events: await before and after emit, first write wins, timeouts."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from .conftest import Engine, raises_sqlstate


def wait(
    eng: Engine, run: Any, event: str, step: str = "wait#1", timeout: int | None = None
) -> Any:
    return eng.one(
        "select * from teguh.wait_event('q', %s, %s, %s, %s, %s)",
        run[1],
        run[0],
        step,
        event,
        timeout,
    )


def emit(eng: Engine, event: str, payload: Any = None) -> None:
    eng.conn.execute("select teguh.emit_event('q', %s, %s)", (event, Jsonb(payload)))


def test_await_then_emit_wakes_the_task(eng: Engine) -> None:
    task_id = eng.spawn()[0]
    [run] = eng.claim()
    assert wait(eng, run, "paid") == (True, None, False)
    assert eng.state(task_id) == "sleeping" and eng.count("r") == 0 and eng.count("w") == 1
    assert eng.claim() == []

    emit(eng, "paid", {"amount": 3})
    assert eng.count("w") == 0
    [again] = eng.claim()
    assert (again[0], again[2]) == (run[0], 1)  # same run, same attempt
    assert again[8:] == ("paid", {"amount": 3})
    # replay returns the checkpointed payload
    assert wait(eng, again, "paid") == (False, {"amount": 3}, False)
    assert eng.task(task_id)["attempts"] == 1


def test_emit_before_await_returns_immediately(eng: Engine) -> None:
    emit(eng, "ready", [1])
    eng.spawn()
    [run] = eng.claim()
    assert wait(eng, run, "ready") == (False, [1], False)
    assert eng.one("select teguh.get_task_checkpoint_state('q', %s, 'wait#1')", run[1]) == [1]


def test_first_emit_wins(eng: Engine) -> None:
    eng.spawn()
    [run] = eng.claim()
    wait(eng, run, "e")
    emit(eng, "e", "first")
    emit(eng, "e", "second")
    [again] = eng.claim()
    assert again[9] == "first"
    assert eng.one("select payload from teguh.e_q where event_name = 'e'") == "first"


def test_emit_wakes_every_waiter(eng: Engine) -> None:
    for _ in range(3):
        eng.spawn()
    runs = eng.claim(qty=3)
    for run in runs:
        wait(eng, run, "go")
    emit(eng, "go", 7)
    assert sorted(r[1] for r in eng.claim(qty=5)) == sorted(r[1] for r in runs)


def test_timeout_is_distinguishable_from_null_payload(eng: Engine) -> None:
    eng.spawn()
    eng.spawn()
    run_a, run_b = eng.claim(qty=2)
    assert wait(eng, run_a, "never", timeout=30)[0] is True
    assert wait(eng, run_b, "null-event", timeout=30)[0] is True
    emit(eng, "null-event", None)
    [woken_b] = eng.claim()
    assert woken_b[1] == run_b[1]
    assert wait(eng, woken_b, "null-event") == (False, None, False)

    eng.advance(29)
    assert eng.claim() == []
    eng.advance(1)
    [woken_a] = eng.claim()
    assert woken_a[1] == run_a[1] and woken_a[8:] == ("never", None)
    assert wait(eng, woken_a, "never") == (False, None, True)
    assert eng.count("w") == 0
    # the Go-compatible form returns (false, null) for both
    assert eng.one(
        "select * from teguh.await_event('q', %s, %s, 'wait#1', 'never')", woken_a[1], woken_a[0]
    ) == (
        False,
        None,
    )


def test_emit_after_timeout_does_not_requeue(eng: Engine) -> None:
    task_id = eng.spawn()[0]
    [run] = eng.claim()
    wait(eng, run, "late", timeout=1)
    eng.advance(1)
    [again] = eng.claim()
    emit(eng, "late", 1)
    assert eng.count("p") == 0
    assert wait(eng, again, "late") == (False, None, True)
    eng.complete(again[0])
    assert eng.state(task_id) == "completed"


def test_emit_before_timeout_cancels_the_timeout(eng: Engine) -> None:
    eng.spawn()
    [run] = eng.claim()
    wait(eng, run, "e", timeout=100)
    emit(eng, "e", "x")
    [again] = eng.claim()
    assert wait(eng, again, "e") == (False, "x", False)
    eng.complete(again[0])
    eng.advance(200)
    assert eng.claim() == []


def test_wait_requires_the_active_run(eng: Engine) -> None:
    eng.spawn()
    [run] = eng.claim()
    with raises_sqlstate("AB002"):
        eng.one("select * from teguh.wait_event('q', %s, gen_random_uuid(), 's', 'e')", run[1])


def test_events_refuse_repeatable_read(eng: Engine) -> None:
    # a snapshot older than the event lock could miss a concurrent wait or emit
    eng.spawn()
    [run] = eng.claim()
    with eng.conn.transaction():
        eng.conn.execute("set transaction isolation level repeatable read")
        with raises_sqlstate("0A000", "READ COMMITTED"):
            emit(eng, "e", 1)
    with eng.conn.transaction():
        eng.conn.execute("set transaction isolation level serializable")
        with raises_sqlstate("0A000", "teguh.wait_event needs the READ COMMITTED"):
            wait(eng, run, "e")
    assert eng.count("e") == 0 and eng.state(run[1]) == "running"
