"""``teguh spawn``, ``teguh task show|cancel|retry`` and ``teguh emit``."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg

from teguh.cli import format as F
from teguh.cli.common import CliError, Session
from teguh.client import Client
from teguh.errors import InvalidState, TaskNotFound
from teguh.records import TaskInfo

__all__ = ["cmd_cancel", "cmd_emit", "cmd_retry", "cmd_show", "cmd_spawn"]


def cmd_spawn(args: argparse.Namespace, session: Session) -> int:
    client, conn = session.checked()
    try:
        result = client.spawn_task(
            args.queue,
            args.task_name,
            args.params,
            max_attempts=args.max_attempts,
            delay=args.delay,
            priority=args.priority,
            idempotency_key=args.idempotency_key,
            headers=args.headers,
            concurrency_key=args.concurrency_key,
            conn=conn,
        )
    except TypeError as exc:  # not reachable with JSON from the command line, but be safe
        raise CliError(str(exc), 2) from None
    if args.json:
        F.print_json({"queue": args.queue, "task_name": args.task_name, **F.jsonable(result)})
    elif result.created:
        print(f"spawned task {result.task_id} ({args.task_name} on queue {args.queue})")
    else:
        print(
            f"task {result.task_id} already exists for idempotency key "
            f"{args.idempotency_key!r} (not spawned again)"
        )
    return 0


def _task_or_fail(
    client: Client, conn: psycopg.Connection[Any], queue: str, task_id: UUID
) -> TaskInfo:
    info = client.get_task(queue, task_id, conn=conn)
    if info is None:
        raise TaskNotFound(f'task {task_id} does not exist in queue "{queue}"')
    return info


_TRACEBACK_LINES = 12
"""Lines of a stored traceback `teguh task show` prints without ``--traceback``."""


def _failure_text(failure: Any, *, traceback: bool) -> str:
    """Render a stored failure: ``name: message``, then its traceback (the end, or all)."""
    if isinstance(failure, dict) and "name" in failure and "message" in failure:
        text = f"{failure['name']}: {failure['message']}"
        tb = failure.get("traceback")
        if isinstance(tb, str) and tb.strip():
            lines = tb.rstrip().splitlines()
            if not traceback and len(lines) > _TRACEBACK_LINES:
                cut = len(lines) - _TRACEBACK_LINES
                lines = [f"... ({cut} earlier lines: --traceback shows them)"]
                lines += tb.rstrip().splitlines()[cut:]
            text += "\n" + "\n".join(lines)
        return text
    return F.format_value(failure)


def _when(at: datetime, now: datetime) -> str:
    """Render an instant with how far it is from the database's ``now``."""
    delta = (at - now).total_seconds()
    if delta > 0:
        return f"{F.format_value(at)} (in {F.format_age(delta)})"
    return f"{F.format_value(at)} (due now, for {F.format_age(-delta)})"


def _wait_pairs(info: TaskInfo, queue: str, now: datetime, workers: int) -> list[tuple[str, str]]:
    """Describe what an unfinished task waits for, and when it can run next."""
    pairs: list[tuple[str, str]] = []
    if info.state == "running":
        lease = (
            "never expires" if info.lease_expires_at is None else _when(info.lease_expires_at, now)
        )
        pairs.append(("running on", f"worker {info.worker_id or '?'}, lease {lease}"))
        return pairs
    kind = info.wait_kind
    next_at = info.next_attempt_at
    attempt = f"attempt {info.attempts + 1}"
    if info.max_attempts is not None:
        attempt += f" of {info.max_attempts}"
    label = "next attempt"
    if kind == "start":
        waits = f"its first attempt ({attempt})"
    elif kind == "retry":
        waits = f"a retry after a failure ({attempt})"
    elif kind == "sleep":
        waits, label = "a durable sleep", "wakes"
    elif kind == "event":
        waits, label = f"event {info.wait_event!r}", "times out"
    elif kind == "resume":
        waits, label = f"a worker: event {info.wait_event!r} came, the task resumes", "due"
    elif kind == "handed_back":
        if info.hand_backs:
            waits = (
                f"a worker with a handler for {info.task_name!r}: handed back "
                f"{info.hand_backs} time(s), no attempt used"
            )
        else:
            waits = "a worker: handed back by a stopping worker, no attempt used"
    else:
        waits = "-"
    pairs.append(("waiting for", waits))
    if next_at is not None:
        pairs.append((label, _when(next_at, now)))
    elif kind == "event":
        pairs.append((label, "never (the wait has no timeout)"))
    limit, running = info.concurrency_limit, info.concurrency_running
    if limit is not None and running is not None:
        capped = " (at its limit: the task waits for one to end)" if running >= limit else ""
        pairs.append(
            ("concurrency", f"key {info.concurrency_key!r}: {running} of {limit} running{capped}")
        )
    if info.queue_paused:
        pairs.append(("queue paused", f"nothing is claimed until `teguh queue resume {queue}`"))
    if workers == 0:
        pairs.append(("workers", f"none serves queue {queue}: start one (`teguh worker`)"))
    return pairs


