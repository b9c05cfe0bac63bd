"""`TaskContext`: what a handler gets, and the durable operations it offers.

A handler may run many times for one task (after a failure, a lost worker, a
sleep or an event wait); each time it replays from the top. Steps, sleeps and
event waits are checkpointed under deterministic names, so on replay they
return what they returned the first time instead of running again.

The checkpoints are loaded with one query on the first durable call of a run;
a handler that makes none costs no extra query.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, LiteralString, ParamSpec, TypeVar
from uuid import UUID

import psycopg
from psycopg_pool import ConnectionPool

from teguh import _convert as C
from teguh import _queries as Q
from teguh.errors import (
    EventTimeout,
    LeaseLost,
    RunNotActive,
    Suspend,
    TaskCancelled,
    translate,
)
from teguh.records import Run, SpawnResult

if TYPE_CHECKING:
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

    ``lease_until`` is the `time.monotonic` time by which the lease surely
    expires unless extended again: the send time of the last statement that
    set it (claim, heartbeat, checkpoint) plus the lease. None: not tracked.
    """

    __slots__ = ("_lock", "lease_until", "marked_at", "reported", "run", "status")

    def __init__(self, run: Run, lease_until: float | None = None) -> None:
        self.run = run
        self.status: str | None = None
        self.lease_until = lease_until
        # monotonic time `status` was set; whether a hung handler was reported
        self.marked_at: float | None = None
        self.reported = False
        self._lock = threading.Lock()

    def renewed(self, sent_at: float, seconds: float) -> None:
        """Record a lease extension to ``seconds`` after ``sent_at`` (monotonic).

        ``sent_at`` is taken before the statement was sent, so the recorded
        expiry is never later than the database's.
        """
        until = sent_at + seconds
        with self._lock:
            if self.lease_until is None or until > self.lease_until:
                self.lease_until = until

    def lease_expired(self) -> bool:
        """Whether the lease may have expired: no extension succeeded in time."""
        until = self.lease_until
        return until is not None and time.monotonic() >= until

    def mark(self, status: str) -> bool:
        """Record that the run is no longer ours; return whether this reason won.

        The first reason wins: ``"completing"`` (its result is queued),
        ``"cancelled"``, ``"lost"``.
        """
        with self._lock:
            if self.status is None:
                self.status = status
                self.marked_at = time.monotonic()
                return True
            return False

    def abandoned_for(self) -> float:
        """Seconds since the run was found cancelled or lost (0 while it is ours)."""
        if self.status not in (CANCELLED, LOST) or self.marked_at is None:
            return 0.0
        return time.monotonic() - self.marked_at


