"""The worker protocol: claiming, completing and failing runs, leases,
steps and events, and worker presence."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from teguh import _queries as Q
from teguh._arguments import aware, dump, integer, load, optional_text, optional_uuid, text, uuid
from teguh._engine_core import Conn, EngineCore, _names, failure_reason, logger
from teguh.records import ClaimStatus, Run, WaitResult, WorkerInfo


@dataclass
class QueueClaim:
    """What one claim of one queue returned (`WorkerCalls.claim_queues_next`)."""

    runs: list[Run] = field(default_factory=list)
    bad: list[tuple[UUID, Exception]] = field(default_factory=list)  # rows not decodable
    short: bool = False  # fewer runs than the queue's share: no more are ready
    due_in: float | None = None  # after a short claim: seconds until the next due run

    def add(self, row: Sequence[Any], decode: Callable[[Sequence[Any]], Run], at: int) -> None:
        """Add a claim row whose run id is column ``at``: a run, or the due row of a short claim.

        Each row is decoded on its own, so one bad row (params a custom
        ``loads`` rejects, say) does not strand the batch.
        """
        if row[at] is None:  # the last row of a short claim
            self.short = True
            self.due_in = row[-1]
            return
        try:
            self.runs.append(decode(row))
        except Exception as exc:  # e.g. nesting too deep, a custom loads refusing
            self.bad.append((row[at], exc))


class WorkerCalls(EngineCore):
    """The stored functions a worker, its completer and `TaskContext` call."""

    # -- workers --------------------------------------------------------------------

    def claim(
        self,
        conn: Conn,
        queue: str,
        worker_id: str,
        claim_timeout: int,
        qty: int,
    ) -> tuple[list[Run], list[tuple[UUID, Exception]]]:
        """Lease up to ``qty`` runs; return them and the runs whose row cannot be decoded.

        The claim commits synchronously, like every other write: an
        asynchronous claim lost in a server crash left the task claimable
        again with the same run id while its handler already ran.
        Each row is decoded on its own, so one bad row (params a custom
        ``loads`` rejects, say) does not strand the batch: the caller fails
        the runs returned second.
        """
        args = (
            text(queue, "queue"),
            text(worker_id, "worker_id"),
            integer(claim_timeout, "claim_timeout", 0),
            integer(qty, "qty", 1),
        )
        cur = self.execute(conn, Q.CLAIM_TASK, args, prepare=True)
        rows = cur.fetchall()
        if not rows:
            return [], []
        decode = self.decoder(Run, _names(cur))
        claim = QueueClaim()
        for row in rows:
            claim.add(row, decode, 0)
        return claim.runs, claim.bad

    def claim_next(
        self,
        conn: Conn,
        queue: str,
        worker_id: str,
        claim_timeout: int,
        qty: int,
    ) -> tuple[list[Run], list[tuple[UUID, Exception]], float | None]:
        """`claim`, plus the seconds until the queue's next due time after a short claim.

        One round trip (``teguh.claim_runs_next``). The third value is None
        after a full claim (more runs are probably ready) or when nothing is
        pending; after a short claim it is the seconds from the database's
        now until the next due time (<= 0: due now).
        """
        args = (
            text(queue, "queue"),
            text(worker_id, "worker_id"),
            integer(claim_timeout, "claim_timeout", 0),
            integer(qty, "qty", 1),
        )
        cur = self.execute(conn, Q.CLAIM_RUNS_NEXT, args, prepare=True)
        rows = cur.fetchall()
        decode = self.decoder(Run, _names(cur))
        claim = QueueClaim()
        for row in rows:
            claim.add(row, decode, 0)
        return claim.runs, claim.bad, claim.due_in

    def claim_queues_next(
        self,
        conn: Conn,
        wants: Sequence[tuple[str, int]],
        worker_id: str,
        claim_timeout: int,
        total: int,
    ) -> dict[str, QueueClaim]:
        """`claim_next` for several queues in one round trip and one commit.

        ``wants`` lists (queue, most runs) in claiming order; each queue
        claims up to its fair share of what ``total`` has left
        (``teguh.claim_queues_next``). Returns a `QueueClaim` for each queue
        that had its turn; a queue missing from the result claimed nothing
        because nothing was left for it.
        """
        args = (
            [text(queue, "queue") for queue, _ in wants],
            text(worker_id, "worker_id"),
            integer(claim_timeout, "claim_timeout", 0),
            [integer(qty, "qtys", 1) for _, qty in wants],
            integer(total, "total", 1),
        )
        cur = self.execute(conn, Q.CLAIM_QUEUES_NEXT, args, prepare=True)
        rows = cur.fetchall()
        decode = self.decoder(Run, _names(cur))
        out: dict[str, QueueClaim] = {}
        for row in rows:  # column 0 is the queue, 1 the run id
            out.setdefault(row[0], QueueClaim()).add(row, decode, 1)
        return out

    def complete_run(self, conn: Conn, queue: str, run_id: UUID, result_json: str) -> None:
        """Complete a run with a result already serialized by `dump`."""
        self.execute(conn, Q.COMPLETE_RUN, (queue, run_id, result_json), prepare=True)

    def complete_runs(
        self, conn: Conn, queue: str, run_ids: list[UUID], results_json: list[str]
    ) -> list[ClaimStatus]:
        """Complete many runs in one statement; return those that were cancelled or lost."""
        return self.records(
            conn, ClaimStatus, Q.COMPLETE_RUNS, (queue, run_ids, results_json), prepare=True
        )

    def fail_run(
        self, conn: Conn, queue: str, run_id: Any, reason: Any, retry_at: datetime | None = None
    ) -> None:
        args = (
            text(queue, "queue"),
            uuid(run_id, "run_id"),
            dump(self.dumps, reason, "reason"),
            None if retry_at is None else aware(retry_at, "retry_at"),
        )
        self.execute(conn, Q.FAIL_RUN, args, prepare=True)

    def fail_undecodable(self, conn: Conn, queue: str, run_id: UUID, exc: BaseException) -> None:
        """Fail a claimed run whose row could not be decoded, so it is not stranded."""
        reason = failure_reason(exc)
        reason["message"] = f"cannot decode the run: {reason['message']}"
        logger.error(
            "cannot decode claimed run %s: %s", run_id, reason["message"], extra={"run_id": run_id}
        )
        try:
            self.fail_run(conn, queue, run_id, reason)
        except Exception:
            logger.exception("could not fail the undecodable run %s", run_id)

    def schedule_run(self, conn: Conn, queue: str, run_id: Any, wake_at: datetime) -> None:
        args = (text(queue, "queue"), uuid(run_id, "run_id"), aware(wake_at, "wake_at"))
        self.execute(conn, Q.SCHEDULE_RUN, args)

    def release_run(self, conn: Conn, queue: str, run_id: UUID) -> None:
        """Hand a run back at once (no attempt consumed)."""
        self.execute(conn, Q.RELEASE_RUN, (queue, run_id))

    def hand_back_run(
        self,
        conn: Conn,
        queue: str,
        run_id: UUID,
        delay: float,
        max_hand_backs: int | None,
        worker_id: str,
    ) -> None:
        """Hand a run with no handler here back after ``delay`` seconds (database clock).

        No attempt is used; the engine fails the task instead at its
        ``max_hand_backs``-th hand-back (None: never), naming the missing handler.
        """
        self.execute(conn, Q.HAND_BACK_RUN, (queue, run_id, delay, max_hand_backs, worker_id))

    def extend_claim(self, conn: Conn, queue: str, run_id: Any, extend_by: int) -> None:
        args = (text(queue, "queue"), uuid(run_id, "run_id"), integer(extend_by, "extend_by"))
        self.execute(conn, Q.EXTEND_CLAIM, args)

    def extend_claims(
        self, conn: Conn, queue: str, worker_id: str, run_ids: Iterable[Any], extend_by: int
    ) -> list[ClaimStatus]:
        args = (
            text(queue, "queue"),
            text(worker_id, "worker_id"),
            [uuid(r, "run_ids") for r in run_ids],
            integer(extend_by, "extend_by"),
        )
        return self.records(conn, ClaimStatus, Q.EXTEND_CLAIMS, args, prepare=True)

    def next_wake_at(self, conn: Conn, queue: str) -> datetime | None:
        value: datetime | None = self.value(conn, Q.NEXT_WAKE_AT, (text(queue, "queue"),))
        return value

    def try_ticker_lock(self, conn: Conn, queue: str) -> bool:
        return bool(self.value(conn, Q.TRY_TICKER_LOCK, (queue,)))

    # -- steps and events -----------------------------------------------------------

    def set_checkpoint(
        self,
        conn: Conn,
        queue: str,
        task_id: Any,
        step_name: str,
        state_json: str,
        owner_run: Any,
        extend_claim_by: int | None,
    ) -> None:
        """Record a step's state (already serialized by `dump`)."""
        args = (
            text(queue, "queue"),
            uuid(task_id, "task_id"),
            text(step_name, "step_name"),
            state_json,
            uuid(owner_run, "owner_run"),
            None if extend_claim_by is None else integer(extend_claim_by, "extend_claim_by"),
        )
        self.execute(conn, Q.SET_CHECKPOINT, args)

    def get_checkpoint(self, conn: Conn, queue: str, task_id: Any, name: str) -> Any:
        args = (text(queue, "queue"), uuid(task_id, "task_id"), text(name, "name"))
        return load(self.loads, self.value(conn, Q.GET_CHECKPOINT, args))

    def get_checkpoints(
        self, conn: Conn, queue: str, task_id: Any, run_id: Any | None
    ) -> dict[str, Any]:
        args = (text(queue, "queue"), uuid(task_id, "task_id"), optional_uuid(run_id, "run_id"))
        rows = self.execute(conn, Q.GET_CHECKPOINTS, args).fetchall()
        return {name: load(self.loads, state) for name, state in rows}

    def load_checkpoints(
        self, conn: Conn, queue: str, task_id: UUID, run_id: UUID
    ) -> tuple[datetime, dict[str, Any]]:
        """Return the database's now and the run's checkpoints, in one round trip."""
        row = self.execute(conn, Q.LOAD_CHECKPOINTS, (queue, task_id, run_id)).fetchone()
        assert row is not None
        return row[0], dict(load(self.loads, row[1]) or {})

    def wait_event(
        self,
        conn: Conn,
        queue: str,
        task_id: Any,
        run_id: Any,
        step_name: str,
        event_name: str,
        timeout: int | None,
    ) -> WaitResult:
        args = (
            text(queue, "queue"),
            uuid(task_id, "task_id"),
            uuid(run_id, "run_id"),
            text(step_name, "step_name"),
            text(event_name, "event_name"),
            None if timeout is None else integer(timeout, "timeout"),
        )
        cur = self.execute(conn, Q.WAIT_EVENT, args)
        suspend, payload, timed_out = cur.fetchall()[0]
        return WaitResult(bool(suspend), load(self.loads, payload), bool(timed_out))

    def emit_event(self, conn: Conn, queue: str, event_name: str, payload: Any) -> None:
        args = (
            text(queue, "queue"),
            text(event_name, "event_name"),
            dump(self.dumps, payload, "payload"),
        )
        self.execute(conn, Q.EMIT_EVENT, args)

    def sleep_wake_at(self, conn: Conn, secs: float) -> datetime:
        value: datetime = self.value(conn, Q.SLEEP_WAKE_AT, (secs,))
        return value

    def is_due(self, conn: Conn, when: datetime) -> bool:
        return bool(self.value(conn, Q.IS_DUE, (when,)))

    # -- worker presence ------------------------------------------------------------

    def register_worker(
        self,
        conn: Conn,
        worker_id: str,
        queues: Sequence[str],
        host: str | None,
        pid: int | None,
        ttl: int,
    ) -> None:
        if isinstance(queues, str):
            raise TypeError("queues: expected a sequence of queue names, got a str")
        args = (
            text(worker_id, "worker_id"),
            [text(q, "queues") for q in queues],
            optional_text(host, "host"),
            None if pid is None else integer(pid, "pid"),
            integer(ttl, "ttl", 1),
        )
        self.execute(conn, Q.REGISTER_WORKER, args)

    def worker_heartbeat(
        self, conn: Conn, worker_id: str, ttl: int, hung_handlers: int | None = None
    ) -> bool:
        args = (
            text(worker_id, "worker_id"),
            integer(ttl, "ttl", 1),
            None if hung_handlers is None else integer(hung_handlers, "hung_handlers", 0),
        )
        return bool(self.value(conn, Q.WORKER_HEARTBEAT, args))

    def unregister_worker(self, conn: Conn, worker_id: str) -> bool:
        return bool(self.value(conn, Q.UNREGISTER_WORKER, (text(worker_id, "worker_id"),)))

    def list_workers(self, conn: Conn, queue: str | None) -> list[WorkerInfo]:
        args = (optional_text(queue, "queue"),)
        return self.records(conn, WorkerInfo, Q.LIST_WORKERS, args)

    def queue_workers(self, conn: Conn, queue: str | None) -> dict[str, int]:
        rows = self.execute(conn, Q.QUEUE_WORKERS, (optional_text(queue, "queue"),)).fetchall()
        return {name: int(n) for name, n in rows}
