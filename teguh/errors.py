"""Exceptions raised by teguh, and the one place SQLSTATEs become Python classes.

The tree::

    Exception
    └── TeguhError                       every error teguh raises on purpose
        ├── SchemaError                  the database's teguh schema is not usable
        │   ├── SchemaMissing            not installed: run `teguh install`
        │   └── SchemaOutdated           another version than the library's
        ├── InvalidArgument (ValueError) SQLSTATE 22023; ``.argument`` names it
        ├── QueueNotFound (LookupError)  SQLSTATE 42704
        ├── TaskNotFound (LookupError)   SQLSTATE P0002
        ├── RunNotActive                 SQLSTATE AB002: unknown run, or its lease
        │                                expired and another worker took it over
        ├── InvalidState                 SQLSTATE 55000: e.g. retry_task on a running task
        ├── PermanentError               raised by a handler: fail the task now, no retry
        └── EventTimeout (TimeoutError)  ctx.await_event timed out before the event came

    BaseException
    └── TeguhSignal                      control flow; ``except Exception`` cannot swallow it
        ├── Suspend                      the run suspended (sleep, event wait): not an error
        ├── TaskCancelled                SQLSTATE AB001: the task was cancelled
        └── LeaseLost                    inside a handler: this worker no longer owns the run

Why `TaskCancelled` is a `TeguhSignal` and not a `TeguhError`: inside a task
handler, ``ctx.step()``, ``ctx.heartbeat()`` and friends raise it to stop the
handler, and a handler's ``except Exception:`` (common around retries of an
HTTP call) must not swallow it, or the worker would record a result for a
cancelled task. A class cannot be both an `Exception` and not one, so the same
class is raised by `Client` methods that hit AB001 (e.g. ``complete_run`` on a
cancelled task's run): callers of those low-level methods catch it by name,
``except teguh.TaskCancelled``, not with ``except TeguhError``.

`RunNotActive` (AB002) is an ordinary `TeguhError` for callers of `Client`
methods; inside a handler the same condition is raised as `LeaseLost` (a
signal), for the same reason as above.

`teguh._engine.translate` maps SQLSTATEs to these classes, in one table; the
engine raises the result ``from`` the original error so the server's message
and diagnostics stay reachable through ``__cause__``.
"""

from __future__ import annotations

__all__ = [
    "EventTimeout",
    "InvalidArgument",
    "InvalidState",
    "LeaseLost",
    "PermanentError",
    "QueueNotFound",
    "RunNotActive",
    "SchemaError",
    "SchemaMissing",
    "SchemaOutdated",
    "Suspend",
    "TaskCancelled",
    "TaskNotFound",
    "TeguhError",
    "TeguhSignal",
]


class TeguhError(Exception):
    """Base class of every error teguh raises on purpose.

    ``sqlstate`` is the SQLSTATE of the database error behind it, or None.
    """

    sqlstate: str | None = None


class SchemaError(TeguhError):
    """Raise when the database's teguh schema cannot be used by this library."""


class SchemaMissing(SchemaError):
    """Raise when the teguh schema is not installed in the database."""


class SchemaOutdated(SchemaError):
    """Raise when the installed schema version differs from the library's."""

    def __init__(self, message: str, *, installed: str, expected: str) -> None:
        super().__init__(message)
        self.installed = installed
        self.expected = expected


class InvalidArgument(TeguhError, ValueError):
    """Raise for an argument the engine rejected (SQLSTATE 22023).

    ``argument`` names it (the error's COLUMN field), or is None.
    """

    sqlstate = "22023"

    def __init__(self, message: str, *, argument: str | None = None) -> None:
        super().__init__(message)
        self.argument = argument


class QueueNotFound(TeguhError, LookupError):
    """Raise when a queue does not exist (SQLSTATE 42704)."""

    sqlstate = "42704"


class TaskNotFound(TeguhError, LookupError):
    """Raise when a task does not exist in the queue (SQLSTATE P0002)."""

    sqlstate = "P0002"


class RunNotActive(TeguhError):
    """Raise when a run is unknown or its lease was taken over (SQLSTATE AB002)."""

    sqlstate = "AB002"


class InvalidState(TeguhError):
    """Raise when the task's state does not allow the call (SQLSTATE 55000)."""

    sqlstate = "55000"


class PermanentError(TeguhError):
    """Raise from a task handler to fail the task now, whatever attempts are left.

    The stored reason (the task's ``last_failure``) carries ``"retryable":
    false`` and a ``"not_retried"`` note saying why. A task's ``retry_on=`` /
    ``dont_retry_on=`` classes make other exceptions permanent the same way,
    and params that do not fit the handler's signature raise it before the
    handler runs.
    """


class EventTimeout(TeguhError, TimeoutError):
    """Raise from ``ctx.await_event`` when the wait timed out before the event.

    This is how a timeout is told apart from an event emitted with a null
    payload. The timeout is checkpointed: on replay the same wait raises again.
    """

    def __init__(self, event_name: str) -> None:
        super().__init__(f"timed out waiting for event {event_name!r}")
        self.event_name = event_name


class TeguhSignal(BaseException):
    """Base of teguh's control-flow exceptions.

    They derive from `BaseException` so that ``except Exception`` in a task
    handler does not swallow them. A handler that catches `BaseException`
    must re-raise them.
    """

    sqlstate: str | None = None


class Suspend(TeguhSignal):
    """Raise to end a handler whose run was suspended (a sleep or an event wait).

    The engine already recorded the suspension; the worker records nothing
    else and the task resumes by replaying the handler later.
    """


class TaskCancelled(TeguhSignal):
    """Raise when the task was cancelled (SQLSTATE AB001).

    Inside a handler it stops the handler; the worker records nothing further
    for the run. From `Client` methods, catch it by name (it is not a
    `TeguhError`; see the module docstring).
    """

    sqlstate = "AB001"


class LeaseLost(TeguhSignal):
    """Raise inside a handler whose run this worker no longer owns.

    Its lease expired and another worker may have taken the task over, or the
    worker released it while stopping. The worker records nothing for the run.
    """

    sqlstate = "AB002"
