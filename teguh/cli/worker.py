"""``teguh worker MODULE[:ATTR] [-q QUEUE ...]``: run an App's tasks.

The module is imported (the current directory is on ``sys.path``, as with
``python -m``). ``MODULE:ATTR`` names a `teguh.App`, a task or a list of
tasks; a bare ``MODULE`` uses the module's App, or else its tasks. Tasks
without an app are included in a new App on ``--dsn``; an App created without
a DSN uses ``--dsn`` too. The worker serves the queues given with
``-q a -q b`` or ``-q a,b`` (default: the queues of the app's tasks) and runs
under `teguh.Worker.run`'s signal policy: the first SIGINT/SIGTERM drains,
the second hands running runs back, the third exits.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import threading
import traceback
import types
from typing import Any

from teguh.app import App
from teguh.cli.common import CliError, Session, positive_int, positive_seconds, seconds_arg
from teguh.errors import QueueNotFound
from teguh.tasks import Task, check_queue_name

__all__ = ["add_arguments", "load_app", "run"]

logger = logging.getLogger("teguh.cli")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``worker`` subcommand's arguments."""
    p.add_argument(
        "target",
        metavar="MODULE[:ATTR]",
        help="module holding a teguh.App (or @teguh.task functions), e.g. myapp.tasks; with "
        ":ATTR, that App, task or list of tasks",
    )
    p.add_argument(
        "--queue",
        "-q",
        action="append",
        metavar="QUEUE",
        help="a queue to serve; repeat it or separate with commas (default: the tasks' queues; "
        "env TEGUH_QUEUE)",
    )
    p.add_argument(
        "--concurrency", "-c", type=positive_int, default=10, help="handlers at once (10)"
    )
    p.add_argument(
        "--claim-timeout",
        type=positive_seconds,
        default=30,
        metavar="SECONDS",
        help="lease of a claimed run; heartbeats extend it (30)",
    )
    p.add_argument(
        "--heartbeat-interval",
        type=positive_seconds,
        default=None,
        metavar="SECONDS",
        help="how often leases are extended; shorter than the lease (a third of it)",
    )
    p.add_argument(
        "--poll-interval",
        type=positive_seconds,
        default=30,
        metavar="SECONDS",
        help="longest wait between claims without a notification (30)",
    )
    p.add_argument(
        "--batch-size", type=positive_int, metavar="N", help="most runs per claim (concurrency)"
    )
    p.add_argument(
        "--shutdown-timeout",
        type=seconds_arg,
        default=30,
        metavar="SECONDS",
        help="how long the first Ctrl-C/SIGTERM waits for running handlers (30)",
    )
    p.add_argument("--worker-id", metavar="ID", help="recorded on leases (host:pid:random)")
    p.add_argument(
        "--create-queue", action="store_true", help="create the queues that do not exist"
    )


def _import(module_name: str) -> types.ModuleType:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise CliError(
                f"cannot import {module_name!r}: no module named {exc.name!r} "
                f"(searched the current directory {cwd} and PYTHONPATH)"
            ) from None
        raise CliError(_import_failure(module_name, exc)) from None
    except Exception as exc:
        raise CliError(_import_failure(module_name, exc)) from None


def _import_failure(module_name: str, exc: BaseException) -> str:
    # The user's own code raised while importing: its traceback is what they need.
    tb = "".join(traceback.format_exception(exc)).rstrip()
    return f"importing {module_name!r} failed:\n{tb}"


