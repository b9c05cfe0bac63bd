"""The workloads: each runs one tool once on a fresh database and returns its figures.

Every workload verifies its outcome (each job ran exactly once, counted in the
handler; the tool's own tables agree) and raises `BenchFailure` otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql

from tests.bench import tools
from tests.bench.common import BenchFailure, WorkSpec, check_exactly_once, percentile, wait_until
from tests.bench.procs import Child, run_child


@dataclass(frozen=True)
class Sizes:
    enqueue: int
    batch: int
    drain: int
    drain_c1: int
    latency: int
    latency_gap: float
    workflow: int
    sleep: int
    history: tuple[int, ...]
    idle_calls: int
    pgbench_seconds: int

    @classmethod
    def full(cls) -> Sizes:
        return cls(
            10_000, 500, 10_000, 2_000, 300, 0.020, 2_000, 200, (0, 100_000, 1_000_000), 500, 10
        )

    @classmethod
    def quick(cls) -> Sizes:
        return cls(500, 100, 500, 200, 40, 0.020, 100, 20, (0, 10_000), 100, 2)


class Server:
    """Admin access to the benchmark server: databases are created and dropped here."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn

    def dsn(self, dbname: str) -> str:
        # A URL, not key=value: asyncpg (pgqueuer's worker) and SQLAlchemy (DBOS) accept only URLs.
        info = psycopg.conninfo.conninfo_to_dict(self.admin_dsn)
        user = quote(str(info.get("user") or "postgres"), safe="")
        password = info.get("password")
        auth = f"{user}:{quote(str(password), safe='')}" if password else user
        host = info.get("host") or "127.0.0.1"
        port = info.get("port") or "5432"
        return f"postgresql://{auth}@{host}:{port}/{quote(dbname, safe='')}"

    def create(self, name: str) -> str:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def drop(self, name: str) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )


def _fresh(server: Server, tool: str, label: str) -> str:
    name = re.sub(r"[^a-z0-9_]", "_", f"b_{tool}_{label}".lower())
    dsn = server.create(name)
    run_child(tool, "setup", {"dsn": dsn})
    return dsn


