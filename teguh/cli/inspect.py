"""``teguh schedule ...``, ``teguh queue pause|resume|policy``, ``teguh task list``,
``teguh workers`` and ``teguh stats --watch``: seeing and steering what is there."""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import timedelta
from typing import Any

from teguh.cli import format as F
from teguh.cli import maintenance
from teguh.cli.common import CliError, Session
from teguh.errors import TaskNotFound
from teguh.records import TaskSummary

__all__ = [
    "cmd_policy_set",
    "cmd_policy_show",
    "cmd_queue_pause",
    "cmd_queue_resume",
    "cmd_schedule_add",
    "cmd_schedule_list",
    "cmd_schedule_pause",
    "cmd_schedule_remove",
    "cmd_schedule_resume",
    "cmd_stats",
    "cmd_task_list",
    "cmd_workers",
    "since_arg",
]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def since_arg(text: str) -> timedelta:
    """Parse ``90s``, ``15m``, ``1h30m``, ``2d`` (or bare seconds) into a timedelta."""
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return timedelta(seconds=float(text))
    parts = re.findall(r"(\d+)([smhdw])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(
            f"expected a duration like 90s, 15m, 1h30m or 2d, got {text!r}"
        )
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in parts))


# -- schedules ------------------------------------------------------------------------


def cmd_schedule_list(args: argparse.Namespace, session: Session) -> int:
    client, conn = session.checked()
    schedules = client.list_schedules(args.queue, conn=conn)
    if args.json:
        F.print_json(schedules)
        return 0
    if not schedules:
        print("no schedules (add one with `teguh schedule add`)", file=sys.stderr)
        return 0
    rows = [
        [
            s.queue_name,
            s.schedule_name,
            s.spec,
            s.timezone,
            s.task_name,
            "paused" if s.paused else "active",
            s.next_run_at,
            s.last_run_at,
            "-" if s.last_task_id is None else str(s.last_task_id),
        ]
        for s in schedules
    ]
    headers = ["queue", "name", "spec", "timezone", "task", "status", "next run", "last run"]
    F.print_table([*headers, "last task"], rows)
    for s in schedules:
        if s.last_error:
            print(f"{s.queue_name}/{s.schedule_name}: last error: {s.last_error}", file=sys.stderr)
    return 0


def cmd_schedule_add(args: argparse.Namespace, session: Session) -> int:
    client, conn = session.checked()
    next_run = client.create_schedule(
        args.queue,
        args.name,
        args.spec,
        args.task_name,
        args.params,
        timezone=args.timezone,
        catch_up=args.catch_up,
        max_attempts=args.max_attempts,
        priority=args.priority,
        headers=args.headers,
        conn=conn,
    )
    if args.json:
        F.print_json({"queue": args.queue, "name": args.name, "next_run_at": next_run})
    else:
        print(
            f"schedule {args.name!r} on queue {args.queue}: next run at {F.format_value(next_run)}"
        )
    return 0


def cmd_schedule_remove(args: argparse.Namespace, session: Session) -> int:
    client, conn = session.checked()
    existed = client.drop_schedule(args.queue, args.name, conn=conn)
    if args.json:
        F.print_json({"queue": args.queue, "name": args.name, "dropped": existed})
    if not existed:
        raise CliError(f"no schedule {args.name!r} on queue {args.queue}")
    if not args.json:
        print(f"removed schedule {args.name!r} from queue {args.queue}")
    return 0


def _pause_resume(args: argparse.Namespace, session: Session, pause: bool) -> int:
    client, conn = session.checked()
    try:
        if pause:
            client.pause_schedule(args.queue, args.name, conn=conn)
        else:
            client.resume_schedule(args.queue, args.name, conn=conn)
    except TaskNotFound:
        raise CliError(f"no schedule {args.name!r} on queue {args.queue}") from None
    verb = "paused" if pause else "resumed"
    if args.json:
        F.print_json({"queue": args.queue, "name": args.name, "paused": pause})
    else:
        print(f"{verb} schedule {args.name!r} on queue {args.queue}")
    return 0


def cmd_schedule_pause(args: argparse.Namespace, session: Session) -> int:
    return _pause_resume(args, session, True)


def cmd_schedule_resume(args: argparse.Namespace, session: Session) -> int:
    return _pause_resume(args, session, False)


# -- queue policies ---------------------------------------------------------------------


def _print_policy(args: argparse.Namespace, queue: str, policy: dict[str, Any]) -> None:
    if args.json:
        F.print_json({"queue": queue, "policy": policy})
    else:
        F.print_kv([("queue", queue), *sorted(policy.items())])


