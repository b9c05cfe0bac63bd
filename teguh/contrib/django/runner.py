"""Run Django tasks on teguh's worker threads.

`DjangoRunner` is a raw ``fn(ctx)`` handler (``worker.handle("*", ...)``)
for every task name of the backend's queues: it imports the Django task by its
``module_path``, calls it with the stored args and kwargs, and sends
``task_started`` and ``task_finished``. `django_connections` is the execution
middleware that handles Django's database connections per thread as Django's
request cycle does.

Each attempt records ``{"worker_id", "started_at"}`` as the step
``django.attempt.<n>`` and, when it raises, ``{"exception_class_path",
"traceback"}`` as ``django.error.<n>``; `TeguhBackend.get_result` reads them
for ``worker_ids``, ``last_attempted_at`` and one `TaskError` per failed
attempt.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from django.db import close_old_connections
from django.tasks.base import TaskContext as DjangoTaskContext
from django.tasks.base import TaskError, TaskResult, TaskResultStatus
from django.tasks.signals import task_finished, task_started
from django.utils import timezone
from django.utils.json import normalize_json

from teguh.context import TaskContext
from teguh.contrib.django.backend import ATTEMPT_PREFIX, ERROR_PREFIX, TeguhBackend, django_task
from teguh.errors import TeguhError

logger = logging.getLogger("teguh.contrib.django")

__all__ = ["DjangoRunner", "NotADjangoTask", "django_connections"]


class NotADjangoTask(TeguhError):
    """A run's task name does not import to a Django task (deploy skew or a foreign task)."""


class DjangoRunner:
    """The raw worker handler that runs the Django tasks of ``backend`` (``runner(ctx)``)."""

    def __init__(self, backend: TeguhBackend) -> None:
        self.backend = backend

    def __call__(self, ctx: TaskContext) -> Any:
        """Run one attempt of the Django task behind ``ctx``; return its JSON result."""
        task = django_task(ctx.task_name)
        if task is None:
            raise NotADjangoTask(
                f"{ctx.task_name!r} does not import to a django.tasks Task "
                "(is this worker running the same code as the web process?)"
            )
        params = ctx.params if isinstance(ctx.params, dict) else {}
        args = list(params.get("args", []))
        kwargs = dict(params.get("kwargs", {}))
        # A step: written once per attempt, the same after a durable sleep resumes it.
        record: dict[str, Any] = ctx.step(
            f"{ATTEMPT_PREFIX}{ctx.attempt}",
            _attempt_record,
            ctx.worker_id or "",
        )
        started_at = datetime.fromisoformat(record["started_at"])
        # Earlier attempts' workers are in get_result(); this attempt's is known here.
        worker_ids = [""] * (ctx.attempt - 1) + [record["worker_id"]]
        result = TaskResult(
            task=task,
            id=str(ctx.task_id),
            status=TaskResultStatus.RUNNING,
            enqueued_at=_uuid7_time(ctx.task_id),
            started_at=started_at,
            finished_at=None,
            last_attempted_at=started_at,
            args=args,
            kwargs=kwargs,
            backend=self.backend.alias,
            errors=[],
            worker_ids=worker_ids,
        )
        sender = type(self.backend)
        task_started.send(sender, task_result=result)
        try:
            if task.takes_context:
                value = task.call(DjangoTaskContext(task_result=result), *args, **kwargs)
            else:
                value = task.call(*args, **kwargs)
            value = normalize_json(value)
        except Exception as exc:
            error = {
                "exception_class_path": f"{type(exc).__module__}.{type(exc).__qualname__}",
                "traceback": "".join(traceback.format_exception(exc)),
            }
            try:
                ctx.step(f"{ERROR_PREFIX}{ctx.attempt}", lambda: error)
            except Exception:  # the failure itself is still recorded by the worker
                logger.warning("could not record the error of %s", ctx.task_id, exc_info=True)
            result.errors.append(_error(error))
            object.__setattr__(result, "status", TaskResultStatus.FAILED)
            object.__setattr__(result, "finished_at", timezone.now())
            task_finished.send(sender, task_result=result)  # in the handler: exc_info is set
            raise
        object.__setattr__(result, "status", TaskResultStatus.SUCCESSFUL)
        object.__setattr__(result, "finished_at", timezone.now())
        object.__setattr__(result, "_return_value", value)
        task_finished.send(sender, task_result=result)
        return value


def django_connections(ctx: TaskContext, call_next: Callable[[TaskContext], Any]) -> Any:
    """Middleware: handle Django's connections around a task as its request cycle does.

    `close_old_connections` before and after: ``CONN_MAX_AGE`` and
    ``CONN_HEALTH_CHECKS`` apply to worker threads, and a connection broken
    by one task is not handed to the next.
    """
    close_old_connections()
    try:
        return call_next(ctx)
    finally:
        close_old_connections()


def _attempt_record(worker_id: str) -> dict[str, Any]:
    return {"worker_id": worker_id, "started_at": timezone.now().isoformat()}


def _error(error: dict[str, Any]) -> TaskError:
    return TaskError(
        exception_class_path=str(error.get("exception_class_path", "Exception")),
        traceback=str(error.get("traceback", "")),
    )


def _uuid7_time(task_id: UUID) -> datetime:
    """Return when the task was spawned: teguh's ids are version 7 UUIDs (48 bits of ms)."""
    millis = int.from_bytes(task_id.bytes[:6], "big")
    return datetime.fromtimestamp(millis / 1000, UTC)
