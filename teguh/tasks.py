"""Task objects: ``@app.task``, the inert ``@teguh.task``, spawning, and ``@teguh.step``.

``@app.task`` turns ``def send_email(ctx, to: str, subject: str) -> dict``
into a `Task` registered with the app: a worker runs it as
``send_email(ctx, **params)`` (the one handler convention), and
``send_email.spawn(to=..., subject=...)`` enqueues it, with the call checked
against the function's parameters (their names, not their annotations)
before anything is sent.

``@teguh.task`` declares the same thing without an app, for library modules;
``app.include(module_or_task)`` registers and binds it, like a blueprint.

``@teguh.step`` makes a function called inside a handler run once per task:
its return value is checkpointed and returned on replay.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, Unpack, overload

from teguh import _engine as E
from teguh.context import TaskContext, _get_current
from teguh.errors import InvalidArgument, PermanentError
from teguh.records import ExceptionClasses, SpawnOptions, SpawnResult, TaskOptions

if TYPE_CHECKING:
    import psycopg

    from teguh.app import App

__all__ = ["Task", "step", "task"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

DEFAULT_QUEUE = "default"
_QUEUE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_TASK_KEYS = frozenset(TaskOptions.__annotations__)
# The task options that are defaults of every spawn, by their SpawnOptions name.
_SPAWN_DEFAULTS = {
    key: key for key in TaskOptions.__annotations__ if key in SpawnOptions.__annotations__
} | {"retry": "retry_strategy"}


def check_queue_name(queue: Any, argument: str = "queue") -> str:
    """Return ``queue`` if it is a valid queue name (as ``teguh.create_queue`` checks)."""
    E.text(queue, argument)
    if not _QUEUE_NAME.match(queue) or len(queue.encode()) > 55:
        raise InvalidArgument(
            f"invalid queue name {queue!r}: lowercase letters, digits and underscores, "
            "starting with a letter, at most 55 bytes",
            argument=argument,
        )
    return str(queue)


def _check_handler(fn: Any, what: str) -> None:
    """Reject a handler the worker could not call as ``fn(ctx, ...)``, at declaration."""
    if not callable(fn):
        raise TypeError(f"{what} is not callable: {fn!r}")
    target = inspect.unwrap(fn)
    if inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target):
        raise TypeError(
            f"{what} is an async def function: teguh runs handlers on threads and would never "
            "await it; write a plain def (call asyncio.run() inside if you must)"
        )


def _exception_classes(
    value: ExceptionClasses | None, name: str
) -> tuple[type[BaseException], ...] | None:
    """Return ``value`` as a tuple of exception classes, or raise `TypeError` naming ``name``."""
    if value is None:
        return None
    classes = value if isinstance(value, tuple) else (value,)
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise TypeError(f"{name} must be an exception class or a tuple of them, got {cls!r}")
    return classes


def not_retried(exc: BaseException, task: Task[Any, Any] | None) -> str | None:
    """Return why a handler's ``exc`` fails its task now, whatever attempts are left, or None.

    `PermanentError` always does; so does an exception in the task's
    ``dont_retry_on``, or one not in its ``retry_on`` when that is given.
    """
    name = type(exc).__qualname__
    if isinstance(exc, PermanentError):
        return "PermanentError"
    if task is None:
        return None
    if task.dont_retry_on is not None and isinstance(exc, task.dont_retry_on):
        return f"{name} is in the task's dont_retry_on"
    if task.retry_on is not None and not isinstance(exc, task.retry_on):
        return f"{name} is not in the task's retry_on"
    return None


class Task(Generic[P, R]):
    """A task function with its name, queue and spawn defaults.

    Calling the object calls the function. `spawn` and friends enqueue it
    through the app it belongs to; `configure` binds options (or a ``conn``
    to spawn inside your transaction) for one spawn.
    """

    def __init__(
        self,
        fn: Callable[Concatenate[TaskContext, P], R],
        *,
        app: App | None = None,
        **options: Unpack[TaskOptions],
    ) -> None:
        # Every declaration path (@app.task, @teguh.task, the Flask extension)
        # comes through here: the one place that checks `TaskOptions`.
        _check_handler(fn, "a task function")
        given: dict[str, Any] = dict(options)
        E.unknown_options(given, _TASK_KEYS, "task")
        self.retry_on = _exception_classes(given.get("retry_on"), "retry_on")
        self.dont_retry_on = _exception_classes(given.get("dont_retry_on"), "dont_retry_on")
        name = given.get("name")
        if name is None:
            if fn.__module__ == "__main__":
                raise ValueError(
                    f"task function {fn.__qualname__!r} is defined in __main__, so its default "
                    "name would differ between the process that spawns it and the worker that "
                    "imports its module: pass name= to the decorator, or move it to a module"
                )
            name = f"{fn.__module__}.{fn.__qualname__}"
        self.fn = fn
        self.name = E.text(name, "name")
        if not name:
            raise InvalidArgument("a task name must not be empty", argument="name")
        self.queue = check_queue_name(given.get("queue", DEFAULT_QUEUE))
        self.defaults: dict[str, Any] = {
            spawn_key: given[key]
            for key, spawn_key in _SPAWN_DEFAULTS.items()
            if given.get(key) is not None
        }
        E.spawn_options(self.defaults)  # wrong types fail here, not at the first spawn
        self.app = app
        # declared without an app (@teguh.task): the app that includes it binds it
        self.inert = app is None
        self._signature = inspect.signature(fn)
        params = list(self._signature.parameters.values())
        if not params or params[0].kind not in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.VAR_POSITIONAL,
        ):
            raise TypeError(
                f"task function {self.name!r} must take the TaskContext as its first "
                "positional parameter: def fn(ctx, **params)"
            )
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<teguh.Task {self.name!r} queue={self.queue!r}>"

    def __call__(self, ctx: TaskContext, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(ctx, *args, **kwargs)

    def handle(self, ctx: TaskContext) -> R:
        """Run the function for a claimed run: ``fn(ctx, **ctx.params)``.

        Params that do not fit the function's signature raise `PermanentError`
        before it runs: every attempt would fail the same way.
        """
        params = ctx.params
        fn: Callable[..., R] = self.fn
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise PermanentError(
                f"task {self.name!r} takes a JSON object of keyword arguments as params, "
                f"got {type(params).__name__}"
            )
        try:
            self._signature.bind(ctx, **params)
        except TypeError as exc:
            raise PermanentError(
                f"task {self.name!r} cannot take params {sorted(params)}: {exc}"
            ) from None
        return fn(ctx, **params)

    def not_retried(self, exc: BaseException) -> str | None:
        """Return why ``exc`` must fail the task now (no retry), or None if it may retry."""
        return not_retried(exc, self)

    def params(self, *args: P.args, **kwargs: P.kwargs) -> dict[str, Any]:
        """Return the JSON params for a call, checked against the function's parameters."""
        try:
            bound = self._signature.bind(None, *args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"task {self.name!r}: {exc}") from None
        out: dict[str, Any] = {}
        for i, (key, value) in enumerate(bound.arguments.items()):
            if i == 0:
                continue  # the context
            kind = self._signature.parameters[key].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                if value:
                    raise TypeError(f"task {self.name!r}: *args cannot be sent as params")
            elif kind is inspect.Parameter.VAR_KEYWORD:
                out.update(value)
            else:
                out[key] = value
        return out

    def check_params(self, params: Any) -> None:
        """Raise `TypeError` if ``params`` (JSON) cannot be passed as ``fn(ctx, **params)``."""
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise TypeError(
                f"task {self.name!r} takes a JSON object of keyword arguments as params, "
                f"got {type(params).__name__}"
            )
        to_params: Callable[..., Any] = self.params
        to_params(**params)

    def configure(
        self,
        *,
        conn: psycopg.Connection[Any] | None = None,
        queue: str | None = None,
        **options: Unpack[SpawnOptions],
    ) -> TaskCall[P]:
        """Return a spawner with these `SpawnOptions`; ``conn`` spawns in your transaction."""
        E.spawn_options(options)
        return TaskCall(self, conn, check_queue_name(queue or self.queue), dict(options))

    def spawn(self, *args: P.args, **kwargs: P.kwargs) -> SpawnResult:
        """Spawn the task with these arguments as params."""
        return TaskCall(self, None, self.queue, {}).spawn(*args, **kwargs)

    def spawn_at(self, when: datetime, *args: P.args, **kwargs: P.kwargs) -> SpawnResult:
        """Spawn the task to run no earlier than ``when`` (timezone-aware)."""
        return self.configure(available_at=when).spawn(*args, **kwargs)

    def spawn_in(self, delay: E.Duration, *args: P.args, **kwargs: P.kwargs) -> SpawnResult:
        """Spawn the task to run after ``delay`` (seconds or timedelta; database clock)."""
        return self.configure(delay=delay).spawn(*args, **kwargs)

    def spawn_many(self, calls: Iterable[Mapping[str, Any]]) -> list[SpawnResult]:
        """Spawn one task per mapping of keyword arguments, atomically, in one round trip."""
        return TaskCall(self, None, self.queue, {}).spawn_many(calls)

    def bound_app(self) -> App:
        """Return the app this task spawns through; raise if it has none."""
        if self.app is None:
            raise RuntimeError(
                f"task {self.name!r} belongs to no app: declare it with @app.task, or "
                "register it with app.include() before spawning it"
            )
        return self.app


