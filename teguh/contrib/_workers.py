"""Workers for the framework integrations: every task of some queues goes to one handler.

The Django and Flask integrations run a raw ``handler(ctx)`` for every task
name of their queues, wrapped in their middleware. This module is the one
place that builds those workers from teguh's `Worker`, so the integrations do
not depend on how many queues a worker serves.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from teguh.client import Client
from teguh.context import TaskContext
from teguh.worker import Worker

__all__ = ["Handler", "Middleware", "WorkerGroup", "wrap"]

logger = logging.getLogger("teguh.contrib")

Handler = Callable[[TaskContext], Any]
Middleware = Callable[[TaskContext, Handler], Any]


def wrap(handler: Handler, middleware: Iterable[Middleware]) -> Handler:
    """Compose ``middleware(ctx, call_next)`` around ``handler``; the first is the outermost."""
    wrapped = handler
    for mw in reversed(list(middleware)):
        wrapped = _layer(mw, wrapped)
    return wrapped


def _layer(mw: Middleware, call_next: Handler) -> Handler:
    def layer(ctx: TaskContext) -> Any:
        return mw(ctx, call_next)

    return layer


class WorkerGroup:
    """Workers that run ``handler`` for every task of ``queues``.

    ``start()``/``stop()`` for a worker inside another process (threads);
    ``run()`` blocks with the worker signal policy (SIGINT/SIGTERM drain).
    """

    def __init__(
        self,
        client: Client,
        queues: Sequence[str],
        handler: Handler,
        *,
        middleware: Iterable[Middleware] = (),
        concurrency: int = 10,
        **options: Any,
    ) -> None:
        if not queues:
            raise ValueError("queues must name at least one queue")
        self.client = client
        self.queues = list(dict.fromkeys(queues))
        fn = wrap(handler, middleware)
        self.workers: list[Worker] = []
        for queue in self.queues:
            worker = Worker(client, queue, concurrency=concurrency, **options)
            worker.handle("*", fn)
            self.workers.append(worker)
        self._lock = threading.Lock()

    @property
    def is_running(self) -> bool:
        """Whether any of the workers runs."""
        return any(w.is_running for w in self.workers)

    def start(self) -> WorkerGroup:
        """Start every worker (all or nothing)."""
        started: list[Worker] = []
        try:
            for worker in self.workers:
                worker.start()
                started.append(worker)
        except BaseException:
            for worker in started:
                worker.stop(timeout=5)
            raise
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop every worker; in-flight handlers get ``timeout`` seconds to finish."""
        with self._lock:
            for worker in self.workers:
                with contextlib.suppress(Exception):
                    worker.stop(timeout)

    def run(self) -> None:
        """Run until SIGINT/SIGTERM (the worker signal policy), then stop gracefully."""
        *others, last = self.workers
        for worker in others:
            worker.start()
        try:
            last.run()
        finally:
            for worker in others:
                worker.stop()
