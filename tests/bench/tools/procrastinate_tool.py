"""procrastinate with its psycopg 3 connector.

Enqueue: a synchronous app (``app.open()`` on a `PsycopgConnector`), one
``task.defer(...)`` per job, or ``task.batch_defer(...)`` for batches. Work:
``app.run_worker_async(concurrency=N)`` with LISTEN/NOTIFY on, in its own
process, with an ``async def`` no-op task (procrastinate runs async tasks
concurrently on its event loop, which its docs recommend over concurrency for
blocking sync tasks). It has no durable workflow or durable sleep, so those
workloads are skipped. The idle claim calls ``procrastinate_fetch_job_v2``,
what its worker calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from tests.bench.common import Recorder, WorkSpec, chunks, emit_ready

NAME = "procrastinate"
DIST = "procrastinate"
USAGE = (
    "sync `App(PsycopgConnector)`: `task.defer()` / `task.batch_defer()`; worker "
    "`run_worker_async(concurrency=N)` (LISTEN/NOTIFY), async no-op task"
)
FEATURES = {"batch", "idle"}
TABLES = "relname like 'procrastinate%'"
QUEUE = "bench"

_recorder: Recorder | None = None


def _app(dsn: str) -> Any:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name="noop", queue=QUEUE)
    async def noop(i: int, t: float | None = None) -> None:
        assert _recorder is not None
        _recorder.hit(i, None if t is None else time.time() - t)

    return app


def setup(dsn: str) -> None:
    app = _app(dsn)
    with app.open():
        app.schema_manager.apply_schema()


def enqueue(dsn: str, start: int, n: int, batch: int | None) -> float:
    app = _app(dsn)
    task = app.tasks["noop"]
    with app.open():
        t0 = time.perf_counter()
        if batch is None:
            for i in range(start, start + n):
                task.defer(i=i)
        else:
            for part in chunks(range(start, start + n), batch):
                task.batch_defer(*({"i": i} for i in part))
        return time.perf_counter() - t0


def prefill(dsn: str, kind: str, n: int) -> None:
    enqueue(dsn, 0, n, 500)


def latency_enqueue(dsn: str, n: int, gap: float) -> None:
    app = _app(dsn)
    task = app.tasks["noop"]
    with app.open():
        for i in range(n):
            task.defer(i=i, t=time.time())
            time.sleep(gap)


def work(dsn: str, spec: WorkSpec) -> Recorder:
    global _recorder
    _recorder = rec = Recorder(spec.expected)
    app = _app(dsn)

    async def main() -> None:
        async with app.open_async():
            worker = asyncio.create_task(
                app.run_worker_async(
                    queues=[QUEUE],
                    concurrency=spec.concurrency,
                    wait=True,
                    listen_notify=True,
                    install_signal_handlers=False,
                )
            )
            emit_ready()
            deadline = time.monotonic() + 300
            while not rec.done.is_set() and time.monotonic() < deadline and not worker.done():
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.3)  # let the last status updates commit
            worker.cancel()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(worker, 30)

    asyncio.run(main())
    return rec


def count_done(dsn: str, kind: str) -> int:
    import psycopg

    with psycopg.connect(dsn) as conn:
        where = "" if kind == "queued" else " where status = 'succeeded'"
        row = conn.execute("select count(*) from procrastinate_jobs" + where).fetchone()
        return int(row[0]) if row else 0


def fill_history(dsn: str, n: int) -> None:
    """Insert ``n`` finished jobs directly, as the worker leaves them (status succeeded)."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        conn.execute(
            "insert into procrastinate_jobs (queue_name, task_name, args, status, attempts)"
            " select %s, 'noop', jsonb_build_object('i', g), 'succeeded', 1"
            " from generate_series(1, %s) g",
            (QUEUE, n),
        )
        conn.execute("analyze procrastinate_jobs")


def idle_claim(dsn: str, calls: int) -> float:
    """Return ms per empty ``procrastinate_fetch_job_v2`` call (the worker's claim)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        wid = conn.execute("select procrastinate_register_worker_v1()").fetchone()[0]  # type: ignore[index]
        q = "select * from procrastinate_fetch_job_v2(%s::varchar[], %s)"
        for _ in range(20):
            conn.execute(q, ([QUEUE], wid))
        t0 = time.perf_counter()
        for _ in range(calls):
            rows = conn.execute(q, ([QUEUE], wid)).fetchall()
            if rows and rows[0][0] is not None:
                raise RuntimeError("idle claim found a job")
        return (time.perf_counter() - t0) * 1000 / calls
