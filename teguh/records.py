"""Records returned by `Client` methods, and the option dictionaries they take.

Record fields mirror the stored functions' result columns by name (see
docs/sql-reference.md); jsonb columns are already deserialized.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypedDict
from uuid import UUID

if TYPE_CHECKING:
    from datetime import timedelta

    from psycopg_pool import ConnectionPool

__all__ = [
    "Cancellation",
    "ClaimStatus",
    "ConcurrencyLimit",
    "ExceptionClasses",
    "QueueStats",
    "RetryStrategy",
    "Run",
    "ScheduleInfo",
    "ScheduleOptions",
    "SpawnOptions",
    "SpawnResult",
    "TaskInfo",
    "TaskOptions",
    "TaskResult",
    "TaskState",
    "TaskSummary",
    "WaitKind",
    "WaitResult",
    "WorkerInfo",
    "WorkerOptions",
]

TaskState = Literal["pending", "running", "sleeping", "completed", "failed", "cancelled"]

WaitKind = Literal["start", "retry", "sleep", "event", "resume", "handed_back"]
"""What an unfinished task waits for (`TaskInfo.wait_kind`, docs/queues.md)."""


class RetryStrategy(TypedDict, total=False):
    """How failed attempts are retried (the ``retry_strategy`` spawn option).

    ``kind`` is ``"none"``, ``"fixed"`` (wait ``base_seconds``) or
    ``"exponential"`` (``base_seconds * factor ** (attempt - 1)``, capped by
    ``max_seconds``). The engine's default is exponential, 1 s base, factor 2,
    300 s cap.
    """

    kind: Literal["none", "fixed", "exponential"]
    base_seconds: float
    factor: float
    max_seconds: float


class Cancellation(TypedDict, total=False):
    """Automatic cancellation deadlines (the ``cancellation`` spawn option), in seconds.

    ``max_delay``: cancel if not started within this long of spawn.
    ``max_duration``: cancel if unfinished this long after its first start.
    """

    max_delay: int
    max_duration: int


class SpawnOptions(TypedDict, total=False):
    """Options of one spawn, accepted by every spawn path (``**options``).

    ``headers``: JSON object carried to the handler (``ctx.headers``).
    ``retry_strategy``: see `RetryStrategy`. ``max_attempts``: attempts before
    the task fails (the engine's default: 5). ``cancellation``: see
    `Cancellation`. ``idempotency_key``: a second spawn with the same key
    returns the existing task with ``created=False``. ``available_at`` (an
    aware datetime) or ``delay`` (seconds or a timedelta, on the database
    clock): no attempt before then. ``priority``: higher runs first.
    ``concurrency_key``: the key whose concurrency limit this task's runs
    count against (`Client.set_concurrency_limit`, docs/queues.md).
    """

    headers: dict[str, Any]
    retry_strategy: RetryStrategy
    max_attempts: int
    cancellation: Cancellation
    idempotency_key: str
    available_at: datetime
    delay: float | timedelta
    priority: int
    concurrency_key: str


ExceptionClasses: TypeAlias = type[BaseException] | tuple[type[BaseException], ...]
"""An exception class or a tuple of them (``retry_on``, ``dont_retry_on``)."""


class TaskOptions(TypedDict, total=False):
    """Options of a task declaration: ``@app.task(**options)``, ``@teguh.task(**options)``.

    ``name``: the task's name (default ``module.qualname``). ``queue``: its
    queue (default ``"default"``). ``max_attempts``, ``retry`` (a
    `RetryStrategy`, spawned as ``retry_strategy``), ``headers``,
    ``priority``, ``cancellation`` and ``concurrency_key``: the defaults of
    every spawn of the task (see `SpawnOptions`). ``retry_on`` / ``dont_retry_on``: an exception
    not in ``retry_on``, or in ``dont_retry_on``, fails the task at once.
    None means "not given" for every key.
    """

    name: str | None
    queue: str
    max_attempts: int | None
    retry: RetryStrategy | None
    headers: Mapping[str, Any] | None
    priority: int | None
    cancellation: Cancellation | None
    concurrency_key: str | None
    retry_on: ExceptionClasses | None
    dont_retry_on: ExceptionClasses | None


class ScheduleOptions(TypedDict, total=False):
    """Options of a schedule: ``@app.periodic(spec, **options)``, `Client.create_schedule`.

    ``timezone``: an IANA name the cron spec is read in (default UTC).
    ``catch_up``: after downtime, spawn the ``"latest"`` missed slot (the
    default) or ``"none"``. ``headers``, ``retry_strategy``,
    ``max_attempts``, ``priority``, ``cancellation`` and ``concurrency_key``:
    the `SpawnOptions` of the tasks it spawns (for ``@app.periodic``, the task's declared
    defaults otherwise). None means "the default" for every key.
    """

    timezone: str | None
    catch_up: Literal["latest", "none"] | None
    headers: Mapping[str, Any] | None
    retry_strategy: RetryStrategy | None
    max_attempts: int | None
    priority: int | None
    cancellation: Cancellation | None
    concurrency_key: str | None


class WorkerOptions(TypedDict, total=False):
    """Tuning of a `teguh.Worker` (``app.worker(queues, **options)``), in seconds.

    ``claim_timeout`` (30): lease of a claimed run; heartbeats extend it every
    ``heartbeat_interval`` (a third of the lease). ``poll_interval`` (30):
    longest wait between claims without a notification. ``batch_size``: most
    runs per claim (default: ``concurrency``). ``worker_id``: recorded on
    leases (``host:pid:random``). ``pool``: the connections for claims and
    handlers (default: the worker opens its own, ``concurrency + 3``).
    ``ticker_interval`` (5): how often the elected worker runs the ticker.
    ``unknown_task_delay`` (5): how long a run with no handler here is handed
    back for; ``max_hand_backs`` (100): the hand-back that fails such a task
    instead, with a ``NoHandler`` reason naming it (None: hand it back
    forever). ``recycle_when_stuck`` (False): when handlers hung after a
    cancellation or a lost lease hold every slot, stop claiming and ask to be
    recycled (`Worker.recycle_requested`). ``shutdown_timeout`` (30): how
    long `stop` waits for running handlers. ``connect_timeout`` (10): how long `start` waits for the
    database before it gives up.
    """

    claim_timeout: float
    poll_interval: float
    heartbeat_interval: float | None
    batch_size: int | None
    worker_id: str | None
    pool: ConnectionPool[Any] | None
    ticker_interval: float
    unknown_task_delay: float
    max_hand_backs: int | None
    recycle_when_stuck: bool
    shutdown_timeout: float
    connect_timeout: float


@dataclass(frozen=True, slots=True)
class SpawnResult:
    """A spawned (or, with an idempotency key, found) task and its first run."""

    task_id: UUID
    run_id: UUID
    attempt: int
    created: bool


@dataclass(frozen=True, slots=True)
class Run:
    """A run leased by `Client.claim_task`.

    ``wake_event`` is set when the run resumes because of an event wait
    (``event_payload`` is then the payload, or None when the wait timed out).
    """

    run_id: UUID
    task_id: UUID
    attempt: int
    task_name: str
    params: Any
    retry_strategy: Any
    max_attempts: int | None
    headers: Any
    wake_event: str | None
    event_payload: Any


@dataclass(frozen=True, slots=True)
class TaskResult:
    """A task's state and, once completed, its result (``completed_payload``)."""

    task_id: UUID
    state: TaskState
    attempts: int
    completed_payload: Any
    cancelled_at: datetime | None


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """Everything the engine knows about a task (`Client.get_task`).

    ``archived``: found in the queue's archive (past its retention). What an
    unfinished task waits for: ``wait_kind`` (`WaitKind`: its first attempt,
    a retry, a sleep, an event, a resume after its event came, or a
    hand-back), ``next_attempt_at`` (when it can be claimed next; for an
    event wait, when the wait times out), ``wait_event`` and
    ``wait_timeout_at`` (an event wait), ``hand_backs`` (times a worker with
    no handler for it handed it back), ``queue_paused`` (nothing is claimed
    from the queue until it is resumed). A running task's lease:
    ``worker_id`` and ``lease_expires_at`` (None: it never expires). An
    unfinished task with a ``concurrency_key``: its key's
    ``concurrency_limit`` (None: unlimited) and ``concurrency_running``, the
    runs of that key in flight (a due task waits while they fill the limit).
    """

    task_id: UUID
    task_name: str
    state: TaskState
    attempts: int
    max_attempts: int | None
    priority: int
    params: Any
    headers: Any
    retry_strategy: Any
    idempotency_key: str | None
    created_at: datetime
    first_started_at: datetime | None
    finished_at: datetime | None
    completed_payload: Any
    last_failure: Any
    cancelled_at: datetime | None
    archived: bool = False
    next_attempt_at: datetime | None = None
    wait_kind: WaitKind | None = None
    wait_event: str | None = None
    wait_timeout_at: datetime | None = None
    hand_backs: int = 0
    queue_paused: bool = False
    worker_id: str | None = None
    lease_expires_at: datetime | None = None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    concurrency_running: int | None = None


@dataclass(frozen=True, slots=True)
class WaitResult:
    """What `Client.await_event_in_run` returned.

    ``should_suspend``: the engine suspended the run (the event has not come).
    ``timed_out``: the wait's timeout elapsed before the event.
    """

    should_suspend: bool
    payload: Any
    timed_out: bool


@dataclass(frozen=True, slots=True)
class ClaimStatus:
    """A run `Client.extend_claims` could not extend: ``status`` is ``cancelled`` or ``lost``."""

    run_id: UUID
    status: Literal["cancelled", "lost"]


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counts of a queue's tasks by state (`Client.queue_stats`).

    ``workers``: how many workers present serve the queue (a worker whose
    heartbeat lapsed does not count): zero answers "why does nothing run?".
    """

    queue_name: str
    pending: int
    running: int
    sleeping: int
    completed: int
    failed: int
    cancelled: int
    oldest_pending_seconds: float | None
    in_flight: int
    workers: int = 0


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A cron schedule stored in the engine (`Client.list_schedules`)."""

    queue_name: str
    schedule_name: str
    spec: str
    timezone: str
    task_name: str
    params: Any
    options: Any
    catch_up: Literal["latest", "none"]
    paused: bool
    next_run_at: datetime | None
    last_slot: datetime | None
    last_run_at: datetime | None
    last_task_id: UUID | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class TaskSummary:
    """One row of `Client.list_tasks`: a task without its result."""

    task_id: UUID
    task_name: str
    state: TaskState
    attempts: int
    max_attempts: int
    priority: int
    params: Any
    headers: Any
    idempotency_key: str | None
    created_at: datetime
    first_started_at: datetime | None
    finished_at: datetime | None
    last_failure: Any
    cancelled_at: datetime | None


@dataclass(frozen=True, slots=True)
class ConcurrencyLimit:
    """A per-key concurrency limit (`Client.list_concurrency_limits`).

    ``key`` is as set: a key, or a prefix ending in ``*`` (``is_prefix``)
    that limits each key it matches separately. ``running``: the runs in
    flight now under this limit (for a prefix, over all the keys it governs).
    """

    queue_name: str
    key: str
    is_prefix: bool
    max_running: int
    running: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker present in the engine (`Client.list_workers`).

    ``hung_handlers``: how many of its handlers still ran, when it last
    reported, after their task was cancelled or their lease lost.
    """

    worker_id: str
    queues: list[str]
    host: str | None
    pid: int | None
    started_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    hung_handlers: int = 0
