"""The ``teguh`` command (console script and ``python -m teguh``).

Built on argparse. Every subcommand is a ``_cmd_*`` function taking the
parsed arguments and a `Session` (the connection, opened on first use) and
returning the exit status. User mistakes raise `CliError` or a `TeguhError`;
`main` turns them into one line on stderr and a non-zero exit status, never a
traceback. The ``worker`` subcommand lives in `teguh._cli_worker`, ``demo`` in
`teguh.demo`, the shared plumbing in `teguh._cli_base`.

Options can also come from the environment: ``--some-option`` is read from
``TEGUH_SOME_OPTION`` when it is not on the command line (`apply_env`).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

import psycopg

from teguh import _cli_format as F
from teguh import _cli_worker, demo, schema
from teguh._cli_base import (
    CliError,
    Parser,
    Session,
    apply_env,
    int_arg,
    json_arg,
    json_object_arg,
    one_line,
    positive_int,
    positive_seconds,
    seconds_arg,
    uuid_arg,
)
from teguh.client import Client
from teguh.errors import (
    InvalidState,
    QueueNotFound,
    SchemaError,
    TaskCancelled,
    TaskNotFound,
    TeguhError,
)

__all__ = ["CliError", "build_parser", "main"]

_DESCRIPTION = """\
teguh: durable execution and a job queue inside PostgreSQL.

Install the schema, manage queues and tasks, run workers, or watch a durable
workflow run end to end with `teguh demo` (no database needed)."""

_EPILOG = """\
connection:
  --dsn, else $TEGUH_DSN, else libpq's own defaults and PG* variables
  (PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD, PGSERVICE, ...).

environment:
  Every option can also be set as TEGUH_<OPTION>: the long option's name in
  upper case, dashes as underscores (--dsn: TEGUH_DSN, --concurrency:
  TEGUH_CONCURRENCY, --json: TEGUH_JSON=1). The command line wins.

exit status:
  0 success, 1 error (connection, unknown queue or task, database error),
  2 usage error (unknown option, malformed JSON or UUID); 130/143 after a
  second Ctrl-C/SIGTERM.

Run `teguh COMMAND --help` for a command's options."""


# -- the parser -------------------------------------------------------------------


