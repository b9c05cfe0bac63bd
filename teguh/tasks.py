"""App-level ``@teguh.task`` and ``@teguh.step`` decorators.

``@teguh.task`` turns ``def send_email(ctx, to: str, subject: str) -> dict``
into a `Task` whose ``.spawn(to=..., subject=...)`` is type-checked against
the function's own parameters (after ``ctx``) and carries the task's queue,
name and defaults. A worker registers it with ``worker.include(send_email)``
(or a whole module), and runs it as ``send_email(ctx, **params)``.

``@teguh.step`` makes a function called inside a handler run once per task:
its return value is checkpointed and returned on replay.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from teguh import _convert as C
from teguh.context import TaskContext, _get_current
from teguh.records import Cancellation, RetryStrategy, SpawnResult

if TYPE_CHECKING:
    import psycopg

    from teguh.client import Client

__all__ = ["Task", "get_default_client", "set_default_client", "step", "task"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

DEFAULT_QUEUE = "default"

_default_client: Client | None = None


def set_default_client(client: Client | None) -> None:
    """Set the client that `Task.spawn` uses when the task has none of its own."""
    global _default_client
    _default_client = client


def get_default_client() -> Client:
    """Return the client set by `set_default_client`; raise `RuntimeError` if none."""
    if _default_client is None:
        raise RuntimeError(
            "no teguh client: call teguh.set_default_client(client), or pass client= "
            "to @teguh.task or to Task.configure()"
        )
    return _default_client


class Task(Generic[P, R]):
    """A task function with its queue, name and spawn defaults.

    Calling the object calls the function. `spawn` and friends enqueue it;
    `configure` overrides options (or the client, or a ``conn`` to spawn
    inside your transaction) for one spawn.
    """

    def __init__(
        self,
        fn: Callable[Concatenate[TaskContext, P], R],
        *,
        name: str | None = None,
        queue: str = DEFAULT_QUEUE,
        max_attempts: int | None = None,
        retry: RetryStrategy | None = None,
        headers: Mapping[str, Any] | None = None,
        priority: int | None = None,
        cancellation: Cancellation | None = None,
        client: Client | None = None,
    ) -> None:
        self.fn = fn
        self.name = name or f"{fn.__module__}.{fn.__qualname__}"
        self.queue = queue
        self.client = client
        self._options: dict[str, Any] = {
            "max_attempts": max_attempts,
            "retry_strategy": retry,
            "headers": headers,
            "priority": priority,
            "cancellation": cancellation,
        }
        self._signature = inspect.signature(fn)
        if not self._signature.parameters:
            raise TypeError(f"task function {self.name!r} must take the TaskContext first")
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<teguh.Task {self.name!r} queue={self.queue!r}>"

    def __call__(self, ctx: TaskContext, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(ctx, *args, **kwargs)

    def handle(self, ctx: TaskContext) -> R:
        """Run the function for a claimed run: ``fn(ctx, **ctx.params)``."""
        params = ctx.params
        fn: Callable[..., R] = self.fn
        if params is None:
            return fn(ctx)
        if not isinstance(params, dict):
            raise TypeError(f"task {self.name!r} expects object params, got {params!r}")
        return fn(ctx, **params)

    def params(self, *args: P.args, **kwargs: P.kwargs) -> dict[str, Any]:
        """Return the JSON params for a call, checked against the function's signature."""
        bound = self._signature.bind(None, *args, **kwargs)
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

    def configure(
        self,
        *,
        client: Client | None = None,
        conn: psycopg.Connection[Any] | None = None,
        queue: str | None = None,
        **options: Any,
    ) -> _TaskCall[P]:
        """Return a spawner with these options; same keywords as `Client.spawn_task`."""
        merged = {k: v for k, v in self._options.items() if v is not None}
        merged.update(options)
        return _TaskCall(self, client, conn, queue or self.queue, merged)

    def spawn(self, *args: P.args, **kwargs: P.kwargs) -> SpawnResult:
        """Spawn the task with these arguments as params."""
        return self.configure().spawn(*args, **kwargs)

    def spawn_at(self, when: datetime, *args: P.args, **kwargs: P.kwargs) -> SpawnResult:
        """Spawn the task to run no earlier than ``when`` (timezone-aware)."""
        return self.configure(available_at=when).spawn(*args, **kwargs)

    def spawn_in(self, delay: C.Duration, *args: P.args, **kwargs: P.kwargs) -> SpawnResult:
        """Spawn the task to run after ``delay`` (seconds or timedelta; database clock)."""
        return self.configure(delay=delay).spawn(*args, **kwargs)

    def spawn_many(self, calls: Iterable[Mapping[str, Any]]) -> list[SpawnResult]:
        """Spawn one task per mapping of keyword arguments, atomically, in one round trip."""
        return self.configure().spawn_many(calls)


