"""``teguh worker MODULE[:ATTR] --queue Q``: run a module's ``@teguh.task`` handlers.

The module is imported (the current directory is on ``sys.path``, as with
``python -m``), its `teguh.Task` objects for the queue are registered with
`teguh.Worker.include`, and the worker runs until SIGINT or SIGTERM. The
first signal stops claiming and lets running handlers finish (up to
``--shutdown-timeout``; runs still executing then are handed back without
consuming an attempt); a second signal exits at once, and the runs still
executing are recovered after their lease expires, as after a crash.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
import traceback
import types
from typing import Any

import psycopg_pool

from teguh._cli_base import CliError, Session, positive_int, positive_seconds, seconds_arg
from teguh.client import Client
from teguh.tasks import Task, set_default_client

__all__ = ["add_arguments", "load_tasks", "run"]

logger = logging.getLogger("teguh.cli")


# Exit status asking a process manager for a fresh worker (EX_TEMPFAIL).
EXIT_RECYCLE = 75


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``worker`` subcommand's arguments."""
    p.add_argument(
        "target",
        metavar="MODULE[:ATTR]",
        help="module whose @teguh.task functions to run (e.g. myapp.tasks); with :ATTR, "
        "only that task, or that list of tasks",
    )
    p.add_argument("--queue", "-q", required=True, help="the queue to work on (env TEGUH_QUEUE)")
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
        "--create-queue", action="store_true", help="create the queue if it does not exist"
    )
    p.add_argument(
        "--recycle-when-stuck",
        action="store_true",
        help="exit with status 75 when hung handlers (cancelled or lost runs) hold every slot,"
        " for a process manager to restart the worker",
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


def load_tasks(target: str) -> tuple[str, list[Task[Any, Any]]]:
    """Import ``MODULE[:ATTR]`` and return a description and its `teguh.Task` objects."""
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
    if isinstance(obj, Task):
        return target, [obj]
    if isinstance(obj, types.ModuleType):
        values: list[Any] = list(vars(obj).values())
    elif isinstance(obj, list | tuple | set | frozenset):
        values = list(obj)
    elif isinstance(obj, dict):
        values = list(obj.values())
    else:
        raise CliError(f"{target} is {obj!r}: expected a @teguh.task, a list of them, or a module")
    tasks: dict[int, Task[Any, Any]] = {}
    for value in values:
        if isinstance(value, Task):
            tasks.setdefault(id(value), value)
    return target, list(tasks.values())


def run(args: argparse.Namespace, session: Session) -> int:
    """Run the ``worker`` subcommand."""
    target, tasks = load_tasks(args.target)
    mine = [t for t in tasks if t.queue == args.queue]
    if not mine:
        if tasks:
            queues = ", ".join(sorted({t.queue for t in tasks}))
            raise CliError(
                f"{target} has no @teguh.task for queue {args.queue!r} "
                f"(its tasks are on queue(s): {queues}; use @teguh.task(queue={args.queue!r}))"
            )
        raise CliError(f"{target} defines no @teguh.task")
    names = {t.name for t in mine}
    if len(names) != len(mine):
        raise CliError(f"{target} has two tasks with the same name on queue {args.queue!r}")

    # Fail fast, with libpq's message, before any pool starts retrying in the background.
    client0, conn = session.checked()
    if args.queue not in client0.list_queues(conn=conn):
        if not args.create_queue:
            raise CliError(
                f'queue "{args.queue}" does not exist (create it with '
                f"`teguh queue create {args.queue}`, or pass --create-queue)"
            )
        client0.create_queue(args.queue, conn=conn)
        logger.info("created queue %s", args.queue)
    session.close()

    client = Client(session.dsn, min_size=1, max_size=4)
    set_default_client(client)  # so that Task.spawn works inside handlers
    worker = client.worker(
        args.queue,
        concurrency=args.concurrency,
        claim_timeout=args.claim_timeout,
        heartbeat_interval=args.heartbeat_interval,
        poll_interval=args.poll_interval,
        batch_size=args.batch_size,
        worker_id=args.worker_id,
        shutdown_timeout=args.shutdown_timeout,
        recycle_when_stuck=args.recycle_when_stuck,
    )
    for t in mine:
        worker.include(t)

    stop = threading.Event()
    signals = 0
    exit_code = 0

    def on_signal(signum: int, frame: types.FrameType | None) -> None:
        nonlocal signals, exit_code
        signals += 1
        if signals == 1:
            stop.set()
            return
        if signals == 2:
            # Cut the graceful wait short: worker.stop() (running in this
            # thread) hands the runs still executing back at once, so they
            # are retried elsewhere without using an attempt.
            exit_code = 128 + signum
            os.write(
                2,
                f"teguh worker: second {signal.Signals(signum).name}: handing "
                f"{worker.in_flight} running run(s) back and exiting\n".encode(),
            )
            worker.stop(0)
            return
        os._exit(128 + signum)  # a third signal: no more waiting at all

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            worker.start()
        except psycopg_pool.PoolTimeout as exc:
            raise CliError(f"the worker could not open its connections: {exc}") from None
        logger.info(
            "worker %s on queue %s: %d task(s) (%s), concurrency %d; "
            "Ctrl-C or SIGTERM drains and stops, a second one exits at once",
            worker.worker_id,
            args.queue,
            len(mine),
            ", ".join(sorted(names)),
            args.concurrency,
        )
        while not stop.wait(0.5):
            if worker.recycle_requested:
                exit_code = EXIT_RECYCLE
                break
        logger.info(
            "stopping: no new claims; waiting up to %gs for %d running handler(s) "
            "(signal again to exit at once)",
            args.shutdown_timeout,
            worker.in_flight,
        )
        worker.stop(args.shutdown_timeout)
        logger.info("worker %s stopped", worker.worker_id)
    finally:
        worker.stop(0)
        client.close()
        set_default_client(None)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _exit_if_handlers_linger(exit_code)
    return exit_code


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