def _add_common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """Add --dsn, --json and -v, at the top and (without defaults) to every subcommand.

    The subcommand copies default to SUPPRESS so that ``teguh --json stats`` and
    ``teguh stats --json`` both work without one overwriting the other.
    """
    default: Any = None if top else argparse.SUPPRESS
    group = parser.add_argument_group("common options")
    group.add_argument(
        "--dsn",
        default=default,
        metavar="DSN",
        help="libpq connection string or URL (env TEGUH_DSN; default: libpq's PG* variables)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="print machine-readable JSON instead of tables",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0 if top else argparse.SUPPRESS,
        help="log more (-v: info, -vv: debug) to stderr",
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the ``teguh`` argument parser (environment defaults not yet applied)."""
    from teguh import __version__

    parser = Parser(
        prog="teguh",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"teguh {__version__} (schema version {schema.SCHEMA_VERSION})",
    )
    _add_common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    def command(
        name: str, help_: str, func: Callable[..., int], parent: Any = sub
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help_, description=help_)
        _add_common(p, top=False)
        p.set_defaults(func=func)
        return p

    command("install", "apply or upgrade the teguh schema and print its version", _cmd_install)

    p = command("queue", "create, drop or list queues", _cmd_help)
    qsub = p.add_subparsers(dest="queue_command", metavar="ACTION", parser_class=Parser)
    p.set_defaults(help_parser=p)
    q = command("create", "create queues (no-op for existing ones)", _cmd_queue_create, qsub)
    q.add_argument("names", nargs="+", metavar="QUEUE", help="name: [a-z][a-z0-9_]*, <= 55 bytes")
    q = command("drop", "drop queues and ALL their tasks", _cmd_queue_drop, qsub)
    q.add_argument("names", nargs="+", metavar="QUEUE")
    q.add_argument("--if-exists", action="store_true", help="no error for a missing queue")
    command("list", "list the queues", _cmd_queue_list, qsub)

    p = command("spawn", "spawn a task", _cmd_spawn)
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument("task_name", metavar="TASK", help="task name, as the worker registered it")
    p.add_argument(
        "--params", type=json_arg, default={}, metavar="JSON", help="task params (default {})"
    )
    p.add_argument("--max-attempts", type=positive_int, metavar="N", help="attempts in all")
    p.add_argument(
        "--delay", type=seconds_arg, metavar="SECONDS", help="start no earlier than this"
    )
    p.add_argument("--priority", type=int_arg, metavar="N", help="higher runs first")
    p.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="spawn at most one task per key; a repeat prints the existing task",
    )
    p.add_argument("--headers", type=json_object_arg, metavar="JSON", help="task headers")

    p = command("task", "show, cancel or retry a task", _cmd_help)
    tsub = p.add_subparsers(dest="task_command", metavar="ACTION", parser_class=Parser)
    p.set_defaults(help_parser=p)
    for name, help_, func in (
        ("show", "show a task: state, attempts, result, last failure, checkpoints", _cmd_show),
        ("cancel", "cancel a task (a running handler stops at its next teguh call)", _cmd_cancel),
        ("retry", "run a failed task again (or any finished one with --spawn-new)", _cmd_retry),
    ):
        t = command(name, help_, func, tsub)
        t.add_argument("task_id", type=uuid_arg, metavar="ID", help="the task's id")
        t.add_argument("--queue", "-q", required=True, help="the task's queue (env TEGUH_QUEUE)")
        if name == "show":
            t.add_argument("--traceback", action="store_true", help="print the whole traceback")
        if name == "retry":
            t.add_argument(
                "--spawn-new", action="store_true", help="spawn a new task with the same params"
            )
            t.add_argument("--max-attempts", type=positive_int, metavar="N")

    p = command("emit", "emit an event (first write wins) and wake its waiters", _cmd_emit)
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument("event", metavar="EVENT")
    p.add_argument("--payload", type=json_arg, default=None, metavar="JSON")

    p = command(
        "tick", "recover expired leases and enforce cancellation deadlines (the ticker)", _cmd_tick
    )
    p.add_argument("queue", nargs="?", metavar="QUEUE", help="one queue (default: all)")
    p.add_argument(
        "--every",
        type=positive_seconds,
        metavar="SECONDS",
        help="keep running, once per SECONDS, until Ctrl-C/SIGTERM",
    )

    p = command("stats", "task counts by state, oldest pending age, in-flight runs", _cmd_stats)
    p.add_argument("queue", nargs="?", metavar="QUEUE", help="one queue (default: all)")

    p = command("worker", "run the @teguh.task handlers of a module", _cli_worker.run)
    _cli_worker.add_arguments(p)

    p = command("demo", "watch a durable workflow run on a throwaway PostgreSQL", demo.run)
    demo.add_arguments(p)
    return parser


# -- commands -----------------------------------------------------------------------


def _cmd_help(args: argparse.Namespace, session: Session) -> int:
    args.help_parser.print_help(sys.stderr)
    return 2


def _cmd_install(args: argparse.Namespace, session: Session) -> int:
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


def _cmd_queue_create(args: argparse.Namespace, session: Session) -> int:
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


def _cmd_queue_drop(args: argparse.Namespace, session: Session) -> int:
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


def _cmd_queue_list(args: argparse.Namespace, session: Session) -> int:
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


def _cmd_spawn(args: argparse.Namespace, session: Session) -> int:
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


def _task_or_fail(client: Client, conn: psycopg.Connection[Any], queue: str, task_id: UUID) -> Any:
    info = client.get_task(queue, task_id, conn=conn)
    if info is None:
        raise TaskNotFound(f'task {task_id} does not exist in queue "{queue}"')
    return info


def _failure_text(failure: Any, *, traceback: bool) -> str:
    if isinstance(failure, dict) and "name" in failure and "message" in failure:
        text = f"{failure['name']}: {failure['message']}"
        tb = failure.get("traceback")
        if traceback and isinstance(tb, str) and tb.strip():
            text += "\n" + tb.rstrip()
        return text
    return F.format_value(failure)


def _cmd_show(args: argparse.Namespace, session: Session) -> int:
    client, conn = session.checked()
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
        ("priority", info.priority),
        ("created", info.created_at),
        ("started", info.first_started_at),
        ("finished", info.finished_at),
    ]
    if info.cancelled_at is not None:
        pairs.append(("cancelled", info.cancelled_at))
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
    pairs.append(("checkpoints", str(len(checkpoints)) if checkpoints else "none"))
    F.print_kv(pairs)
    if checkpoints:
        print()
        F.print_table(
            ["checkpoint", "state"], [[k, F.format_value(v)] for k, v in checkpoints.items()]
        )
    return 0


def _cmd_cancel(args: argparse.Namespace, session: Session) -> int:
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


def _cmd_retry(args: argparse.Namespace, session: Session) -> int:
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


def _cmd_emit(args: argparse.Namespace, session: Session) -> int:
    client, conn = session.checked()
    client.emit_event(args.queue, args.event, args.payload, conn=conn)
    if args.json:
        F.print_json({"queue": args.queue, "event": args.event, "payload": args.payload})
    else:
        print(f"emitted event {args.event!r} on queue {args.queue}")
    return 0


class _StopFlag:
    """SIGINT/SIGTERM set a flag (and wake a waiter) instead of raising."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        self.signum = signum
        self.event.set()


def _cmd_tick(args: argparse.Namespace, session: Session) -> int:
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
    with _StopFlag() as stop:
        # announce only once a signal can no longer kill us mid-tick
        if not args.json:
            print(f"running the ticker on {where} every {args.every:g}s (Ctrl-C stops)", flush=True)
        while not stop.event.is_set():
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


def _cmd_stats(args: argparse.Namespace, session: Session) -> int:
    client, conn = session.checked()
    stats = client.queue_stats(args.queue, conn=conn)
    if args.json:
        F.print_json(stats)
        return 0
    if not stats:
        print("no queues (create one with `teguh queue create NAME`)", file=sys.stderr)
        return 0
    headers = ["queue", "pending", "running", "sleeping", "completed", "failed", "cancelled"]
    headers += ["oldest pending", "in flight"]
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
        ]
        for s in stats
    ]
    F.print_table(headers, rows, right=range(1, 9))
    return 0


