"""Queues, tasks, maintenance, schedules and policies: the calls an
application or an operator makes."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from teguh import _queries as Q
from teguh._arguments import (
    aware,
    concurrency_key,
    dump,
    integer,
    load,
    optional_text,
    optional_uuid,
    text,
    uuid,
)
from teguh._engine_core import Conn, EngineCore
from teguh.records import (
    ConcurrencyLimit,
    QueueStats,
    ScheduleInfo,
    SpawnResult,
    TaskInfo,
    TaskResult,
    TaskSummary,
)


class AdminCalls(EngineCore):
    """The stored functions `Client` and the CLI call to inspect and manage."""

    # -- schema and queues ----------------------------------------------------------

    def version(self, conn: Conn) -> str:
        return str(self.value(conn, Q.VERSION))

    def create_queue(self, conn: Conn, queue: str) -> None:
        self.execute(conn, Q.CREATE_QUEUE, (text(queue, "queue"),))

    def drop_queue(self, conn: Conn, queue: str) -> None:
        self.execute(conn, Q.DROP_QUEUE, (text(queue, "queue"),))

    def list_queues(self, conn: Conn) -> list[str]:
        return [row[0] for row in self.execute(conn, Q.LIST_QUEUES, ()).fetchall()]

    # -- tasks ----------------------------------------------------------------------

    def cancel_task(self, conn: Conn, queue: str, task_id: Any) -> None:
        self.execute(conn, Q.CANCEL_TASK, (text(queue, "queue"), uuid(task_id, "task_id")))

    def retry_task(
        self, conn: Conn, queue: str, task_id: Any, options: Mapping[str, Any]
    ) -> SpawnResult:
        args = (
            text(queue, "queue"),
            uuid(task_id, "task_id"),
            dump(self.dumps, dict(options), "options"),
        )
        return self.records(conn, SpawnResult, Q.RETRY_TASK, args)[0]

    def get_task_result(self, conn: Conn, queue: str, task_id: Any) -> TaskResult | None:
        args = (text(queue, "queue"), uuid(task_id, "task_id"))
        found = self.records(conn, TaskResult, Q.GET_TASK_RESULT, args)
        return found[0] if found else None

    def get_task(self, conn: Conn, queue: str, task_id: Any) -> TaskInfo | None:
        args = (text(queue, "queue"), uuid(task_id, "task_id"))
        found = self.records(conn, TaskInfo, Q.GET_TASK, args)
        return found[0] if found else None

    # -- time and maintenance -------------------------------------------------------

    def ticker(self, conn: Conn, queue: str | None) -> int:
        return int(self.value(conn, Q.TICKER, (optional_text(queue, "queue"),)) or 0)

    def current_time(self, conn: Conn) -> datetime:
        value: datetime = self.value(conn, Q.CURRENT_TIME)
        return value

    def cleanup_tasks(self, conn: Conn, queue: str, ttl: int, limit: int) -> int:
        args = (text(queue, "queue"), integer(ttl, "ttl", 0), integer(limit, "limit", 0))
        return int(self.value(conn, Q.CLEANUP_TASKS, args) or 0)

    def cleanup_all_queues(self, conn: Conn, queue: str | None) -> int:
        return int(self.value(conn, Q.CLEANUP_ALL_QUEUES, (optional_text(queue, "queue"),)) or 0)

    def queue_stats(self, conn: Conn, queue: str | None) -> list[QueueStats]:
        return self.records(conn, QueueStats, Q.QUEUE_STATS, (optional_text(queue, "queue"),))

    def start_cron(self, conn: Conn, run_as: str | None = None) -> None:
        self.execute(conn, Q.START_CRON, (optional_text(run_as, "run_as"),))

    def stop_cron(self, conn: Conn) -> None:
        self.execute(conn, Q.STOP_CRON, ())

    # -- schedules ------------------------------------------------------------------

    def create_schedule(
        self,
        conn: Conn,
        queue: str,
        name: str,
        spec: str,
        task_name: str,
        params: Any,
        options: Mapping[str, Any],
    ) -> datetime:
        args = (
            text(queue, "queue"),
            text(name, "name"),
            text(spec, "spec"),
            text(task_name, "task_name"),
            dump(self.dumps, params, "params"),
            dump(self.dumps, dict(options), "options"),
        )
        value: datetime = self.value(conn, Q.CREATE_SCHEDULE, args)
        return value

    def drop_schedule(self, conn: Conn, queue: str, name: str) -> bool:
        args = (text(queue, "queue"), text(name, "name"))
        return bool(self.value(conn, Q.DROP_SCHEDULE, args))

    def list_schedules(self, conn: Conn, queue: str | None) -> list[ScheduleInfo]:
        args = (optional_text(queue, "queue"),)
        return self.records(conn, ScheduleInfo, Q.LIST_SCHEDULES, args)

    def pause_schedule(self, conn: Conn, queue: str, name: str) -> None:
        self.execute(conn, Q.PAUSE_SCHEDULE, (text(queue, "queue"), text(name, "name")))

    def resume_schedule(self, conn: Conn, queue: str, name: str) -> None:
        self.execute(conn, Q.RESUME_SCHEDULE, (text(queue, "queue"), text(name, "name")))

    # -- queue policies and finding tasks -------------------------------------------

    def set_queue_policy(self, conn: Conn, queue: str, policy: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(policy, Mapping):
            raise TypeError(f"policy: expected a mapping, got {type(policy).__name__}")
        args = (text(queue, "queue"), dump(self.dumps, dict(policy), "policy"))
        result: dict[str, Any] = load(self.loads, self.value(conn, Q.SET_QUEUE_POLICY, args))
        return result

    def get_queue_policy(self, conn: Conn, queue: str) -> dict[str, Any]:
        args = (text(queue, "queue"),)
        result: dict[str, Any] = load(self.loads, self.value(conn, Q.GET_QUEUE_POLICY, args))
        return result

    def list_tasks(
        self,
        conn: Conn,
        queue: str,
        filters: Mapping[str, Any],
        after: Any,
        limit: int,
    ) -> list[TaskSummary]:
        args = (
            text(queue, "queue"),
            dump(self.dumps, dict(filters), "filters"),
            optional_uuid(after, "after"),
            integer(limit, "limit", 1),
        )
        return self.records(conn, TaskSummary, Q.LIST_TASKS, args)

    def locate_task(self, conn: Conn, task_id: Any) -> str | None:
        value: str | None = self.value(conn, Q.LOCATE_TASK, (uuid(task_id, "task_id"),))
        return value

    def release_run_at(
        self, conn: Conn, queue: str, run_id: Any, available_at: datetime | None, reason: Any
    ) -> None:
        """``release_run`` with every argument: pending again, saying why (no attempt used)."""
        args = (
            text(queue, "queue"),
            uuid(run_id, "run_id"),
            None if available_at is None else aware(available_at, "available_at"),
            None if reason is None else dump(self.dumps, reason, "reason"),
        )
        self.execute(conn, Q.RELEASE_RUN_AT, args)

    # -- concurrency limits ---------------------------------------------------------

    def set_concurrency_limit(self, conn: Conn, queue: str, key: str, limit: int | None) -> None:
        args = (
            text(queue, "queue"),
            concurrency_key(key, "key", pattern=True),
            None if limit is None else integer(limit, "limit", 0),
        )
        self.execute(conn, Q.SET_CONCURRENCY_LIMIT, args)

    def drop_concurrency_limit(self, conn: Conn, queue: str, key: str) -> bool:
        args = (text(queue, "queue"), concurrency_key(key, "key", pattern=True))
        return bool(self.value(conn, Q.DROP_CONCURRENCY_LIMIT, args))

    def list_concurrency_limits(self, conn: Conn, queue: str | None) -> list[ConcurrencyLimit]:
        args = (optional_text(queue, "queue"),)
        return self.records(conn, ConcurrencyLimit, Q.LIST_CONCURRENCY_LIMITS, args)