class TaskCall(Generic[P]):
    """A `Task` with spawn options bound (see `Task.configure`)."""

    def __init__(
        self,
        task: Task[P, Any],
        conn: psycopg.Connection[Any] | None,
        queue: str,
        options: dict[str, Any],
    ) -> None:
        self.task = task
        self.conn = conn
        self.queue = queue
        self.options = options

    def spawn(self, *args: P.args, **kwargs: P.kwargs) -> SpawnResult:
        """Spawn the task with these arguments as params."""
        params = self.task.params(*args, **kwargs)
        client = self.task.bound_app().client
        return client.spawn_task(self.queue, self.task.name, params, conn=self.conn, **self.options)

    def spawn_many(self, calls: Iterable[Mapping[str, Any]]) -> list[SpawnResult]:
        """Spawn one task per mapping of keyword arguments, atomically."""
        if isinstance(calls, str | bytes | Mapping):
            raise TypeError("spawn_many takes a list of mappings of keyword arguments")
        to_params: Callable[..., dict[str, Any]] = self.task.params
        params = []
        for call in calls:
            if not isinstance(call, Mapping):
                raise TypeError(f"spawn_many takes mappings of keyword arguments, got {call!r}")
            params.append(to_params(**call))
        options = dict(self.options)
        if options.pop("idempotency_key", None) is not None:
            raise TypeError("spawn_many cannot share one idempotency_key between tasks")
        client = self.task.bound_app().client
        return client.spawn_tasks(self.queue, self.task.name, params, conn=self.conn, **options)


