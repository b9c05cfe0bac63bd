"""Record how runs ended: completed, failed, handed back, released.

Completions are the hot path: handler threads queue them, and one completer
thread records whatever has accumulated, one ``teguh.complete_runs`` call
per queue (one round trip, one commit), so a busy worker does not pay a
round trip and a commit per run. Failures, hand-backs and releases are rare
and recorded at once by the calling thread. A `Completions` made with
``batched=False`` (for `Worker.drain`) records completions at once too.
"""

from __future__ import annotations

import logging
import threading
import time
from queue import Empty, SimpleQueue
from typing import Any
from uuid import UUID

import psycopg
from psycopg_pool import ConnectionPool

from teguh import _engine as E
from teguh.context import CANCELLED, COMPLETING, LOST, RunState
from teguh.errors import RunNotActive, TaskCancelled, TeguhError
from teguh.records import ClaimStatus, Run

__all__ = ["MAX_TRACEBACK", "Completions", "failure_reason", "run_extra"]

logger = logging.getLogger("teguh.worker")

_MAX_BATCH = 100
MAX_TRACEBACK = E.MAX_TRACEBACK
failure_reason = E.failure_reason

# (state, queue, serialized result)
_Completion = tuple[RunState, str, str]


def _columns(items: list[_Completion]) -> tuple[dict[UUID, RunState], list[UUID], list[str]]:
    """A batch's runs by id, and its run ids and results in order (for complete_runs)."""
    states = {state.run.run_id: state for state, _q, _t in items}
    run_ids = [state.run.run_id for state, _q, _t in items]
    results = [text for _s, _q, text in items]
    return states, run_ids, results


def run_extra(queue: str, run: Run) -> dict[str, Any]:
    """Return the ``extra`` of a log record about ``run``."""
    return {
        "queue": queue,
        "task_id": run.task_id,
        "run_id": run.run_id,
        "attempt": run.attempt,
        "task_name": run.task_name,
    }


