"""absurd, durable tasks in one SQL file of stored functions (absurd-sdk's synchronous client).

The schema is the ``absurd.sql`` release that the ``absurdctl`` package on
PyPI bundles (``absurdctl.BUNDLED_SCHEMA_SQL``, the same SQL ``absurdctl init``
applies); ``absurd-sdk`` itself ships no SQL. Enqueue: ``Absurd(dsn).spawn()``,
one call per job (absurd has no batch spawn). Work: ``start_worker(concurrency=N)``
in its own process — a thread pool over the client's one connection, polling
``claim_task``; absurd has no LISTEN/NOTIFY, so ``poll_interval`` is lowered
from its 0.25 s default to 0.01 s to give it its best latency (at the price of
100 empty claims a second when idle). Workflows use ``ctx.step``; sleeps use
``ctx.sleep_for``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from tests.bench.common import Recorder, WorkSpec, emit_ready

NAME = "absurd"
DIST = "absurd-sdk"
USAGE = (
    "sync `Absurd(dsn)`: `spawn()`; worker `start_worker(concurrency=N, poll_interval=0.01)`; "
    "`ctx.step`, `ctx.sleep_for`; schema from the `absurdctl` package"
)
FEATURES = {"workflow", "sleep", "idle"}
TABLES = "schemaname = 'absurd'"
QUEUE = "bench"
POLL_INTERVAL = 0.01
_NAMES = {"noop": "noop", "latency": "noop", "workflow": "wf", "sleep": "sleepy"}

_recorder: Recorder | None = None
_sleep_seconds = 1.0


def unavailable() -> str | None:
    import importlib.util

    for mod in ("absurd_sdk", "absurdctl"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed (absurd's schema comes from the absurdctl package)"
    return None


def _app(dsn: str) -> Any:
    from absurd_sdk import Absurd

    app = Absurd(dsn, queue_name=QUEUE)

    @app.register_task(name="noop")
    def noop(params: dict[str, Any], ctx: Any) -> None:
        assert _recorder is not None
        t = params.get("t")
        _recorder.hit(params["i"], None if t is None else time.time() - t)

    @app.register_task(name="wf")
    def wf(params: dict[str, Any], ctx: Any) -> None:
        assert _recorder is not None
        rec, i = _recorder, params["i"]
        for name in ("s1", "s2", "s3"):
            ctx.step(name, lambda name=name: rec.step(i, name) or name)
        rec.hit(i)

    @app.register_task(name="sleepy")
    def sleepy(params: dict[str, Any], ctx: Any) -> None:
        assert _recorder is not None
        rec, i = _recorder, params["i"]

        def start() -> float:
            rec.step(i, "t0")
            return time.time()

        t0 = ctx.step("t0", start)
        ctx.sleep_for("nap", _sleep_seconds)
        rec.hit(i, time.time() - (t0 + _sleep_seconds))

    return app


def setup(dsn: str) -> None:
    import absurdctl
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(absurdctl.BUNDLED_SCHEMA_SQL)  # type: ignore[arg-type]
        conn.execute("select absurd.create_queue(%s)", (QUEUE,))


def enqueue(dsn: str, start: int, n: int, batch: int | None) -> float:
    app = _app(dsn)
    try:
        t0 = time.perf_counter()
        for i in range(start, start + n):
            app.spawn("noop", {"i": i})
        return time.perf_counter() - t0
    finally:
        app.close()


def prefill(dsn: str, kind: str, n: int) -> None:
    app = _app(dsn)
    try:
        for i in range(n):
            app.spawn(_NAMES[kind], {"i": i})
    finally:
        app.close()


def latency_enqueue(dsn: str, n: int, gap: float) -> None:
    app = _app(dsn)
    try:
        for i in range(n):
            app.spawn("noop", {"i": i, "t": time.time()})
            time.sleep(gap)
    finally:
        app.close()


def work(dsn: str, spec: WorkSpec) -> Recorder:
    global _recorder, _sleep_seconds
    _recorder = rec = Recorder(spec.expected)
    _sleep_seconds = spec.sleep_seconds
    app = _app(dsn)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            app.start_worker(
                worker_id="bench", concurrency=spec.concurrency, poll_interval=POLL_INTERVAL
            )
        except BaseException as exc:
            errors.append(exc)
            rec.done.set()

    thread = threading.Thread(target=run, name="absurd-worker", daemon=True)
    emit_ready()
    thread.start()
    rec.wait()
    time.sleep(0.3)
    app.stop_worker()
    thread.join(timeout=30)
    app.close()
    if errors:
        raise errors[0]
    return rec


def count_done(dsn: str, kind: str) -> int:
    import psycopg

    where = "" if kind == "queued" else " where state = 'completed'"
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"select count(*) from absurd.t_{QUEUE}" + where).fetchone()
        return int(row[0]) if row else 0


def fill_history(dsn: str, n: int) -> None:
    """Insert ``n`` tasks as ``complete_run`` leaves them (task and run ``completed``)."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        conn.execute(
            "create temp table h as select absurd.portable_uuidv7() as task_id,"
            " absurd.portable_uuidv7() as run_id, g from generate_series(1, %s) g",
            (n,),
        )
        conn.execute(
            f"insert into absurd.t_{QUEUE} (task_id, task_name, params, retry_strategy,"
            " max_attempts, state, attempts, last_attempt_run, first_started_at, completed_payload)"
            " select task_id, 'noop', jsonb_build_object('i', g), '{\"kind\": \"none\"}', 5,"
            " 'completed', 1, run_id, now(), 'null' from h"
        )
        conn.execute(
            f"insert into absurd.r_{QUEUE} (run_id, task_id, attempt, state, available_at,"
            " started_at, completed_at)"
            " select run_id, task_id, 1, 'completed', now(), now(), now() from h"
        )


def idle_claim(dsn: str, calls: int) -> float:
    """Return ms per empty ``absurd.claim_task`` call."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        q = "select * from absurd.claim_task(%s, 'idle', 30, 1)"
        for _ in range(20):
            conn.execute(q, (QUEUE,))
        t0 = time.perf_counter()
        for _ in range(calls):
            if conn.execute(q, (QUEUE,)).fetchall():
                raise RuntimeError("idle claim found a task")
        return (time.perf_counter() - t0) * 1000 / calls
