"""``teguh queue limit | unlimit | limits``: per-key concurrency limits (docs/queues.md)."""

from __future__ import annotations

import argparse
import sys

from teguh.cli import format as F
from teguh.cli.common import CliError, Session

__all__ = ["cmd_limit_list", "cmd_limit_remove", "cmd_limit_set", "limit_arg"]


def limit_arg(text: str) -> int:
    """Parse a limit: a whole number >= 0, in ASCII digits (``str.isdigit`` alone
    takes "²", which ``int`` refuses, and "٣", which it reads as 3)."""
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)


def cmd_limit_set(args: argparse.Namespace, session: Session) -> int:
    client, conn = session.checked()
    client.set_concurrency_limit(args.queue, args.key, args.limit, conn=conn)
    if args.json:
        F.print_json({"queue": args.queue, "key": args.key, "max_running": args.limit})
        return 0
    each = " (each key with that prefix separately)" if args.key.endswith("*") else ""
    held = " (held: none of them runs)" if args.limit == 0 else ""
    print(
        f"queue {args.queue}: at most {args.limit} run(s) of key {args.key!r} at once{each}{held}"
    )
    return 0


def cmd_limit_remove(args: argparse.Namespace, session: Session) -> int:
    client, conn = session.checked()
    existed = client.drop_concurrency_limit(args.queue, args.key, conn=conn)
    if args.json:
        F.print_json({"queue": args.queue, "key": args.key, "dropped": existed})
    if not existed:
        raise CliError(f"no concurrency limit on key {args.key!r} in queue {args.queue}")
    if not args.json:
        print(f"queue {args.queue}: key {args.key!r} is no longer limited")
    return 0


def cmd_limit_list(args: argparse.Namespace, session: Session) -> int:
    client, conn = session.checked()
    limits = client.list_concurrency_limits(args.queue, conn=conn)
    if args.json:
        F.print_json(limits)
        return 0
    if not limits:
        print("no concurrency limits (set one with `teguh queue limit`)", file=sys.stderr)
        return 0
    rows = [
        [
            lim.queue_name,
            lim.key,
            "each key with this prefix" if lim.is_prefix else "this key",
            lim.max_running,
            lim.running,
            lim.updated_at,
        ]
        for lim in limits
    ]
    F.print_table(["queue", "key", "applies to", "limit", "running", "updated"], rows)
    return 0
