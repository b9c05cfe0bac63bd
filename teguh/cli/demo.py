"""``teguh demo``: a durable workflow and a burst of tasks, shown live.

Without ``--dsn`` it starts a throwaway PostgreSQL (`teguh.embedded`) and
removes it on exit, Ctrl-C and SIGTERM included; with ``--dsn`` it works in a
queue of its own in that database and drops the queue afterwards.

Part 1 runs one order workflow on a real `teguh.Worker`: three steps, the
third crashing on its first attempt (the retry replays the committed steps
from their checkpoints instead of running them again), a durable sleep, and
an event that the demo itself emits while the task waits for it. Part 2
spawns a few thousand no-op tasks in one transaction and drains them with
the same worker, showing the rate live. The summary counts what happened:
attempts, steps executed vs replayed, how late the sleep woke, throughput.

Everything is printed to stdout as plain lines; the progress line is
rewritten in place (``\\r``) only when stdout is a terminal. The workflow's
handler and the output live in `teguh.cli.demo_workflow`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import secrets
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from teguh import schema
from teguh.app import App
from teguh.cli import format as F
from teguh.cli.common import CliError, Session, connect
from teguh.cli.demo_workflow import OrderWorkflow, Out, noop
from teguh.client import Client
from teguh.embedded import EmbeddedPostgres, EmbeddedPostgresError
from teguh.worker.signals import SignalPolicy

__all__ = ["run"]

ORDER_TASK = "process-order"
NOOP_TASK = "noop"
_WORKFLOW_TIMEOUT = 40.0
_BURST_TIMEOUT = 120.0


# -- the database ---------------------------------------------------------------------


@contextlib.contextmanager
def _database(args: argparse.Namespace, out: Out) -> Iterator[tuple[str, str]]:
    """Yield (dsn, description): the given database, or a throwaway server."""
    if args.dsn:
        with connect(args.dsn) as conn:
            version = schema.installed_version(conn)
            if version is None:
                schema.install(conn)
                out.line(
                    f"installed the teguh schema (version {schema.SCHEMA_VERSION}) into this "
                    "database; `drop schema teguh cascade` removes it"
                )
            else:
                schema.check(conn)
            info = conn.info
            where = f"database {info.dbname} on {info.host}:{info.port}"
        yield args.dsn, where
        return
    started = time.monotonic()
    out.line("Starting a throwaway PostgreSQL server...")
    try:
        server = EmbeddedPostgres(bindir=args.pg_bindir or None)
    except EmbeddedPostgresError as exc:
        raise CliError(
            f"{exc}; or run the demo against an existing database: teguh demo --dsn postgresql://..."
        ) from None
    try:
        try:
            server.start()
        except EmbeddedPostgresError as exc:
            raise CliError(f"could not start a throwaway PostgreSQL: {exc}") from None
        dsn = server.dsn()
        with psycopg.connect(dsn, autocommit=True) as conn:
            schema.install(conn)
            row = conn.execute("show server_version").fetchone()
        ver = str(row[0]).split()[0] if row else "?"
        where = (
            f"throwaway PostgreSQL {ver} ({server.source}) on {server.host}:{server.port}, "
            f"ready in {time.monotonic() - started:.1f}s (removed on exit)"
        )
        yield dsn, where
    finally:
        server.stop()


# The worker's signal policy counts SIGINT/SIGTERM while the demo runs; the
# demo's waits check it and unwind (so the worker stops, the queue is dropped
# and the throwaway server is removed), then exit 130 or 143.
_signals = SignalPolicy(install=False)


def _pause(seconds: float) -> None:
    """Sleep in short slices, unwinding as soon as a signal was counted."""
    deadline = time.monotonic() + seconds
    while True:
        if _signals.count:
            if _signals.last == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(_signals.exit_code)
        left = deadline - time.monotonic()
        if left <= 0:
            return
        _signals.event.wait(min(left, 0.05))


# -- the demo ---------------------------------------------------------------------------


def run(args: argparse.Namespace, session: Session) -> int:
    """Run the ``demo`` subcommand."""
    out = Out(sys.stdout)
    if not args.verbose:
        # The crash is part of the show: the worker's warning about it is noise here.
        logging.getLogger("teguh.worker").setLevel(logging.ERROR)
    global _signals
    _signals = SignalPolicy()
    started = time.monotonic()
    try:
        _signals.__enter__()
        out.line("teguh demo: durable execution inside PostgreSQL")
        out.line("================================================")
        with _database(args, out) as (dsn, where), App(dsn, max_size=4) as app:
            client = app.client
            queue = f"demo_{secrets.token_hex(3)}"
            out.line(f"database: {where}")
            out.line(f"queue:    {queue} (dropped at the end)")
            client.create_queue(queue)
            try:
                worker = app.worker([queue], concurrency=args.concurrency)
                workflow = OrderWorkflow(out, 1000 + secrets.randbelow(9000), args.sleep)
                worker.handle(ORDER_TASK, workflow)
                worker.handle(NOOP_TASK, noop)
                with worker:
                    order = _run_workflow(client, queue, workflow, out)
                    burst = _run_burst(client, queue, args.tasks, args.concurrency, out)
            finally:
                client.drop_queue(queue)
            _summary(out, args, workflow, order, burst, time.monotonic() - started)
        out.line("cleaned up: queue dropped" + ("" if args.dsn else ", throwaway server removed"))
    except _DemoFailed as exc:
        raise CliError(str(exc)) from None
    finally:
        _signals.__exit__()
    return 0


class _DemoFailed(Exception):
    pass


@dataclass
class _OrderResult:
    task_id: str
    state: str
    attempts: int
    seconds: float
    late_ms: float
    checkpoints: dict[str, Any]


def _wait_state(
    client: Client, queue: str, task_id: Any, states: tuple[str, ...], timeout: float
) -> str:
    deadline = time.monotonic() + timeout
    while True:
        result = client.get_task_result(queue, task_id)
        state = result.state if result else "missing"
        if state in states:
            return state
        if time.monotonic() > deadline:
            raise _DemoFailed(f"task {task_id} is still {state} after {timeout:.0f}s")
        _pause(0.02)


def _run_workflow(client: Client, queue: str, wf: OrderWorkflow, out: Out) -> _OrderResult:
    out.title("1. A durable order workflow")
    out.line(
        "reserve-stock -> charge-card -> book-courier (crashes once) -> durable sleep "
        f"{wf.sleep:g}s -> wait for event {wf.event!r} -> send-receipt"
    )
    out.line()
    params = {
        "order": wf.order_id,
        "items": ["kopi luwak 250g", "teh tarik mix"],
        "amount": 42.5,
        "city": "Surabaya",
        "email": "budi@example.com",
    }
    out.t0 = time.monotonic()
    spawned = client.spawn_task(
        queue,
        ORDER_TASK,
        params,
        max_attempts=3,
        retry_strategy={"kind": "fixed", "base_seconds": 1},
    )
    out.at(f"spawned order #{wf.order_id} as task {spawned.task_id}")
    waited = time.monotonic() + _WORKFLOW_TIMEOUT
    while not wf.stats.waiting.is_set() and time.monotonic() < waited:
        _pause(0.05)
    if not wf.stats.waiting.is_set():
        state = _wait_state(client, queue, spawned.task_id, ("completed", "failed"), 0)
        raise _DemoFailed(f"the workflow never reached its event wait (it is {state})")
    _wait_state(client, queue, spawned.task_id, ("sleeping",), 10)
    _pause(0.5)  # let the suspension be seen: nothing happens until the event
    payload = {"signed_by": "Siti", "at": "front door"}
    out.at(f"demo emits {wf.event!r} {F.format_value(payload)}, as the courier's webhook would")
    wf.stats.emitted_at = time.monotonic()
    client.emit_event(queue, wf.event, payload)
    state = _wait_state(client, queue, spawned.task_id, ("completed", "failed", "cancelled"), 30)
    seconds = time.monotonic() - out.t0
    info = client.get_task(queue, spawned.task_id)
    if state != "completed" or info is None:
        raise _DemoFailed(f"the workflow ended {state}: {info and info.last_failure}")
    out.at(f"task completed: {F.format_value(info.completed_payload, limit=110)}")
    checkpoints = client.get_checkpoints(queue, spawned.task_id, None)
    wake_at = datetime.fromisoformat(checkpoints["wait-for-pickup"]["wake_at"])
    woke_at = datetime.fromisoformat(checkpoints["woke-up"])
    out.line()
    out.line(f"what the database holds for task {spawned.task_id} (its checkpoints):")
    F.print_table(
        ["checkpoint", "state"],
        [[k, F.format_value(v, limit=80)] for k, v in checkpoints.items()],
        file=out.stream,
    )
    # Not "see it any time": the demo drops this queue (and its throwaway server) at the end.
    out.line(
        "(`teguh task show ID --queue QUEUE` shows this for a task in your own database; "
        "the demo's queue is dropped when it ends)"
    )
    return _OrderResult(
        str(spawned.task_id),
        state,
        info.attempts,
        seconds,
        (woke_at - wake_at).total_seconds() * 1000,
        checkpoints,
    )


@dataclass
class _BurstResult:
    tasks: int
    spawn_seconds: float
    drain_seconds: float


def _run_burst(client: Client, queue: str, n: int, concurrency: int, out: Out) -> _BurstResult:
    out.title(f"2. A burst of {n:,} tasks")
    [before] = client.queue_stats(queue)
    t0 = time.monotonic()
    client.spawn_tasks(queue, NOOP_TASK, [{"i": i} for i in range(n)])
    spawn_s = time.monotonic() - t0
    out.line(
        f"spawned {n:,} no-op tasks in one transaction in {spawn_s * 1000:.0f} ms; "
        f"one worker ({concurrency} threads) drains them:"
    )
    width = 30
    digits = len(f"{n:,}")
    last_line = t0
    deadline = t0 + _BURST_TIMEOUT
    while True:
        [stats] = client.queue_stats(queue)
        done = stats.completed - before.completed
        now = time.monotonic()
        elapsed = max(now - t0, 1e-6)
        finished = done >= n
        if finished or out.tty or now - last_line >= 1.0:
            filled = width * done // n
            bar = "#" * filled + "." * (width - filled)
            out.progress(
                f"  [{bar}] {done:>{digits},}/{n:,}  {done / elapsed:,.0f} tasks/s",
                final=finished,
            )
            last_line = now
        if finished:
            break
        if stats.failed > before.failed:
            raise _DemoFailed(f"{stats.failed - before.failed} task(s) of the burst failed")
        if now > deadline:
            raise _DemoFailed(f"only {done:,} of {n:,} tasks completed in {_BURST_TIMEOUT:.0f}s")
        _pause(0.1 if out.tty else 0.05)
    drain_s = time.monotonic() - t0
    out.line(f"all {n:,} completed in {drain_s:.2f}s: {n / drain_s:,.0f} tasks/s")
    return _BurstResult(n, spawn_s, drain_s)


def _summary(
    out: Out,
    args: argparse.Namespace,
    wf: OrderWorkflow,
    order: _OrderResult,
    burst: _BurstResult,
    total: float,
) -> None:
    s = wf.stats
    executed = sum(s.executed.values())
    replayed = sum(s.replayed.values())
    once = all(s.executed[name] == 1 for name in wf.STEPS)
    out.title("Summary")
    rows: list[tuple[str, str]] = [
        (
            "order workflow",
            f"completed in {order.seconds:.1f}s: {order.attempts} attempts, {s.runs} runs "
            "(the sleep and the event wait resumed it without using attempts)",
        ),
        (
            "steps",
            f"{executed} executed, each exactly once{'' if once else ' (NOT!)'}; "
            f"{replayed} replayed from checkpoints; 1 crash retried "
            f"(the card was charged {s.charged} time{'s' if s.charged != 1 else ''})",
        ),
        (
            "durable sleep",
            f"{wf.sleep:g}s asked; the run resumed {order.late_ms:.0f} ms after its wake-up time",
        ),
    ]
    if s.event_latency is not None:
        rows.append(
            (
                "event",
                f"{wf.event!r} reached the suspended task {s.event_latency * 1000:.0f} ms "
                "after it was emitted",
            )
        )
    rows.append(
        (
            "throughput",
            f"{burst.tasks:,} tasks spawned in {burst.spawn_seconds * 1000:.0f} ms, drained "
            f"in {burst.drain_seconds:.2f}s: {burst.tasks / burst.drain_seconds:,.0f} tasks/s "
            f"(one worker, {args.concurrency} threads, durable commits)",
        ),
    )
    F.print_kv(rows, file=out.stream)
    out.line()
    out.line(f"demo finished in {total:.1f}s")
    if not once or s.crashes != 1:
        raise _DemoFailed("a step ran more than once: that is a bug, please report it")