class TaskContext:
    """The handler's view of its run: params, ids, and durable operations.

    Attributes: ``queue``, ``task_id``, ``run_id``, ``attempt`` (1-based;
    sleeps and event waits do not consume attempts), ``task_name``,
    ``params``, ``headers``, ``max_attempts``, ``retry_strategy``,
    ``wake_event`` and ``event_payload`` (set when this run resumed because of
    an event), ``worker_id`` and ``client``.

    A context belongs to one run and one thread; do not share it.
    """

    def __init__(
        self,
        client: Client,
        queue: str,
        run: Run,
        *,
        pool: ConnectionPool[Any] | None = None,
        state: RunState | None = None,
        claim_timeout: int = 30,
        worker_id: str | None = None,
    ) -> None:
        self.client = client
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
        self._pool = pool if pool is not None else client.pool
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

    def heartbeat(self, extend_by: C.Duration | None = None) -> None:
        """Extend the lease to now + ``extend_by`` (default: the claim timeout).

        Raises `TaskCancelled` if the task was cancelled, `LeaseLost` if the
        run was taken over. Call it from long loops that make no other teguh
        call; the worker's heartbeat thread already extends leases.
        """
        secs = self._claim_timeout if extend_by is None else C.whole_seconds(extend_by, "extend_by")
        sent_at = time.monotonic()
        self._execute(Q.EXTEND_CLAIM, (self.queue, self.run_id, secs))
        self._state.renewed(sent_at, secs)

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
        self._guard_lease(key)
        result = fn(*args, **kwargs)
        text = C.dump(self.client.dumps, result, f"the result of step {key!r}")
        sent_at = time.monotonic()
        self._execute(
            Q.SET_CHECKPOINT,
            (self.queue, self.task_id, key, text, self.run_id, self._claim_timeout),
        )
        self._state.renewed(sent_at, self._claim_timeout)
        value = self.client.loads(text)
        checkpoints[key] = value
        return value

    # -- sleeping -------------------------------------------------------------------

    def sleep_for(self, duration: C.Duration, name: str | None = None) -> None:
        """Sleep durably for ``duration`` (seconds or timedelta).

        The first time, the wake time (database clock) is checkpointed and the
        run is suspended: `Suspend` propagates out of the handler and the task
        resumes at the wake time, replaying the handler, where this call
        returns. Sleeping does not consume attempts.
        """
        secs = C.seconds(duration, "duration")
        key = self._step_name(name or "$sleep")
        checkpoints = self._load()
        if key in checkpoints:
            self._resume_sleep(checkpoints[key])
            return
        if secs == 0:
            return
        with self._pool.connection() as conn:
            self._guard()
            try:
                with conn.transaction():
                    row = conn.execute(Q.SLEEP_WAKE_AT, (secs,)).fetchone()
                    assert row is not None
                    self._suspend_until(conn, key, row[0])
            except psycopg.Error as exc:
                raise self._translate(exc) from exc
        raise Suspend(f"sleeping for {secs}s")

    def sleep_until(self, when: datetime, name: str | None = None) -> None:
        """Sleep durably until ``when`` (a timezone-aware datetime); see `sleep_for`."""
        C.aware(when, "when")
        key = self._step_name(name or "$sleep")
        checkpoints = self._load()
        if key in checkpoints:
            self._resume_sleep(checkpoints[key])
            return
        with self._pool.connection() as conn:
            self._guard()
            try:
                with conn.transaction():
                    row = conn.execute(Q.IS_DUE, (when,)).fetchone()
                    if row is not None and row[0]:
                        return
                    self._suspend_until(conn, key, when)
            except psycopg.Error as exc:
                raise self._translate(exc) from exc
        raise Suspend(f"sleeping until {when.isoformat()}")

    def _suspend_until(self, conn: psycopg.Connection[Any], key: str, wake_at: datetime) -> None:
        state = C.dump(self.client.dumps, {"wake_at": wake_at.isoformat()}, "sleep")
        conn.execute(Q.SET_CHECKPOINT, (self.queue, self.task_id, key, state, self.run_id, None))
        conn.execute(Q.SCHEDULE_RUN, (self.queue, self.run_id, wake_at))

    def _resume_sleep(self, state: Any) -> None:
        wake_at = datetime.fromisoformat(state["wake_at"])
        if self._loaded_now is not None and self._loaded_now >= wake_at:
            return
        rows = self._execute(Q.IS_DUE, (wake_at,))
        if rows and rows[0][0]:
            return
        # Woken early (e.g. a released run): go back to sleep until the same time.
        self._execute(Q.SCHEDULE_RUN, (self.queue, self.run_id, wake_at))
        raise Suspend(f"sleeping until {wake_at.isoformat()}")

    # -- events ---------------------------------------------------------------------

    def await_event(
        self, event_name: str, *, timeout: C.Duration | None = None, name: str | None = None
    ) -> Any:
        """Return the payload of event ``event_name``, waiting durably for it.

        Returns at once if the event was already emitted. Otherwise the run is
        suspended (`Suspend` propagates) and the handler replays when the
        event comes, where this call returns its payload. Raises
        `teguh.EventTimeout` when ``timeout`` (seconds or timedelta) elapsed
        first: a timeout is not a null payload.
        """
        key = self._step_name(name or f"$event:{event_name}")
        secs = None if timeout is None else C.whole_seconds(timeout, "timeout")
        rows = self._execute(
            Q.WAIT_EVENT, (self.queue, self.task_id, self.run_id, key, event_name, secs)
        )
        suspend, payload, timed_out = rows[0]
        if suspend:
            raise Suspend(f"waiting for event {event_name!r}")
        if timed_out:
            raise EventTimeout(event_name)
        return C.load(self.client.loads, payload)

    def emit_event(self, event_name: str, payload: Any = None) -> None:
        """Emit an event on this task's queue (first write wins)."""
        text = C.dump(self.client.dumps, payload, "payload")
        self._execute(Q.EMIT_EVENT, (self.queue, event_name, text))

    # -- spawning -------------------------------------------------------------------

    def spawn(
        self, task_name: str, params: Any = None, *, queue: str | None = None, **options: Any
    ) -> SpawnResult:
        """Spawn another task (default: on this queue); options as `Client.spawn_task`.

        Not a step by itself: wrap it in `step` (or pass an
        ``idempotency_key``) so a replay does not spawn it twice.
        """
        self._guard()
        with self._pool.connection() as conn:
            return self.client.spawn_task(
                queue or self.queue,
                task_name,
                {} if params is None else params,
                conn=conn,
                **options,
            )

    # -- plumbing -------------------------------------------------------------------

    def _step_name(self, base: str) -> str:
        n = self._names.get(base, 0) + 1
        self._names[base] = n
        return base if n == 1 else f"{base}#{n}"

    def _load(self) -> dict[str, Any]:
        self._guard()
        if self._checkpoints is None:
            rows = self._execute(Q.LOAD_CHECKPOINTS, (self.queue, self.task_id, self.run_id))
            self._loaded_now = rows[0][0]
            self._checkpoints = dict(C.load(self.client.loads, rows[0][1]) or {})
        return self._checkpoints

    def _guard(self) -> None:
        status = self._state.status
        if status == CANCELLED:
            raise TaskCancelled(f"task {self.task_id} was cancelled")
        if status is not None:
            raise LeaseLost(f"run {self.run_id} is no longer owned by this worker")

    def _guard_lease(self, key: str) -> None:
        """Refuse to run step ``key``'s body when the lease may have expired.

        A worker frozen past its lease (SIGSTOP, a long pause, heartbeats
        failing) may have been taken over: another run may already have run
        this step and committed its checkpoint. Running the body again would
        repeat its side effects before the checkpoint write is refused.
        """
        if self._state.lease_expired():
            self._state.mark(LOST)
            raise LeaseLost(
                f"run {self.run_id} did not extend its lease in time; step {key!r} not started"
            )

    def _translate(self, exc: psycopg.Error) -> BaseException:
        mapped = translate(exc)
        if isinstance(mapped, TaskCancelled):
            self._state.mark(CANCELLED)
        elif isinstance(mapped, RunNotActive):
            self._state.mark(LOST)
            return LeaseLost(str(mapped))
        return exc if mapped is None else mapped

    def _execute(self, query: LiteralString, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        self._guard()
        try:
            with self._pool.connection() as conn:
                rows: list[tuple[Any, ...]] = conn.execute(query, params).fetchall()
                return rows
        except psycopg.Error as exc:
            mapped = self._translate(exc)
            if mapped is exc:
                raise
            raise mapped from exc


def bind(ctx: TaskContext) -> contextvars.Token[TaskContext]:
    """Make ``ctx`` the current context of this thread; return the reset token."""
    return _current.set(ctx)


def unbind(token: contextvars.Token[TaskContext]) -> None:
    """Undo `bind`."""
    _current.reset(token)
