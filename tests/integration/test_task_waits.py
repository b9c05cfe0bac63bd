"""`Client.get_task`, `queue_stats` and `list_workers` records say what a task waits for
and who serves a queue (issue 10, "seeing what is there")."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

import pytest

import teguh
from tests.helpers import wait_for

from .conftest import wait_state

MakeWorker = Callable[..., teguh.Worker]


def info(client: teguh.Client, queue: str, task_id: object) -> teguh.TaskInfo:
    found = client.get_task(queue, task_id)  # type: ignore[arg-type]
    assert found is not None
    return found


def test_task_records_say_what_the_task_waits_for(client: teguh.Client, queue: str) -> None:
    now = client.current_time()
    delayed = client.spawn_task(queue, "t", {}, delay=300)
    first = info(client, queue, delayed.task_id)
    assert isinstance(first, teguh.TaskInfo)
    assert first.wait_kind == "start" and first.next_attempt_at is not None
    assert first.next_attempt_at >= now + timedelta(seconds=300)
    assert (first.queue_paused, first.hand_backs, first.worker_id) == (False, 0, None)

    spawned = client.spawn_task(
        queue, "t", {}, retry_strategy={"kind": "fixed", "base_seconds": 60}
    )
    [run] = client.claim_task(queue, "w-lib", claim_timeout=45)
    running = info(client, queue, spawned.task_id)
    assert running.wait_kind is None and running.worker_id == "w-lib"
    assert running.lease_expires_at is not None
    client.fail_run(queue, run.run_id, {"name": "Boom", "message": "no"})
    retry = info(client, queue, spawned.task_id)
    assert retry.wait_kind == "retry" and retry.next_attempt_at is not None
    assert retry.next_attempt_at - client.current_time() > timedelta(seconds=50)
    assert retry.worker_id is None and retry.lease_expires_at is None

    client.set_queue_policy(queue, {"paused": True})
    assert info(client, queue, spawned.task_id).queue_paused is True


def test_queue_stats_and_workers_count_presence(client: teguh.Client, queue: str) -> None:
    [stats] = client.queue_stats(queue)
    assert isinstance(stats, teguh.QueueStats) and stats.workers == 0
    client.register_worker("w1", [queue], ttl=30)
    assert client.worker_heartbeat("w1", hung_handlers=3) is True
    [stats] = client.queue_stats(queue)
    assert stats.workers == 1
    [worker] = client.list_workers(queue)
    assert worker.hung_handlers == 3
    with pytest.raises(teguh.InvalidArgument, match="hung_handlers"):
        client.worker_heartbeat("w1", hung_handlers=-1)
    client.unregister_worker("w1")
    assert client.queue_stats(queue)[0].workers == 0


def test_a_worker_reports_its_hung_handlers(
    client: teguh.Client, queue: str, make_worker: MakeWorker
) -> None:
    release = threading.Event()

    def hang(ctx: teguh.TaskContext) -> None:
        release.wait(60)  # ignores cancellation: never calls teguh again

    worker = make_worker({"hang": hang}, worker_id="w-hung", concurrency=2, claim_timeout=1)
    try:
        assert client.queue_stats(queue)[0].workers == 1
        spawned = client.spawn_task(queue, "hang", {})
        wait_state(client, spawned.task_id, ("running",))
        client.cancel_task(queue, spawned.task_id)
        wait_for(lambda: worker.hung_handlers == 1)
        # the next heartbeat carries it to the engine
        wait_for(lambda: client.list_workers(queue)[0].hung_handlers == 1)
    finally:
        release.set()
    wait_for(lambda: worker.hung_handlers == 0)
    wait_for(lambda: client.list_workers(queue)[0].hung_handlers == 0)
