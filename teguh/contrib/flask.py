"""The teguh Flask extension (``pip install teguh[flask]``).

    from flask import Flask
    from teguh.contrib.flask import Teguh

    teguh_ext = Teguh()

    @teguh_ext.task(queue="emails")
    def send_receipt(ctx, order_id: int) -> None: ...

    def create_app() -> Flask:
        app = Flask(__name__)
        app.config["TEGUH_DATABASE_URL"] = "postgresql://localhost/shop"
        teguh_ext.init_app(app)
        return app

Configuration (``app.config``):

- ``TEGUH_DATABASE_URL``: libpq URL; default: ``SQLALCHEMY_DATABASE_URI``
  (Flask-SQLAlchemy's) with its ``+driver`` removed.
- ``TEGUH_POOL_MIN_SIZE`` (1), ``TEGUH_POOL_MAX_SIZE`` (10): the spawn pool.
- ``TEGUH_QUEUES`` (the queues of the declared tasks, or ``["default"]``):
  created by ``flask teguh install``, served by workers.
- ``TEGUH_WORKER_CONCURRENCY`` (10), ``TEGUH_WORKER_OPTIONS`` (``{}``: more
  `teguh.Worker` keywords).
- ``TEGUH_WORKER_IN_PROCESS`` (False): run a worker on threads of each
  serving process, started on its first request (after any fork) and stopped
  at exit.

Every task execution runs inside ``app.app_context()`` (a middleware, the
first of `Teguh.use`'s chain). Commands: ``flask teguh install``,
``flask teguh worker``, ``flask teguh stats``. See docs/flask.md.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar, Unpack, overload

import click
from flask import Flask, current_app, has_app_context
from flask.cli import AppGroup

from teguh.app import App, Middleware
from teguh.client import Client
from teguh.context import TaskContext
from teguh.errors import QueueNotFound, SchemaError
from teguh.records import TaskOptions
from teguh.tasks import DEFAULT_QUEUE, Task
from teguh.worker import Worker

__all__ = ["Teguh"]

logger = logging.getLogger("teguh.contrib.flask")

P = ParamSpec("P")
R = TypeVar("R")

EXTENSION = "teguh"


class _State:
    """The extension's per-Flask-app state: its teguh `App` and in-process worker."""

    def __init__(self, ext: Teguh, app: Flask) -> None:
        self.ext = ext
        self.app = app
        self.lock = threading.Lock()
        self.start_lock = threading.Lock()
        self.teguh_app: App | None = None
        self.worker: Worker | None = None
        self.worker_pid: int | None = None

    def get_app(self) -> App:
        with self.lock:
            if self.teguh_app is None:
                config = self.app.config
                teguh_app = App(
                    database_url(self.app),
                    min_size=int(config["TEGUH_POOL_MIN_SIZE"]),
                    max_size=int(config["TEGUH_POOL_MAX_SIZE"]),
                )
                teguh_app.use(self.ext.app_context_middleware(self.app))
                for middleware in self.ext.middleware:
                    teguh_app.use(middleware)
                teguh_app.include(list(self.ext.tasks.values()))
                self.teguh_app = teguh_app
            return self.teguh_app

    def after_fork(self) -> None:
        # Threads and pool connections do not survive fork(): forget them.
        self.teguh_app = None
        self.worker = None
        self.worker_pid = None
        self.lock = threading.Lock()
        self.start_lock = threading.Lock()

    def close(self) -> None:
        self.stop_worker()
        with self.lock:
            teguh_app, self.teguh_app = self.teguh_app, None
        if teguh_app is not None:
            teguh_app.close()

    def start_worker(self) -> Worker:
        # One start at a time: a threaded server's concurrent first requests
        # must not start two workers.
        with self.start_lock:
            if self.worker is not None and self.worker_pid == os.getpid():
                return self.worker
            worker = self.ext.make_worker(self.app)
            worker.start()
            self.worker, self.worker_pid = worker, os.getpid()
        logger.info("teguh in-process worker started in pid %d", os.getpid())
        return worker

    def stop_worker(self, timeout: float | None = None) -> None:
        with self.start_lock:
            worker, self.worker = self.worker, None
            mine = self.worker_pid == os.getpid()
        if worker is not None and mine:
            worker.stop(timeout)


