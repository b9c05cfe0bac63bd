"""Time-driven semantics at real-world durations, on teguh.testing's fake clock.

The worker tests that sleep on the wall clock (test_worker.py) check that a
started worker's dispatcher wakes up on its own when a sleep or an event
timeout falls due; these check what happens at those times, for durations
no test could wait for, deterministically: `teguh_drain` runs in the test's
thread and the engine's clock moves only when the test moves it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import teguh
from teguh.testing import FakeClock

Drain = Callable[..., int]


def state(app: teguh.App, spawned: teguh.SpawnResult) -> teguh.TaskResult:
    result = app.client.get_task_result("default", spawned.task_id)
    assert result is not None
    return result


def test_a_day_long_sleep_resumes_exactly_when_due_and_keeps_attempts(
    teguh_app: teguh.App, teguh_clock: FakeClock, teguh_drain: Drain
) -> None:
    runs: list[int] = []

    @teguh_app.task(name="sleeper")
    def sleeper(ctx: teguh.TaskContext) -> str:
        runs.append(ctx.attempt)
        before = ctx.step("before", lambda: "b")
        ctx.sleep_for(timedelta(days=1))
        return before + "-awake"

    spawned = sleeper.spawn()
    assert teguh_drain() == 1
    assert state(teguh_app, spawned).state == "sleeping"
    teguh_clock.advance(timedelta(days=1) - timedelta(seconds=1))
    assert teguh_drain() == 0
    teguh_clock.advance(1)
    assert teguh_drain() == 1
    result = state(teguh_app, spawned)
    assert (result.state, result.completed_payload, result.attempts) == ("completed", "b-awake", 1)
    assert runs == [1, 1]


def test_an_event_wait_times_out_after_an_hour_and_not_before(
    teguh_app: teguh.App, teguh_clock: FakeClock, teguh_drain: Drain
) -> None:
    @teguh_app.task(name="waiter")
    def waiter(ctx: teguh.TaskContext, event: str) -> Any:
        try:
            return {"payload": ctx.await_event(event, timeout=timedelta(hours=1))}
        except teguh.EventTimeout as exc:
            return f"timed out: {exc.event_name}"

    timing_out = waiter.spawn(event="never")
    null_payload = waiter.spawn(event="null")
    assert teguh_drain() == 2
    teguh_clock.advance(timedelta(minutes=59))
    teguh_app.client.emit_event("default", "null", None)
    assert teguh_drain() == 1
    assert state(teguh_app, null_payload).completed_payload == {"payload": None}
    assert state(teguh_app, timing_out).state == "sleeping"
    teguh_clock.advance(timedelta(minutes=1))
    assert teguh_drain() == 1
    assert state(teguh_app, timing_out).completed_payload == "timed out: never"


def test_exponential_backoff_runs_each_attempt_when_due(
    teguh_app: teguh.App, teguh_clock: FakeClock, teguh_drain: Drain
) -> None:
    attempts: list[int] = []

    @teguh_app.task(
        name="flaky",
        max_attempts=3,
        retry={"kind": "exponential", "base_seconds": 600, "factor": 2, "max_seconds": 3600},
    )
    def flaky(ctx: teguh.TaskContext) -> int:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionError("try again later")
        return ctx.attempt

    spawned = flaky.spawn()
    assert teguh_drain() == 1  # attempt 1 fails: attempt 2 in 600 s
    teguh_clock.advance(599)
    assert teguh_drain() == 0
    teguh_clock.advance(1)
    assert teguh_drain() == 1  # attempt 2 fails: attempt 3 in 1200 s
    teguh_clock.advance(1199)
    assert teguh_drain() == 0
    teguh_clock.advance(1)
    assert teguh_drain() == 1
    result = state(teguh_app, spawned)
    assert (result.state, result.completed_payload, result.attempts) == ("completed", 3, 3)
    assert attempts == [1, 2, 3]
