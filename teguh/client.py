"""`Client`: a connection pool and one method per stored function.

Every method takes an optional ``conn=``: the call then runs on that
connection, inside whatever transaction it has open, and teguh neither
commits nor rolls back. A task spawned that way exists only if the caller's
transaction commits, and its NOTIFY is delivered on commit. Without ``conn=``
the call takes a connection from the client's pool (autocommit).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, LiteralString, Self
from uuid import UUID

import psycopg
from psycopg_pool import ConnectionPool

from teguh import _convert as C
from teguh import _queries as Q
from teguh import schema
from teguh._admin import AdminMethods
from teguh.errors import TaskNotFound, translate
from teguh.records import (
    Cancellation,
    ClaimStatus,
    QueueStats,
    RetryStrategy,
    Run,
    SpawnResult,
    TaskInfo,
    TaskResult,
    WaitResult,
)

if TYPE_CHECKING:
    from teguh.worker import Worker

__all__ = ["Client"]

logger = logging.getLogger("teguh.client")

Conn = psycopg.Connection[Any]


class _Empty:
    def __repr__(self) -> str:
        return "{}"


_EMPTY: Any = _Empty()
_TERMINAL = frozenset({"completed", "failed", "cancelled"})


class Client(AdminMethods):
    """Talk to teguh in one PostgreSQL database.

    ``Client("postgresql://...")`` opens (and `close` closes) a
    `psycopg_pool.ConnectionPool` of autocommit connections;
    ``Client(pool)`` or ``Client(pool=pool)`` uses yours and never closes it.
    ``json_dumps``/``json_loads`` replace the stdlib `json` for params,
    results, checkpoints and payloads.

    The schema version is checked once, on the first call that needs the
    database (`teguh.SchemaMissing` / `teguh.SchemaOutdated` say what to run);
    pass ``check_schema=False`` to skip it. Thread-safe: share one client.
    """

    def __init__(
        self,
        conninfo: str | ConnectionPool[Any] | None = None,
        *,
        pool: ConnectionPool[Any] | None = None,
        min_size: int = 1,
        max_size: int = 10,
        connect_kwargs: Mapping[str, Any] | None = None,
        json_dumps: C.JsonDumps | None = None,
        json_loads: C.JsonLoads | None = None,
        check_schema: bool = True,
    ) -> None:
        if isinstance(conninfo, ConnectionPool):
            if pool is not None:
                raise TypeError("pass the pool once")
            pool, conninfo = conninfo, None
        self.dumps: C.JsonDumps = json_dumps or C.default_dumps
        self.loads: C.JsonLoads = json_loads or C.default_loads
        self._check_schema = check_schema
        self._schema_ok = not check_schema
        self._schema_lock = threading.Lock()
        if pool is not None:
            self.pool: ConnectionPool[Any] = pool
            self._owns_pool = False
            self._conninfo: Any = pool.conninfo
            self._connect_kwargs: Any = pool.kwargs
        else:
            self._conninfo = conninfo or ""
            self._connect_kwargs = {"autocommit": True, **(connect_kwargs or {})}
            self.pool = ConnectionPool(
                self._conninfo,
                min_size=min_size,
                max_size=max_size,
                kwargs=self._connect_kwargs,
                name="teguh-client",
                open=True,
            )
            self._owns_pool = True

    @property
    def conninfo(self) -> str:
        """The connection string new connections use (the pool's)."""
        value = self._conninfo() if callable(self._conninfo) else self._conninfo
        return str(value or "")

    @property
    def connect_kwargs(self) -> dict[str, Any]:
        """The keyword arguments new connections use (the pool's)."""
        value = self._connect_kwargs() if callable(self._connect_kwargs) else self._connect_kwargs
        return dict(value or {})

    # -- lifecycle ----------------------------------------------------------------

    def close(self) -> None:
        """Close the pool if this client opened it."""
        if self._owns_pool:
            self.pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<teguh.Client pool={self.pool.name!r}>"

    # -- schema -------------------------------------------------------------------

    def install(self, *, conn: Conn | None = None) -> None:
        """Apply ``teguh.sql`` (idempotent), then mark the schema as checked."""
        with self._connection(conn) as c:
            schema.install(c)
        self._schema_ok = True

    def migrate(self, *, conn: Conn | None = None) -> list[str]:
        """Bring the schema to this library's version; return the files applied."""
        with self._connection(conn) as c:
            applied = schema.migrate(c)
        self._schema_ok = True
        return applied

    def check_schema(self, *, conn: Conn | None = None) -> str:
        """Return the installed schema version; raise if it is missing or another one."""
        with self._connection(conn) as c:
            version = schema.check(c)
        self._schema_ok = True
        return version

    def version(self, *, conn: Conn | None = None) -> str:
        """Return ``teguh.version()``, the installed schema version."""
        return str(self._value(Q.VERSION, (), conn))

    # -- queues -------------------------------------------------------------------

    def create_queue(self, queue: str, *, conn: Conn | None = None) -> None:
        """Create a queue; a no-op if it exists."""
        self._run(Q.CREATE_QUEUE, (queue,), conn)

    def drop_queue(self, queue: str, *, conn: Conn | None = None) -> None:
        """Drop a queue and all its data; a no-op if absent."""
        self._run(Q.DROP_QUEUE, (queue,), conn)

    def list_queues(self, *, conn: Conn | None = None) -> list[str]:
        """Return the queue names, in name order."""
        return [row[0] for row in self._run(Q.LIST_QUEUES, (), conn)]

    # -- spawning -----------------------------------------------------------------

    def spawn_task(
        self,
        queue: str,
        task_name: str,
        params: Any = _EMPTY,
        *,
        headers: Mapping[str, Any] | None = None,
        retry_strategy: RetryStrategy | None = None,
        max_attempts: int | None = None,
        cancellation: Cancellation | None = None,
        idempotency_key: str | None = None,
        available_at: datetime | None = None,
        delay: C.Duration | None = None,
        priority: int | None = None,
        conn: Conn | None = None,
    ) -> SpawnResult:
        """Spawn a task; return its id and first run.

        ``params`` (default ``{}``) must be JSON-serializable, or `TypeError`
        is raised before anything is written. ``available_at`` (aware
        datetime) or ``delay`` (seconds or timedelta, on the database clock)
        postpones the first attempt. With ``idempotency_key``, a second spawn
        returns the existing task with ``created=False``.
        """
        options = self._spawn_options(
            headers=headers,
            retry_strategy=retry_strategy,
            max_attempts=max_attempts,
            cancellation=cancellation,
            available_at=available_at,
            delay=delay,
            priority=priority,
        )
        if idempotency_key is not None:
            options["idempotency_key"] = idempotency_key
        params_json = C.dump(self.dumps, {} if params is _EMPTY else params, "params")
        options_json = C.dump(self.dumps, options, "options")
        row = self._run(Q.SPAWN_TASK, (queue, task_name, params_json, options_json), conn)[0]
        return SpawnResult(*row)

    def spawn_tasks(
        self,
        queue: str,
        task_name: str,
        params: Sequence[Any],
        *,
        idempotency_keys: Sequence[str | None] | None = None,
        headers: Mapping[str, Any] | None = None,
        retry_strategy: RetryStrategy | None = None,
        max_attempts: int | None = None,
        cancellation: Cancellation | None = None,
        available_at: datetime | None = None,
        delay: C.Duration | None = None,
        priority: int | None = None,
        conn: Conn | None = None,
    ) -> list[SpawnResult]:
        """Spawn one task per element of ``params``, atomically, in one round trip.

        Results come back in input order. ``idempotency_keys``, when given,
        has one key (or None) per task.
        """
        params = list(params)
        options = self._spawn_options(
            headers=headers,
            retry_strategy=retry_strategy,
            max_attempts=max_attempts,
            cancellation=cancellation,
            available_at=available_at,
            delay=delay,
            priority=priority,
        )
        if idempotency_keys is not None:
            keys = list(idempotency_keys)
            if len(keys) != len(params):
                raise ValueError(
                    f"idempotency_keys has {len(keys)} elements, params has {len(params)}"
                )
            options["idempotency_keys"] = keys
        if not params:
            return []
        params_json = C.dump(self.dumps, params, "params")
        options_json = C.dump(self.dumps, options, "options")
        rows = self._run(Q.SPAWN_TASKS, (queue, task_name, params_json, options_json), conn)
        return [SpawnResult(*row) for row in rows]

    @staticmethod
    def _spawn_options(
        *,
        headers: Mapping[str, Any] | None,
        retry_strategy: RetryStrategy | None,
        max_attempts: int | None,
        cancellation: Cancellation | None,
        available_at: datetime | None,
        delay: C.Duration | None,
        priority: int | None,
    ) -> dict[str, Any]:
        # Only the keys the caller gave: the engine owns the defaults.
        options: dict[str, Any] = {}
        if headers is not None:
            options["headers"] = dict(headers)
        if retry_strategy is not None:
            options["retry_strategy"] = dict(retry_strategy)
        if max_attempts is not None:
            options["max_attempts"] = max_attempts
        if cancellation is not None:
            options["cancellation"] = {
                key: C.whole_seconds(value, f"cancellation[{key!r}]")  # type: ignore[arg-type]
                for key, value in cancellation.items()
            }
        if available_at is not None and delay is not None:
            raise ValueError("pass available_at or delay, not both")
        if available_at is not None:
            options["available_at"] = C.aware(available_at, "available_at").isoformat()
        if delay is not None:
            secs = C.seconds(delay, "delay")
            options["delay_seconds"] = int(secs) if secs.is_integer() else secs
        if priority is not None:
            options["priority"] = priority
        return options

    # -- workers ------------------------------------------------------------------

    def claim_task(
        self,
        queue: str,
        worker_id: str,
        *,
        claim_timeout: C.Duration = 30,
        qty: int = 1,
        conn: Conn | None = None,
    ) -> list[Run]:
        """Lease up to ``qty`` ready runs for ``claim_timeout``; [] when none is ready."""
        timeout = C.whole_seconds(claim_timeout, "claim_timeout")
        rows = self._run(Q.CLAIM_TASK, (queue, worker_id, timeout, qty), conn, prepare=True)
        return [self.make_run(row) for row in rows]

    def make_run(self, row: Sequence[Any]) -> Run:
        """Build a `Run` from a row of `teguh._queries.CLAIM_TASK`."""
        loads = self.loads
        return Run(
            row[0],
            row[1],
            row[2],
            row[3],
            C.load(loads, row[4]),
            C.load(loads, row[5]),
            row[6],
            C.load(loads, row[7]),
            row[8],
            C.load(loads, row[9]),
        )

    def complete_run(
        self, queue: str, run_id: UUID, result: Any = None, *, conn: Conn | None = None
    ) -> None:
        """Complete the run's task with ``result`` (JSON-serializable)."""
        result_json = C.dump(self.dumps, result, "the task's result")
        self._run(Q.COMPLETE_RUN, (queue, run_id, result_json), conn, prepare=True)

    def fail_run(
        self,
        queue: str,
        run_id: UUID,
        reason: Any,
        *,
        retry_at: datetime | None = None,
        conn: Conn | None = None,
    ) -> None:
        """Fail the run with ``reason``; retry by the task's strategy (or at ``retry_at``)."""
        if retry_at is not None:
            C.aware(retry_at, "retry_at")
        reason_json = C.dump(self.dumps, reason, "reason")
        self._run(Q.FAIL_RUN, (queue, run_id, reason_json, retry_at), conn)

    def schedule_run(
        self, queue: str, run_id: UUID, wake_at: datetime, *, conn: Conn | None = None
    ) -> None:
        """Suspend the run until ``wake_at`` (a durable sleep; no attempt consumed)."""
        self._run(Q.SCHEDULE_RUN, (queue, run_id, C.aware(wake_at, "wake_at")), conn)

    def extend_claim(
        self, queue: str, run_id: UUID, extend_by: C.Duration, *, conn: Conn | None = None
    ) -> None:
        """Set the run's lease to now + ``extend_by``."""
        secs = C.whole_seconds(extend_by, "extend_by")
        self._run(Q.EXTEND_CLAIM, (queue, run_id, secs), conn)

    def extend_claims(
        self,
        queue: str,
        worker_id: str,
        run_ids: Sequence[UUID],
        extend_by: C.Duration,
        *,
        conn: Conn | None = None,
    ) -> list[ClaimStatus]:
        """Extend many leases at once; return the runs that are cancelled or lost."""
        secs = C.whole_seconds(extend_by, "extend_by")
        rows = self._run(Q.EXTEND_CLAIMS, (queue, worker_id, list(run_ids), secs), conn)
        return [ClaimStatus(*row) for row in rows]

    # -- steps and events ---------------------------------------------------------

    def set_checkpoint(
        self,
        queue: str,
        task_id: UUID,
        step_name: str,
        state: Any,
        owner_run: UUID,
        *,
        extend_claim_by: C.Duration | None = None,
        conn: Conn | None = None,
    ) -> None:
        """Record a step's result; ``owner_run`` must be the task's active run."""
        state_json = C.dump(self.dumps, state, f"the state of step {step_name!r}")
        extend = None if extend_claim_by is None else C.whole_seconds(extend_claim_by, "extend")
        params = (queue, task_id, step_name, state_json, owner_run, extend)
        self._run(Q.SET_CHECKPOINT, params, conn)

    def get_checkpoint(
        self, queue: str, task_id: UUID, name: str, *, conn: Conn | None = None
    ) -> Any:
        """Return one checkpoint's state (None when absent)."""
        return C.load(self.loads, self._value(Q.GET_CHECKPOINT, (queue, task_id, name), conn))

    def get_checkpoints(
        self, queue: str, task_id: UUID, run_id: UUID | None, *, conn: Conn | None = None
    ) -> dict[str, Any]:
        """Return all the task's checkpoints, by name.

        ``run_id`` is the caller's run: the engine then raises `TaskCancelled`
        if the task was cancelled. None reads them as an observer (e.g.
        ``teguh task show``), whatever the task's state.
        """
        rows = self._run(Q.GET_CHECKPOINTS, (queue, task_id, run_id), conn)
        return {name: C.load(self.loads, state) for name, state in rows}

    def await_event(
        self,
        queue: str,
        task_id: UUID,
        run_id: UUID,
        step_name: str,
        event_name: str,
        *,
        timeout: C.Duration | None = None,
        conn: Conn | None = None,
    ) -> WaitResult:
        """Wait for an event as step ``step_name`` (``teguh.wait_event``).

        When ``should_suspend`` is true the engine suspended the run: end the
        handler and record nothing else.
        """
        secs = None if timeout is None else C.whole_seconds(timeout, "timeout")
        params = (queue, task_id, run_id, step_name, event_name, secs)
        suspend, payload, timed_out = self._run(Q.WAIT_EVENT, params, conn)[0]
        return WaitResult(bool(suspend), C.load(self.loads, payload), bool(timed_out))

    def emit_event(
        self, queue: str, event_name: str, payload: Any = None, *, conn: Conn | None = None
    ) -> None:
        """Emit an event (first write wins) and wake the tasks waiting for it."""
        payload_json = C.dump(self.dumps, payload, "payload")
        self._run(Q.EMIT_EVENT, (queue, event_name, payload_json), conn)

    # -- tasks --------------------------------------------------------------------

    def cancel_task(self, queue: str, task_id: UUID, *, conn: Conn | None = None) -> None:
        """Cancel a task; a running handler learns it on its next teguh call."""
        self._run(Q.CANCEL_TASK, (queue, task_id), conn)

    def retry_task(
        self,
        queue: str,
        task_id: UUID,
        *,
        spawn_new: bool = False,
        max_attempts: int | None = None,
        conn: Conn | None = None,
    ) -> SpawnResult:
        """Retry a failed task (or, with ``spawn_new``, spawn a copy of any finished one)."""
        options: dict[str, Any] = {}
        if spawn_new:
            options["spawn_new"] = True
        if max_attempts is not None:
            options["max_attempts"] = max_attempts
        options_json = C.dump(self.dumps, options, "options")
        return SpawnResult(*self._run(Q.RETRY_TASK, (queue, task_id, options_json), conn)[0])

    def get_task_result(
        self, queue: str, task_id: UUID, *, conn: Conn | None = None
    ) -> TaskResult | None:
        """Return the task's state and result, or None for an unknown task."""
        rows = self._run(Q.GET_TASK_RESULT, (queue, task_id), conn)
        if not rows:
            return None
        tid, state, attempts, payload, cancelled_at = rows[0]
        return TaskResult(tid, state, attempts, C.load(self.loads, payload), cancelled_at)

    def wait_result(
        self,
        queue: str,
        task_id: UUID,
        *,
        timeout: C.Duration | None = None,
        interval: C.Duration = 0.05,
    ) -> TaskResult:
        """Poll until the task is completed, failed or cancelled; return its result.

        Raises `TaskNotFound` for an unknown task and `TimeoutError` when
        ``timeout`` seconds pass first. Meant for scripts and tests: a web
        request should not block on a task.
        """
        pause = C.seconds(interval, "interval")
        deadline = None if timeout is None else time.monotonic() + C.seconds(timeout, "timeout")
        while True:
            result = self.get_task_result(queue, task_id)
            if result is None:
                raise TaskNotFound(f"task {task_id} does not exist in queue {queue!r}")
            if result.state in _TERMINAL:
                return result
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"task {task_id} is still {result.state} after {timeout}s")
            time.sleep(pause)

    def get_task(self, queue: str, task_id: UUID, *, conn: Conn | None = None) -> TaskInfo | None:
        """Return everything about a task, or None for an unknown task."""
        rows = self._run(Q.GET_TASK, (queue, task_id), conn)
        if not rows:
            return None
        row = list(rows[0])
        for i in (6, 7, 8, 13, 14):  # jsonb columns
            row[i] = C.load(self.loads, row[i])
        return TaskInfo(*row)

    # -- time and maintenance -----------------------------------------------------

    def ticker(self, queue: str | None = None, *, conn: Conn | None = None) -> int:
        """Recover expired leases and enforce cancellation deadlines; return the count."""
        return int(self._value(Q.TICKER, (queue,), conn) or 0)

    def next_wake_at(self, queue: str, *, conn: Conn | None = None) -> datetime | None:
        """Return the queue's earliest future due time, or None."""
        value: datetime | None = self._value(Q.NEXT_WAKE_AT, (queue,), conn)
        return value

    def current_time(self, *, conn: Conn | None = None) -> datetime:
        """Return ``teguh.current_time()`` (honours ``teguh.fake_now``)."""
        value: datetime = self._value(Q.CURRENT_TIME, (), conn)
        return value

    def cleanup_tasks(
        self, queue: str, ttl: C.Duration, limit: int = 10_000, *, conn: Conn | None = None
    ) -> int:
        """Delete up to ``limit`` tasks that finished more than ``ttl`` ago; return the count."""
        secs = C.whole_seconds(ttl, "ttl")
        return int(self._value(Q.CLEANUP_TASKS, (queue, secs, limit), conn) or 0)

    def cleanup_all_queues(self, queue: str | None = None, *, conn: Conn | None = None) -> int:
        """Run each queue's retention cleanup (or one queue's); return the count."""
        return int(self._value(Q.CLEANUP_ALL_QUEUES, (queue,), conn) or 0)

    def queue_stats(
        self, queue: str | None = None, *, conn: Conn | None = None
    ) -> list[QueueStats]:
        """Return task counts by state, per queue (or for one queue)."""
        return [QueueStats(*row) for row in self._run(Q.QUEUE_STATS, (queue,), conn)]

    def start_cron(self, run_as: str | None = None, *, conn: Conn | None = None) -> None:
        """Schedule the ticker and cleanup with pg_cron (``teguh.start()``).

        The jobs run as ``run_as``, by default the owner of schema ``teguh``;
        never as a superuser (see docs/security.md).
        """
        if run_as is not None and not isinstance(run_as, str):
            raise TypeError(
                f"run_as must be a role name (str) or None, got {type(run_as).__name__}"
            )
        self._run(Q.START_CRON, (run_as,), conn)

    def stop_cron(self, *, conn: Conn | None = None) -> None:
        """Unschedule the pg_cron jobs (``teguh.stop()``)."""
        self._run(Q.STOP_CRON, (), conn)

    # -- workers ------------------------------------------------------------------

    def worker(self, queue: str, **kwargs: Any) -> Worker:
        """Return a `teguh.Worker` for ``queue`` (keyword arguments as for `Worker`)."""
        from teguh.worker import Worker

        return Worker(self, queue, **kwargs)

    # -- plumbing -----------------------------------------------------------------

    @contextmanager
    def _connection(self, conn: Conn | None) -> Iterator[Conn]:
        if conn is not None:
            yield conn
        else:
            with self.pool.connection() as c:
                yield c

    def ensure_schema(self, conn: Conn | None = None) -> None:
        """Check the schema version once per client (see `check_schema`)."""
        if self._schema_ok:
            return
        with self._schema_lock:
            if not self._schema_ok:
                self.check_schema(conn=conn)

    def _run(
        self,
        query: LiteralString,
        params: Sequence[Any],
        conn: Conn | None,
        *,
        prepare: bool | None = None,
    ) -> list[tuple[Any, ...]]:
        if not self._schema_ok:
            self.ensure_schema(conn)
        try:
            rows: list[tuple[Any, ...]]
            if conn is not None:
                rows = conn.execute(query, params, prepare=prepare).fetchall()
            else:
                with self.pool.connection() as c:
                    rows = c.execute(query, params, prepare=prepare).fetchall()
            return rows
        except psycopg.Error as exc:
            if (mapped := translate(exc)) is None:
                raise
            raise mapped from exc

    def _value(self, query: LiteralString, params: Sequence[Any], conn: Conn | None) -> Any:
        rows = self._run(query, params, conn)
        return rows[0][0] if rows else None