class Teguh:
    """teguh for a Flask app: configuration, tasks, spawns, workers and commands.

    ``Teguh(app)`` or ``Teguh()`` then `init_app` (application factories; one
    extension serves several apps). Declare tasks with `task` (the handler
    convention of ``@teguh.task``: ``fn(ctx, **params)``); spawning one inside
    a request or app context uses the current app's connection pool, and
    `teguh.contrib.sqlalchemy.spawn` writes it in Flask-SQLAlchemy's session
    transaction.
    """

    def __init__(self, app: Flask | None = None) -> None:
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.middleware: list[Middleware] = []
        self._states: list[_State] = []
        if app is not None:
            self.init_app(app)

    # -- setup ------------------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        """Read ``app.config``, register the ``flask teguh`` commands, arm the worker."""
        config = app.config
        config.setdefault("TEGUH_DATABASE_URL", None)
        config.setdefault("TEGUH_POOL_MIN_SIZE", 1)
        config.setdefault("TEGUH_POOL_MAX_SIZE", 10)
        config.setdefault("TEGUH_QUEUES", None)
        config.setdefault("TEGUH_WORKER_CONCURRENCY", 10)
        config.setdefault("TEGUH_WORKER_OPTIONS", {})
        config.setdefault("TEGUH_WORKER_IN_PROCESS", False)
        state = _State(self, app)
        app.extensions[EXTENSION] = state
        self._states.append(state)
        app.cli.add_command(_cli(self))
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=state.after_fork)
        atexit.register(state.close)
        if config["TEGUH_WORKER_IN_PROCESS"]:
            # On the first request, not now: a pre-forking server (gunicorn
            # --preload) or the debug reloader's watcher process also runs
            # this code, and neither must run a worker.
            @app.before_request
            def _start_teguh_worker() -> None:
                if state.worker is None or state.worker_pid != os.getpid():
                    state.start_worker()

    def _state(self, app: Flask | None = None) -> _State:
        app = app if app is not None else current_app._get_current_object()  # type: ignore[attr-defined]
        try:
            state: _State = app.extensions[EXTENSION]
        except KeyError:
            raise RuntimeError(
                "teguh is not initialised on this Flask app: call Teguh.init_app(app)"
            ) from None
        return state

    @property
    def app(self) -> App:
        """The current Flask app's `teguh.App` (created on first use; its pool opens lazily)."""
        return self._state().get_app()

    def app_for(self, app: Flask) -> App:
        """The `teguh.App` of Flask app ``app`` (outside an app context)."""
        return self._state(app).get_app()

    @property
    def client(self) -> Client:
        """The current Flask app's `teguh.Client` (``teguh_ext.app.client``)."""
        return self.app.client

    def client_for(self, app: Flask) -> Client:
        """The `teguh.Client` of Flask app ``app`` (outside an app context)."""
        return self.app_for(app).client

    def queues(self, app: Flask | None = None) -> list[str]:
        """The queues of ``app`` (``TEGUH_QUEUES``, else those of the declared tasks)."""
        app = app if app is not None else current_app
        configured = app.config.get("TEGUH_QUEUES")
        if configured:
            return list(dict.fromkeys(configured))
        return sorted({t.queue for t in self.tasks.values()}) or [DEFAULT_QUEUE]

    # -- tasks ------------------------------------------------------------------------

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
        """Declare a task run by this extension's workers (``@teguh_ext.task(queue=...)``).

        The options are `TaskOptions`, as for ``@teguh.task``. The task spawns
        through the current Flask app's client.
        """

        def wrap(f: Callable[Concatenate[TaskContext, P], R]) -> Task[P, R]:
            declared: Task[P, R] = _FlaskTask(self, f, **options)
            self.include(declared)
            return declared

        return wrap if fn is None else wrap(fn)

    def include(self, task: Task[Any, Any]) -> None:
        """Run ``task`` (declared elsewhere, say with ``@teguh.task``) on these workers."""
        existing = self.tasks.get(task.name)
        if existing is not None and existing is not task:
            raise ValueError(f"two tasks named {task.name!r}; pass a distinct name=")
        self.tasks[task.name] = task
        for state in self._states:
            if state.teguh_app is not None:
                state.teguh_app.include(task)

    def use(self, middleware: Middleware) -> Middleware:
        """Wrap every task execution in ``middleware(ctx, call_next)`` (inside the app context)."""
        if not callable(middleware):
            raise TypeError(f"use takes a callable, got {middleware!r}")
        self.middleware.append(middleware)
        for state in self._states:
            if state.teguh_app is not None:
                state.teguh_app.use(middleware)
        return middleware

    # -- workers ----------------------------------------------------------------------

    def app_context_middleware(self, app: Flask) -> Middleware:
        """Return the middleware that runs each execution inside ``app.app_context()``."""

        def in_app_context(ctx: TaskContext, call_next: Callable[[TaskContext], Any]) -> Any:
            with app.app_context():
                return call_next(ctx)

        return in_app_context

    def make_worker(
        self,
        app: Flask,
        queues: Sequence[str] | None = None,
        *,
        concurrency: int | None = None,
    ) -> Worker:
        """Return a (not started) `teguh.Worker` for ``app``'s queues and the declared tasks."""
        config = app.config
        return self.app_for(app).worker(
            list(queues or self.queues(app)),
            concurrency=int(concurrency or config["TEGUH_WORKER_CONCURRENCY"]),
            **dict(config["TEGUH_WORKER_OPTIONS"]),
        )

    def start_worker(self, app: Flask | None = None) -> Worker:
        """Start the in-process worker of ``app`` now (e.g. in gunicorn's ``post_fork``)."""
        return self._state(app).start_worker()

    def stop_worker(self, app: Flask | None = None, timeout: float | None = None) -> None:
        """Stop the in-process worker of ``app`` (also done at exit)."""
        self._state(app).stop_worker(timeout)


