"""Claiming ahead: runs claimed beyond the concurrency wait for a thread, and a stop
hands them back unrun."""

from __future__ import annotations

import threading
from typing import Any

import psycopg

import teguh
from tests.helpers import wait_for
from tests.integration.conftest import wait_state


def test_a_stop_hands_back_runs_claimed_ahead_unrun(
    app: teguh.App, queue: str, conn: psycopg.Connection[Any]
) -> None:
    release = threading.Event()
    started = threading.Event()
    ran: list[int] = []

    @app.task(queue="q", name="fast")
    def fast(ctx: teguh.TaskContext, i: int) -> int:
        ran.append(i)
        return i

    @app.task(queue="q", name="block")
    def block(ctx: teguh.TaskContext) -> None:
        started.set()
        release.wait(10)

    warm = fast.spawn_many([{"i": -1 - i} for i in range(5)])
    with app.worker(["q"], concurrency=1, poll_interval=0.2) as worker:
        for spawned in warm:  # short handlers: the worker now claims ahead
            wait_state(app.client, spawned.task_id)
        blocker = block.spawn()
        assert started.wait(10)
        later = fast.spawn_many([{"i": i} for i in range(2)])
        # the blocked handler holds the only thread; both runs wait, claimed ahead
        wait_for(lambda: worker.in_flight == 3, message="two runs claimed ahead")
        ran.clear()
        worker.stop(0.2)
    release.set()
    assert ran == []  # the runs claimed ahead never started
    for spawned in later:
        info = app.client.get_task(queue, spawned.task_id)
        assert info is not None
        # handed back at once: pending, and no attempt used
        assert (info.state, info.attempts) == ("pending", 1), info
    info = app.client.get_task(queue, blocker.task_id)
    assert info is not None and info.state == "pending"
    # a new worker runs them exactly once each
    with app.worker(["q"], concurrency=2):
        for spawned in later:
            assert wait_state(app.client, spawned.task_id).state == "completed"
    assert sorted(ran) == [0, 1]
