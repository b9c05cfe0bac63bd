"""`TeguhBackend`: Django's task framework on teguh's engine.

What maps to what (docs/django.md has the table):

- a Django task's ``module_path`` is the teguh task name, its ``queue_name``
  the teguh queue; its args and kwargs are the params ``{"args", "kwargs"}``;
- ``priority`` (-100..100, higher first) is teguh's priority unchanged;
- ``run_after`` is the first attempt's ``available_at``;
- `TeguhTask` adds teguh's options: ``max_attempts``, ``retry``,
  ``cancellation``, ``idempotency_key`` and ``concurrency_key``;
- the `TaskResult` id is the teguh task id (a UUID string).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from django.db import transaction
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import Task, TaskError, TaskResult, TaskResultStatus
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued
from django.utils import timezone
from django.utils.json import normalize_json
from django.utils.module_loading import import_string

from teguh.app import App
from teguh.client import Client
from teguh.contrib.django import _conf
from teguh.records import Cancellation, RetryStrategy, TaskInfo

__all__ = ["TeguhBackend", "TeguhTask"]

ATTEMPT_PREFIX = "django.attempt."
"""Step names under which the worker records each attempt (worker id, start)."""
ERROR_PREFIX = "django.error."
"""Step names under which the worker records each failed attempt's error."""

_STATUS = {
    "pending": TaskResultStatus.READY,
    "running": TaskResultStatus.RUNNING,
    "sleeping": TaskResultStatus.RUNNING,  # suspended mid-execution (durable sleep or event)
    "completed": TaskResultStatus.SUCCESSFUL,
    "failed": TaskResultStatus.FAILED,
    "cancelled": TaskResultStatus.FAILED,
}