def cmd_show(args: argparse.Namespace, session: Session) -> int:
    client, conn = session.checked()
    if args.queue is None:  # task ids are unique across queues
        args.queue = client.locate_task(args.task_id, conn=conn)
        if args.queue is None:
            raise TaskNotFound(f"task {args.task_id} does not exist in any queue")
    info = _task_or_fail(client, conn, args.queue, args.task_id)
    checkpoints = client.get_checkpoints(args.queue, args.task_id, None, conn=conn)
    if args.json:
        F.print_json({"queue": args.queue, **F.jsonable(info), "checkpoints": checkpoints})
        return 0
    attempts = str(info.attempts)
    if info.max_attempts is not None:
        attempts += f" of {info.max_attempts}"
    pairs: list[tuple[str, Any]] = [
        ("task", str(info.task_id)),
        ("name", info.task_name),
        ("queue", args.queue),
        ("state", info.state),
        ("attempts", attempts),
    ]
    if info.state in ("pending", "sleeping", "running") and not info.archived:
        now = client.current_time(conn=conn)
        workers = client.queue_workers(args.queue, conn=conn).get(args.queue, 0)
        pairs += _wait_pairs(info, args.queue, now, workers)
    pairs += [
        ("priority", info.priority),
        ("created", info.created_at),
        ("started", info.first_started_at),
        ("finished", info.finished_at),
    ]
    if info.cancelled_at is not None:
        pairs.append(("cancelled", info.cancelled_at))
    if info.archived:
        pairs.append(("archived", "yes (past the queue's retention)"))
    if info.idempotency_key is not None:
        pairs.append(("idempotency key", info.idempotency_key))
    pairs.append(("params", F.format_value(info.params, limit=2000)))
    if info.headers:
        pairs.append(("headers", info.headers))
    pairs.append(("result", F.format_value(info.completed_payload, limit=2000)))
    failure = info.last_failure
    pairs.append(
        (
            "last failure",
            "-" if failure is None else _failure_text(failure, traceback=args.traceback),
        )
    )
    # teguh's own bookkeeping (the hand-back count) is shown above, not as a step
    steps = {k: v for k, v in checkpoints.items() if not k.startswith("$teguh:")}
    pairs.append(("checkpoints", str(len(steps)) if steps else "none"))
    F.print_kv(pairs)
    if steps:
        print()
        F.print_table(["checkpoint", "state"], [[k, F.format_value(v)] for k, v in steps.items()])
    return 0


def cmd_cancel(args: argparse.Namespace, session: Session) -> int:
    client, conn = session.checked()
    before = _task_or_fail(client, conn, args.queue, args.task_id).state
    client.cancel_task(args.queue, args.task_id, conn=conn)
    after = _task_or_fail(client, conn, args.queue, args.task_id).state
    if args.json:
        F.print_json({"task_id": args.task_id, "previous_state": before, "state": after})
    if after != "cancelled":
        raise CliError(f"task {args.task_id} already finished ({after}): nothing to cancel")
    if not args.json:
        if before == "cancelled":
            print(f"task {args.task_id} was already cancelled")
        else:
            print(f"cancelled task {args.task_id} (was {before})")
    return 0


def cmd_retry(args: argparse.Namespace, session: Session) -> int:
    client, conn = session.checked()
    try:
        result = client.retry_task(
            args.queue,
            args.task_id,
            spawn_new=args.spawn_new,
            max_attempts=args.max_attempts,
            conn=conn,
        )
    except InvalidState as exc:
        raise CliError(f"{exc} (use --spawn-new to run it again as a new task)") from None
    if args.json:
        F.print_json({"retried_task_id": args.task_id, **F.jsonable(result)})
    elif args.spawn_new:
        print(f"spawned task {result.task_id} as a copy of task {args.task_id}")
    else:
        print(f"task {result.task_id} will run again as attempt {result.attempt}")
    return 0


def cmd_emit(args: argparse.Namespace, session: Session) -> int:
    client, conn = session.checked()
    client.emit_event(args.queue, args.event, args.payload, conn=conn)
    if args.json:
        F.print_json({"queue": args.queue, "event": args.event, "payload": args.payload})
    else:
        print(f"emitted event {args.event!r} on queue {args.queue}")
    return 0
