"""`Client` methods for schedules, queue policies, finding tasks and worker presence.

One method per stored function (docs/schedules.md, docs/queues.md), kept in a
mixin of their own so that the client module stays small.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, LiteralString
from uuid import UUID

import psycopg

from teguh import _convert as C
from teguh import _queries as Q
from teguh.records import (
    Cancellation,
    RetryStrategy,
    ScheduleInfo,
    TaskState,
    TaskSummary,
    WorkerInfo,
)

Conn = psycopg.Connection[Any]


class AdminMethods:
    """Schedules, queue policies and task listing (mixed into `teguh.Client`)."""

    if TYPE_CHECKING:
        dumps: C.JsonDumps
        loads: C.JsonLoads

        def _run(
            self,
            query: LiteralString,
            params: Sequence[Any],
            conn: Conn | None,
            *,
            prepare: bool | None = None,
        ) -> list[tuple[Any, ...]]: ...

        def _value(self, query: LiteralString, params: Sequence[Any], conn: Conn | None) -> Any: ...

    # -- schedules ------------------------------------------------------------------

    def create_schedule(
        self,
        queue: str,
        name: str,
        spec: str,
        task_name: str,
        params: Any = None,
        *,
        timezone: str | None = None,
        catch_up: Literal["latest", "none"] | None = None,
        headers: Mapping[str, Any] | None = None,
        retry_strategy: RetryStrategy | None = None,
        max_attempts: int | None = None,
        priority: int | None = None,
        cancellation: Cancellation | None = None,
        conn: Conn | None = None,
    ) -> datetime:
        """Create the schedule ``name``, or update it (an upsert); return its next slot.

        ``spec`` is 5-field cron, a macro (``@daily``) or ``@every 90s``;
        ``timezone`` an IANA name (default UTC). Raises `teguh.InvalidArgument`
        naming a bad spec, timezone or option.
        """
        options = {
            key: value
            for key, value in (
                ("timezone", timezone),
                ("catch_up", catch_up),
                ("headers", headers),
                ("retry_strategy", retry_strategy),
                ("max_attempts", max_attempts),
                ("priority", priority),
                ("cancellation", cancellation),
            )
            if value is not None
        }
        args = (
            queue,
            name,
            spec,
            task_name,
            C.dump(self.dumps, params, "params"),
            C.dump(self.dumps, options, "options"),
        )
        value: datetime = self._value(Q.CREATE_SCHEDULE, args, conn)
        return value

    def drop_schedule(self, queue: str, name: str, *, conn: Conn | None = None) -> bool:
        """Drop a schedule; return whether it existed. Tasks it spawned stay."""
        return bool(self._value(Q.DROP_SCHEDULE, (queue, name), conn))

    def list_schedules(
        self, queue: str | None = None, *, conn: Conn | None = None
    ) -> list[ScheduleInfo]:
        """Return the schedules of one queue, or of all, by queue and name."""
        result = []
        for row in self._run(Q.LIST_SCHEDULES, (queue,), conn):
            values = list(row)
            for i in (5, 6):  # jsonb columns
                values[i] = C.load(self.loads, values[i])
            result.append(ScheduleInfo(*values))
        return result

    def pause_schedule(self, queue: str, name: str, *, conn: Conn | None = None) -> None:
        """Stop a schedule firing until `resume_schedule`; `TaskNotFound` if it is unknown."""
        self._run(Q.PAUSE_SCHEDULE, (queue, name), conn)

    def resume_schedule(self, queue: str, name: str, *, conn: Conn | None = None) -> None:
        """Fire a paused schedule again, from its next slot after now."""
        self._run(Q.RESUME_SCHEDULE, (queue, name), conn)

    # -- queue policies ---------------------------------------------------------------

    def set_queue_policy(
        self, queue: str, policy: Mapping[str, Any], *, conn: Conn | None = None
    ) -> dict[str, Any]:
        """Merge ``policy`` into the queue's policy (None resets a key); return the whole policy.

        Keys: ``retention`` (seconds), ``cleanup`` (``"delete"``/``"archive"``),
        ``paused``, ``default_max_attempts``, ``default_retry_strategy``,
        ``lease_timeout`` (see docs/queues.md).
        """
        text = C.dump(self.dumps, dict(policy), "policy")
        result: dict[str, Any] = C.load(
            self.loads, self._value(Q.SET_QUEUE_POLICY, (queue, text), conn)
        )
        return result

    def get_queue_policy(self, queue: str, *, conn: Conn | None = None) -> dict[str, Any]:
        """Return the queue's policy with every default filled in."""
        result: dict[str, Any] = C.load(self.loads, self._value(Q.GET_QUEUE_POLICY, (queue,), conn))
        return result

    # -- finding tasks ----------------------------------------------------------------

    def list_tasks(
        self,
        queue: str,
        *,
        state: TaskState | Sequence[TaskState] | None = None,
        task_name: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        finished_after: datetime | None = None,
        finished_before: datetime | None = None,
        after: UUID | None = None,
        limit: int = 100,
        conn: Conn | None = None,
    ) -> list[TaskSummary]:
        """Return a page of the queue's tasks, newest first.

        Pass the last ``task_id`` of a page as ``after`` for the next page;
        tasks spawned meanwhile never shift pages.
        """
        filters: dict[str, Any] = {}
        if state is not None:
            filters["state"] = state if isinstance(state, str) else list(state)
        if task_name is not None:
            filters["task_name"] = task_name
        for key, when in (
            ("created_after", created_after),
            ("created_before", created_before),
            ("finished_after", finished_after),
            ("finished_before", finished_before),
        ):
            if when is not None:
                filters[key] = C.aware(when, key).isoformat()
        text = C.dump(self.dumps, filters, "filters")
        result = []
        for row in self._run(Q.LIST_TASKS, (queue, text, after, limit), conn):
            values = list(row)
            for i in (6, 7, 12):  # jsonb columns
                values[i] = C.load(self.loads, values[i])
            result.append(TaskSummary(*values))
        return result

    def locate_task(self, task_id: UUID, *, conn: Conn | None = None) -> str | None:
        """Return the queue that holds the task (live or archived), or None."""
        value: str | None = self._value(Q.LOCATE_TASK, (task_id,), conn)
        return value

    # -- handing runs back, worker presence ---------------------------------------

    def release_run(
        self,
        queue: str,
        run_id: UUID,
        *,
        available_at: datetime | None = None,
        reason: Any = None,
        conn: Conn | None = None,
    ) -> None:
        """Hand a run back without using an attempt: the task is pending again.

        ``reason`` (JSON), when given, becomes the task's ``last_failure`` so
        that it says why it waits (e.g. no handler for it on this worker).
        """
        when = None if available_at is None else C.aware(available_at, "available_at")
        text = None if reason is None else C.dump(self.dumps, reason, "reason")
        self._run(Q.HAND_BACK_RUN, (queue, run_id, when, text), conn)

    def register_worker(
        self,
        worker_id: str,
        queues: Sequence[str],
        *,
        host: str | None = None,
        pid: int | None = None,
        ttl: C.Duration = 60,
        conn: Conn | None = None,
    ) -> None:
        """Register (or refresh) a worker serving ``queues``, present for ``ttl`` seconds."""
        secs = C.whole_seconds(ttl, "ttl")
        self._run(Q.REGISTER_WORKER, (worker_id, list(queues), host, pid, secs), conn)

    def worker_heartbeat(
        self, worker_id: str, *, ttl: C.Duration = 60, conn: Conn | None = None
    ) -> bool:
        """Renew a worker's presence; False when it is not registered (register again)."""
        secs = C.whole_seconds(ttl, "ttl")
        return bool(self._value(Q.WORKER_HEARTBEAT, (worker_id, secs), conn))

    def unregister_worker(self, worker_id: str, *, conn: Conn | None = None) -> bool:
        """Remove a worker's registration; return whether it was registered."""
        return bool(self._value(Q.UNREGISTER_WORKER, (worker_id,), conn))

    def list_workers(
        self, queue: str | None = None, *, conn: Conn | None = None
    ) -> list[WorkerInfo]:
        """Return the workers present, all or those serving ``queue``."""
        return [WorkerInfo(*row) for row in self._run(Q.LIST_WORKERS, (queue,), conn)]

    def queue_workers(
        self, queue: str | None = None, *, conn: Conn | None = None
    ) -> dict[str, int]:
        """Return how many present workers serve each queue (zero included)."""
        return {name: int(n) for name, n in self._run(Q.QUEUE_WORKERS, (queue,), conn)}