def load_app(target: str, dsn: str) -> App:
    """Import ``MODULE[:ATTR]`` and return the App to run (see the module docstring)."""
    module_name, _, attr = target.partition(":")
    if not module_name:
        raise CliError(f"{target!r}: expected MODULE or MODULE:ATTR", 2)
    obj: Any = _import(module_name)
    if attr:
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise CliError(f"module {module_name!r} has no attribute {attr!r}") from None
    if isinstance(obj, types.ModuleType):
        apps = {id(v): v for v in vars(obj).values() if isinstance(v, App)}
        if len(apps) > 1:
            raise CliError(
                f"{target} holds {len(apps)} teguh.App objects: name one as {target}:ATTR"
            )
        if apps:
            obj = next(iter(apps.values()))
    if isinstance(obj, App):
        if obj.dsn is None and obj._pool is None:
            obj.dsn = dsn
        if not obj.tasks:
            raise CliError(f"{target}: the App has no tasks (declare them with @app.task)")
        return obj
    if isinstance(obj, Task):
        found: list[Any] = [obj]
    elif isinstance(obj, types.ModuleType):
        found = [v for v in vars(obj).values() if isinstance(v, Task)]
    elif isinstance(obj, list | tuple | set | frozenset):
        found = list(obj)
    else:
        raise CliError(f"{target} is {obj!r}: expected a teguh.App, a task, a list, or a module")
    tasks = [t for t in found if isinstance(t, Task)]
    if not tasks:
        raise CliError(f"{target} defines no teguh.App and no @teguh.task")
    app = App(dsn)
    try:
        app.include(tasks)
    except ValueError as exc:
        raise CliError(f"{target}: {exc}") from None
    return app


def _queues(args: argparse.Namespace, app: App, target: str) -> list[str]:
    task_queues = sorted({t.queue for t in app.tasks.values()})
    if not args.queue:
        return task_queues
    queues: list[str] = []
    for value in args.queue:
        for name in value.split(","):
            name = name.strip()
            if not name:
                continue
            try:
                check_queue_name(name)
            except ValueError as exc:
                raise CliError(f"--queue: {exc}", 2) from None
            if name not in queues:
                queues.append(name)
    if not queues:
        raise CliError("--queue: no queue name given", 2)
    if not set(queues) & set(task_queues):
        raise CliError(
            f"{target} has no task for queue(s) {', '.join(queues)} "
            f"(its tasks are on queue(s): {', '.join(task_queues)}; "
            f"use @app.task(queue={queues[0]!r}))"
        )
    return queues


def run(args: argparse.Namespace, session: Session) -> int:
    """Run the ``worker`` subcommand."""
    app = load_app(args.target, session.dsn)
    queues = _queues(args, app, args.target)

    # Fail fast, with libpq's message, before any pool starts retrying in the background.
    client0, conn = session.checked()
    existing = set(client0.list_queues(conn=conn))
    for queue in queues:
        if queue in existing:
            continue
        if not args.create_queue:
            raise CliError(
                f'queue "{queue}" does not exist (create it with '
                f"`teguh queue create {queue}`, or pass --create-queue)"
            )
        client0.create_queue(queue, conn=conn)
        logger.info("created queue %s", queue)
    session.close()

    worker = app.worker(
        queues,
        concurrency=args.concurrency,
        claim_timeout=args.claim_timeout,
        heartbeat_interval=args.heartbeat_interval,
        poll_interval=args.poll_interval,
        batch_size=args.batch_size,
        worker_id=args.worker_id,
        shutdown_timeout=args.shutdown_timeout,
    )
    mine = sorted(t.name for t in app.tasks.values() if t.queue in queues)
    logger.info(
        "worker %s on queue(s) %s: %d task(s) (%s), concurrency %d; Ctrl-C or SIGTERM drains "
        "and stops, a second one hands running runs back, a third exits at once",
        worker.worker_id,
        ", ".join(queues),
        len(mine),
        ", ".join(mine),
        args.concurrency,
    )
    try:
        code = worker.run()
    except QueueNotFound as exc:
        raise CliError(str(exc)) from None
    except RuntimeError as exc:
        cause = exc.__cause__
        raise CliError(f"{exc}: {cause!r}" if cause else str(exc)) from None
    finally:
        app.close()
    _exit_if_handlers_linger(code)
    return code


def _exit_if_handlers_linger(code: int) -> None:
    """Exit now if released handlers are still running in executor threads.

    Their runs were handed back (another worker has them), but Python joins
    executor threads at exit (daemon or not), as long as the handlers take.
    """
    if any(t.name.startswith("teguh-") for t in threading.enumerate()):
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
