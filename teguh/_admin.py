"""`Client` methods for schedules, queue policies, finding tasks and worker presence.

One method per stored function (docs/schedules.md, docs/queues.md), kept in a
mixin of their own so that the client module stays small. Like the rest of
`Client`, each goes through `teguh._engine` (argument checks, row decoding by
column name, SQLSTATE mapping).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Unpack
from uuid import UUID

import psycopg

from teguh import _engine as E
from teguh.records import (
    ConcurrencyLimit,
    ScheduleInfo,
    ScheduleOptions,
    TaskState,
    TaskSummary,
    WorkerInfo,
)

Conn = psycopg.Connection[Any]


class AdminMethods:
    """Schedules, queue policies, task listing and workers (mixed into `teguh.Client`)."""

    if TYPE_CHECKING:
        engine: E.Engine

        def _checked(self, conn: Conn | None) -> AbstractContextManager[Conn]: ...

    # -- schedules ------------------------------------------------------------------

    def create_schedule(
        self,
        queue: str,
        name: str,
        spec: str,
        task_name: str,
        params: Any = None,
        *,
        conn: Conn | None = None,
        **options: Unpack[ScheduleOptions],
    ) -> datetime:
        """Create the schedule ``name``, or update it (an upsert); return its next slot.

        ``spec`` is 5-field cron, a macro (``@daily``) or ``@every 90s``; the
        options are `ScheduleOptions` (``timezone`` an IANA name, default UTC).
        Raises `teguh.InvalidArgument` naming a bad spec, timezone or option.
        """
        encoded = E.schedule_options(options)
        with self._checked(conn) as c:
            return self.engine.create_schedule(c, queue, name, spec, task_name, params, encoded)

    def drop_schedule(self, queue: str, name: str, *, conn: Conn | None = None) -> bool:
        """Drop a schedule; return whether it existed. Tasks it spawned stay."""
        with self._checked(conn) as c:
            return self.engine.drop_schedule(c, queue, name)

    def list_schedules(
        self, queue: str | None = None, *, conn: Conn | None = None
    ) -> list[ScheduleInfo]:
        """Return the schedules of one queue, or of all, by queue and name."""
        with self._checked(conn) as c:
            return self.engine.list_schedules(c, queue)

    def pause_schedule(self, queue: str, name: str, *, conn: Conn | None = None) -> None:
        """Stop a schedule firing until `resume_schedule`; `TaskNotFound` if it is unknown."""
        with self._checked(conn) as c:
            self.engine.pause_schedule(c, queue, name)

    def resume_schedule(self, queue: str, name: str, *, conn: Conn | None = None) -> None:
        """Fire a paused schedule again, from its next slot after now."""
        with self._checked(conn) as c:
            self.engine.resume_schedule(c, queue, name)

    # -- queue policies ---------------------------------------------------------------

    def set_queue_policy(
        self, queue: str, policy: Mapping[str, Any], *, conn: Conn | None = None
    ) -> dict[str, Any]:
        """Merge ``policy`` into the queue's policy (None resets a key); return the whole policy.

        Keys: ``retention`` (seconds), ``cleanup`` (``"delete"``/``"archive"``),
        ``paused``, ``default_max_attempts``, ``default_retry_strategy``,
        ``lease_timeout`` (see docs/queues.md).
        """
        with self._checked(conn) as c:
            return self.engine.set_queue_policy(c, queue, policy)

    def get_queue_policy(self, queue: str, *, conn: Conn | None = None) -> dict[str, Any]:
        """Return the queue's policy with every default filled in."""
        with self._checked(conn) as c:
            return self.engine.get_queue_policy(c, queue)

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
            filters["task_name"] = E.text(task_name, "task_name")
        for key, when in (
            ("created_after", created_after),
            ("created_before", created_before),
            ("finished_after", finished_after),
            ("finished_before", finished_before),
        ):
            if when is not None:
                filters[key] = E.aware(when, key).isoformat()
        with self._checked(conn) as c:
            return self.engine.list_tasks(c, queue, filters, after, limit)

    def iter_tasks(
        self, queue: str, *, page_size: int = 100, **filters: Any
    ) -> Iterator[TaskSummary]:
        """Yield every task matching ``filters`` (`list_tasks`' keywords), page by page."""
        after: UUID | None = None
        while True:
            page = self.list_tasks(queue, after=after, limit=page_size, **filters)
            yield from page
            if len(page) < page_size:
                return
            after = page[-1].task_id

    def locate_task(self, task_id: UUID, *, conn: Conn | None = None) -> str | None:
        """Return the queue that holds the task (live or archived), or None."""
        with self._checked(conn) as c:
            return self.engine.locate_task(c, task_id)

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
        with self._checked(conn) as c:
            self.engine.release_run_at(c, queue, run_id, available_at, reason)

    def register_worker(
        self,
        worker_id: str,
        queues: Sequence[str],
        *,
        host: str | None = None,
        pid: int | None = None,
        ttl: E.Duration = 60,
        conn: Conn | None = None,
    ) -> None:
        """Register (or refresh) a worker serving ``queues``, present for ``ttl`` seconds."""
        secs = E.whole_seconds(ttl, "ttl")
        with self._checked(conn) as c:
            self.engine.register_worker(c, worker_id, queues, host, pid, secs)

    def worker_heartbeat(
        self,
        worker_id: str,
        *,
        ttl: E.Duration = 60,
        hung_handlers: int | None = None,
        conn: Conn | None = None,
    ) -> bool:
        """Renew a worker's presence; False when it is not registered (register again).

        ``hung_handlers``, when given, records how many of its handlers hang
        after a cancellation or a lost lease (`WorkerInfo.hung_handlers`).
        """
        secs = E.whole_seconds(ttl, "ttl")
        with self._checked(conn) as c:
            return self.engine.worker_heartbeat(c, worker_id, secs, hung_handlers)

    def unregister_worker(self, worker_id: str, *, conn: Conn | None = None) -> bool:
        """Remove a worker's registration; return whether it was registered."""
        with self._checked(conn) as c:
            return self.engine.unregister_worker(c, worker_id)

    def list_workers(
        self, queue: str | None = None, *, conn: Conn | None = None
    ) -> list[WorkerInfo]:
        """Return the workers present, all or those serving ``queue``."""
        with self._checked(conn) as c:
            return self.engine.list_workers(c, queue)

    def queue_workers(
        self, queue: str | None = None, *, conn: Conn | None = None
    ) -> dict[str, int]:
        """Return how many present workers serve each queue (zero included)."""
        with self._checked(conn) as c:
            return self.engine.queue_workers(c, queue)

    # -- concurrency limits -----------------------------------------------------------

    def set_concurrency_limit(
        self, queue: str, key: str, limit: int | None, *, conn: Conn | None = None
    ) -> None:
        """Let at most ``limit`` runs of tasks spawned with ``concurrency_key=key`` run at once.

        Across every worker of ``queue``. A ``key`` ending in ``*`` limits each
        key with that prefix separately (``"tenant:*"``: every tenant); an
        exact key wins over a prefix, a longer prefix over a shorter one.
        ``limit`` 0 holds the key's tasks; None removes the limit (docs/queues.md).
        """
        with self._checked(conn) as c:
            self.engine.set_concurrency_limit(c, queue, key, limit)

    def drop_concurrency_limit(self, queue: str, key: str, *, conn: Conn | None = None) -> bool:
        """Remove the limit set on ``key`` (``*`` included); return whether there was one."""
        with self._checked(conn) as c:
            return self.engine.drop_concurrency_limit(c, queue, key)

    def list_concurrency_limits(
        self, queue: str | None = None, *, conn: Conn | None = None
    ) -> list[ConcurrencyLimit]:
        """Return the concurrency limits of one queue, or of all, with the runs under each."""
        with self._checked(conn) as c:
            return self.engine.list_concurrency_limits(c, queue)