class _FlaskTask(Task[P, R]):
    """A task that spawns through the current Flask app's teguh `App`."""

    def __init__(
        self,
        ext: Teguh,
        fn: Callable[Concatenate[TaskContext, P], R],
        **options: Unpack[TaskOptions],
    ) -> None:
        super().__init__(fn, **options)
        self._ext = ext

    def bound_app(self) -> App:
        if has_app_context() and EXTENSION in current_app.extensions:
            return self._ext.app
        return super().bound_app()  # outside a request: the app that included it last


def database_url(app: Flask) -> str:
    """Return the libpq URL teguh uses for ``app``."""
    config = app.config
    url = config.get("TEGUH_DATABASE_URL")
    if url:
        return str(url)
    uri = config.get("SQLALCHEMY_DATABASE_URI")
    if uri:
        from sqlalchemy.engine import make_url

        parsed = make_url(str(uri))
        if parsed.get_backend_name() != "postgresql":
            raise RuntimeError(
                f"SQLALCHEMY_DATABASE_URI uses {parsed.get_backend_name()}; teguh needs "
                "PostgreSQL: set TEGUH_DATABASE_URL"
            )
        return parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    raise RuntimeError("set TEGUH_DATABASE_URL (or SQLALCHEMY_DATABASE_URI) in app.config")


# -- flask teguh ... ---------------------------------------------------------------------


def _cli(ext: Teguh) -> AppGroup:
    group = AppGroup(EXTENSION, help="teguh: install the schema, run workers, show stats.")

    @group.command("install")
    def install() -> None:
        """Install or upgrade the schema and create the app's queues."""
        client = ext.client
        applied = client.migrate()
        existing = set(client.list_queues())
        for queue in ext.queues():
            if queue not in existing:
                client.create_queue(queue)
                click.echo(f"created queue {queue}")
        click.echo(f"teguh schema ready ({len(applied)} migration(s) applied)")

    @group.command("worker")
    @click.option("-q", "--queue", "queues", multiple=True, help="queue(s) to serve")
    @click.option("-c", "--concurrency", type=int, help="handlers run at once, all queues together")
    def worker(queues: tuple[str, ...], concurrency: int | None) -> None:
        """Run a worker until SIGINT/SIGTERM (finishes running tasks first)."""
        app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
        names = [q.strip() for v in queues for q in v.split(",") if q.strip()]
        group = ext.make_worker(app, names or None, concurrency=concurrency)
        click.echo(f"teguh worker: queues {', '.join(group.queues)}")
        try:
            code = group.run()
        except (SchemaError, QueueNotFound) as exc:
            raise click.ClickException(f"{exc} (run `flask teguh install`)") from exc
        click.echo("teguh worker: stopped")
        if code:
            raise SystemExit(code)  # a second signal handed running tasks back

    @group.command("stats")
    def stats() -> None:
        """Show each queue's tasks by state and the workers present that serve it."""
        click.echo(
            f"{'queue':<20} {'pending':>8} {'running':>8} {'sleeping':>8} "
            f"{'completed':>9} {'failed':>7} {'cancelled':>9} {'workers':>7}"
        )
        for row in ext.client.queue_stats():
            click.echo(
                f"{row.queue_name:<20} {row.pending:>8} {row.running:>8} {row.sleeping:>8} "
                f"{row.completed:>9} {row.failed:>7} {row.cancelled:>9} {row.workers:>7}"
            )

    return group