def cmd_queue_pause(args: argparse.Namespace, session: Session) -> int:
    client, conn = session.checked()
    for name in args.names:
        policy = client.set_queue_policy(name, {"paused": True}, conn=conn)
        if args.json:
            F.print_json({"queue": name, "policy": policy})
        else:
            print(f"paused queue {name}: claims return nothing until `teguh queue resume {name}`")
    return 0


def cmd_queue_resume(args: argparse.Namespace, session: Session) -> int:
    client, conn = session.checked()
    for name in args.names:
        policy = client.set_queue_policy(name, {"paused": False}, conn=conn)
        if args.json:
            F.print_json({"queue": name, "policy": policy})
        else:
            print(f"resumed queue {name}")
    return 0


def cmd_policy_show(args: argparse.Namespace, session: Session) -> int:
    client, conn = session.checked()
    _print_policy(args, args.queue, client.get_queue_policy(args.queue, conn=conn))
    return 0


def cmd_policy_set(args: argparse.Namespace, session: Session) -> int:
    client, conn = session.checked()
    _print_policy(args, args.queue, client.set_queue_policy(args.queue, args.policy, conn=conn))
    return 0


# -- tasks and workers ------------------------------------------------------------------


def _failure_line(failure: Any) -> str:
    if isinstance(failure, dict) and "name" in failure:
        return f"{failure['name']}: {failure.get('message', '')}"
    return "" if failure is None else F.format_value(failure)


def _state_text(task: TaskSummary) -> str:
    """The state, saying so for a pending task that was handed back (not a sleep)."""
    failure = task.last_failure
    if (
        task.state == "pending"
        and isinstance(failure, dict)
        and failure.get("name") == "HandedBack"
    ):
        return "pending (handed back)"
    return task.state


def cmd_task_list(args: argparse.Namespace, session: Session) -> int:
    client, conn = session.checked()
    queues = [args.queue] if args.queue else client.list_queues(conn=conn)
    created_after = None
    if args.since is not None:
        created_after = client.current_time(conn=conn) - args.since
    found: list[tuple[str, TaskSummary]] = []
    for queue in queues:
        page = client.list_tasks(
            queue,
            state=args.state or None,
            task_name=args.name,
            created_after=created_after,
            limit=args.limit,
            conn=conn,
        )
        found.extend((queue, t) for t in page)
    found.sort(key=lambda pair: pair[1].created_at, reverse=True)
    found = found[: args.limit]
    if args.json:
        F.print_json([{"queue": q, **F.jsonable(t)} for q, t in found])
        return 0
    if not found:
        print("no tasks match", file=sys.stderr)
        return 0
    rows = [
        [
            str(t.task_id),
            q,
            t.task_name,
            _state_text(t),
            f"{t.attempts}/{t.max_attempts}",
            t.created_at,
            F.format_value(_failure_line(t.last_failure), limit=60) if t.last_failure else "",
        ]
        for q, t in found
    ]
    F.print_table(["task", "queue", "name", "state", "attempts", "created", "last failure"], rows)
    return 0


def cmd_workers(args: argparse.Namespace, session: Session) -> int:
    client, conn = session.checked()
    workers = client.list_workers(args.queue, conn=conn)
    counts = client.queue_workers(args.queue, conn=conn)
    if args.json:
        F.print_json({"workers": workers, "queues": counts})
        return 0
    if workers:
        rows = [
            [
                w.worker_id,
                w.host or "-",
                w.pid,
                ",".join(w.queues),
                w.started_at,
                w.last_seen_at,
                str(w.hung_handlers),
            ]
            for w in workers
        ]
        headers = ["worker", "host", "pid", "queues", "started", "last seen", "hung"]
        F.print_table(headers, rows, right=[6])
        print()
    idle = sorted(q for q, n in counts.items() if n == 0)
    F.print_table(["queue", "workers"], [[q, str(n)] for q, n in sorted(counts.items())], right=[1])
    if idle:
        print(f"no worker serves: {', '.join(idle)}", file=sys.stderr)
    hung = [w for w in workers if w.hung_handlers]
    for w in hung:
        print(
            f"worker {w.worker_id}: {w.hung_handlers} handler(s) still run after their task was"
            " cancelled or their lease lost (each holds a slot)",
            file=sys.stderr,
        )
    return 0


def cmd_stats(args: argparse.Namespace, session: Session) -> int:
    """``teguh stats``; with ``--watch``, redraw in place every ``--interval`` seconds."""
    if not args.watch:
        return maintenance.cmd_stats(args, session)
    tty = sys.stdout.isatty()
    try:
        while True:
            if tty:
                sys.stdout.write("\x1b[H\x1b[2J")  # home, clear: refresh in place
            print(time.strftime("%H:%M:%S"), flush=True)
            maintenance.cmd_stats(args, session)
            if args.count is not None:
                args.count -= 1
                if args.count <= 0:
                    return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
