"""A worker process to SIGKILL: ``python -m tests.integration.sigkill_worker DSN``.

Its handler runs step 1 (recorded in table ``executions``), then blocks
forever when ``TEGUH_TEST_BLOCK=1``, so that the test can SIGKILL it right
after step 1's checkpoint committed. The test's second worker uses the same
`handler` without blocking.
"""

from __future__ import annotations

import os
import sys
import threading

import psycopg

import teguh


def record(dsn: str, what: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("insert into executions (what) values (%s)", (what,))
    return what


def make_handler(dsn: str, *, block: bool) -> teguh.worker.Handler:
    def handler(ctx: teguh.TaskContext) -> str:
        one = ctx.step("step1", record, dsn, "step1")
        if block:
            threading.Event().wait()  # until SIGKILL
        two = ctx.step("step2", record, dsn, "step2")
        return f"{one}+{two}"

    return handler


def main() -> None:
    dsn = sys.argv[1]
    app = teguh.App(dsn)
    worker = app.worker(["q"], concurrency=2, claim_timeout=1, heartbeat_interval=0.3)
    worker.handle("killme", make_handler(dsn, block=os.environ.get("TEGUH_TEST_BLOCK") == "1"))
    worker.run()


if __name__ == "__main__":
    main()
