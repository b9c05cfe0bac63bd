"""DBOS Transact: durable workflows and steps with a queue, Postgres as the system database.

Enqueue: ``DBOSClient(system_database_url=...).enqueue()`` from the
application process (the documented way to enqueue from outside a DBOS
process), one call per job; batches are ``enqueue_in_transaction`` calls inside
one SQLAlchemy transaction. Work: ``DBOS.launch()`` in its own process with a
queue registered with ``worker_concurrency=N``; a job is a ``@DBOS.workflow``,
workflow steps are ``@DBOS.step``s, the sleep is ``DBOS.sleep`` (durable; it
holds its worker slot while it sleeps). DBOS queues are polled, not notified:
``polling_interval_sec`` is lowered from its 1 s default to 0.01 s to give
DBOS its best throughput and latency (with the default a queue starts at most
``worker_concurrency`` workflows a second). The idle-cost workload is not
run for DBOS: its dequeue is several queries issued from its queue thread, not
one claim function that can be called on its own.
"""

from __future__ import annotations

import time
from typing import Any

from tests.bench.common import Recorder, WorkSpec, emit_ready

NAME = "dbos"
DIST = "dbos"
USAGE = (
    "`DBOSClient.enqueue()` / `enqueue_in_transaction()` in one transaction; worker "
    "`DBOS.launch()`, queue `worker_concurrency=N, polling_interval_sec=0.01`; "
    "`@DBOS.workflow`, `@DBOS.step`, `DBOS.sleep`"
)
FEATURES = {"batch", "workflow", "sleep"}
TABLES = "schemaname = 'dbos'"
QUEUE = "bench"
POLL = 0.01
_NAMES = {"noop": "noop", "latency": "noop", "workflow": "wf", "sleep": "sleepy"}

_recorder: Recorder | None = None
_sleep_seconds = 1.0
_registered = False


def _register() -> None:
    """Register the workflows once per process (DBOS keeps a global registry)."""
    global _registered
    if _registered:
        return
    from dbos import DBOS

    @DBOS.workflow(name="noop")
    def noop(i: int, t: float | None = None) -> None:
        assert _recorder is not None
        _recorder.hit(i, None if t is None else time.time() - t)

    @DBOS.step(name="s")
    def s(i: int, name: str) -> str:
        assert _recorder is not None
        _recorder.step(i, name)
        return name

    @DBOS.workflow(name="wf")
    def wf(i: int) -> None:
        assert _recorder is not None
        s(i, "s1")
        s(i, "s2")
        s(i, "s3")
        _recorder.hit(i)

    @DBOS.step(name="t0")
    def t0_step(i: int) -> float:
        assert _recorder is not None
        _recorder.step(i, "t0")
        return time.time()

    @DBOS.workflow(name="sleepy")
    def sleepy(i: int) -> None:
        assert _recorder is not None
        t0 = t0_step(i)
        DBOS.sleep(_sleep_seconds)
        _recorder.hit(i, time.time() - (t0 + _sleep_seconds))

    _registered = True


def _launch(dsn: str, concurrency: int) -> Any:
    from dbos import DBOS

    _register()
    DBOS(config={"name": "bench", "system_database_url": dsn, "log_level": "WARNING"})
    DBOS.launch()
    DBOS.register_queue(
        QUEUE,
        worker_concurrency=concurrency,
        polling_interval_sec=POLL,
        on_conflict="always_update",
    )
    return DBOS


def setup(dsn: str) -> None:
    dbos = _launch(dsn, 10)  # creates the system database schema and the queue
    dbos.destroy()


def _client(dsn: str) -> Any:
    from dbos import DBOSClient

    return DBOSClient(system_database_url=dsn)


def _opts(name: str) -> Any:
    return {"queue_name": QUEUE, "workflow_name": name}


def enqueue(dsn: str, start: int, n: int, batch: int | None) -> float:
    client = _client(dsn)
    try:
        opts = _opts("noop")
        if batch is None:
            t0 = time.perf_counter()
            for i in range(start, start + n):
                client.enqueue(opts, i)
            return time.perf_counter() - t0
        import sqlalchemy as sa

        engine = sa.create_engine(sa.make_url(dsn).set(drivername="postgresql+psycopg"))
        try:
            t0 = time.perf_counter()
            for part_start in range(start, start + n, batch):
                with engine.begin() as conn:
                    for i in range(part_start, min(part_start + batch, start + n)):
                        client.enqueue_in_transaction(conn, opts, i)
            return time.perf_counter() - t0
        finally:
            engine.dispose()
    finally:
        client.destroy()


def prefill(dsn: str, kind: str, n: int) -> None:
    import sqlalchemy as sa

    client = _client(dsn)
    engine = sa.create_engine(sa.make_url(dsn).set(drivername="postgresql+psycopg"))
    try:
        opts = _opts(_NAMES[kind])
        for part_start in range(0, n, 500):
            with engine.begin() as conn:
                for i in range(part_start, min(part_start + 500, n)):
                    client.enqueue_in_transaction(conn, opts, i)
    finally:
        engine.dispose()
        client.destroy()


def latency_enqueue(dsn: str, n: int, gap: float) -> None:
    client = _client(dsn)
    try:
        opts = _opts("noop")
        for i in range(n):
            client.enqueue(opts, i, time.time())
            time.sleep(gap)
    finally:
        client.destroy()


def work(dsn: str, spec: WorkSpec) -> Recorder:
    global _recorder, _sleep_seconds
    _recorder = rec = Recorder(spec.expected)
    _sleep_seconds = spec.sleep_seconds
    emit_ready()
    dbos = _launch(dsn, spec.concurrency)
    try:
        rec.wait()
        time.sleep(0.3)
    finally:
        dbos.destroy(workflow_completion_timeout_sec=30)
    return rec


def count_done(dsn: str, kind: str) -> int:
    import psycopg

    where = "" if kind == "queued" else " and status = 'SUCCESS'"
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "select count(*) from dbos.workflow_status where queue_name = %s" + where, (QUEUE,)
        ).fetchone()
        return int(row[0]) if row else 0
