"""Engine fixes found by killing workers and the server (issue 8, section 4)."""

from __future__ import annotations

from typing import Any

from .conftest import Engine, raises_sqlstate


def _hand_back(eng: Engine, run_id: Any, delay: float = 5, cap: int | None = 3) -> str:
    return str(
        eng.one("select teguh.hand_back_run(%s, %s, %s, %s, 'w1')", eng.q, run_id, delay, cap)
    )


def test_a_task_nobody_handles_fails_after_max_hand_backs_naming_the_handler(eng: Engine) -> None:
    # It used to circulate forever as 'sleeping', attempt 1, with no reason.
    task_id, run_id, *_ = eng.spawn("unknown.task")
    for n in (1, 2):
        [run] = eng.claim()
        assert run[0] == run_id
        assert _hand_back(eng, run_id) == "handed_back"
        assert eng.state(task_id) == "pending"  # handed back: not a durable sleep
        assert eng.claim() == []  # not before the delay
        eng.advance(5)
        assert eng.task(task_id)["attempts"] == 1, n
    assert [r[0] for r in eng.claim()] == [run_id]
    assert _hand_back(eng, run_id) == "failed"
    task = eng.task(task_id)
    assert task["state"] == "failed" and task["attempts"] == 1
    assert task["last_failure"]["name"] == "NoHandler"
    assert "'unknown.task'" in task["last_failure"]["message"]
    assert task["last_failure"]["hand_backs"] == 3
    assert eng.count("r") == 0 and eng.count("p") == 0
    eng.advance(60)
    assert eng.claim() == []


def test_a_retried_task_gets_a_full_hand_back_allowance_again(eng: Engine) -> None:
    task_id, run_id, *_ = eng.spawn("unknown.task")
    eng.claim()
    assert _hand_back(eng, run_id, cap=1) == "failed"
    new_run = eng.one("select run_id from teguh.retry_task(%s, %s)", eng.q, task_id)
    assert [r[0] for r in eng.claim()] == [new_run]
    assert _hand_back(eng, new_run, cap=2) == "handed_back"


def test_without_a_cap_hand_backs_never_fail(eng: Engine) -> None:
    task_id, run_id, *_ = eng.spawn("unknown.task")
    for _ in range(5):
        eng.claim()
        assert _hand_back(eng, run_id, delay=0, cap=None) == "handed_back"
    assert eng.state(task_id) == "pending"  # handed back: not a durable sleep


def test_hand_back_checks_its_arguments_and_the_run(eng: Engine) -> None:
    task_id, run_id, *_ = eng.spawn("t")
    with raises_sqlstate("AB002"):
        _hand_back(eng, run_id)  # not claimed yet
    eng.claim()
    with raises_sqlstate("22023", "delay_seconds"):
        _hand_back(eng, run_id, delay=-1)
    with raises_sqlstate("22023", "delay_seconds"):
        _hand_back(eng, run_id, delay=float("nan"))
    with raises_sqlstate("22023", "max_hand_backs"):
        _hand_back(eng, run_id, cap=0)
    eng.conn.execute("select teguh.cancel_task(%s, %s)", (eng.q, task_id))
    with raises_sqlstate("AB001"):
        _hand_back(eng, run_id)
