"""Record how a worker's runs ended: completed, failed, handed back, released.

Completions are the hot path: handler threads queue them, and one completer
thread records whatever has accumulated with one ``teguh.complete_runs`` call
(one round trip, one commit), so a busy worker does not pay a round trip and
a commit per run. Failures, hand-backs and releases are rare and recorded at
once by the calling thread.
"""

from __future__ import annotations

import logging
import threading
import traceback
from queue import Empty, SimpleQueue
from typing import Any, LiteralString

import psycopg
from psycopg_pool import ConnectionPool

from teguh import _convert as C
from teguh import _queries as Q
from teguh.context import CANCELLED, COMPLETING, LOST, RunState
from teguh.errors import RunNotActive, TaskCancelled, translate
from teguh.records import Run

__all__ = ["Recorder", "failure_reason", "run_extra"]

logger = logging.getLogger("teguh.worker")

_MAX_BATCH = 100

_Outcome = tuple[RunState, LiteralString, tuple[Any, ...]]


def run_extra(queue: str, run: Run) -> dict[str, Any]:
    """Return the ``extra`` of a log record about ``run``."""
    return {
        "queue": queue,
        "task_id": run.task_id,
        "run_id": run.run_id,
        "attempt": run.attempt,
        "task_name": run.task_name,
    }


