"""pgqueuer, the asyncio job queue.

Enqueue: the synchronous producer API its docs give for sync applications
(``SyncQueries`` over ``SyncPsycopgDriver`` on an autocommit psycopg
connection), one ``enqueue(name, payload)`` per job, or list arguments for a
batch. Work: ``PgQueuer`` over asyncpg (the driver of its README; with psycopg's
async driver a concurrency-1 worker stalled in our runs) with an
``async def`` no-op entrypoint; concurrency N is ``max_concurrent_tasks=N``
with ``batch_size=N/2`` (pgqueuer requires at least twice the batch size), and
concurrency 1 is an entrypoint ``concurrency_limit=1`` with ``batch_size=1``.
pgqueuer deletes a finished job from its queue table (a row goes to
``pgqueuer_log``), so its queue never holds history: the idle-cost workload
does not apply. No durable workflow or durable sleep.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from typing import Any

from tests.bench.common import Recorder, WorkSpec, chunks, emit_ready

NAME = "pgqueuer"
DIST = "pgqueuer"
USAGE = (
    "sync `SyncQueries(SyncPsycopgDriver)`: `enqueue()` / list-`enqueue()`; worker "
    "`PgQueuer(AsyncpgDriver)` with `max_concurrent_tasks=N`, async no-op entrypoint"
)
FEATURES = {"batch"}
TABLES = "relname like 'pgqueuer%'"
ENTRYPOINT = "noop"

_recorder: Recorder | None = None


def _sync_queries(dsn: str) -> Any:
    import psycopg
    from pgqueuer.db import SyncPsycopgDriver
    from pgqueuer.queries import SyncQueries

    conn = psycopg.connect(dsn, autocommit=True)
    return conn, SyncQueries(SyncPsycopgDriver(conn))


def setup(dsn: str) -> None:
    import psycopg
    from pgqueuer.db import PsycopgDriver
    from pgqueuer.queries import Queries

    async def main() -> None:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        try:
            await Queries(PsycopgDriver(conn)).install()
        finally:
            await conn.close()

    asyncio.run(main())


def enqueue(dsn: str, start: int, n: int, batch: int | None) -> float:
    conn, q = _sync_queries(dsn)
    with conn:
        t0 = time.perf_counter()
        if batch is None:
            for i in range(start, start + n):
                q.enqueue(ENTRYPOINT, json.dumps({"i": i}).encode())
        else:
            for part in chunks(range(start, start + n), batch):
                q.enqueue(
                    [ENTRYPOINT] * len(part),
                    [json.dumps({"i": i}).encode() for i in part],
                    [0] * len(part),
                )
        return time.perf_counter() - t0


def prefill(dsn: str, kind: str, n: int) -> None:
    enqueue(dsn, 0, n, 500)


def latency_enqueue(dsn: str, n: int, gap: float) -> None:
    conn, q = _sync_queries(dsn)
    with conn:
        for i in range(n):
            q.enqueue(ENTRYPOINT, json.dumps({"i": i, "t": time.time()}).encode())
            time.sleep(gap)


def unavailable() -> str | None:
    import importlib.util

    for mod in ("pgqueuer", "asyncpg"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed (install pgqueuer[asyncpg])"
    return None


async def _driver(dsn: str) -> tuple[Any, Any]:
    """Return (connection, driver) on asyncpg, the driver of pgqueuer's README.

    Not psycopg's async driver: with it, a concurrency-1 worker (an entrypoint
    ``concurrency_limit=1``) stalled with jobs left in the queue in our runs.
    """
    import asyncpg
    from pgqueuer.db import AsyncpgDriver

    conn = await asyncpg.connect(dsn)
    return conn, AsyncpgDriver(conn)


def work(dsn: str, spec: WorkSpec) -> Recorder:
    from pgqueuer import PgQueuer
    from pgqueuer.models import Job

    global _recorder
    _recorder = rec = Recorder(spec.expected)

    async def main() -> None:
        conn, driver = await _driver(dsn)
        pgq = PgQueuer(driver)
        limit = 1 if spec.concurrency == 1 else 0

        @pgq.entrypoint(ENTRYPOINT, concurrency_limit=limit)
        async def noop(job: Job) -> None:
            data = json.loads(job.payload or b"{}")
            t = data.get("t")
            rec.hit(data["i"], None if t is None else time.time() - t)

        if spec.concurrency == 1:
            kwargs: dict[str, Any] = {"batch_size": 1}
        else:
            kwargs = {
                "batch_size": max(1, spec.concurrency // 2),
                "max_concurrent_tasks": spec.concurrency,
            }
        runner = asyncio.create_task(pgq.run(dequeue_timeout=timedelta(seconds=30), **kwargs))
        emit_ready()
        deadline = time.monotonic() + 300
        while not rec.done.is_set() and time.monotonic() < deadline and not runner.done():
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.3)  # let the buffered status log flush
        pgq.shutdown.set()
        try:
            await asyncio.wait_for(runner, 30)
        except (TimeoutError, asyncio.CancelledError):
            runner.cancel()
        if runner.done() and not runner.cancelled() and runner.exception():
            raise runner.exception()  # type: ignore[misc]
        await conn.close()

    asyncio.run(main())
    return rec


def count_done(dsn: str, kind: str) -> int:
    """Jobs queued (``queued``), or jobs finished: gone from the queue and logged successful."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        queued = conn.execute("select count(*) from pgqueuer").fetchone()[0]  # type: ignore[index]
        if kind == "queued":
            return int(queued)
        if queued:
            return -int(queued)
        row = conn.execute(
            "select count(*) from pgqueuer_log where status = 'successful'"
        ).fetchone()
        logged = int(row[0]) if row else 0
        folded_rows_stay = conn.execute(
            "select 1 from pg_attribute where attrelid = 'pgqueuer_log'::regclass"
            " and attname = 'aggregated' and not attisdropped"
        ).fetchone()
        if folded_rows_stay:
            # Newer pgqueuer folds log rows into pgqueuer_statistics and keeps
            # them (aggregated = true): adding the statistics counted each twice.
            return logged
        # Older pgqueuer deletes the log rows it folds into pgqueuer_statistics.
        row = conn.execute(
            "select coalesce(sum(count), 0) from pgqueuer_statistics where status = 'successful'"
        ).fetchone()
        return logged + int(row[0] if row else 0)
