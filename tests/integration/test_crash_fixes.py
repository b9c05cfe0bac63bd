"""Worker fixes found by killing workers and the server (issue 8, section 4)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import teguh

from .conftest import wait_state

MakeWorker = Any


def test_a_task_with_no_handler_fails_naming_it_after_max_hand_backs(
    client: teguh.Client, queue: str, make_worker: MakeWorker
) -> None:
    # It used to circulate as 'sleeping' forever, attempt 1, with no reason.
    make_worker({"known": lambda ctx: "ok"}, unknown_task_delay=0, max_hand_backs=3)
    spawned = client.spawn_task(queue, "nobody.handles.this", {})
    wait_state(client, spawned.task_id, ("failed",))
    task = client.get_task(queue, spawned.task_id)
    assert task is not None and task.attempts == 1
    assert task.last_failure is not None
    assert task.last_failure["name"] == "NoHandler"
    assert "nobody.handles.this" in task.last_failure["message"]


def test_max_hand_backs_is_checked(client: teguh.Client, queue: str) -> None:
    with pytest.raises(ValueError, match="max_hand_backs"):
        client.worker(queue, max_hand_backs=0)


def test_a_step_body_does_not_start_once_the_lease_may_have_expired(
    client: teguh.Client, queue: str, make_worker: MakeWorker
) -> None:
    # A worker frozen past its lease (here: its heartbeats stopped) used to run
    # the next step body, whose checkpoint another run may already have
    # committed, before its own write was refused.
    calls: list[int] = []
    outcomes: list[str] = []
    frozen = threading.Event()

    def handler(ctx: teguh.TaskContext) -> str:
        ctx.step("a", lambda: 1)
        if ctx.attempt == 1:
            frozen.set()
            time.sleep(1.3)  # longer than the 1 s lease, with no heartbeat
        try:
            ctx.step("b", lambda: calls.append(ctx.attempt))
        except teguh.LeaseLost:
            outcomes.append("lease lost")
            raise
        return "done"

    worker = make_worker({"t": handler}, claim_timeout=1, ticker_interval=0.2, start=False)
    worker.heartbeat = lambda: 0  # type: ignore[method-assign]
    worker.start()
    spawned = client.spawn_task(queue, "t", {})
    result = wait_state(client, spawned.task_id, timeout=20)
    assert result.state == "completed"
    assert outcomes == ["lease lost"]
    assert calls == [2]  # the step body ran once, in the run that took over
