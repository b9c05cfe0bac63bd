"""`Client`: a connection pool and one method per stored function.

Every method takes an optional ``conn=``: the call then runs on that
connection, inside whatever transaction it has open, and teguh neither
commits nor rolls back. A task spawned that way exists only if the caller's
transaction commits, and its NOTIFY is delivered on commit. Without ``conn=``
the call takes a connection from the client's pool (autocommit).

The calls themselves, their argument checks and row decoding live in
`teguh._engine`; this class adds the pool, the schema check and, for a
client that belongs to a `teguh.App`, the app's spawn hooks and task defaults.
The worker protocol (claims, leases, checkpoints, events) is mixed in from
`teguh._runs`, schedules, queue policies and task listing from `teguh._admin`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, Unpack
from uuid import UUID

import psycopg
from psycopg_pool import ConnectionPool

from teguh import _engine as E
from teguh import schema
from teguh._admin import AdminMethods
from teguh._pool import check_connection
from teguh._runs import RunMethods
from teguh.errors import TaskNotFound
from teguh.records import (
    QueueStats,
    SpawnOptions,
    SpawnResult,
    TaskInfo,
    TaskResult,
)

if TYPE_CHECKING:
    from teguh.app import App

__all__ = ["Client"]

logger = logging.getLogger("teguh.client")

Conn = psycopg.Connection[Any]


class _Empty:
    def __repr__(self) -> str:
        return "{}"


_EMPTY: Any = _Empty()
_TERMINAL = frozenset({"completed", "failed", "cancelled"})


class Client(RunMethods, AdminMethods):
    """Talk to teguh in one PostgreSQL database.

    ``Client("postgresql://...")`` opens (and `close` closes) a
    `psycopg_pool.ConnectionPool` of autocommit connections that are checked
    before use without a round trip (so the first call after a server restart
    does not fail; see `teguh._pool`); a
    malformed connection string raises `InvalidArgument` at once.
    ``Client(pool)`` or ``Client(pool=pool)`` uses yours and never closes it.
    ``json_dumps``/``json_loads`` replace the stdlib `json` for params,
    results, checkpoints and payloads.

    The schema version is checked once, on the first call that needs the
    database (`teguh.SchemaMissing` / `teguh.SchemaOutdated` say what to run);
    pass ``check_schema=False`` to skip it. Thread-safe: share one client.
    Applications usually get theirs from `teguh.App` (``app.client``).
    """

    def __init__(
        self,
        conninfo: str | ConnectionPool[Any] | None = None,
        *,
        pool: ConnectionPool[Any] | None = None,
        min_size: int = 1,
        max_size: int = 10,
        connect_kwargs: Mapping[str, Any] | None = None,
        json_dumps: E.JsonDumps | None = None,
        json_loads: E.JsonLoads | None = None,
        check_schema: bool = True,
    ) -> None:
        if isinstance(conninfo, ConnectionPool):
            if pool is not None:
                raise TypeError("pass the pool once")
            pool, conninfo = conninfo, None
        self.engine = E.Engine(json_dumps, json_loads)
        self.dumps: E.JsonDumps = self.engine.dumps
        self.loads: E.JsonLoads = self.engine.loads
        self._app: App | None = None
        self._check_schema = check_schema
        self._schema_ok = not check_schema
        self._schema_lock = threading.Lock()
        if pool is not None:
            self.pool: ConnectionPool[Any] = pool
            self._owns_pool = False
            self._conninfo: Any = pool.conninfo
            self._connect_kwargs: Any = pool.kwargs
        else:
            self._conninfo = E.conninfo(conninfo or "")
            self._connect_kwargs = {"autocommit": True, **(connect_kwargs or {})}
            self.pool = ConnectionPool(
                self._conninfo,
                min_size=min_size,
                max_size=max_size,
                kwargs=self._connect_kwargs,
                check=check_connection,
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

    def ensure_schema(self, conn: Conn | None = None) -> None:
        """Check the schema version once per client (see `check_schema`)."""
        if self._schema_ok:
            return
        with self._schema_lock:
            if not self._schema_ok:
                self.check_schema(conn=conn)

    def version(self, *, conn: Conn | None = None) -> str:
        """Return ``teguh.version()``, the installed schema version."""
        with self._checked(conn) as c:
            return self.engine.version(c)

    # -- queues -------------------------------------------------------------------

    def create_queue(self, queue: str, *, conn: Conn | None = None) -> None:
        """Create a queue; a no-op if it exists."""
        with self._checked(conn) as c:
            self.engine.create_queue(c, queue)

    def drop_queue(self, queue: str, *, conn: Conn | None = None) -> None:
        """Drop a queue and all its data; a no-op if absent."""
        with self._checked(conn) as c:
            self.engine.drop_queue(c, queue)

    def list_queues(self, *, conn: Conn | None = None) -> list[str]:
        """Return the queue names, in name order."""
        with self._checked(conn) as c:
            return self.engine.list_queues(c)

    # -- spawning -----------------------------------------------------------------

    def spawn_task(
        self,
        queue: str,
        task_name: str,
        params: Any = _EMPTY,
        *,
        conn: Conn | None = None,
        **options: Unpack[SpawnOptions],
    ) -> SpawnResult:
        """Spawn a task; return its id and first run.

        ``params`` (default ``{}``) must be JSON-serializable, or `TypeError`
        is raised before anything is written. ``options`` are `SpawnOptions`;
        on a client of a `teguh.App`, the options the app's task of that name
        was declared with apply unless given here, then the app's
        ``before_spawn`` hooks run. With ``idempotency_key``, a second spawn
        returns the existing task with ``created=False``.
        """
        value = {} if params is _EMPTY else params
        opts: dict[str, Any] = dict(options)
        if self._app is not None:
            opts = self._app._spawn_options(task_name, value, opts)
        with self._checked(conn) as c:
            return self.engine.spawn_task(c, queue, task_name, value, opts)

    def spawn_tasks(
        self,
        queue: str,
        task_name: str,
        params: Iterable[Any],
        *,
        idempotency_keys: Sequence[str | None] | None = None,
        conn: Conn | None = None,
        **options: Unpack[SpawnOptions],
    ) -> list[SpawnResult]:
        """Spawn one task per element of ``params``, atomically, in one round trip.

        Results come back in input order. ``idempotency_keys``, when given,
        has one key (or None) per task. ``params`` is a list (a str or bytes
        is refused, not spawned once per character). Hooks see the list.
        """
        if isinstance(params, str | bytes | bytearray | Mapping) or not isinstance(
            params, Iterable
        ):
            raise TypeError(
                f"params must be a list with one element per task, got {type(params).__name__}"
            )
        values = list(params)
        opts: dict[str, Any] = dict(options)
        if self._app is not None:
            opts = self._app._spawn_options(task_name, values, opts)
        if idempotency_keys is not None:
            if isinstance(idempotency_keys, str | bytes):
                raise TypeError("idempotency_keys must be a list with one key per task")
            opts["idempotency_keys"] = list(idempotency_keys)
        with self._checked(conn) as c:
            return self.engine.spawn_tasks(c, queue, task_name, values, opts)

    # -- tasks --------------------------------------------------------------------

    def cancel_task(self, queue: str, task_id: UUID, *, conn: Conn | None = None) -> None:
        """Cancel a task; a running handler learns it on its next teguh call."""
        with self._checked(conn) as c:
            self.engine.cancel_task(c, queue, task_id)

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
            options["max_attempts"] = E.integer(max_attempts, "max_attempts")
        with self._checked(conn) as c:
            return self.engine.retry_task(c, queue, task_id, options)

    def get_task_result(
        self, queue: str, task_id: UUID, *, conn: Conn | None = None
    ) -> TaskResult | None:
        """Return the task's state and result, or None for an unknown task."""
        with self._checked(conn) as c:
            return self.engine.get_task_result(c, queue, task_id)

    def wait_result(
        self,
        queue: str,
        task_id: UUID,
        *,
        timeout: E.Duration | None = None,
        interval: E.Duration = 0.05,
    ) -> TaskResult:
        """Poll until the task is completed, failed or cancelled; return its result.

        Raises `TaskNotFound` for an unknown task and `TimeoutError` when
        ``timeout`` seconds pass first. Meant for scripts and tests: a web
        request should not block on a task.
        """
        pause = E.seconds(interval, "interval")
        deadline = None if timeout is None else time.monotonic() + E.seconds(timeout, "timeout")
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
        with self._checked(conn) as c:
            return self.engine.get_task(c, queue, task_id)

    # -- time and maintenance -----------------------------------------------------

    def ticker(self, queue: str | None = None, *, conn: Conn | None = None) -> int:
        """Recover expired leases and enforce cancellation deadlines; return the count."""
        with self._checked(conn) as c:
            return self.engine.ticker(c, queue)

    def next_wake_at(self, queue: str, *, conn: Conn | None = None) -> datetime | None:
        """Return the queue's earliest future due time, or None."""
        with self._checked(conn) as c:
            return self.engine.next_wake_at(c, queue)

    def current_time(self, *, conn: Conn | None = None) -> datetime:
        """Return ``teguh.current_time()`` (honours ``teguh.fake_now``)."""
        with self._checked(conn) as c:
            return self.engine.current_time(c)

    def cleanup_tasks(
        self, queue: str, ttl: E.Duration, limit: int = 10_000, *, conn: Conn | None = None
    ) -> int:
        """Delete up to ``limit`` tasks that finished more than ``ttl`` ago; return the count."""
        secs = E.whole_seconds(ttl, "ttl")
        with self._checked(conn) as c:
            return self.engine.cleanup_tasks(c, queue, secs, limit)

    def cleanup_all_queues(self, queue: str | None = None, *, conn: Conn | None = None) -> int:
        """Run each queue's retention cleanup (or one queue's); return the count."""
        with self._checked(conn) as c:
            return self.engine.cleanup_all_queues(c, queue)

    def queue_stats(
        self, queue: str | None = None, *, conn: Conn | None = None
    ) -> list[QueueStats]:
        """Return task counts by state, per queue (or for one queue)."""
        with self._checked(conn) as c:
            return self.engine.queue_stats(c, queue)

    def start_cron(self, run_as: str | None = None, *, conn: Conn | None = None) -> None:
        """Schedule the ticker and cleanup with pg_cron (``teguh.start()``).

        The jobs run as ``run_as``, by default the owner of schema ``teguh``;
        never as a superuser (see docs/security.md).
        """
        with self._checked(conn) as c:
            self.engine.start_cron(c, run_as)

    def stop_cron(self, *, conn: Conn | None = None) -> None:
        """Unschedule the pg_cron jobs (``teguh.stop()``)."""
        with self._checked(conn) as c:
            self.engine.stop_cron(c)

    # -- plumbing -----------------------------------------------------------------

    @contextmanager
    def _connection(self, conn: Conn | None) -> Iterator[Conn]:
        if conn is not None:
            yield conn
        else:
            with self.pool.connection() as c:
                yield c

    @contextmanager
    def _checked(self, conn: Conn | None) -> Iterator[Conn]:
        """Yield ``conn`` or a pooled connection, after the one-time schema check."""
        if not self._schema_ok:
            self.ensure_schema(conn)
        if conn is not None:
            yield conn
        else:
            with self.pool.connection() as c:
                yield c
