"""Measure how late schedules fire when a Python worker is the only ticker (no pg_cron).

Starts a throwaway PostgreSQL (or uses ``--dsn``), creates a queue with an
``@every 1s`` schedule, runs one `teguh.Worker` on it (which runs the ticker
at the queue's next due time, schedules included) for ``--slots`` slots, and
prints p50/p95/p99/max of the lateness: the spawned task's ``created_at``
(the ticker statement's time) minus the slot it fired.

    python scripts/schedule_lateness.py --slots 300
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime
from typing import Any

import psycopg

from teguh import schema
from teguh.client import Client
from teguh.embedded import EmbeddedPostgres
from teguh.worker import Worker


def measure(dsn: str, slots: int) -> list[float]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        schema.install(conn)
        conn.execute("select teguh.create_queue('lateness')")
        conn.execute("select teguh.create_schedule('lateness', 'tick', '@every 1s', 'noop', null)")
    client = Client(dsn)
    worker = Worker(client, "lateness", concurrency=4)
    worker.handle("noop", lambda ctx: None)
    worker.start()
    try:
        deadline = time.monotonic() + slots + 5
        with psycopg.connect(dsn, autocommit=True) as conn:
            while time.monotonic() < deadline:
                row = conn.execute("select count(*) from teguh.t_lateness").fetchone()
                if row is not None and row[0] >= slots + 1:
                    break
                time.sleep(1)
            rows = conn.execute(
                "select created_at, (headers->>'teguh.slot')::timestamptz"
                "  from teguh.t_lateness order by created_at"
            ).fetchall()
    finally:
        worker.stop(10)
        client.close()
    # the first slot fired is the one due when the worker started
    return [_seconds(created, slot) for created, slot in rows[1 : slots + 1]]


def _seconds(created: datetime, slot: datetime) -> float:
    return (created - slot).total_seconds()


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=300)
    parser.add_argument("--dsn", help="an existing database (default: a throwaway server)")
    args = parser.parse_args()
    server: Any = None
    dsn = args.dsn
    if dsn is None:
        server = EmbeddedPostgres().start()
        dsn = server.dsn()
    try:
        late = measure(dsn, args.slots)
    finally:
        if server is not None:
            server.stop()
    print(
        f"{len(late)} slots: p50 {_percentile(late, 50) * 1000:.1f} ms, "
        f"p95 {_percentile(late, 95) * 1000:.1f} ms, p99 {_percentile(late, 99) * 1000:.1f} ms, "
        f"max {max(late) * 1000:.1f} ms, mean {statistics.fmean(late) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