class _TaskCall(Generic[P]):
    """A `Task` with spawn options bound (see `Task.configure`)."""

    def __init__(
        self,
        task: Task[P, Any],
        client: Client | None,
        conn: psycopg.Connection[Any] | None,
        queue: str,
        options: dict[str, Any],
    ) -> None:
        self.task = task
        self.client = client
        self.conn = conn
        self.queue = queue
        self.options = options

    def _client(self) -> Client:
        return self.client or self.task.client or get_default_client()

    def spawn(self, *args: P.args, **kwargs: P.kwargs) -> SpawnResult:
        """Spawn the task with these arguments as params."""
        params = self.task.params(*args, **kwargs)
        return self._client().spawn_task(
            self.queue, self.task.name, params, conn=self.conn, **self.options
        )

    def spawn_many(self, calls: Iterable[Mapping[str, Any]]) -> list[SpawnResult]:
        """Spawn one task per mapping of keyword arguments, atomically."""
        to_params: Callable[..., dict[str, Any]] = self.task.params
        params = [to_params(**dict(call)) for call in calls]
        options = dict(self.options)
        options.pop("idempotency_key", None)
        return self._client().spawn_tasks(
            self.queue, self.task.name, params, conn=self.conn, **options
        )


@overload
def task(fn: Callable[Concatenate[TaskContext, P], R], /) -> Task[P, R]: ...


@overload
def task(
    *,
    name: str | None = None,
    queue: str = DEFAULT_QUEUE,
    max_attempts: int | None = None,
    retry: RetryStrategy | None = None,
    headers: Mapping[str, Any] | None = None,
    priority: int | None = None,
    cancellation: Cancellation | None = None,
    client: Client | None = None,
) -> Callable[[Callable[Concatenate[TaskContext, P], R]], Task[P, R]]: ...


def task(
    fn: Callable[Concatenate[TaskContext, P], R] | None = None,
    /,
    *,
    name: str | None = None,
    queue: str = DEFAULT_QUEUE,
    max_attempts: int | None = None,
    retry: RetryStrategy | None = None,
    headers: Mapping[str, Any] | None = None,
    priority: int | None = None,
    cancellation: Cancellation | None = None,
    client: Client | None = None,
) -> Task[P, R] | Callable[[Callable[Concatenate[TaskContext, P], R]], Task[P, R]]:
    """Declare a task: ``@teguh.task`` or ``@teguh.task(queue="emails", name="send")``.

    The function takes the `TaskContext` first, then its params as keyword
    arguments; its return value (JSON) becomes the task's result. The name
    defaults to ``module.qualname``; the queue to ``"default"``.
    """

    def wrap(f: Callable[Concatenate[TaskContext, P], R]) -> Task[P, R]:
        return Task(
            f,
            name=name,
            queue=queue,
            max_attempts=max_attempts,
            retry=retry,
            headers=headers,
            priority=priority,
            cancellation=cancellation,
            client=client,
        )

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
