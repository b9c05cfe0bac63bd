"""A worker of several queues claims them in one transaction, and records
their completions in one; a failing queue falls back to queue-by-queue calls
without holding the others up (teguh/worker/dispatcher.py, completions.py)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import psycopg
import pytest

import teguh
from teguh import _engine as E
from teguh.context import RunState
from teguh.worker.completions import Completions
from tests.helpers import wait_for

from .conftest import wait_state

QUEUES = ["qa", "qb", "qc"]


@pytest.fixture
def queues(client: teguh.Client) -> list[str]:
    for queue in QUEUES:
        client.create_queue(queue)
    return QUEUES


@pytest.fixture
def combined_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Record the queues of every combined claim (the real call still runs)."""
    calls: list[list[str]] = []
    real = E.Engine.claim_queues_next

    def recording(self: E.Engine, conn: Any, wants: Any, *args: Any) -> Any:
        calls.append([queue for queue, _ in wants])
        return real(self, conn, wants, *args)

    monkeypatch.setattr(E.Engine, "claim_queues_next", recording)
    return calls


def _worker(app: teguh.App, queues: list[str], done: list[str], **options: Any) -> teguh.Worker:
    lock = threading.Lock()

    def record(ctx: teguh.TaskContext) -> str:
        with lock:
            done.append(ctx.queue)
        return ctx.queue

    options.setdefault("poll_interval", 30)
    worker = app.worker(queues, concurrency=4, **options)
    worker.handle("*", record)
    return worker


def test_the_queues_of_a_worker_are_claimed_in_one_call(
    app: teguh.App, client: teguh.Client, queues: list[str], combined_calls: list[list[str]]
) -> None:
    for queue in queues:
        client.spawn_tasks(queue, "t", [{}] * 6)
    done: list[str] = []
    worker = _worker(app, queues, done)
    worker.start()
    try:
        wait_for(lambda: len(done) == 18)
    finally:
        worker.stop(5)
    assert sorted(done) == sorted(QUEUES * 6)
    assert combined_calls and all(len(call) > 1 for call in combined_calls)
    # the claiming order rotates, so each queue goes first in turn
    assert {call[0] for call in combined_calls} == set(QUEUES)


def test_a_dropped_queue_does_not_hold_the_others_up(
    app: teguh.App,
    client: teguh.Client,
    queues: list[str],
    combined_calls: list[list[str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    done: list[str] = []
    # ticks often: the ticker of the dropped queue fails too
    worker = _worker(app, queues, done, ticker_interval=0.1)
    worker.start()
    try:
        client.drop_queue("qb")  # every combined claim now fails (42704)
        spawned = [client.spawn_task(queue, "t", {}) for queue in ("qa", "qc")]
        for queue, task in zip(("qa", "qc"), spawned, strict=True):
            assert wait_state(client, task.task_id, queue=queue).state == "completed"
        wait_for(lambda: caplog.text.count("ticker failed on queue qb") >= 2)
        assert worker.is_running
    finally:
        worker.stop(5)
    # claimed queue by queue, where the failure names its queue
    assert "claiming runs on queue qb failed" in caplog.text


def test_a_schema_without_the_combined_claim_is_claimed_queue_by_queue(
    app: teguh.App,
    client: teguh.Client,
    queues: list[str],
    conn: psycopg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    conn.execute("drop function teguh.claim_queues_next(text[], text, integer, integer[], integer)")
    for queue in queues:
        client.spawn_tasks(queue, "t", [{}] * 3)
    done: list[str] = []
    worker = _worker(app, queues, done)
    with caplog.at_level(logging.WARNING, logger="teguh.worker"):
        worker.start()
        try:
            wait_for(lambda: len(done) == 9)
        finally:
            worker.stop(5)
    assert caplog.text.count("needs a newer schema") == 1


def _claimed(app: teguh.App, queue: str, n: int) -> list[RunState]:
    with app.client.pool.connection() as conn:
        runs, bad, _ = app.engine.claim_next(conn, queue, "w", 30, n)
    assert not bad and len(runs) == n
    return [RunState(run, lease_until=time.monotonic() + 30) for run in runs]


def test_completions_of_several_queues_are_recorded_together(
    app: teguh.App, client: teguh.Client, queues: list[str]
) -> None:
    tasks = {queue: client.spawn_tasks(queue, "t", [{}] * 2) for queue in queues}
    claimed = {queue: _claimed(app, queue, 2) for queue in queues}
    completions = Completions(app.client.pool, app.engine, "w")
    for queue, states in claimed.items():  # queued before the completer starts: one batch
        for state in states:
            completions.complete(state, queue, {"from": queue})
    completions.start()
    completions.close(time.monotonic() + 10)
    for queue, spawned in tasks.items():
        for task in spawned:
            result = client.get_task_result(queue, task.task_id)
            assert result is not None and result.state == "completed"
            assert result.completed_payload == {"from": queue}


def test_a_queue_that_fails_its_completions_does_not_lose_the_others(
    app: teguh.App, client: teguh.Client, queues: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    tasks = {queue: client.spawn_tasks(queue, "t", [{}] * 2) for queue in queues}
    claimed = {queue: _claimed(app, queue, 2) for queue in queues}
    client.drop_queue("qb")  # its completions fail: the batch of all three cannot commit
    completions = Completions(app.client.pool, app.engine, "w")
    for queue, states in claimed.items():
        for state in states:
            completions.complete(state, queue, None)
    completions.start()
    completions.close(time.monotonic() + 10)
    for queue in ("qa", "qc"):
        for task in tasks[queue]:
            result = client.get_task_result(queue, task.task_id)
            assert result is not None and result.state == "completed"
    assert 'queue "qb" does not exist' in caplog.text