class Recorder:
    """Write the end of runs for one worker (see the module docstring)."""

    def __init__(
        self, pool: ConnectionPool[Any], queue: str, worker_id: str, dumps: C.JsonDumps
    ) -> None:
        self._pool = pool
        self._queue = queue
        self._worker_id = worker_id
        self._dumps = dumps
        self._outcomes: SimpleQueue[_Outcome | None] = SimpleQueue()
        self._thread = threading.Thread(
            target=self._loop, name=f"teguh-complete-{queue}", daemon=True
        )

    def start(self) -> None:
        """Start the completer thread."""
        self._thread.start()

    def close(self, timeout: float) -> None:
        """Record the completions already queued, then stop the completer thread."""
        self._outcomes.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.error("completer thread of %s did not stop", self._worker_id)

    def check_pool(self) -> None:
        """Replace the pool's broken connections (after a server restart, say)."""
        try:
            self._pool.check()
        except Exception:
            logger.exception("checking the connection pool of queue %s failed", self._queue)

    # -- outcomes -------------------------------------------------------------------

    def complete(self, state: RunState, result: Any) -> None:
        """Queue the run's completion with ``result`` (a failure if it is not JSON)."""
        if state.status is not None:
            return
        try:
            text = C.dump(self._dumps, result, f"the result of task {state.run.task_name!r}")
        except TypeError as exc:
            self.fail(state, exc)
            return
        # Claim the run's ending: a shutdown's release can no longer hand it back
        # (its result would then be refused and the finished task run again).
        if not state.mark(COMPLETING):
            return
        self._outcomes.put((state, Q.COMPLETE_RUN, (self._queue, state.run.run_id, text)))

    def fail(self, state: RunState, exc: BaseException) -> None:
        """Fail the run with ``exc`` as ``{"name", "message", "traceback"}``."""
        run = state.run
        if state.status is not None:
            return
        reason = failure_reason(exc)
        final = run.max_attempts is not None and run.attempt >= run.max_attempts
        logger.log(
            logging.ERROR if final else logging.WARNING,
            "task %s (%s) attempt %d failed: %s: %s",
            run.task_id,
            run.task_name,
            run.attempt,
            reason["name"],
            reason["message"],
            extra=run_extra(self._queue, run),
        )
        text = C.dump(C.default_dumps, reason, "failure")
        self._record(state, Q.FAIL_RUN, (self._queue, run.run_id, text, None))

    def hand_back(self, state: RunState, delay: float, max_hand_backs: int | None = None) -> None:
        """Give a run this worker has no handler for back, after ``delay`` seconds.

        The engine fails the task instead at its ``max_hand_backs``-th
        hand-back (None: never), with a reason naming the missing handler.
        """
        run = state.run
        logger.warning(
            "no handler for task %r on worker %s: handing run %s back for %.1fs",
            run.task_name,
            self._worker_id,
            run.run_id,
            delay,
            extra=run_extra(self._queue, run),
        )
        self._record(
            state,
            Q.HAND_BACK_RUN,
            (self._queue, run.run_id, delay, max_hand_backs, self._worker_id),
        )

    def release(self, state: RunState) -> None:
        """Hand a still-running run back at once; its handler's later calls raise LeaseLost."""
        if not state.mark(LOST):
            return  # its result is queued (or it was cancelled/lost already)
        run = state.run
        logger.warning(
            "releasing run %s of task %s (%s): its handler did not finish in time",
            run.run_id,
            run.task_id,
            run.task_name,
            extra=run_extra(self._queue, run),
        )
        try:
            with self._pool.connection() as conn:
                conn.execute(Q.RELEASE_RUN, (self._queue, run.run_id))
        except psycopg.Error as exc:
            # AB001/AB002: it finished, was cancelled or taken over meanwhile.
            logger.info(
                "run %s was not released: %s", run.run_id, exc, extra=run_extra(self._queue, run)
            )

    # -- plumbing -------------------------------------------------------------------

    def _loop(self) -> None:
        outcomes = self._outcomes
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
            try:
                if items:
                    self._record_many(items)
            except Exception:
                logger.exception("recording %d completion(s) failed", len(items))
            if len(items) < len(batch):
                return

    def _record_many(self, items: list[_Outcome]) -> None:
        if len(items) == 1:
            self._record(*items[0])
            return
        # Only completions are queued: one statement completes them all (one
        # round trip, one commit) and names the runs that were cancelled or
        # lost meanwhile instead of failing the batch.
        states = {state.run.run_id: state for state, _query, _params in items}
        run_ids = [params[1] for _state, _query, params in items]
        results = [params[2] for _state, _query, params in items]
        for attempt in (1, 2):
            try:
                with self._pool.connection() as conn:
                    rows = conn.execute(
                        Q.COMPLETE_RUNS, (self._queue, run_ids, results), prepare=True
                    ).fetchall()
                break
            except psycopg.OperationalError as exc:
                if attempt == 2:
                    logger.error("could not record %d completions: %s", len(items), exc)
                    return
                self.check_pool()
            except psycopg.Error as exc:
                # The database refused something in the batch (a result it
                # cannot store, say): record run by run, so that only the
                # culprit fails, with the database's own message.
                logger.warning(
                    "recording %d completions at once failed (%s): recording them one by one",
                    len(items),
                    exc,
                )
                for item in items:
                    self._record(*item)
                return
        for run_id, status in rows:
            state = states[run_id]
            extra = run_extra(self._queue, state.run)
            if status == CANCELLED:
                logger.info("task %s was cancelled", state.run.task_id, extra=extra)
            else:
                logger.warning(
                    "run %s lost its lease before its outcome was recorded", run_id, extra=extra
                )

    def _record(self, state: RunState, query: LiteralString, params: tuple[Any, ...]) -> None:
        """Run the statement that ends a run; retry once on a broken connection."""
        run = state.run
        extra = run_extra(self._queue, run)
        for attempt in (1, 2):
            try:
                with self._pool.connection() as conn:
                    conn.execute(query, params, prepare=True)
                return
            except psycopg.OperationalError as exc:
                if attempt == 1:
                    self.check_pool()
                else:
                    logger.error(
                        "could not record the outcome of run %s: %s", run.run_id, exc, extra=extra
                    )
            except psycopg.Error as exc:
                mapped = translate(exc)
                if isinstance(mapped, TaskCancelled):
                    logger.info("task %s was cancelled", run.task_id, extra=extra)
                elif isinstance(mapped, RunNotActive):
                    logger.warning(
                        "run %s lost its lease before its outcome was recorded",
                        run.run_id,
                        extra=extra,
                    )
                else:
                    logger.error(
                        "could not record the outcome of run %s: %s", run.run_id, exc, extra=extra
                    )
                    if query == Q.COMPLETE_RUN:
                        self._fail_refused(state, exc)
                return

    def _fail_refused(self, state: RunState, exc: psycopg.Error) -> None:
        """Fail a run whose result the database refused, with the database's message."""
        reason = {
            "name": "ResultRefused",
            "message": _clean(f"the database refused the result: {exc}"),
            "sqlstate": exc.sqlstate or "",
        }
        text = C.dump(C.default_dumps, reason, "failure")
        self._record(state, Q.FAIL_RUN, (self._queue, state.run.run_id, text, None))


def failure_reason(exc: BaseException) -> dict[str, str]:
    """Describe ``exc`` as ``{"name", "message", "traceback"}``, whatever it holds.

    Never raises: an exception whose ``__str__`` raises is described by its
    class, and characters PostgreSQL cannot store (NUL, lone surrogates) are
    escaped, so that the failure itself is always recorded.
    """
    name = type(exc).__qualname__
    try:
        message = str(exc)
    except Exception as inner:  # a broken __str__ must not lose the failure
        message = f"<{name}.__str__ raised {type(inner).__qualname__}>"
    try:
        trace = "".join(traceback.format_exception(exc))
    except Exception:
        trace = ""
    return {"name": _clean(name), "message": _clean(message), "traceback": _clean(trace)}


def _clean(text: str) -> str:
    """Escape what a PostgreSQL text or jsonb value cannot hold (NUL, lone surrogates)."""
    return text.replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode("utf-8")
