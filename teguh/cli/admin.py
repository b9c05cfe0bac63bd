"""``teguh install`` and ``teguh queue create|drop|list``."""

from __future__ import annotations

import argparse
import sys
import time

import psycopg

from teguh import schema
from teguh.cli import format as F
from teguh.cli.common import CliError, Session, one_line
from teguh.errors import QueueNotFound, SchemaError

__all__ = ["cmd_install", "cmd_queue_create", "cmd_queue_drop", "cmd_queue_list"]


def cmd_install(args: argparse.Namespace, session: Session) -> int:
    conn = session.connect()
    started = time.monotonic()
    before = schema.installed_version(conn)
    applied: list[str] = []
    if before is None:
        try:
            applied = schema.install(conn)
        except SchemaError as exc:
            raise CliError(str(exc)) from None
        except psycopg.Error as exc:
            # e.g. the Go reference's schema cannot be carried over: say why and what to do
            if exc.diag.message_hint is None or isinstance(exc, psycopg.OperationalError):
                raise
            hint = " ".join(exc.diag.message_hint.split())
            raise CliError(f"{one_line(exc)} ({hint})") from None
        # over the Go reference's schema, install migrates it in place
        action = "imported" if "go-reference" in applied else "installed"
    elif before == schema.SCHEMA_VERSION:
        schema.install(conn)  # idempotent: refreshes the functions
        action = "reapplied"
    else:
        try:
            applied = schema.migrate(conn)
        except SchemaError as exc:
            raise CliError(
                f"the database has teguh schema version {before} and this teguh package "
                f"knows version {schema.SCHEMA_VERSION}: {exc}; upgrade the teguh package"
            ) from None
        action = "migrated"
    version = schema.check(conn)
    took = time.monotonic() - started
    where = f"{conn.info.dbname} on {conn.info.host}:{conn.info.port}"
    if args.json:
        F.print_json(
            {
                "version": version,
                "previous_version": before,
                "action": action,
                "migrations": applied,
                "database": conn.info.dbname,
            }
        )
    elif action == "installed":
        print(f"installed teguh schema version {version} into {where} ({took:.2f}s)")
    elif action == "imported":
        print(
            f"installed teguh schema version {version} into {where} over the Go reference's "
            f"schema: its queues, tasks, checkpoints and events are kept ({took:.2f}s)"
        )
    elif action == "reapplied":
        print(f"teguh schema version {version} is installed in {where} (reapplied, {took:.2f}s)")
    else:
        print(
            f"upgraded the teguh schema of {where} from version {before} to {version} "
            f"({', '.join(applied)})"
        )
    return 0


def cmd_queue_create(args: argparse.Namespace, session: Session) -> int:
    client, conn = session.checked()
    existing = set(client.list_queues(conn=conn))
    results = []
    for name in args.names:
        created = name not in existing
        client.create_queue(name, conn=conn)
        existing.add(name)
        results.append({"queue": name, "created": created})
        if not args.json:
            print(f"created queue {name}" if created else f"queue {name} already exists")
    if args.json:
        F.print_json(results)
    return 0


def cmd_queue_drop(args: argparse.Namespace, session: Session) -> int:
    client, conn = session.checked()
    existing = set(client.list_queues(conn=conn))
    missing = [n for n in args.names if n not in existing]
    if missing and not args.if_exists:
        raise QueueNotFound(f'queue "{missing[0]}" does not exist')
    results = []
    for name in args.names:
        if name not in existing:
            results.append({"queue": name, "dropped": False, "tasks": 0})
            if not args.json:
                print(f"queue {name} does not exist (nothing dropped)")
            continue
        [stats] = client.queue_stats(name, conn=conn)
        counts = (stats.pending, stats.running, stats.sleeping)
        tasks = sum(counts) + stats.completed + stats.failed + stats.cancelled
        client.drop_queue(name, conn=conn)
        existing.discard(name)
        results.append({"queue": name, "dropped": True, "tasks": tasks})
        if not args.json:
            print(f"dropped queue {name} and its {tasks} task(s)")
    if args.json:
        F.print_json(results)
    return 0


def cmd_queue_list(args: argparse.Namespace, session: Session) -> int:
    client, conn = session.checked()
    names = client.list_queues(conn=conn)
    if args.json:
        F.print_json(names)
    elif not names:
        print("no queues (create one with `teguh queue create NAME`)", file=sys.stderr)
    else:
        for name in names:
            print(name)
    return 0
