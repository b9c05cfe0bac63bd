"""Per-key concurrency limits through the library: a real worker, measured by its handlers."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from typing import Any

import pytest

import teguh
from tests.helpers import wait_for
from tests.integration.conftest import wait_state


class Gauge:
    """Counts the handlers running now, per key, and the most ever seen at once."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.now: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()

    def run(self, key: str, hold_until: int) -> None:
        with self.cond:
            self.now[key] += 1
            self.peak[key] = max(self.peak[key], self.now[key])
            self.cond.notify_all()
            # hold the slot until hold_until handlers of this key run together
            # (or a while passes): overlap is forced, not hoped for
            self.cond.wait_for(lambda: self.now[key] >= hold_until, timeout=0.5)
        with self.cond:
            self.now[key] -= 1
            self.cond.notify_all()


def test_a_worker_of_ten_runs_at_most_the_limit_of_a_key(
    app: teguh.App, make_worker: Any, queue: str
) -> None:
    gauge = Gauge()
    app.client.set_concurrency_limit(queue, "tenant:*", 2)

    @app.task(name="work", queue=queue)
    def work(ctx: teguh.TaskContext, key: str) -> None:
        gauge.run(key, hold_until=3)  # asks for more than the limit allows

    @app.task(name="free", queue=queue)
    def free(ctx: teguh.TaskContext) -> None:
        gauge.run("free", hold_until=4)

    ids = [
        work.configure(concurrency_key="tenant:a").spawn(key="tenant:a").task_id for _ in range(8)
    ]
    ids += [
        app.client.spawn_task(
            queue, "work", {"key": "tenant:b"}, concurrency_key="tenant:b"
        ).task_id
        for _ in range(4)
    ]
    ids += [free.spawn().task_id for _ in range(4)]
    worker = app.worker([queue], concurrency=10, poll_interval=30)
    worker.start()
    try:
        for task_id in ids:
            assert wait_state(app.client, task_id, timeout=60).state == "completed"
    finally:
        worker.stop(timeout=5)
    assert gauge.peak["tenant:a"] == 2 and gauge.peak["tenant:b"] == 2, gauge.peak
    assert gauge.peak["free"] == 4  # the capped keys held no one else back


def test_ctx_spawn_passes_the_key(app: teguh.App, make_worker: Any, queue: str) -> None:
    app.client.set_concurrency_limit(queue, "solo", 0)  # held: nothing with the key runs

    @app.task(name="parent", queue=queue)
    def parent(ctx: teguh.TaskContext) -> str:
        return str(ctx.spawn("child", concurrency_key="solo").task_id)

    done: list[str] = []
    make_worker({"child": lambda ctx: done.append("child")})
    result = wait_state(app.client, parent.spawn().task_id)
    assert result.state == "completed"
    child = app.client.get_task(queue, uuid.UUID(result.completed_payload))
    assert child is not None and child.state == "pending"
    app.client.drop_concurrency_limit(queue, "solo")  # notifies: the worker claims it now
    wait_for(lambda: done == ["child"])


def test_bad_keys_fail_before_anything_is_sent(app: teguh.App, queue: str) -> None:
    with pytest.raises(teguh.InvalidArgument, match="concurrency_key"):
        app.client.spawn_task(queue, "t", None, concurrency_key="")
    with pytest.raises(teguh.InvalidArgument, match="concurrency_key"):
        app.client.spawn_task(queue, "t", None, concurrency_key="x" * 256)
    with pytest.raises(TypeError, match="concurrency_key"):
        app.client.spawn_task(queue, "t", None, concurrency_key=3)  # type: ignore[arg-type]
    with pytest.raises(teguh.InvalidArgument, match="key"):
        app.client.set_concurrency_limit(queue, "a*b", 1)
    with pytest.raises(teguh.InvalidArgument, match="limit"):
        app.client.set_concurrency_limit(queue, "a", -1)
    with pytest.raises(teguh.QueueNotFound):
        app.client.set_concurrency_limit("nope", "a", 1)
    assert app.client.list_concurrency_limits() == []
    app.client.set_concurrency_limit(queue, "a", 1)
    (row,) = app.client.list_concurrency_limits(queue)
    assert (row.key, row.is_prefix, row.max_running, row.running) == ("a", False, 1, 0)
    app.client.set_concurrency_limit(queue, "a", None)
    assert app.client.drop_concurrency_limit(queue, "a") is False
