"""A worker process for the concurrency-limit races: ``python -m tests.integration.limits_worker``.

Its ``keyed`` handler records itself in table ``inflight`` while it runs, and
the number of runs of its key it saw in flight in table ``seen``; it holds
its slot until the key's limit is reached (or a second passes), so overlap is
forced rather than hoped for. With ``TEGUH_TEST_BLOCK=1`` it blocks forever
(until SIGKILL) once it is in flight.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import psycopg

import teguh


def make_handler(dsn: str, *, block: bool) -> teguh.worker.Handler:
    def keyed(ctx: teguh.TaskContext) -> None:
        key, limit = ctx.params["key"], ctx.params["limit"]
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("insert into inflight (run_id, key) values (%s, %s)", (ctx.run_id, key))
            if block:
                threading.Event().wait()  # until SIGKILL
            deadline = time.monotonic() + 1.0
            while True:
                (n,) = conn.execute(  # type: ignore[misc]
                    "select count(*) from inflight where key = %s", (key,)
                ).fetchone()
                conn.execute("insert into seen (key, n) values (%s, %s)", (key, n))
                if n >= limit or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            # gone from inflight before the run completes: inflight never
            # counts more than the leases the engine counts
            conn.execute("delete from inflight where run_id = %s", (ctx.run_id,))

    return keyed


def main() -> None:
    dsn = sys.argv[1]
    app = teguh.App(dsn)
    worker = app.worker(["q"], concurrency=10, claim_timeout=2, heartbeat_interval=0.5)
    worker.handle("keyed", make_handler(dsn, block=os.environ.get("TEGUH_TEST_BLOCK") == "1"))
    worker.run()


if __name__ == "__main__":
    main()
