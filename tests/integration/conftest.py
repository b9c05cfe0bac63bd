"""Fixtures for the Client/Worker tests: a `Client` and started workers.

The database fixtures (``dsn``, ``conn``, ``queue``, ...) come from
tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

import pytest

import teguh
from tests.helpers import wait_for

TERMINAL = ("completed", "failed", "cancelled")


@pytest.fixture
def app(dsn: str) -> Iterator[teguh.App]:
    """A `teguh.App` on the test's database (closed after the test)."""
    with teguh.App(dsn, max_size=4) as a:
        yield a


@pytest.fixture
def client(app: teguh.App) -> teguh.Client:
    """The app's `teguh.Client`."""
    return app.client


@pytest.fixture
def make_worker(app: teguh.App, queue: str) -> Iterator[Callable[..., teguh.Worker]]:
    """Return a factory of workers on queue ``q``; every worker is stopped after the test.

    ``make_worker(handlers={"name": fn}, start=True, **worker_kwargs)``.
    """
    workers: list[teguh.Worker] = []

    def factory(
        handlers: dict[str, Callable[[teguh.TaskContext], Any]] | None = None,
        *,
        start: bool = True,
        **kwargs: Any,
    ) -> teguh.Worker:
        kwargs.setdefault("poll_interval", 30)
        worker = app.worker([queue], **kwargs)
        for name, fn in (handlers or {}).items():
            worker.handle(name, fn)
        workers.append(worker)
        if start:
            worker.start()
        return worker

    yield factory
    for worker in workers:
        worker.stop(timeout=5)


def wait_state(
    client: teguh.Client,
    task_id: UUID,
    states: tuple[str, ...] = TERMINAL,
    *,
    queue: str = "q",
    timeout: float = 10.0,
) -> teguh.TaskResult:
    """Wait until the task is in one of ``states``; return its result."""

    def reached() -> teguh.TaskResult | None:
        result = client.get_task_result(queue, task_id)
        return result if result is not None and result.state in states else None

    return wait_for(reached, timeout=timeout, message=f"task {task_id} reaching {states}")