class Completions:
    """Write the end of a worker's runs (see the module docstring)."""

    def __init__(
        self,
        pool: ConnectionPool[Any],
        engine: E.Engine,
        worker_id: str,
        *,
        batched: bool = True,
    ) -> None:
        self._pool = pool
        self._engine = engine
        self._worker_id = worker_id
        self._batched = batched
        self._queue: SimpleQueue[_Completion | None] = SimpleQueue()
        self._thread: threading.Thread | None = None
        if batched:
            self._thread = threading.Thread(
                target=self._loop, name=f"teguh-complete-{worker_id}", daemon=True
            )

    def start(self) -> None:
        """Start the completer thread."""
        if self._thread is not None:
            self._thread.start()

    def close(self, deadline: float) -> None:
        """Record the completions already queued, then stop the completer (by ``deadline``)."""
        if self._thread is None or not self._thread.is_alive():
            return
        self._queue.put(None)
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            logger.error("completer thread of %s did not stop in time", self._worker_id)

    def check_pool(self) -> None:
        """Replace the pool's broken connections (after a server restart, say)."""
        try:
            self._pool.check()
        except Exception:
            logger.exception("checking the connection pool of worker %s failed", self._worker_id)

    # -- outcomes -------------------------------------------------------------------

    def complete(self, state: RunState, queue: str, result: Any) -> None:
        """Record the run's completion with ``result`` (a failure if it is not JSON)."""
        if state.status is not None:
            return
        try:
            text = E.dump(self._engine.dumps, result, f"the result of task {state.run.task_name!r}")
        except (TypeError, ValueError) as exc:
            self.fail(state, queue, exc)
            return
        # Claim the run's ending: a shutdown's release can no longer hand it back
        # (its result would then be refused and the finished task run again).
        if not state.mark(COMPLETING):
            return
        if self._batched:
            self._queue.put((state, queue, text))
        else:
            self._record(state, queue, self._engine.complete_run, queue, state.run.run_id, text)

    def fail(
        self, state: RunState, queue: str, exc: BaseException, *, not_retried: str | None = None
    ) -> None:
        """Fail the run with ``exc`` as ``{"name", "message", "traceback"}``.

        ``not_retried`` (why: `PermanentError`, the task's ``retry_on``...)
        fails the task now: the reason gains ``"retryable": false`` and a
        ``"not_retried"`` note, and the engine uses no further attempt.
        """
        run = state.run
        if state.status is not None:
            return
        reason: dict[str, Any] = dict(failure_reason(exc))
        if not_retried is not None:
            reason["retryable"] = False
            reason["not_retried"] = not_retried
        final = not_retried is not None or (
            run.max_attempts is not None and run.attempt >= run.max_attempts
        )
        logger.log(
            logging.ERROR if final else logging.WARNING,
            "task %s (%s) attempt %d failed: %s: %s",
            run.task_id,
            run.task_name,
            run.attempt,
            reason["name"],
            reason["message"],
            extra=run_extra(queue, run),
        )
        self._record(state, queue, self._engine.fail_run, queue, run.run_id, reason)

    def fail_with(self, state: RunState, queue: str, reason: dict[str, Any]) -> None:
        """Fail the run with a reason of the worker's own (no handler, say)."""
        self._record(state, queue, self._engine.fail_run, queue, state.run.run_id, reason)

    def hand_back(
        self, state: RunState, queue: str, delay: float, max_hand_backs: int | None = None
    ) -> None:
        """Give a run back for another worker, after ``delay`` seconds (no attempt used).

        The engine fails the task instead at its ``max_hand_backs``-th
        hand-back (None: never), with a ``NoHandler`` reason naming the task.
        """
        self._record(
            state,
            queue,
            self._engine.hand_back_run,
            queue,
            state.run.run_id,
            delay,
            max_hand_backs,
            self._worker_id,
        )

    def release(self, state: RunState, queue: str) -> None:
        """Hand a still-running run back at once; its handler's later calls raise LeaseLost."""
        self._release(state, queue, "its handler did not finish in time", logging.WARNING)

    def hand_back_unstarted(self, state: RunState, queue: str) -> None:
        """Hand back at once a run claimed ahead that no handler started (no attempt used)."""
        self._release(state, queue, "claimed ahead, not started before the stop", logging.INFO)

    def _release(self, state: RunState, queue: str, why: str, level: int) -> None:
        if not state.mark(LOST):
            return  # its result is queued, or it was cancelled, lost or released already
        run = state.run
        extra = run_extra(queue, run)
        logger.log(
            level,
            "releasing run %s of task %s (%s): %s",
            run.run_id,
            run.task_id,
            run.task_name,
            why,
            extra=extra,
        )
        try:
            with self._pool.connection(timeout=2.0) as conn:
                self._engine.release_run(conn, queue, run.run_id)
        except Exception as exc:
            # AB001/AB002: it finished, was cancelled or taken over meanwhile.
            logger.info("run %s was not released: %s", run.run_id, exc, extra=extra)

    # -- plumbing -------------------------------------------------------------------

    def _loop(self) -> None:
        outcomes = self._queue
        while True:
            try:
                first = outcomes.get(timeout=1.0)
            except Empty:
                continue
            batch = [first]
            while len(batch) < _MAX_BATCH:
                try:
                    batch.append(outcomes.get_nowait())
                except Empty:
                    break
            items = [item for item in batch if item is not None]
            by_queue: dict[str, list[_Completion]] = {}
            for item in items:
                by_queue.setdefault(item[1], []).append(item)
            if len(by_queue) > 1 and self._record_queues(by_queue):
                by_queue = {}
            for queue, group in by_queue.items():
                try:
                    self._record_many(queue, group)
                except Exception:
                    logger.exception("recording %d completion(s) failed", len(group))
            if len(items) < len(batch):
                return

    def _record_queues(self, by_queue: dict[str, list[_Completion]]) -> bool:
        """Record several queues' completions in one transaction (one commit).

        Returns False when any of it failed (the transaction rolled back): the
        caller then records queue by queue, where a failure is isolated to its
        queue (and to its run) and named.
        """
        gone: list[tuple[str, dict[UUID, RunState], list[ClaimStatus]]] = []
        try:
            with self._pool.connection() as conn, conn.transaction():
                for queue, items in by_queue.items():
                    states, run_ids, results = _columns(items)
                    statuses = self._engine.complete_runs(conn, queue, run_ids, results)
                    gone.append((queue, states, statuses))
        except Exception as exc:
            logger.debug(
                "recording completions of %d queues at once failed: %s", len(by_queue), exc
            )
            return False
        for queue, states, statuses in gone:
            self._report_gone(queue, states, statuses)
        return True

    def _record_many(self, queue: str, items: list[_Completion]) -> None:
        if len(items) == 1:
            state, _queue, text = items[0]
            self._record(state, queue, self._engine.complete_run, queue, state.run.run_id, text)
            return
        # One statement completes them all (one round trip, one commit) and
        # names the runs that were cancelled or lost meanwhile.
        states, run_ids, results = _columns(items)
        for attempt in (1, 2):
            try:
                with self._pool.connection() as conn:
                    gone = self._engine.complete_runs(conn, queue, run_ids, results)
                break
            except psycopg.OperationalError as exc:
                if attempt == 2:
                    logger.error("could not record %d completions: %s", len(items), exc)
                    return
                self.check_pool()
            except (psycopg.Error, TeguhError) as exc:
                # The database refused something in the batch (a result it
                # cannot store, say): record run by run, so that only the
                # culprit fails, with the database's own message.
                logger.warning(
                    "recording %d completions at once failed (%s): recording them one by one",
                    len(items),
                    exc,
                )
                for state, _q, text in items:
                    self._record(
                        state, queue, self._engine.complete_run, queue, state.run.run_id, text
                    )
                return
        self._report_gone(queue, states, gone)

    def _report_gone(
        self, queue: str, states: dict[UUID, RunState], gone: list[ClaimStatus]
    ) -> None:
        """Log the runs a batch could not complete: cancelled, or lost meanwhile."""
        for status in gone:
            state = states[status.run_id]
            extra = run_extra(queue, state.run)
            if status.status == CANCELLED:
                logger.info("task %s was cancelled", state.run.task_id, extra=extra)
            else:
                logger.warning(
                    "run %s lost its lease before its outcome was recorded",
                    status.run_id,
                    extra=extra,
                )

    def _record(self, state: RunState, queue: str, call: Any, *args: Any) -> None:
        """Run the engine call that ends a run; retry once on a broken connection."""
        run = state.run
        extra = run_extra(queue, run)
        for attempt in (1, 2):
            try:
                with self._pool.connection() as conn:
                    call(conn, *args)
                return
            except psycopg.OperationalError as exc:
                if attempt == 1:
                    self.check_pool()
                else:
                    logger.error(
                        "could not record the outcome of run %s: %s", run.run_id, exc, extra=extra
                    )
            except TaskCancelled:
                logger.info("task %s was cancelled", run.task_id, extra=extra)
                return
            except RunNotActive:
                logger.warning(
                    "run %s lost its lease before its outcome was recorded", run.run_id, extra=extra
                )
                return
            except Exception as exc:
                logger.error(
                    "could not record the outcome of run %s: %s", run.run_id, exc, extra=extra
                )
                if call == self._engine.complete_run:
                    # The database refused this result (a NUL character, say):
                    # fail the run with its message instead of stranding it.
                    self._fail_refused(state, queue, exc)
                return

    def _fail_refused(self, state: RunState, queue: str, exc: Exception) -> None:
        """Fail a run whose result the database refused, with the database's message."""
        cause = exc.__cause__ if isinstance(exc.__cause__, psycopg.Error) else exc
        sqlstate = cause.sqlstate if isinstance(cause, psycopg.Error) else None
        reason = {
            "name": "ResultRefused",
            "message": E.clean(f"the database refused the result: {exc}"),
            "sqlstate": sqlstate or "",
        }
        self._record(state, queue, self._engine.fail_run, queue, state.run.run_id, reason)
