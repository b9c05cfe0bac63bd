"""The one place that calls teguh's stored functions.

`Engine` has one method per stored function the library uses. Each takes the
connection to run on first (the caller owns it: a pooled connection, a
worker's own, or an application's connection inside its transaction) and:

- encodes the arguments, checking their Python types first, so that a wrong
  type raises `TypeError` and a value the engine cannot store raises
  `teguh.InvalidArgument`, both naming the argument, before anything is sent;
- decodes rows by column name into the records of `teguh.records`
  (`_decoder`), jsonb columns with the engine's ``loads``;
- maps SQLSTATEs to teguh's exceptions in one table (`translate`).

`Client`, the worker, its completer and `TaskContext` all go through here.
"""

from __future__ import annotations

import dataclasses
import logging
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, LiteralString, TypeVar
from uuid import UUID

import psycopg

from teguh import _queries as Q
from teguh._arguments import (
    INT4_MAX,
    Duration,
    JsonDumps,
    JsonLoads,
    aware,
    conninfo,
    default_dumps,
    default_loads,
    dump,
    integer,
    load,
    optional_text,
    optional_uuid,
    seconds,
    spawn_options,
    text,
    uuid,
    whole_seconds,
)
from teguh.errors import (
    InvalidArgument,
    InvalidState,
    QueueNotFound,
    RunNotActive,
    SchemaMissing,
    TaskCancelled,
    TaskNotFound,
    TeguhError,
    TeguhSignal,
)
from teguh.records import (
    ClaimStatus,
    QueueStats,
    Run,
    ScheduleInfo,
    SpawnResult,
    TaskInfo,
    TaskResult,
    TaskSummary,
    WaitResult,
    WorkerInfo,
)

__all__ = [
    "INT4_MAX",
    "Duration",
    "Engine",
    "JsonDumps",
    "JsonLoads",
    "aware",
    "conninfo",
    "default_dumps",
    "default_loads",
    "dump",
    "failure_reason",
    "integer",
    "load",
    "optional_text",
    "optional_uuid",
    "seconds",
    "spawn_options",
    "text",
    "translate",
    "uuid",
    "whole_seconds",
]

Conn = psycopg.Connection[Any]
logger = logging.getLogger("teguh.client")
R = TypeVar("R")


# -- SQLSTATE -> exception: the one table ---------------------------------------

_SIMPLE: dict[str, type[TeguhError] | type[TeguhSignal]] = {
    "42704": QueueNotFound,
    "P0002": TaskNotFound,
    "AB001": TaskCancelled,
    "AB002": RunNotActive,
    "55000": InvalidState,
}


def translate(exc: psycopg.Error) -> TeguhError | TeguhSignal | None:
    """Return the teguh exception for a psycopg error, or None if it has none."""
    state = exc.sqlstate
    if state is None:
        return None
    message = exc.diag.message_primary or str(exc)
    if state == "22023":
        return InvalidArgument(message, argument=exc.diag.column_name)
    if state == "3F000" and "teguh" in message:
        return SchemaMissing(
            f"the teguh schema is not installed in this database ({message}): run `teguh install`"
        )
    cls = _SIMPLE.get(state)
    return None if cls is None else cls(message)


# -- failure reasons ---------------------------------------------------------------

MAX_TRACEBACK = 16 * 1024
"""Stored tracebacks are cut to this many characters (the end is kept)."""
_CUT = "... [traceback cut to the last 16 KiB] ...\n"


