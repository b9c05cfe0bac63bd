"""`Client` methods of the worker protocol: claims, leases, checkpoints, events.

One method per stored function that a worker (this library's, or one written
outside it) calls on a run it holds, kept in a mixin of their own so that the
client module stays small. Applications rarely call them: a handler uses its
`teguh.TaskContext`. Like the rest of `Client`, each goes through
`teguh._engine` (argument checks, row decoding by column name, SQLSTATE
mapping).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import psycopg

from teguh import _engine as E
from teguh.records import ClaimStatus, Run, WaitResult

Conn = psycopg.Connection[Any]


class RunMethods:
    """The worker protocol (mixed into `teguh.Client`)."""

    if TYPE_CHECKING:
        engine: E.Engine
        dumps: E.JsonDumps

        def _checked(self, conn: Conn | None) -> AbstractContextManager[Conn]: ...

    # -- workers ------------------------------------------------------------------

    def claim_task(
        self,
        queue: str,
        worker_id: str,
        *,
        claim_timeout: E.Duration = 30,
        qty: int = 1,
        conn: Conn | None = None,
    ) -> list[Run]:
        """Lease up to ``qty`` ready runs for ``claim_timeout``; [] when none is ready.

        A claimed run whose row cannot be decoded (params too deeply nested,
        or refused by a custom ``json_loads``) is failed with the reason and
        left out; the others are returned.
        """
        timeout = E.whole_seconds(claim_timeout, "claim_timeout")
        with self._checked(conn) as c:
            runs, bad = self.engine.claim(c, queue, worker_id, timeout, qty)
            for run_id, exc in bad:
                self.engine.fail_undecodable(c, queue, run_id, exc)
        return runs

    def complete_run(
        self, queue: str, run_id: UUID, result: Any = None, *, conn: Conn | None = None
    ) -> None:
        """Complete the run's task with ``result`` (JSON-serializable)."""
        result_json = E.dump(self.dumps, result, "result")
        run = E.uuid(run_id, "run_id")
        with self._checked(conn) as c:
            self.engine.complete_run(c, E.text(queue, "queue"), run, result_json)

    def fail_run(
        self,
        queue: str,
        run_id: UUID,
        reason: Any,
        *,
        retry_at: datetime | None = None,
        conn: Conn | None = None,
    ) -> None:
        """Fail the run with ``reason``; retry by the task's strategy (or at ``retry_at``)."""
        with self._checked(conn) as c:
            self.engine.fail_run(c, queue, run_id, reason, retry_at)

    def schedule_run(
        self, queue: str, run_id: UUID, wake_at: datetime, *, conn: Conn | None = None
    ) -> None:
        """Suspend the run until ``wake_at`` (a durable sleep; no attempt consumed)."""
        with self._checked(conn) as c:
            self.engine.schedule_run(c, queue, run_id, wake_at)

    def extend_claim(
        self, queue: str, run_id: UUID, extend_by: E.Duration, *, conn: Conn | None = None
    ) -> None:
        """Set the run's lease to now + ``extend_by``."""
        secs = E.whole_seconds(extend_by, "extend_by")
        with self._checked(conn) as c:
            self.engine.extend_claim(c, queue, run_id, secs)

    def extend_claims(
        self,
        queue: str,
        worker_id: str,
        run_ids: Sequence[UUID],
        extend_by: E.Duration,
        *,
        conn: Conn | None = None,
    ) -> list[ClaimStatus]:
        """Extend many leases at once; return the runs that are cancelled or lost."""
        secs = E.whole_seconds(extend_by, "extend_by")
        with self._checked(conn) as c:
            return self.engine.extend_claims(c, queue, worker_id, run_ids, secs)

    # -- steps and events ---------------------------------------------------------

    def set_checkpoint(
        self,
        queue: str,
        task_id: UUID,
        step_name: str,
        state: Any,
        owner_run: UUID,
        *,
        extend_claim_by: E.Duration | None = None,
        conn: Conn | None = None,
    ) -> None:
        """Record a step's result; ``owner_run`` must be the task's active run."""
        state_json = E.dump(self.dumps, state, "state")
        extend = (
            None if extend_claim_by is None else E.whole_seconds(extend_claim_by, "extend_claim_by")
        )
        with self._checked(conn) as c:
            self.engine.set_checkpoint(c, queue, task_id, step_name, state_json, owner_run, extend)

    def get_checkpoint(
        self, queue: str, task_id: UUID, name: str, *, conn: Conn | None = None
    ) -> Any:
        """Return one checkpoint's state (None when absent)."""
        with self._checked(conn) as c:
            return self.engine.get_checkpoint(c, queue, task_id, name)

    def get_checkpoints(
        self, queue: str, task_id: UUID, run_id: UUID | None, *, conn: Conn | None = None
    ) -> dict[str, Any]:
        """Return all the task's checkpoints, by name.

        ``run_id`` is the caller's run: the engine then raises `TaskCancelled`
        if the task was cancelled. None reads them as an observer (e.g.
        ``teguh task show``), whatever the task's state.
        """
        with self._checked(conn) as c:
            return self.engine.get_checkpoints(c, queue, task_id, run_id)

    def await_event_in_run(
        self,
        queue: str,
        task_id: UUID,
        run_id: UUID,
        step_name: str,
        event_name: str,
        *,
        timeout: E.Duration | None = None,
        conn: Conn | None = None,
    ) -> WaitResult:
        """Make run ``run_id`` wait for an event as step ``step_name`` (``teguh.wait_event``).

        A worker-protocol call for workers written outside this library: in a
        handler use ``ctx.await_event``. When ``should_suspend`` is true the
        engine suspended the run: end the handler and record nothing else.
        """
        secs = None if timeout is None else E.whole_seconds(timeout, "timeout")
        with self._checked(conn) as c:
            return self.engine.wait_event(c, queue, task_id, run_id, step_name, event_name, secs)

    def emit_event(
        self, queue: str, event_name: str, payload: Any = None, *, conn: Conn | None = None
    ) -> None:
        """Emit an event (first write wins) and wake the tasks waiting for it."""
        with self._checked(conn) as c:
            self.engine.emit_event(c, queue, event_name, payload)