# -- entry point --------------------------------------------------------------------


def _setup_logging(verbose: int, default: int = logging.WARNING) -> None:
    level = default
    if verbose >= 2:
        level = logging.DEBUG
    elif verbose == 1:
        level = min(default, logging.INFO)
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, QueueNotFound):
        return f"{exc} (see `teguh queue list`; create it with `teguh queue create`)"
    if isinstance(exc, psycopg.Error):
        if isinstance(exc, psycopg.OperationalError):
            return f"database connection failed: {one_line(exc)}"
        state = f" ({exc.sqlstate})" if exc.sqlstate else ""
        return f"database error{state}: {one_line(exc)}"
    return one_line(exc)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``teguh`` command; return its exit status."""
    parser = build_parser()
    try:
        apply_env(parser, os.environ)
    except CliError as exc:
        print(f"teguh: error: {exc}", file=sys.stderr)
        return exc.code
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    prog = "teguh " + args.command
    default_level = logging.INFO if args.command == "worker" else logging.WARNING
    _setup_logging(args.verbose, default_level)
    session = Session(args)
    try:
        return int(args.func(args, session) or 0)
    except CliError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.code
    except (TeguhError, TaskCancelled, psycopg.Error) as exc:
        print(f"{prog}: error: {_describe(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `teguh stats | head`: the reader went away; nothing left to say.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    finally:
        session.close()