@overload
def task(fn: Callable[Concatenate[TaskContext, P], R], /) -> Task[P, R]: ...


@overload
def task(
    **options: Unpack[TaskOptions],
) -> Callable[[Callable[Concatenate[TaskContext, P], R]], Task[P, R]]: ...


def task(
    fn: Callable[Concatenate[TaskContext, P], R] | None = None,
    /,
    **options: Unpack[TaskOptions],
) -> Task[P, R] | Callable[[Callable[Concatenate[TaskContext, P], R]], Task[P, R]]:
    """Declare an inert task, bound later by ``app.include()``: ``@teguh.task(queue="emails")``.

    Same `TaskOptions` and handler convention as ``@app.task``; until an app
    includes it, spawning it raises `RuntimeError`.
    """

    def wrap(f: Callable[Concatenate[TaskContext, P], R]) -> Task[P, R]:
        return Task(f, **options)

    return wrap if fn is None else wrap(fn)


@overload
def step(fn: Callable[P, T], /) -> Callable[P, T]: ...


@overload
def step(*, name: str | None = None) -> Callable[[Callable[P, T]], Callable[P, T]]: ...


def step(
    fn: Callable[P, T] | None = None, /, *, name: str | None = None
) -> Callable[P, T] | Callable[[Callable[P, T]], Callable[P, T]]:
    """Make a function a durable step: ``@teguh.step`` or ``@teguh.step(name="charge")``.

    Called inside a handler it runs through ``ctx.step`` (once per task; the
    checkpointed value on replay; repeated calls numbered ``name#2``, ...).
    Called outside a handler it simply runs. The name defaults to the
    function's qualified name.
    """

    def wrap(f: Callable[P, T]) -> Callable[P, T]:
        step_name = name or f.__qualname__

        @functools.wraps(f)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            ctx = _get_current()
            if ctx is None:
                return f(*args, **kwargs)
            return ctx.step(step_name, f, *args, **kwargs)

        return wrapper

    return wrap if fn is None else wrap(fn)
