"""``teguh tick`` (once, or ``--every`` under the worker's signal policy) and ``teguh stats``."""

from __future__ import annotations

import argparse
import sys
import time

import psycopg

from teguh.cli import format as F
from teguh.cli.common import CliError, Session, one_line
from teguh.worker.signals import SignalPolicy

__all__ = ["cmd_stats", "cmd_tick"]


def cmd_tick(args: argparse.Namespace, session: Session) -> int:
    client, conn = session.checked()
    if args.queue is not None:
        client.queue_stats(args.queue, conn=conn)  # QueueNotFound for a typo
    if args.every is None:
        count = client.ticker(args.queue, conn=conn)
        if args.json:
            F.print_json({"queue": args.queue, "changed": count})
        else:
            print(f"ticker: {count} task(s) recovered or cancelled")
        return 0
    where = f"queue {args.queue}" if args.queue else "all queues"
    with SignalPolicy() as stop:
        # announce only once a signal can no longer kill us mid-tick
        if not args.json:
            print(f"running the ticker on {where} every {args.every:g}s (Ctrl-C stops)", flush=True)
        while not stop.count:
            started = time.monotonic()
            try:
                changed: int | None = client.ticker(args.queue, conn=session.connect())
            except psycopg.OperationalError as exc:
                print(
                    f"teguh tick: lost the connection ({one_line(exc)}); retrying", file=sys.stderr
                )
                session.close()
                changed = None
            except CliError as exc:
                print(f"teguh tick: {exc}; retrying", file=sys.stderr)
                changed = None
            if changed is not None:
                if args.json:
                    F.print_json({"time": time.time(), "queue": args.queue, "changed": changed})
                elif changed:
                    stamp = time.strftime("%H:%M:%S")
                    print(f"{stamp} ticker: {changed} task(s) recovered or cancelled", flush=True)
            stop.event.wait(max(0.0, args.every - (time.monotonic() - started)))
    return 0


def cmd_stats(args: argparse.Namespace, session: Session) -> int:
    client, conn = session.checked()
    stats = client.queue_stats(args.queue, conn=conn)
    if args.json:
        F.print_json(stats)
        return 0
    if not stats:
        print("no queues (create one with `teguh queue create NAME`)", file=sys.stderr)
        return 0
    headers = ["queue", "pending", "running", "sleeping", "completed", "failed", "cancelled"]
    headers += ["oldest pending", "in flight", "workers"]
    rows = [
        [
            s.queue_name,
            f"{s.pending:,}",
            f"{s.running:,}",
            f"{s.sleeping:,}",
            f"{s.completed:,}",
            f"{s.failed:,}",
            f"{s.cancelled:,}",
            F.format_age(s.oldest_pending_seconds),
            f"{s.in_flight:,}",
            f"{s.workers:,}",
        ]
        for s in stats
    ]
    F.print_table(headers, rows, right=range(1, 10))
    idle = [s.queue_name for s in stats if s.workers == 0 and (s.pending or s.sleeping)]
    if idle:
        print(f"no worker serves: {', '.join(idle)} (tasks wait there)", file=sys.stderr)
    return 0