# TeguhTask's own fields, by the teguh `SpawnOptions` key each one sets.
_SPAWN_FIELDS = {
    "max_attempts": "max_attempts",
    "retry": "retry_strategy",
    "cancellation": "cancellation",
    "idempotency_key": "idempotency_key",
    "concurrency_key": "concurrency_key",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class TeguhTask(Task):  # type: ignore[misc]  # Django is untyped
    """A Django `Task` with teguh's spawn options (the backend's ``task_class``).

    ``@task(max_attempts=3, retry={"kind": "fixed", "base_seconds": 10})``;
    ``my_task.using(idempotency_key=f"order-{order.pk}").enqueue(...)``;
    ``my_task.using(concurrency_key=f"tenant:{tenant.pk}")`` counts the task
    against that key's concurrency limit (docs/queues.md).
    ``max_attempts`` defaults to the engine's (5), ``retry`` to exponential
    backoff (1 s base, factor 2, 300 s cap).
    """

    max_attempts: int | None = None
    retry: RetryStrategy | None = None
    cancellation: Cancellation | None = None
    idempotency_key: str | None = None
    concurrency_key: str | None = None

    def using(
        self,
        *,
        priority: int | None = None,
        queue_name: str | None = None,
        run_after: datetime | None = None,
        backend: str | None = None,
        max_attempts: int | None = None,
        retry: RetryStrategy | None = None,
        cancellation: Cancellation | None = None,
        idempotency_key: str | None = None,
        concurrency_key: str | None = None,
    ) -> TeguhTask:
        """Return a copy with these options changed (Django's and teguh's)."""
        task: TeguhTask = Task.using(
            self, priority=priority, queue_name=queue_name, run_after=run_after, backend=backend
        )
        given: dict[str, Any] = {
            "max_attempts": max_attempts,
            "retry": retry,
            "cancellation": cancellation,
            "idempotency_key": idempotency_key,
            "concurrency_key": concurrency_key,
        }
        changes = {name: value for name, value in given.items() if value is not None}
        return replace(task, **changes) if changes else task

    def spawn_options(self) -> dict[str, Any]:
        """Return the teguh `SpawnOptions` this task's own fields set (those not None)."""
        given = {spawn_key: getattr(self, name) for name, spawn_key in _SPAWN_FIELDS.items()}
        return {key: value for key, value in given.items() if value is not None}


class TeguhBackend(BaseTaskBackend):  # type: ignore[misc]  # Django is untyped
    """``settings.TASKS`` backend storing tasks in teguh's queues.

    ``OPTIONS``: ``DATABASE`` (the database alias, default ``"default"``; its
    engine must be ``django.db.backends.postgresql`` on psycopg 3) and
    ``WORKER`` (default keyword arguments of the worker: ``concurrency``,
    ``claim_timeout``, ``poll_interval``...), ``WORKER_IN_PROCESS`` (run a
    worker in each process that serves requests, from its first request).
    ``QUEUES``: the teguh queues (created by ``manage.py migrate``).

    ``backend.app`` is the backend's `teguh.App`: its ``before_spawn`` hooks
    see every enqueue, and its middleware (``backend.app.use(...)``) wraps
    every execution by this backend's workers.
    """

    task_class = TeguhTask
    supports_defer = True
    supports_priority = True
    supports_get_result = True
    supports_async_task = True  # run on worker threads through asgiref's async_to_sync

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.database: str = self.options.get("DATABASE", _conf.DEFAULT_DATABASE)
        self.worker_options: dict[str, Any] = dict(self.options.get("WORKER", {}))
        self.app = App(pool=_conf.unpooled_pool())

    @property
    def client(self) -> Client:
        """The `teguh.Client` of `app`, used only on Django's connection (it opens no pool)."""
        return self.app.client

    # -- enqueue ----------------------------------------------------------------------

    def validate_task(self, task: Task) -> None:
        super().validate_task(task)
        if isinstance(task, TeguhTask):
            if task.max_attempts is not None and (
                not isinstance(task.max_attempts, int) or task.max_attempts < 1
            ):
                raise InvalidTask(
                    f"max_attempts must be a whole number >= 1, got {task.max_attempts!r}"
                )
            for name in ("retry", "cancellation"):
                value = getattr(task, name)
                if value is not None and not isinstance(value, dict):
                    raise InvalidTask(f"{name} must be a dict, got {value!r}")

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        """Spawn the task through Django's connection: inside ``atomic()``, only if it commits."""
        self.validate_task(task)
        args = normalize_json(list(args))
        kwargs = normalize_json(dict(kwargs))
        options: dict[str, Any] = {"priority": task.priority}
        if task.run_after is not None:
            run_after = task.run_after
            if timezone.is_naive(run_after):
                run_after = timezone.make_aware(run_after)
            options["available_at"] = run_after
        if isinstance(task, TeguhTask):
            options.update(task.spawn_options())
        with transaction.mark_for_rollback_on_error(using=self.database):
            spawned = self.client.spawn_task(
                task.queue_name,
                task.module_path,
                {"args": args, "kwargs": kwargs},
                conn=_conf.raw_connection(self.database),
                **options,
            )
        result = TaskResult(
            task=task,
            id=str(spawned.task_id),
            status=TaskResultStatus.READY,
            enqueued_at=timezone.now(),
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=args,
            kwargs=kwargs,
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        task_enqueued.send(type(self), task_result=result)
        return result

    # -- results ----------------------------------------------------------------------

    def get_result(self, result_id: str) -> TaskResult:
        """Return the task's state, timestamps, errors, workers and return value.

        Reads through Django's connection (so a task enqueued in the current
        transaction is visible). Raises `TaskResultDoesNotExist` for an
        unknown id or a teguh task that was not enqueued through Django.
        """
        try:
            task_id = UUID(str(result_id))
        except ValueError:
            raise TaskResultDoesNotExist(result_id) from None
        conn = _conf.raw_connection(self.database)
        client = self.client
        with transaction.mark_for_rollback_on_error(using=self.database):
            existing = set(client.list_queues(conn=conn))
            for queue in sorted(self.queues & existing):
                info = client.get_task(queue, task_id, conn=conn)
                if info is not None:
                    checkpoints = client.get_checkpoints(queue, task_id, None, conn=conn)
                    return self._result(info, queue, checkpoints)
        raise TaskResultDoesNotExist(result_id)

    def _result(self, info: TaskInfo, queue: str, checkpoints: dict[str, Any]) -> TaskResult:
        task = django_task(info.task_name)
        if task is None or not isinstance(info.params, dict):
            raise TaskResultDoesNotExist(f"{info.task_id} is not a Django task")
        if task.queue_name != queue or task.backend != self.alias:
            task = replace(task, queue_name=queue, backend=self.alias)
        attempts = numbered(checkpoints, ATTEMPT_PREFIX)
        errors = [_task_error(e) for e in numbered(checkpoints, ERROR_PREFIX)]
        status = _STATUS[info.state]
        if info.state == "failed" and not errors and info.last_failure:
            errors.append(_task_error(info.last_failure))  # recorded by the engine, not the runner
        if info.state == "cancelled":
            errors.append(
                TaskError(
                    exception_class_path="teguh.errors.TaskCancelled",
                    traceback=f"teguh.errors.TaskCancelled: cancelled at {info.cancelled_at}\n",
                )
            )
        last_attempted_at = info.first_started_at
        if attempts and attempts[-1].get("started_at"):
            last_attempted_at = datetime.fromisoformat(attempts[-1]["started_at"])
        result = TaskResult(
            task=task,
            id=str(info.task_id),
            status=status,
            enqueued_at=info.created_at,
            started_at=info.first_started_at,
            finished_at=info.finished_at,
            last_attempted_at=last_attempted_at,
            args=info.params.get("args", []),
            kwargs=info.params.get("kwargs", {}),
            backend=self.alias,
            errors=errors,
            worker_ids=[a.get("worker_id") or "" for a in attempts],
        )
        if status == TaskResultStatus.SUCCESSFUL:
            object.__setattr__(result, "_return_value", info.completed_payload)
        return result

    # -- checks -----------------------------------------------------------------------

    def check(self, **kwargs: Any) -> list[Any]:
        """Configuration errors found without a database query (see checks.py)."""
        from teguh.contrib.django.checks import check_backend

        return [*super().check(**kwargs), *check_backend(self)]


def django_task(module_path: str) -> Task | None:
    """Import the Django `Task` at ``module_path``, or return None if it is not one."""
    try:
        found = import_string(module_path)
    except ImportError:
        return None
    return found if isinstance(found, Task) else None


def numbered(checkpoints: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    """Return the runner's per-attempt records named ``<prefix><n>``, by attempt number."""
    found: dict[int, dict[str, Any]] = {}
    for name, state in checkpoints.items():
        if name.startswith(prefix) and isinstance(state, dict):
            suffix = name[len(prefix) :]
            if suffix.isdigit():
                found[int(suffix)] = state
    return [found[n] for n in sorted(found)]


def _task_error(error: dict[str, Any]) -> TaskError:
    path = error.get("exception_class_path") or error.get("name") or "Exception"
    return TaskError(exception_class_path=str(path), traceback=str(error.get("traceback", "")))