def _dbname(dsn: str) -> str:
    return str(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"])


def _verify_done(tool: str, workload: str, dsn: str, kind: str, want: int) -> None:
    got: list[int] = [-1]

    def ok() -> bool:
        got[0] = run_child(tool, "count_done", {"dsn": dsn, "kind": kind}, timeout=120)["done"]
        return got[0] == want

    if not wait_until(ok, timeout=15, interval=0.5):
        raise BenchFailure(
            f"{tool}/{workload}: the tool's tables show {got[0]} finished jobs, want {want}"
        )


def _run_worker(tool: str, dsn: str, spec: WorkSpec, timeout: float = 900) -> dict[str, Any]:
    child = Child(tool, "work", {"dsn": dsn, "spec": spec.__dict__})
    try:
        child.wait_ready()
        return child.result(timeout=timeout)
    finally:
        child.kill()


def _rate(summary: dict[str, Any], n: int) -> float:
    span = summary["last"] - summary["first"]
    return (n - 1) / span if span > 0 else float("nan")


_HEALTH_COLS = ("table", "ins", "upd", "hot_upd", "del", "dead", "live", "bytes")


def table_health(tool: str, dsn: str) -> dict[str, Any]:
    """Return summed and per-table write statistics of the tool's tables."""
    mod = tools.load(tool)
    query = (
        "select schemaname || '.' || relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del,"
        " n_dead_tup, n_live_tup, pg_total_relation_size(relid)"
        f" from pg_stat_user_tables where {mod.TABLES} order by 1"
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(query).fetchall()
    tables = [dict(zip(_HEALTH_COLS, row, strict=True)) for row in rows]
    total = {
        k: sum(t[k] for t in tables)
        for k in ("ins", "upd", "hot_upd", "del", "dead", "live", "bytes")
    }
    return {"total": total, "tables": tables}


# -- workloads ----------------------------------------------------------------


def w_enqueue(server: Server, tool: str, rep: int, sizes: Sizes) -> dict[str, Any]:
    mod = tools.load(tool)
    dsn = _fresh(server, tool, f"enqueue_{rep}")
    try:
        out: dict[str, Any] = {}
        secs = run_child(tool, "enqueue", {"dsn": dsn, "start": 0, "n": sizes.enqueue})["seconds"]
        out["enqueue_single"] = sizes.enqueue / secs
        total = sizes.enqueue
        if "batch" in mod.FEATURES:
            secs = run_child(
                tool,
                "enqueue",
                {"dsn": dsn, "start": sizes.enqueue, "n": sizes.enqueue, "batch": sizes.batch},
            )["seconds"]
            out["enqueue_batch"] = sizes.enqueue / secs
            total += sizes.enqueue
        got = run_child(tool, "count_done", {"dsn": dsn, "kind": "queued"})["done"]
        if got != total:
            raise BenchFailure(f"{tool}/enqueue: {got} jobs in the queue after enqueueing {total}")
        if hasattr(mod, "anatomy"):
            out.update(run_child(tool, "anatomy", {"dsn": dsn, "calls": sizes.idle_calls}))
        return out
    finally:
        server.drop(_dbname(dsn))


def w_drain(server: Server, tool: str, rep: int, sizes: Sizes, concurrency: int) -> dict[str, Any]:
    dsn = _fresh(server, tool, f"drain{concurrency}_{rep}")
    try:
        # At concurrency 1 the polled peers manage a few dozen jobs a second: a smaller
        # queue keeps the suite's run time bounded.
        n = sizes.drain if concurrency > 1 else sizes.drain_c1
        run_child(tool, "prefill", {"dsn": dsn, "kind": "noop", "n": n})
        summary = _run_worker(tool, dsn, WorkSpec("noop", n, concurrency))
        check_exactly_once(tool, f"drain c={concurrency}", summary)
        _verify_done(tool, f"drain c={concurrency}", dsn, "noop", n)
        out: dict[str, Any] = {f"drain_c{concurrency}": _rate(summary, n)}
        if concurrency == 10:
            time.sleep(0.5)  # backends flush their statistics on exit; give the collector a moment
            out["health"] = table_health(tool, dsn)
        return out
    finally:
        server.drop(_dbname(dsn))


def w_latency(server: Server, tool: str, rep: int, sizes: Sizes) -> dict[str, Any]:
    dsn = _fresh(server, tool, f"latency_{rep}")
    try:
        n = sizes.latency
        child = Child(tool, "work", {"dsn": dsn, "spec": WorkSpec("latency", n, 10).__dict__})
        try:
            child.wait_ready()
            time.sleep(1.0)  # an idle worker: let it reach its wait
            run_child(tool, "latency_enqueue", {"dsn": dsn, "n": n, "gap": sizes.latency_gap})
            summary = child.result(timeout=300)
        finally:
            child.kill()
        check_exactly_once(tool, "latency", summary)
        _verify_done(tool, "latency", dsn, "noop", n)
        ms = [v * 1000 for v in summary["values"]]
        return {
            "latency_p50": percentile(ms, 50),
            "latency_p95": percentile(ms, 95),
            "latency_p99": percentile(ms, 99),
        }
    finally:
        server.drop(_dbname(dsn))


def w_workflow(server: Server, tool: str, rep: int, sizes: Sizes) -> dict[str, Any]:
    dsn = _fresh(server, tool, f"workflow_{rep}")
    try:
        n = sizes.workflow
        run_child(tool, "prefill", {"dsn": dsn, "kind": "workflow", "n": n})
        summary = _run_worker(tool, dsn, WorkSpec("workflow", n, 10))
        check_exactly_once(tool, "workflow", summary, steps=3)
        _verify_done(tool, "workflow", dsn, "workflow", n)
        return {"workflow": _rate(summary, n)}
    finally:
        server.drop(_dbname(dsn))


def w_sleep(server: Server, tool: str, rep: int, sizes: Sizes) -> dict[str, Any]:
    dsn = _fresh(server, tool, f"sleep_{rep}")
    try:
        n = sizes.sleep
        run_child(tool, "prefill", {"dsn": dsn, "kind": "sleep", "n": n})
        summary = _run_worker(tool, dsn, WorkSpec("sleep", n, 10, sleep_seconds=1.0))
        check_exactly_once(tool, "sleep", summary, steps=1)
        _verify_done(tool, "sleep", dsn, "sleep", n)
        ms = [v * 1000 for v in summary["values"]]
        if min(ms) < -5:
            raise BenchFailure(f"{tool}/sleep: a task woke {-min(ms):.0f} ms early")
        return {"sleep_p50": percentile(ms, 50), "sleep_p99": percentile(ms, 99)}
    finally:
        server.drop(_dbname(dsn))


def fill_history(server: Server, tool: str, size: int) -> str:
    dsn = _fresh(server, tool, f"idle_{size}")
    if size:
        run_child(tool, "fill_history", {"dsn": dsn, "n": size}, timeout=1800)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("vacuum analyze")
    return dsn


def idle_claim(tool: str, dsn: str, calls: int) -> float:
    """Return ms per empty claim: the median of 5 batches, which shrugs off a noisy neighbour."""
    per = max(1, calls // 5)
    batches = [
        float(run_child(tool, "idle_claim", {"dsn": dsn, "calls": per})["ms"]) for _ in range(5)
    ]
    return sorted(batches)[2]


# -- physical limit ----------------------------------------------------------------

_PGB_SETUP = """
drop table if exists pgb_q;
create table pgb_q (id bigserial primary key, payload jsonb not null default '{}');
"""
_PGB_INSERT = "insert into pgb_q (payload) values ('{\"i\": 1}');\n"
_PGB_DEQUEUE = (
    "delete from pgb_q where id = "
    "(select id from pgb_q order by id for update skip locked limit 1) returning id;\n"
)


def pgbench(
    server: Server, bindir: str, rep: int, seconds: int, clients: int = 10
) -> dict[str, float]:
    """Return TPS of a one-row insert and of a SKIP LOCKED dequeue-and-delete at ``clients``."""
    exe = os.path.join(bindir, "pgbench")
    if not os.access(exe, os.X_OK):
        exe = shutil.which("pgbench") or exe
    dsn = server.create(f"b_pgbench_{rep}")
    out: dict[str, float] = {}
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(_PGB_SETUP)
        with tempfile.TemporaryDirectory(prefix="teguh-pgbench-") as tmp:
            ins = os.path.join(tmp, "insert.sql")
            deq = os.path.join(tmp, "dequeue.sql")
            with open(ins, "w") as f:
                f.write(_PGB_INSERT)
            with open(deq, "w") as f:
                f.write(_PGB_DEQUEUE)
            out["pg_insert"] = _pgbench_tps(exe, dsn, ins, clients, seconds)
            # Enough rows that the dequeue never runs dry: what the insert run managed, twice over.
            rows = int(out["pg_insert"] * seconds * 2) + 10_000
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(
                    "insert into pgb_q (payload) select '{\"i\": 1}' from generate_series(1, %s)",
                    (rows,),
                )
                conn.execute("vacuum analyze pgb_q")
            out["pg_dequeue"] = _pgbench_tps(exe, dsn, deq, clients, seconds)
            with psycopg.connect(dsn, autocommit=True) as conn:
                left = conn.execute("select count(*) from pgb_q").fetchone()[0]  # type: ignore[index]
            if left == 0:
                raise BenchFailure("pgbench dequeue ran the table dry; the figure is not valid")
    finally:
        server.drop(f"b_pgbench_{rep}")
    return out


def _pgbench_tps(exe: str, dsn: str, script: str, clients: int, seconds: int) -> float:
    proc = subprocess.run(
        [exe, "-n", "-c", str(clients), "-j", "2", "-T", str(seconds), "-f", script, dsn],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
    )
    if proc.returncode != 0:
        raise BenchFailure(f"pgbench failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    m = re.search(
        r"tps = ([0-9.]+) \((?:without initial connection time|excluding connections"
        r" establishing)\)",
        proc.stdout,
    )
    if not m:
        raise BenchFailure(f"cannot read pgbench output:\n{proc.stdout[-2000:]}")
    return float(m.group(1))
