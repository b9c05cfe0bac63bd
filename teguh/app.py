"""`App`: the application object holding tasks, hooks, middleware and the connection.

An app opens nothing when created, so it can live at module level, before a
fork, or in an app factory; its pool opens on first use (or `App.open`).
Everything an integration needs hangs on two seams: `App.before_spawn` hooks
see every spawn, and `App.use` middleware wraps every handler execution.
"""

from __future__ import annotations

import threading
import types
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    ParamSpec,
    Self,
    TypeVar,
    Unpack,
    overload,
)

import psycopg
from psycopg_pool import ConnectionPool

from teguh import _engine as E
from teguh.client import Client
from teguh.context import TaskContext
from teguh.records import ScheduleOptions, TaskOptions, WorkerOptions
from teguh.schedules import ScheduleRegistry, SyncReport, periodic_decorator, sync_schedules
from teguh.tasks import Task

if TYPE_CHECKING:
    from teguh.worker import NotFound, Worker

__all__ = ["App", "Middleware", "SpawnHook"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

SpawnHook = Callable[[str, Any, dict[str, Any]], "dict[str, Any] | None"]
"""``hook(task_name, params, options) -> options | None`` (see `App.before_spawn`)."""

Middleware = Callable[[TaskContext, Callable[[TaskContext], Any]], Any]
"""``middleware(ctx, call_next) -> result`` (see `App.use`)."""

_CLIENT_OPTIONS = frozenset(
    {"min_size", "max_size", "connect_kwargs", "json_dumps", "json_loads", "check_schema"}
)


class App:
    """A teguh application: its tasks, hooks, middleware and database.

    ``App("postgresql://...")`` (or ``App(pool=pool)`` for a pool you own)
    with the `Client` keywords (``min_size``, ``max_size``,
    ``connect_kwargs``, ``json_dumps``, ``json_loads``, ``check_schema``).
    Creating an app opens nothing; `client` opens the pool on first use.
    A malformed connection string raises `InvalidArgument` at once.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        pool: ConnectionPool[Any] | None = None,
        **client_options: Any,
    ) -> None:
        unknown = set(client_options) - _CLIENT_OPTIONS
        if unknown:
            raise TypeError(f"App() got unknown keyword(s): {', '.join(sorted(unknown))}")
        if dsn is not None and pool is not None:
            raise TypeError("pass dsn or pool, not both")
        self.dsn = E.conninfo(dsn) if dsn is not None else None
        self._pool = pool
        self._client_options = client_options
        self.engine = E.Engine(client_options.get("json_dumps"), client_options.get("json_loads"))
        self._client: Client | None = None
        self._lock = threading.Lock()
        self._tasks: dict[str, Task[Any, Any]] = {}
        self._hooks: list[SpawnHook] = []
        self.middleware: list[Middleware] = []
        self.schedules = ScheduleRegistry()

    def __repr__(self) -> str:
        return f"<teguh.App tasks={len(self._tasks)} open={self._client is not None}>"

    # -- connection -----------------------------------------------------------------

    @property
    def conninfo(self) -> str:
        """The connection string of the app's database (for connections outside its pool)."""
        if self._pool is not None:
            value = self._pool.conninfo
            return str(value() if callable(value) else value)
        return self.dsn or ""

    @property
    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for connections outside the pool (``connect_kwargs``)."""
        if self._pool is not None:
            value = self._pool.kwargs
            return dict((value() if callable(value) else value) or {})
        return dict(self._client_options.get("connect_kwargs") or {})

    @property
    def client(self) -> Client:
        """The low-level `Client` on the app's pool (opened on first use)."""
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    if self._pool is not None:
                        client = Client(pool=self._pool, **self._client_options)
                    else:
                        client = Client(self.dsn or "", **self._client_options)
                    client._app = self
                    self._client = client
                client = self._client
        return client

    def open(self, *, wait: float | None = None) -> Self:
        """Open the pool now; with ``wait``, block until it has connected (or raise)."""
        client = self.client
        if wait is not None:
            client.pool.wait(timeout=wait)
        return self

    def close(self) -> None:
        """Close the pool if the app opened it; a later use opens a new one."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- tasks ----------------------------------------------------------------------

    @overload
    def task(self, fn: Callable[Concatenate[TaskContext, P], R], /) -> Task[P, R]: ...

    @overload
    def task(
        self, **options: Unpack[TaskOptions]
    ) -> Callable[[Callable[Concatenate[TaskContext, P], R]], Task[P, R]]: ...

    def task(  # type: ignore[misc]  # mypy cannot match a method's generic overloads
        self,
        fn: Callable[Concatenate[TaskContext, P], R] | None = None,
        /,
        **options: Unpack[TaskOptions],
    ) -> Task[P, R] | Callable[[Callable[Concatenate[TaskContext, P], R]], Task[P, R]]:
        """Declare and register a task: ``@app.task`` or ``@app.task(queue="emails")``.

        The function takes the `TaskContext` first, then its params as keyword
        arguments; its return value (JSON) becomes the task's result. The
        options are `TaskOptions`: the name defaults to ``module.qualname`` (a
        function in ``__main__`` needs ``name=``); the queue to ``"default"``.
        ``max_attempts``, ``retry``, ``headers``, ``priority`` and
        ``cancellation`` are the defaults of every spawn, by the task object or
        by name through the app's client. ``retry_on`` / ``dont_retry_on``
        (exception classes): an exception not in ``retry_on``, or in
        ``dont_retry_on``, fails the task at once, as `teguh.PermanentError`
        always does.
        Mistakes (an ``async def``, no context parameter, a bad queue name, an
        unknown option, a name already taken) raise here.
        """

        def wrap(f: Callable[Concatenate[TaskContext, P], R]) -> Task[P, R]:
            declared = Task(f, app=self, **options)
            self._register(declared)
            return declared

        return wrap if fn is None else wrap(fn)

    def include(self, obj: Task[Any, Any] | types.ModuleType | Iterable[Any]) -> None:
        """Register a `Task`, every `Task` of a module, or an iterable of them.

        Tasks declared with ``@teguh.task`` are bound to this app (their
        ``spawn`` goes through it); tasks of another app are registered so this
        app's workers run them, and keep spawning through their own app.
        """
        if isinstance(obj, Task):
            found: list[Task[Any, Any]] = [obj]
        elif isinstance(obj, types.ModuleType):
            found = [v for v in vars(obj).values() if isinstance(v, Task)]
        elif isinstance(obj, Iterable) and not isinstance(obj, str | bytes | Mapping):
            found = list(obj)
            for item in found:
                if not isinstance(item, Task):
                    raise TypeError(f"include() takes teguh.Task objects, got {item!r}")
        else:
            raise TypeError(f"include() takes a teguh.Task, a module or a list, got {obj!r}")
        for item in found:
            self._register(item)
            if item.inert:
                item.app = self

    def _register(self, declared: Task[Any, Any]) -> None:
        with self._lock:
            existing = self._tasks.get(declared.name)
            if existing is not None and existing is not declared:
                raise ValueError(
                    f"two tasks named {declared.name!r}: {existing.fn!r} and {declared.fn!r}; "
                    "pass a distinct name="
                )
            self._tasks[declared.name] = declared

    # -- schedules ------------------------------------------------------------------

    def periodic(
        self,
        spec: str,
        *,
        name: str | None = None,
        params: Mapping[str, Any] | None = None,
        **options: Unpack[ScheduleOptions],
    ) -> Callable[[T], T]:
        """Declare a cron schedule of a task: stack ``@app.periodic(spec)`` above ``@app.task``.

        ``spec``: 5-field cron, ``@daily``-style macros or ``@every 90s``
        (docs/schedules.md). ``name`` defaults to the task's name (pass one
        per schedule to declare several of a task); ``params`` are the task's
        keyword arguments, checked against its signature here; the
        `ScheduleOptions` (``timezone``, IANA, default UTC; ``catch_up``; the
        spawn options) default to the engine's and the task's. A worker's
        `start()` syncs the declarations of its queues to the database
        (`teguh.schedules.sync_schedules`).
        """
        wrap: Callable[[T], T] = periodic_decorator(self, spec, name, params, options)
        return wrap

    def own_schedules(self, prefix: str) -> None:
        """Own schedule names starting with ``prefix``: a sync drops those no longer declared.

        Without it, a schedule removed from the code keeps firing (it is
        logged at each worker start): teguh never drops a schedule it cannot
        tell is the app's.
        """
        self.schedules.own(prefix)

    def sync_schedules(
        self, queues: Iterable[str] | None = None, *, conn: psycopg.Connection[Any] | None = None
    ) -> SyncReport:
        """Write the declared schedules (of ``queues``, default all) now; see `periodic`."""
        if conn is not None:
            return sync_schedules(self, conn, queues)
        with self.client.pool.connection() as c:
            self.client.ensure_schema(c)
            return sync_schedules(self, c, queues)

    @property
    def tasks(self) -> dict[str, Task[Any, Any]]:
        """The registered tasks, by name (a copy)."""
        return dict(self._tasks)

    # -- hooks ----------------------------------------------------------------------

    def before_spawn(self, hook: SpawnHook) -> SpawnHook:
        """Call ``hook(task_name, params, options)`` before every spawn; usable as a decorator.

        Every spawn path runs the hooks in registration order: task objects,
        ``app.client.spawn_task``/``spawn_tasks`` (``params`` is then the list)
        and ``ctx.spawn``. ``options`` is the dict of `SpawnOptions` about to
        be used; return a new dict to replace it, or None to keep it (in-place
        changes count too). An exception from a hook aborts the spawn.
        """
        if not callable(hook):
            raise TypeError(f"before_spawn takes a callable, got {hook!r}")
        self._hooks.append(hook)
        return hook

    def use(self, middleware: Middleware) -> Middleware:
        """Wrap every handler execution in ``middleware(ctx, call_next)``; usable as a decorator.

        Middleware is composed in registration order (the first registered is
        the outermost): it must call ``call_next(ctx)`` and return its result,
        or return a result of its own. Exceptions propagate as from a handler.
        """
        if not callable(middleware):
            raise TypeError(f"use takes a callable, got {middleware!r}")
        self.middleware.append(middleware)
        return middleware

    def _spawn_options(
        self, task_name: str, params: Any, options: dict[str, Any]
    ) -> dict[str, Any]:
        """Apply the task's declared defaults and the hooks to one spawn's options."""
        declared = self._tasks.get(task_name)
        if declared is not None:
            for key, value in declared.defaults.items():
                if options.get(key) is None:
                    options[key] = value
            for each in params if isinstance(params, list) else [params]:
                declared.check_params(each)
        for hook in self._hooks:
            replaced = hook(task_name, params, options)
            if replaced is not None:
                options = dict(replaced)
        return options

    # -- workers --------------------------------------------------------------------

    def worker(
        self,
        queues: Iterable[str] | Mapping[str, int] | None = None,
        *,
        concurrency: int = 10,
        not_found: NotFound = "hand_back",
        **options: Unpack[WorkerOptions],
    ) -> Worker:
        """Return a `teguh.Worker` for ``queues`` (default: the queues of the app's tasks).

        ``queues`` is a list of names, or ``{name: slots}`` to cap how many of
        the ``concurrency`` slots each queue may hold.
        """
        from teguh.worker import Worker

        return Worker(self, queues, concurrency=concurrency, not_found=not_found, **options)
