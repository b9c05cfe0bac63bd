"""teguh: durable execution and a job queue inside PostgreSQL.

The engine is a set of stored functions (``schema/teguh.sql``); this package
is a synchronous, threaded library for it on psycopg 3: an `App` holds your
tasks (``@app.task``), hooks and middleware; ``app.worker(...)`` runs their
handlers; `TaskContext` offers durable steps, sleeps and events inside a
handler; `Client` (``app.client``) is one method per stored function.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from teguh.app import App, Middleware, SpawnHook
from teguh.client import Client
from teguh.context import TaskContext, current_context
from teguh.errors import (
    EventTimeout,
    InvalidArgument,
    InvalidState,
    LeaseLost,
    PermanentError,
    QueueNotFound,
    RunNotActive,
    SchemaError,
    SchemaMissing,
    SchemaOutdated,
    Suspend,
    TaskCancelled,
    TaskNotFound,
    TeguhError,
    TeguhSignal,
)
from teguh.middleware import LifecycleLogging
from teguh.records import (
    Cancellation,
    ClaimStatus,
    ConcurrencyLimit,
    QueueStats,
    RetryStrategy,
    Run,
    ScheduleInfo,
    ScheduleOptions,
    SpawnOptions,
    SpawnResult,
    TaskInfo,
    TaskOptions,
    TaskResult,
    TaskState,
    TaskSummary,
    WaitKind,
    WaitResult,
    WorkerInfo,
    WorkerOptions,
)
from teguh.schema import SCHEMA_VERSION
from teguh.tasks import Task, step, task
from teguh.worker import NotFound, Worker

try:
    __version__ = _version("teguh")
except PackageNotFoundError:  # a source checkout that was never installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "SCHEMA_VERSION",
    "App",
    "Cancellation",
    "ClaimStatus",
    "Client",
    "ConcurrencyLimit",
    "EventTimeout",
    "InvalidArgument",
    "InvalidState",
    "LeaseLost",
    "LifecycleLogging",
    "Middleware",
    "NotFound",
    "PermanentError",
    "QueueNotFound",
    "QueueStats",
    "RetryStrategy",
    "Run",
    "RunNotActive",
    "ScheduleInfo",
    "ScheduleOptions",
    "SchemaError",
    "SchemaMissing",
    "SchemaOutdated",
    "SpawnHook",
    "SpawnOptions",
    "SpawnResult",
    "Suspend",
    "Task",
    "TaskCancelled",
    "TaskContext",
    "TaskInfo",
    "TaskNotFound",
    "TaskOptions",
    "TaskResult",
    "TaskState",
    "TaskSummary",
    "TeguhError",
    "TeguhSignal",
    "WaitKind",
    "WaitResult",
    "Worker",
    "WorkerInfo",
    "WorkerOptions",
    "__version__",
    "current_context",
    "step",
    "task",
]
