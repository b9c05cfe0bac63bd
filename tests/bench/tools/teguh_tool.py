"""teguh, through its synchronous Python library (``teguh.Client``, ``App`` and ``Worker``).

Enqueue: ``Client.spawn_task()`` one call per job, ``Client.spawn_tasks()`` for a
batch (one round trip). Work: ``teguh.App(dsn).worker([q], concurrency=N)`` in
its own process with its defaults (a LISTEN connection, claims as many runs as
it has free slots, handlers on a thread pool), the handlers registered by name
with ``worker.handle(name, fn)``; workflows use ``ctx.step``, sleeps
``ctx.sleep_for`` (the worker wakes itself for the next due run; no pg_cron).
"""

from __future__ import annotations

import time
from typing import Any

from tests.bench.common import Recorder, WorkSpec, chunks, emit_ready

NAME = "teguh"
DIST = "teguh"
USAGE = (
    "`Client.spawn_task()` / `spawn_tasks()`; worker `App(dsn).worker([q], concurrency=N)` "
    "with `worker.handle(name, fn)` (LISTEN/NOTIFY, thread pool); `ctx.step`, `ctx.sleep_for`"
)
FEATURES = {"batch", "workflow", "sleep", "idle"}
TABLES = "schemaname = 'teguh'"
QUEUE = "bench"
_NAMES = {"noop": "noop", "latency": "noop", "workflow": "wf", "sleep": "sleepy"}


def unavailable() -> str | None:
    try:
        import teguh

        teguh.Client  # noqa: B018 - the library, not just teguh.embedded
    except (ImportError, AttributeError) as exc:
        return f"the teguh library cannot be imported: {exc}"
    return None


def _client(dsn: str) -> Any:
    import teguh

    return teguh.Client(dsn)


def setup(dsn: str) -> None:
    with _client(dsn) as client:
        client.install()
        client.create_queue(QUEUE)


def enqueue(dsn: str, start: int, n: int, batch: int | None) -> float:
    with _client(dsn) as client:
        client.version()  # connect and check the schema before the clock starts
        t0 = time.perf_counter()
        if batch is None:
            for i in range(start, start + n):
                client.spawn_task(QUEUE, "noop", {"i": i})
        else:
            for part in chunks(range(start, start + n), batch):
                client.spawn_tasks(QUEUE, "noop", [{"i": i} for i in part])
        return time.perf_counter() - t0


def prefill(dsn: str, kind: str, n: int) -> None:
    with _client(dsn) as client:
        for part in chunks(range(n), 500):
            client.spawn_tasks(QUEUE, _NAMES[kind], [{"i": i} for i in part])


def latency_enqueue(dsn: str, n: int, gap: float) -> None:
    with _client(dsn) as client:
        client.version()
        for i in range(n):
            client.spawn_task(QUEUE, "noop", {"i": i, "t": time.time()})
            time.sleep(gap)


def work(dsn: str, spec: WorkSpec) -> Recorder:
    rec = Recorder(spec.expected)
    sleep_s = spec.sleep_seconds
    import teguh

    with teguh.App(dsn) as app:
        worker = app.worker([QUEUE], concurrency=spec.concurrency)

        def noop(ctx: Any) -> None:
            t = ctx.params.get("t")
            rec.hit(ctx.params["i"], None if t is None else time.time() - t)

        def wf(ctx: Any) -> None:
            i = ctx.params["i"]
            for name in ("s1", "s2", "s3"):
                ctx.step(name, lambda name=name: rec.step(i, name) or name)
            rec.hit(i)

        def sleepy(ctx: Any) -> None:
            i = ctx.params["i"]

            def start() -> float:
                rec.step(i, "t0")
                return time.time()

            t0 = ctx.step("t0", start)
            ctx.sleep_for(sleep_s)
            rec.hit(i, time.time() - (t0 + sleep_s))

        worker.handle("noop", noop)
        worker.handle("wf", wf)
        worker.handle("sleepy", sleepy)
        emit_ready()
        worker.start()
        try:
            rec.wait()
            time.sleep(0.3)
        finally:
            worker.stop(30)
    return rec


def count_done(dsn: str, kind: str) -> int:
    import psycopg

    where = "" if kind == "queued" else " where state = 'completed'"
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"select count(*) from teguh.t_{QUEUE}" + where).fetchone()
        return int(row[0]) if row else 0


def fill_history(dsn: str, n: int) -> None:
    """Insert ``n`` tasks as ``complete_run`` leaves them: a ``completed`` row in t_ only."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        conn.execute(
            f"insert into teguh.t_{QUEUE} (task_id, task_name, params, headers, retry_strategy,"
            " max_attempts, priority, state, attempts, current_run_id, created_at, available_at,"
            " first_started_at, finished_at, completed_payload)"
            " select teguh.portable_uuidv7(), 'noop', jsonb_build_object('i', g), '{}',"
            ' \'{"kind": "exponential", "base_seconds": 1, "factor": 2, "max_seconds": 300}\','
            " 5, 0, 'completed', 1, teguh.portable_uuidv7(), now(), now(), now(), now(), 'null'"
            " from generate_series(1, %s) g",
            (n,),
        )


def idle_claim(dsn: str, calls: int) -> float:
    """Return ms per empty ``teguh.claim_task`` call."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        q = "select * from teguh.claim_task(%s, 'idle', 30, 1)"
        for _ in range(20):
            conn.execute(q, (QUEUE,))
        t0 = time.perf_counter()
        for _ in range(calls):
            if conn.execute(q, (QUEUE,)).fetchall():
                raise RuntimeError("idle claim found a task")
        return (time.perf_counter() - t0) * 1000 / calls


def anatomy(dsn: str, calls: int) -> dict[str, float]:
    """Return ms per call of what one single enqueue is made of, to explain its figure.

    A round trip (``select 1``), a one-row insert that commits, ``spawn_task``
    inside an open transaction (the function's own work) and ``spawn_task``
    committing on its own (its work plus the commit and its NOTIFY).
    """
    import psycopg

    def timed(conn: Any, query: str) -> float:
        for _ in range(20):
            conn.execute(query)
        t0 = time.perf_counter()
        for _ in range(calls):
            conn.execute(query)
        return (time.perf_counter() - t0) * 1000 / calls

    spawn = f"select * from teguh.spawn_task('{QUEUE}', 'noop', '{{\"i\": 0}}', '{{}}')"
    with psycopg.connect(dsn, autocommit=True) as conn:
        # A logged table: a temporary one would commit without flushing the WAL.
        conn.execute("create table bench_one_row (id bigserial primary key, payload jsonb)")
        out = {
            "rt_select1": timed(conn, "select 1"),
            "rt_insert_commit": timed(
                conn, "insert into bench_one_row (payload) values ('{\"i\": 0}')"
            ),
        }
        conn.execute("begin")
        out["rt_spawn_in_tx"] = timed(conn, spawn)
        conn.execute("rollback")
        out["rt_spawn_commit"] = timed(conn, spawn)
        conn.execute("drop table bench_one_row")
    return out
