"""Cost per call of spawn_task, claim_task and complete_run: this schema against another.

    git show 1597468:schema/teguh.sql > /tmp/base.sql
    python scripts/call_cost.py --baseline /tmp/base.sql

On one throwaway EmbeddedPostgres (server defaults: fsync and synchronous
commit on), three databases get a queue each: the baseline schema, this
checkout's schema, and this checkout's schema with ``SET`` clauses and
``SECURITY DEFINER`` taken off every function ("unpinned": only to measure
what the pinning costs; never a way to run teguh). Rounds alternate between
them; each round times ``--calls`` committed spawn/claim/complete cycles on
one connection. Prints the median cost per call and the median of the
per-round ratios to the baseline.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import psycopg

from teguh import schema
from teguh.embedded import EmbeddedPostgres

CALLS = ("spawn_task", "claim_task", "complete_run")

UNPIN = """
do $$
declare
  f regprocedure;
begin
  for f in select p.oid::regprocedure from pg_proc p
            where p.pronamespace = 'teguh'::regnamespace and p.prokind = 'f'
  loop
    execute format('alter function %s reset all', f);
    execute format('alter function %s security invoker', f);
  end loop;
end
$$
"""


def one_round(conn: psycopg.Connection[Any], calls: int) -> list[float]:
    """Milliseconds per call of each of `CALLS`, averaged over `calls` cycles."""
    totals = [0.0, 0.0, 0.0]
    for _ in range(calls):
        t0 = time.perf_counter()
        conn.execute("select * from teguh.spawn_task('q', 'job', '{}'::jsonb)").fetchone()
        t1 = time.perf_counter()
        row = conn.execute("select run_id from teguh.claim_task('q', 'w', 30, 1)").fetchone()
        t2 = time.perf_counter()
        assert row is not None
        conn.execute("select teguh.complete_run('q', %s, '{}'::jsonb)", (row[0],))
        t3 = time.perf_counter()
        for i, spent in enumerate((t1 - t0, t2 - t1, t3 - t2)):
            totals[i] += spent
    return [total / calls * 1000 for total in totals]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="another teguh.sql")
    parser.add_argument("--calls", type=int, default=500, help="cycles per round")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()

    variants = {
        "baseline": (args.baseline.read_text(), False),
        "this": (schema.sql_text(), False),
        "unpinned": (schema.sql_text(), True),
    }
    with EmbeddedPostgres() as pg:
        conns: dict[str, psycopg.Connection[Any]] = {}
        with psycopg.connect(pg.dsn(), autocommit=True) as admin:
            for name in variants:
                admin.execute(
                    psycopg.sql.SQL("create database {}").format(psycopg.sql.Identifier(name))
                )
        for name, (sql, unpin) in variants.items():
            conn = psycopg.connect(pg.dsn(name), autocommit=True)
            conn.execute(sql.encode())
            conn.execute("select teguh.create_queue('q')")
            if unpin:
                conn.execute(UNPIN)
                conn.execute("set search_path = teguh, public")
            conns[name] = conn
        results: dict[str, list[list[float]]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, conn in conns.items():
                results[name].append(one_round(conn, args.calls))
        for conn in conns.values():
            conn.close()

    for i, call in enumerate(CALLS):
        base = [r[i] for r in results["baseline"]]
        line = [f"{call:13s} baseline {statistics.median(base):.3f} ms"]
        for name in ("this", "unpinned"):
            mine = [r[i] for r in results[name]]
            ratio = statistics.median(m / b for m, b in zip(mine, base, strict=True))
            line.append(f"{name} {statistics.median(mine):.3f} ms ({ratio:.2f}x)")
        print("   ".join(line))


if __name__ == "__main__":
    main()
