"""teguh: durable execution and a job queue inside PostgreSQL.

The engine is a set of stored functions (``schema/teguh.sql``); this package
is a synchronous, threaded client for it on psycopg 3: `Client` to spawn and
inspect tasks, `Worker` to run their handlers, `TaskContext` for durable
steps, sleeps and events inside a handler, and the ``@task``/``@step``
decorators.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from teguh.client import Client
from teguh.context import TaskContext, current_context
from teguh.errors import (
    EventTimeout,
    InvalidArgument,
    InvalidState,
    LeaseLost,
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
from teguh.records import (
    Cancellation,
    ClaimStatus,
    QueueStats,
    RetryStrategy,
    Run,
    SpawnResult,
    TaskInfo,
    TaskResult,
    TaskState,
    WaitResult,
)
from teguh.schema import SCHEMA_VERSION
from teguh.tasks import Task, get_default_client, set_default_client, step, task
from teguh.worker import Worker

try:
    __version__ = _version("teguh")
except PackageNotFoundError:  # a source checkout that was never installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "SCHEMA_VERSION",
    "Cancellation",
    "ClaimStatus",
    "Client",
    "EventTimeout",
    "InvalidArgument",
    "InvalidState",
    "LeaseLost",
    "QueueNotFound",
    "QueueStats",
    "RetryStrategy",
    "Run",
    "RunNotActive",
    "SchemaError",
    "SchemaMissing",
    "SchemaOutdated",
    "SpawnResult",
    "Suspend",
    "Task",
    "TaskCancelled",
    "TaskContext",
    "TaskInfo",
    "TaskNotFound",
    "TaskResult",
    "TaskState",
    "TeguhError",
    "TeguhSignal",
    "WaitResult",
    "Worker",
    "__version__",
    "current_context",
    "get_default_client",
    "set_default_client",
    "step",
    "task",
]