def failure_reason(exc: BaseException) -> dict[str, str]:
    """Describe ``exc`` as ``{"name", "message", "traceback"}``, whatever it holds.

    Never raises: an exception whose ``__str__`` raises is described by its
    class, characters PostgreSQL cannot store (NUL, lone surrogates) are
    escaped, and the traceback is cut to its last `MAX_TRACEBACK` characters,
    so that the failure itself is always recorded.
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
    if len(trace) > MAX_TRACEBACK:
        trace = _CUT + trace[-(MAX_TRACEBACK - len(_CUT)) :]
    return {"name": clean(name), "message": clean(message), "traceback": clean(trace)}


def clean(text: str) -> str:
    """Escape what a PostgreSQL text or jsonb value cannot hold (NUL, lone surrogates)."""
    return text.replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode("utf-8")


# -- row decoding by column name -------------------------------------------------

# The jsonb columns of each record, fetched as text and decoded with ``loads``.
_JSON_FIELDS: dict[type[Any], frozenset[str]] = {
    Run: frozenset({"params", "retry_strategy", "headers", "event_payload"}),
    TaskInfo: frozenset(
        {"params", "headers", "retry_strategy", "completed_payload", "last_failure"}
    ),
    TaskResult: frozenset({"completed_payload"}),
    WaitResult: frozenset({"payload"}),
    ScheduleInfo: frozenset({"params", "options"}),
    TaskSummary: frozenset({"params", "headers", "last_failure"}),
}
_Decoder = Callable[[Sequence[Any]], Any]
_decoders: dict[tuple[type[Any], tuple[str, ...]], tuple[int, ...]] = {}


def _columns(cls: type[Any], names: tuple[str, ...]) -> tuple[int, ...]:
    """Return, for each field of ``cls`` in order, the index of its column."""
    key = (cls, names)
    found = _decoders.get(key)
    if found is None:
        index = {name: i for i, name in enumerate(names)}
        fields = [f.name for f in dataclasses.fields(cls)]
        missing = [f for f in fields if f not in index]
        if missing:
            raise TeguhError(
                f"the engine returned no column {missing} for {cls.__name__}: "
                "is the installed schema the library's version?"
            )
        found = _decoders[key] = tuple(index[f] for f in fields)
    return found


def _names(cursor: psycopg.Cursor[Any]) -> tuple[str, ...]:
    return tuple(col.name for col in cursor.description or ())


class Engine:
    """Call the stored functions on a connection the caller provides.

    ``dumps``/``loads`` serialize params, results, checkpoints and payloads.
    Thread-safe: it holds no connection.
    """

    def __init__(self, dumps: JsonDumps | None = None, loads: JsonLoads | None = None) -> None:
        self.dumps: JsonDumps = dumps or default_dumps
        self.loads: JsonLoads = loads or default_loads

    # -- plumbing -------------------------------------------------------------------

    def execute(
        self,
        conn: Conn,
        query: LiteralString,
        params: Sequence[Any],
        *,
        prepare: bool | None = None,
    ) -> psycopg.Cursor[Any]:
        """Run ``query``, mapping a database error to teguh's exception (``from`` it)."""
        try:
            return conn.execute(query, params, prepare=prepare)
        except psycopg.Error as exc:
            if (mapped := translate(exc)) is None:
                raise
            raise mapped from exc

    def value(self, conn: Conn, query: LiteralString, params: Sequence[Any] = ()) -> Any:
        """Return the first column of the first row (None without rows)."""
        row = self.execute(conn, query, params).fetchone()
        return None if row is None else row[0]

    def records(
        self,
        conn: Conn,
        cls: type[R],
        query: LiteralString,
        params: Sequence[Any],
        *,
        prepare: bool | None = None,
    ) -> list[R]:
        """Run ``query`` and decode every row into ``cls`` by column name."""
        cur = self.execute(conn, query, params, prepare=prepare)
        rows = cur.fetchall()
        if not rows:
            return []
        decode = self.decoder(cls, _names(cur))
        return [decode(row) for row in rows]

    def decoder(self, cls: type[R], names: tuple[str, ...]) -> Callable[[Sequence[Any]], R]:
        """Return a function turning a row with columns ``names`` into a ``cls``."""
        index = _columns(cls, names)
        json_fields = _JSON_FIELDS.get(cls, frozenset())
        fields = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        loads = self.loads
        json_at = frozenset(i for i, f in zip(index, fields, strict=True) if f in json_fields)

        def decode(row: Sequence[Any]) -> R:
            return cls(
                *[
                    (None if row[i] is None else loads(row[i])) if i in json_at else row[i]
                    for i in index
                ]
            )

        return decode

    # -- schema and queues ----------------------------------------------------------

    def version(self, conn: Conn) -> str:
        return str(self.value(conn, Q.VERSION))

    def create_queue(self, conn: Conn, queue: str) -> None:
        self.execute(conn, Q.CREATE_QUEUE, (text(queue, "queue"),))

    def drop_queue(self, conn: Conn, queue: str) -> None:
        self.execute(conn, Q.DROP_QUEUE, (text(queue, "queue"),))

    def list_queues(self, conn: Conn) -> list[str]:
        return [row[0] for row in self.execute(conn, Q.LIST_QUEUES, ()).fetchall()]

    # -- spawning -------------------------------------------------------------------

    def spawn_task(
        self, conn: Conn, queue: str, task_name: str, params: Any, options: Mapping[str, Any]
    ) -> SpawnResult:
        args = (
            text(queue, "queue"),
            text(task_name, "task_name"),
            dump(self.dumps, params, "params"),
            dump(self.dumps, spawn_options(options), "options"),
        )
        return self.records(conn, SpawnResult, Q.SPAWN_TASK, args)[0]

    def spawn_tasks(
        self,
        conn: Conn,
        queue: str,
        task_name: str,
        params: Sequence[Any],
        options: Mapping[str, Any],
    ) -> list[SpawnResult]:
        encoded = spawn_options(options, many=True)
        keys = options.get("idempotency_keys")
        if keys is not None:
            keys = [optional_text(k, "idempotency_keys") for k in keys]
            if len(keys) != len(params):
                raise ValueError(
                    f"idempotency_keys has {len(keys)} elements, params has {len(params)}"
                )
            encoded["idempotency_keys"] = keys
        if not params:
            return []
        args = (
            text(queue, "queue"),
            text(task_name, "task_name"),
            dump(self.dumps, list(params), "params"),
            dump(self.dumps, encoded, "options"),
        )
        return self.records(conn, SpawnResult, Q.SPAWN_TASKS, args)

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
        runs: list[Run] = []
        bad: list[tuple[UUID, Exception]] = []
        for row in rows:
            try:
                runs.append(decode(row))
            except Exception as exc:  # e.g. nesting too deep, a custom loads refusing
                bad.append((row[0], exc))
        return runs, bad

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

    def next_wake_in(self, conn: Conn, queue: str) -> float | None:
        """Seconds from the database's now to the queue's next due time (None: nothing)."""
        row = self.execute(conn, Q.NEXT_WAKE_IN, (queue,), prepare=True).fetchone()
        return None if row is None else row[0]

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

    # -- tasks ----------------------------------------------------------------------

    def cancel_task(self, conn: Conn, queue: str, task_id: Any) -> None:
        self.execute(conn, Q.CANCEL_TASK, (text(queue, "queue"), uuid(task_id, "task_id")))

    def retry_task(
        self, conn: Conn, queue: str, task_id: Any, options: Mapping[str, Any]
    ) -> SpawnResult:
        args = (
            text(queue, "queue"),
            uuid(task_id, "task_id"),
            dump(self.dumps, dict(options), "options"),
        )
        return self.records(conn, SpawnResult, Q.RETRY_TASK, args)[0]

    def get_task_result(self, conn: Conn, queue: str, task_id: Any) -> TaskResult | None:
        args = (text(queue, "queue"), uuid(task_id, "task_id"))
        found = self.records(conn, TaskResult, Q.GET_TASK_RESULT, args)
        return found[0] if found else None

    def get_task(self, conn: Conn, queue: str, task_id: Any) -> TaskInfo | None:
        args = (text(queue, "queue"), uuid(task_id, "task_id"))
        found = self.records(conn, TaskInfo, Q.GET_TASK, args)
        return found[0] if found else None

    # -- time and maintenance -------------------------------------------------------

    def ticker(self, conn: Conn, queue: str | None) -> int:
        return int(self.value(conn, Q.TICKER, (optional_text(queue, "queue"),)) or 0)

    def current_time(self, conn: Conn) -> datetime:
        value: datetime = self.value(conn, Q.CURRENT_TIME)
        return value

    def cleanup_tasks(self, conn: Conn, queue: str, ttl: int, limit: int) -> int:
        args = (text(queue, "queue"), integer(ttl, "ttl", 0), integer(limit, "limit", 0))
        return int(self.value(conn, Q.CLEANUP_TASKS, args) or 0)

    def cleanup_all_queues(self, conn: Conn, queue: str | None) -> int:
        return int(self.value(conn, Q.CLEANUP_ALL_QUEUES, (optional_text(queue, "queue"),)) or 0)

    def queue_stats(self, conn: Conn, queue: str | None) -> list[QueueStats]:
        return self.records(conn, QueueStats, Q.QUEUE_STATS, (optional_text(queue, "queue"),))

    def start_cron(self, conn: Conn, run_as: str | None = None) -> None:
        self.execute(conn, Q.START_CRON, (optional_text(run_as, "run_as"),))

    def stop_cron(self, conn: Conn) -> None:
        self.execute(conn, Q.STOP_CRON, ())

    # -- schedules ------------------------------------------------------------------

    def create_schedule(
        self,
        conn: Conn,
        queue: str,
        name: str,
        spec: str,
        task_name: str,
        params: Any,
        options: Mapping[str, Any],
    ) -> datetime:
        args = (
            text(queue, "queue"),
            text(name, "name"),
            text(spec, "spec"),
            text(task_name, "task_name"),
            dump(self.dumps, params, "params"),
            dump(self.dumps, dict(options), "options"),
        )
        value: datetime = self.value(conn, Q.CREATE_SCHEDULE, args)
        return value

    def drop_schedule(self, conn: Conn, queue: str, name: str) -> bool:
        args = (text(queue, "queue"), text(name, "name"))
        return bool(self.value(conn, Q.DROP_SCHEDULE, args))

    def list_schedules(self, conn: Conn, queue: str | None) -> list[ScheduleInfo]:
        args = (optional_text(queue, "queue"),)
        return self.records(conn, ScheduleInfo, Q.LIST_SCHEDULES, args)

    def pause_schedule(self, conn: Conn, queue: str, name: str) -> None:
        self.execute(conn, Q.PAUSE_SCHEDULE, (text(queue, "queue"), text(name, "name")))

    def resume_schedule(self, conn: Conn, queue: str, name: str) -> None:
        self.execute(conn, Q.RESUME_SCHEDULE, (text(queue, "queue"), text(name, "name")))

    # -- queue policies and finding tasks -------------------------------------------

    def set_queue_policy(self, conn: Conn, queue: str, policy: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(policy, Mapping):
            raise TypeError(f"policy: expected a mapping, got {type(policy).__name__}")
        args = (text(queue, "queue"), dump(self.dumps, dict(policy), "policy"))
        result: dict[str, Any] = load(self.loads, self.value(conn, Q.SET_QUEUE_POLICY, args))
        return result

    def get_queue_policy(self, conn: Conn, queue: str) -> dict[str, Any]:
        args = (text(queue, "queue"),)
        result: dict[str, Any] = load(self.loads, self.value(conn, Q.GET_QUEUE_POLICY, args))
        return result

    def list_tasks(
        self,
        conn: Conn,
        queue: str,
        filters: Mapping[str, Any],
        after: Any,
        limit: int,
    ) -> list[TaskSummary]:
        args = (
            text(queue, "queue"),
            dump(self.dumps, dict(filters), "filters"),
            optional_uuid(after, "after"),
            integer(limit, "limit", 1),
        )
        return self.records(conn, TaskSummary, Q.LIST_TASKS, args)

    def locate_task(self, conn: Conn, task_id: Any) -> str | None:
        value: str | None = self.value(conn, Q.LOCATE_TASK, (uuid(task_id, "task_id"),))
        return value

    def release_run_at(
        self, conn: Conn, queue: str, run_id: Any, available_at: datetime | None, reason: Any
    ) -> None:
        """``release_run`` with every argument: pending again, saying why (no attempt used)."""
        args = (
            text(queue, "queue"),
            uuid(run_id, "run_id"),
            None if available_at is None else aware(available_at, "available_at"),
            None if reason is None else dump(self.dumps, reason, "reason"),
        )
        self.execute(conn, Q.RELEASE_RUN_AT, args)

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
