"""Run Django tasks on teguh's worker threads.

`DjangoRunner` is a raw ``fn(ctx)`` handler for every task name of the
backend's queues: it imports the Django task by its ``module_path``, calls it
with the stored args and kwargs, and sends ``task_started`` and
``task_finished``. Django's database connections are handled per thread as
Django's request cycle handles them: `close_old_connections` before and after
each task, so ``CONN_MAX_AGE`` and ``CONN_HEALTH_CHECKS`` apply and a broken
connection never leaks into the next task.

Each attempt records ``{"worker_id", "started_at", "error"}`` as the
checkpoint ``django.attempt.<n>``, which `TeguhBackend.get_result` reads for
``worker_ids``, ``last_attempted_at`` and one `TaskError` per failed attempt.
"""

from __future__ import annotations

import logging
import traceback
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
from teguh.contrib.django.backend import ATTEMPT_PREFIX, TeguhBackend, attempt_records, django_task
from teguh.errors import TeguhError

logger = logging.getLogger("teguh.contrib.django")

__all__ = ["DjangoRunner", "NotADjangoTask"]


class NotADjangoTask(TeguhError):
    """A run's task name does not import to a Django task (deploy skew or a foreign task)."""


class DjangoRunner:
    """The worker handler that runs the Django tasks of ``backend`` (``runner(ctx)``)."""

    def __init__(self, backend: TeguhBackend) -> None:
        self.backend = backend

    def __call__(self, ctx: TaskContext) -> Any:
        close_old_connections()
        try:
            return self.run(ctx)
        finally:
            close_old_connections()

    def run(self, ctx: TaskContext) -> Any:
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
        client, queue = ctx.client, ctx.queue
        previous = attempt_records(client.get_checkpoints(queue, ctx.task_id, ctx.run_id))
        now = timezone.now()
        record: dict[str, Any] = {
            "worker_id": ctx.worker_id or "",
            "started_at": now.isoformat(),
            "error": None,
        }
        checkpoint = f"{ATTEMPT_PREFIX}{ctx.attempt}"
        client.set_checkpoint(queue, ctx.task_id, checkpoint, record, ctx.run_id)
        worker_ids = [a.get("worker_id") or "" for a in previous][: ctx.attempt - 1]
        worker_ids += [""] * (ctx.attempt - 1 - len(worker_ids))  # attempts that left no record
        worker_ids.append(record["worker_id"])
        first = previous[0].get("started_at") if previous else None
        result = TaskResult(
            task=task,
            id=str(ctx.task_id),
            status=TaskResultStatus.RUNNING,
            enqueued_at=_uuid7_time(ctx.task_id),
            started_at=datetime.fromisoformat(first) if first else now,
            finished_at=None,
            last_attempted_at=now,
            args=args,
            kwargs=kwargs,
            backend=self.backend.alias,
            errors=[_error(a["error"]) for a in previous if a.get("error")],
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
            record["error"] = error
            try:
                client.set_checkpoint(queue, ctx.task_id, checkpoint, record, ctx.run_id)
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


def _error(error: dict[str, Any]) -> TaskError:
    return TaskError(
        exception_class_path=str(error.get("exception_class_path", "Exception")),
        traceback=str(error.get("traceback", "")),
    )


def _uuid7_time(task_id: UUID) -> datetime:
    """Return when the task was spawned: teguh's ids are version 7 UUIDs (48 bits of ms)."""
    millis = int.from_bytes(task_id.bytes[:6], "big")
    return datetime.fromtimestamp(millis / 1000, UTC)
