"""`TaskContext`: what a handler gets, and the durable operations it offers.

A handler may run many times for one task (after a failure, a lost worker, a
sleep or an event wait); each time it replays from the top. Steps, sleeps and
event waits are checkpointed under deterministic names, so on replay they
return what they returned the first time instead of running again.

The checkpoints are loaded with one query on the first durable call of a run;
a handler that makes none costs no extra query.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, Unpack
from uuid import UUID

import psycopg
from psycopg_pool import ConnectionPool

from teguh import _engine as E
from teguh.errors import EventTimeout, LeaseLost, RunNotActive, Suspend, TaskCancelled
from teguh.records import Run, SpawnOptions, SpawnResult

if TYPE_CHECKING:
    from teguh.app import App
    from teguh.client import Client

__all__ = ["TaskContext", "current_context"]

logger = logging.getLogger("teguh.context")

P = ParamSpec("P")
T = TypeVar("T")

_current: contextvars.ContextVar[TaskContext] = contextvars.ContextVar("teguh_task_context")

CANCELLED = "cancelled"
LOST = "lost"
COMPLETING = "completing"


def current_context() -> TaskContext:
    """Return the `TaskContext` of the handler running in this thread.

    Raises `RuntimeError` outside a handler.
    """
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError("teguh.current_context() called outside a task handler") from None


def _get_current() -> TaskContext | None:
    return _current.get(None)


class RunState:
    """Mutable per-run flags shared by the worker's threads.

    ``status`` is None while the run is ours, else ``"cancelled"`` or
    ``"lost"``; once set the handler's next teguh call raises and the worker
    records nothing for the run. Set by the heartbeat thread, by the
    handler's own calls, or by `Worker.stop` when it releases the run.
    """

    __slots__ = ("_lock", "run", "status")

    def __init__(self, run: Run) -> None:
        self.run = run
        self.status: str | None = None
        self._lock = threading.Lock()

    def mark(self, status: str) -> bool:
        """Record that the run is no longer ours; return whether this reason won.

        The first reason wins: ``"completing"`` (its result is queued),
        ``"cancelled"``, ``"lost"``.
        """
        with self._lock:
            if self.status is None:
                self.status = status
                return True
            return False


class TaskContext:
    """The handler's view of its run: params, ids, and durable operations.

    Attributes: ``queue``, ``task_id``, ``run_id``, ``attempt`` (1-based;
    sleeps and event waits do not consume attempts), ``task_name``,
    ``params``, ``headers``, ``max_attempts``, ``retry_strategy``,
    ``wake_event`` and ``event_payload`` (set when this run resumed because of
    an event), ``worker_id``, ``app`` and ``client`` (the app's).

    A context belongs to one run and one thread; do not share it.
    """

    def __init__(
        self,
        app: App,
        queue: str,
        run: Run,
        *,
        pool: ConnectionPool[Any],
        state: RunState | None = None,
        claim_timeout: int = 30,
        worker_id: str | None = None,
    ) -> None:
        self.app = app
        self.queue = queue
        self.run = run
        self.task_id: UUID = run.task_id
        self.run_id: UUID = run.run_id
        self.attempt: int = run.attempt
        self.task_name: str = run.task_name
        self.params: Any = run.params
        self.headers: Any = run.headers
        self.max_attempts = run.max_attempts
        self.retry_strategy: Any = run.retry_strategy
        self.wake_event = run.wake_event
        self.event_payload: Any = run.event_payload
        self.worker_id = worker_id
        self._engine = app.engine
        self._pool = pool
        self._state = state if state is not None else RunState(run)
        self._claim_timeout = claim_timeout
        self._names: dict[str, int] = {}
        self._checkpoints: dict[str, Any] | None = None
        self._loaded_now: datetime | None = None

    def __repr__(self) -> str:
        return (
            f"<TaskContext {self.task_name!r} task_id={self.task_id} run_id={self.run_id} "
            f"attempt={self.attempt}>"
        )

    @property
    def client(self) -> Client:
        """The app's `Client` (opens the app's pool on first use)."""
        return self.app.client

    # -- state ----------------------------------------------------------------------

    @property
    def cancelled(self) -> bool:
        """Whether this worker already knows the task was cancelled (no query)."""
        return self._state.status == CANCELLED

    def check_cancelled(self) -> None:
        """Raise `TaskCancelled` if the task was cancelled (asks the database).

        Also extends the lease, like `heartbeat`.
        """
        self.heartbeat()

    def heartbeat(self, extend_by: E.Duration | None = None) -> None:
        """Extend the lease to now + ``extend_by`` (default: the claim timeout).

        Raises `TaskCancelled` if the task was cancelled, `LeaseLost` if the
        run was taken over. Call it from long loops that make no other teguh
        call; the worker's heartbeat thread already extends leases.
        """
        secs = self._claim_timeout if extend_by is None else E.whole_seconds(extend_by, "extend_by")
        with self._call() as conn:
            self._engine.extend_claim(conn, self.queue, self.run_id, secs)

    # -- steps ----------------------------------------------------------------------

    def step(self, name: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` once per task and checkpoint what it returns.

        On replay the checkpointed value is returned without calling ``fn``.
        A name used more than once in a run is numbered (``name``,
        ``name#2``, ...), in call order, so keep the order of steps
        deterministic. The value returned is the JSON round trip of ``fn``'s
        result (a tuple comes back as a list), the first time as on replay.
        A result that is not JSON-serializable raises `TypeError` and writes
        nothing.
        """
        key = self._step_name(name)
        checkpoints = self._load()
        if key in checkpoints:
            value: T = checkpoints[key]
            return value
        result = fn(*args, **kwargs)
        text = E.dump(self._engine.dumps, result, f"the result of step {key!r}")
        with self._call() as conn:
            self._engine.set_checkpoint(
                conn, self.queue, self.task_id, key, text, self.run_id, self._claim_timeout
            )
        value = self._engine.loads(text)
        checkpoints[key] = value
        return value

    # -- sleeping -------------------------------------------------------------------

    def sleep_for(self, duration: E.Duration, name: str | None = None) -> None:
        """Sleep durably for ``duration`` (seconds or timedelta).

        The first time, the wake time (database clock) is checkpointed and the
        run is suspended: `Suspend` propagates out of the handler and the task
        resumes at the wake time, replaying the handler, where this call
        returns. Sleeping does not consume attempts.
        """
        secs = E.seconds(duration, "duration")
        key = self._step_name(name or "$sleep")
        checkpoints = self._load()
        if key in checkpoints:
            self._resume_sleep(checkpoints[key])
            return
        if secs == 0:
            return
        with self._call() as conn, conn.transaction():
            self._suspend_until(conn, key, self._engine.sleep_wake_at(conn, secs))
        raise Suspend(f"sleeping for {secs}s")

    def sleep_until(self, when: datetime, name: str | None = None) -> None:
        """Sleep durably until ``when`` (a timezone-aware datetime); see `sleep_for`."""
        E.aware(when, "when")
        key = self._step_name(name or "$sleep")
        checkpoints = self._load()
        if key in checkpoints:
            self._resume_sleep(checkpoints[key])
            return
        with self._call() as conn, conn.transaction():
            if self._engine.is_due(conn, when):
                return
            self._suspend_until(conn, key, when)
        raise Suspend(f"sleeping until {when.isoformat()}")

    def _suspend_until(self, conn: psycopg.Connection[Any], key: str, wake_at: datetime) -> None:
        state = E.dump(self._engine.dumps, {"wake_at": wake_at.isoformat()}, "sleep")
        self._engine.set_checkpoint(conn, self.queue, self.task_id, key, state, self.run_id, None)
        self._engine.schedule_run(conn, self.queue, self.run_id, wake_at)

    def _resume_sleep(self, state: Any) -> None:
        wake_at = datetime.fromisoformat(state["wake_at"])
        if self._loaded_now is not None and self._loaded_now >= wake_at:
            return
        with self._call() as conn:
            if self._engine.is_due(conn, wake_at):
                return
            # Woken early (e.g. a released run): go back to sleep until the same time.
            self._engine.schedule_run(conn, self.queue, self.run_id, wake_at)
        raise Suspend(f"sleeping until {wake_at.isoformat()}")

    # -- events ---------------------------------------------------------------------

    def await_event(
        self, event_name: str, *, timeout: E.Duration | None = None, name: str | None = None
    ) -> Any:
        """Return the payload of event ``event_name``, waiting durably for it.

        Returns at once if the event was already emitted. Otherwise the run is
        suspended (`Suspend` propagates) and the handler replays when the
        event comes, where this call returns its payload. Raises
        `teguh.EventTimeout` when ``timeout`` (seconds or timedelta) elapsed
        first: a timeout is not a null payload.
        """
        key = self._step_name(name or f"$event:{event_name}")
        secs = None if timeout is None else E.whole_seconds(timeout, "timeout")
        with self._call() as conn:
            waited = self._engine.wait_event(
                conn, self.queue, self.task_id, self.run_id, key, event_name, secs
            )
        if waited.should_suspend:
            raise Suspend(f"waiting for event {event_name!r}")
        if waited.timed_out:
            raise EventTimeout(event_name)
        return waited.payload

    def emit_event(self, event_name: str, payload: Any = None) -> None:
        """Emit an event on this task's queue (first write wins)."""
        with self._call() as conn:
            self._engine.emit_event(conn, self.queue, event_name, payload)

    # -- spawning -------------------------------------------------------------------

    def spawn(
        self,
        task_name: str,
        params: Any = None,
        *,
        queue: str | None = None,
        **options: Unpack[SpawnOptions],
    ) -> SpawnResult:
        """Spawn another task by name (default: on this queue); `SpawnOptions` as keywords.

        The app's task defaults and ``before_spawn`` hooks apply, as for every
        spawn.

        Not a step by itself: wrap it in `step` (or pass an
        ``idempotency_key``) so a replay does not spawn it twice.
        """
        value = {} if params is None else params
        opts = self.app._spawn_options(task_name, value, dict(options))
        with self._call() as conn:
            return self._engine.spawn_task(conn, queue or self.queue, task_name, value, opts)

    # -- plumbing -------------------------------------------------------------------

    def _step_name(self, base: str) -> str:
        n = self._names.get(base, 0) + 1
        self._names[base] = n
        return base if n == 1 else f"{base}#{n}"

    def _load(self) -> dict[str, Any]:
        self._guard()
        if self._checkpoints is None:
            with self._call() as conn:
                now, found = self._engine.load_checkpoints(
                    conn, self.queue, self.task_id, self.run_id
                )
            self._loaded_now, self._checkpoints = now, found
        return self._checkpoints

    def _guard(self) -> None:
        status = self._state.status
        if status == CANCELLED:
            raise TaskCancelled(f"task {self.task_id} was cancelled")
        if status is not None:
            raise LeaseLost(f"run {self.run_id} is no longer owned by this worker")

    @contextlib.contextmanager
    def _call(self) -> Iterator[psycopg.Connection[Any]]:
        """Yield a pooled connection for the engine; turn its signals into the run's state.

        `TaskCancelled` marks the run cancelled; `RunNotActive` (the lease was
        taken over) becomes `LeaseLost`, a signal the handler cannot swallow.
        """
        self._guard()
        try:
            with self._pool.connection() as conn:
                yield conn
        except TaskCancelled:
            self._state.mark(CANCELLED)
            raise
        except RunNotActive as exc:
            self._state.mark(LOST)
            raise LeaseLost(str(exc)) from exc


def bind(ctx: TaskContext) -> contextvars.Token[TaskContext]:
    """Make ``ctx`` the current context of this thread; return the reset token."""
    return _current.set(ctx)


def unbind(token: contextvars.Token[TaskContext]) -> None:
    """Undo `bind`."""
    _current.reset(token)
