"""Built-in execution middleware (``app.use(...)``).

`LifecycleLogging` logs every run's start and end, structured with the
run's ids and its duration, on the ``teguh.runs`` logger.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from teguh.context import TaskContext
from teguh.errors import LeaseLost, Suspend, TaskCancelled

__all__ = ["LifecycleLogging"]


class LifecycleLogging:
    """Middleware that logs each run: started, then completed/failed/suspended/cancelled.

    ``app.use(teguh.LifecycleLogging())``. Records carry ``extra`` fields
    ``task_id``, ``run_id``, ``queue``, ``task_name``, ``attempt``,
    ``outcome`` and ``duration`` (seconds, on the end record). Starts log at
    DEBUG, ends at ``level`` (failures at WARNING).
    """

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.INFO) -> None:
        self.logger = logger or logging.getLogger("teguh.runs")
        self.level = level

    def __call__(self, ctx: TaskContext, call_next: Callable[[TaskContext], Any]) -> Any:
        extra: dict[str, Any] = {
            "task_id": ctx.task_id,
            "run_id": ctx.run_id,
            "queue": ctx.queue,
            "task_name": ctx.task_name,
            "attempt": ctx.attempt,
        }
        log = self.logger
        log.debug("run %s of %s started", ctx.run_id, ctx.task_name, extra=extra)
        started = time.perf_counter()
        outcome, level = "completed", self.level
        try:
            return call_next(ctx)
        except Suspend:
            outcome = "suspended"
            raise
        except TaskCancelled:
            outcome = "cancelled"
            raise
        except LeaseLost:
            outcome, level = "lease_lost", logging.WARNING
            raise
        except BaseException:
            outcome, level = "failed", logging.WARNING
            raise
        finally:
            extra["outcome"] = outcome
            extra["duration"] = time.perf_counter() - started
            log.log(
                level,
                "run %s of %s %s in %.3fs",
                ctx.run_id,
                ctx.task_name,
                outcome,
                extra["duration"],
                extra=extra,
            )
