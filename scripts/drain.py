"""Drain a backlog of no-op tasks with one Worker and print jobs/s.

    python scripts/drain.py                  # a throwaway EmbeddedPostgres
    python scripts/drain.py --dsn postgresql://...   # an existing database
    python scripts/drain.py --tasks 10000 --concurrency 10 --fast

Spawns ``--tasks`` no-op tasks (atomic batches of ``--batch``) into a fresh
queue, or spread evenly over ``--queues`` fresh queues, then starts one
Worker serving them all at ``--concurrency`` and times until every task is
completed. ``--fast`` turns off fsync and synchronous_commit on the
throwaway server (as the test suite does); without it the server's defaults
apply.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import teguh
from teguh.embedded import EmbeddedPostgres

QUEUE = "drain"


@contextlib.contextmanager
def database(dsn: str | None, fast: bool) -> Iterator[str]:
    if dsn:
        yield dsn
        return
    settings = {"max_connections": "100"}
    if fast:
        settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
    with EmbeddedPostgres(settings=settings) as server:
        yield server.dsn()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="database to use (default: a throwaway server)")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--queues", type=int, default=1, help="spread the tasks over this many")
    parser.add_argument("--batch", type=int, default=1_000, help="tasks per spawn_tasks call")
    parser.add_argument("--batch-size", type=int, default=None, help="Worker batch_size")
    parser.add_argument("--fast", action="store_true", help="fsync/synchronous_commit off")
    args = parser.parse_args()

    with database(args.dsn, args.fast) as dsn, teguh.App(dsn) as app:
        client = app.client
        client.install()
        queues = [QUEUE] if args.queues == 1 else [f"{QUEUE}{k}" for k in range(args.queues)]
        for queue in queues:
            client.drop_queue(queue)
            client.create_queue(queue)
        t0 = time.perf_counter()
        for start in range(0, args.tasks, args.batch):
            n = min(args.batch, args.tasks - start)
            for k, queue in enumerate(queues):
                part = range(start + k, start + n, len(queues))
                if part:
                    client.spawn_tasks(queue, "noop", [{"i": i} for i in part])
        spawn_s = time.perf_counter() - t0
        print(f"spawned {args.tasks} tasks in {spawn_s:.2f}s ({args.tasks / spawn_s:,.0f}/s)")

        done = 0
        lock = threading.Lock()

        def noop(ctx: teguh.TaskContext) -> None:
            nonlocal done
            with lock:
                done += 1

        worker = app.worker(queues, concurrency=args.concurrency, batch_size=args.batch_size)
        worker.handle("noop", noop)
        started = time.perf_counter()
        worker.start()
        t0 = time.perf_counter()  # from the end of start(): its warm-up is not the drain
        try:
            while done < args.tasks or worker.in_flight:
                time.sleep(0.002)
            elapsed = time.perf_counter() - t0
        finally:
            worker.stop(timeout=10)
        completed = sum(s.completed for s in client.queue_stats() if s.queue_name in queues)
        if completed != args.tasks:
            sys.exit(f"only {completed} of {args.tasks} tasks completed")
        print(f"worker start-up: {t0 - started:.3f}s")
        print(
            f"drained {args.tasks} no-op tasks from {len(queues)} queue(s) at concurrency "
            f"{args.concurrency} in "
            f"{elapsed:.2f}s: {args.tasks / elapsed:,.0f} jobs/s"
        )


if __name__ == "__main__":
    main()
