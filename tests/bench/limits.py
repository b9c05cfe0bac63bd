"""``python -m tests.bench.limits``: the drain with and without per-key concurrency limits.

Drains N no-op tasks through the engine alone (worker threads, each on its
own connection, claiming a batch with ``claim_runs`` and completing it with
``complete_runs``), in these variants:

- ``none``: no limit configured, tasks without a key (the claim's fast path);
- ``other``: a limit configured on a key the tasks do not carry (still the
  fast path: what configuring limits costs a queue that does not use them);
- ``keyed``: every task carries one of K keys, all under a generous prefix
  limit (the per-key path, never capped: what the bookkeeping costs);
- ``baseline``: ``none`` on another schema file (``--baseline-schema``, e.g.
  main's ``schema/teguh.sql`` from ``git show main:schema/teguh.sql``), so
  that the fast path is compared with the code before this feature.

Rounds interleave the variants so that the machine's drift hits them alike;
the report gives each variant's median rate and its ratio to ``none`` (and
``none``'s to ``baseline``). Figures are ratios measured in one run; the
machine is noisy. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[2]


def install(admin_dsn: str, dbname: str, schema: str) -> str:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(dbname))
        )
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))
    info = psycopg.conninfo.conninfo_to_dict(admin_dsn)
    info["dbname"] = dbname
    dsn = psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in info.items() if v is not None})
    with psycopg.connect(dsn) as conn:
        conn.execute(schema.encode())  # type: ignore[call-overload]  # the file, as psql would run it
        conn.execute("select teguh.create_queue('bench')")
    return dsn


def prefill(dsn: str, variant: str, n: int, keys: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        if variant == "other":
            conn.execute("select teguh.set_concurrency_limit('bench', 'somebody-else', 1)")
        if variant == "keyed":
            conn.execute("select teguh.set_concurrency_limit('bench', 'tenant:*', 100000)")
        for start in range(0, n, 1000):
            size = min(1000, n - start)
            if variant == "keyed":
                # one batch per key, round robin: ready tasks of K keys interleaved
                for k in range(keys):
                    part = len(range(k, size, keys))
                    if part:
                        conn.execute(
                            "select count(*) from teguh.spawn_tasks('bench', 'noop',"
                            " (select jsonb_agg(i) from generate_series(1, %s) i),"
                            " jsonb_build_object('concurrency_key', %s::text))",
                            (part, f"tenant:{k}"),
                        )
            else:
                conn.execute(
                    "select count(*) from teguh.spawn_tasks('bench', 'noop',"
                    " (select jsonb_agg(i) from generate_series(1, %s) i))",
                    (size,),
                )
        conn.execute("vacuum analyze")


def drain(dsn: str, workers: int, batch: int) -> tuple[float, int]:
    done = [0] * workers
    start = threading.Barrier(workers + 1)

    def work(i: int) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            claim = "select run_id from teguh.claim_runs('bench', %s, 30, %s)"
            complete = "select count(*) from teguh.complete_runs('bench', %s)"
            start.wait()
            empty = 0
            while empty < 2:
                ids = [r[0] for r in conn.execute(claim, (f"w{i}", batch), prepare=True)]
                if not ids:
                    empty += 1
                    continue
                empty = 0
                conn.execute(complete, (ids,), prepare=True)
                done[i] += len(ids)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, sum(done)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tests.bench.limits", description=__doc__.split("\n")[0]
    )
    p.add_argument("--tasks", type=int, default=20_000)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--batch", type=int, default=10, help="runs per claim")
    p.add_argument("--keys", type=int, default=10, help="distinct keys in the keyed variant")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--baseline-schema", type=Path, help="another teguh.sql (e.g. main's)")
    p.add_argument("--dsn", help="superuser DSN of a server to use instead of a throwaway one")
    args = p.parse_args(argv)

    schema = (ROOT / "schema" / "teguh.sql").read_text()
    variants = {"none": schema, "other": schema, "keyed": schema}
    if args.baseline_schema:
        variants = {"baseline": args.baseline_schema.read_text(), **variants}
    embedded = None
    if args.dsn:
        admin = args.dsn
    else:
        from teguh.embedded import EmbeddedPostgres

        embedded = EmbeddedPostgres().start()
        admin = embedded.dsn()
    rates: dict[str, list[float]] = {v: [] for v in variants}
    try:
        for rnd in range(args.rounds):
            order = list(variants)
            order = order[rnd % len(order) :] + order[: rnd % len(order)]  # rotate: no fixed slot
            for variant in order:
                dsn = install(admin, f"limits_{variant}", variants[variant])
                prefill(dsn, "none" if variant == "baseline" else variant, args.tasks, args.keys)
                secs, n = drain(dsn, args.workers, args.batch)
                if n != args.tasks:
                    raise SystemExit(f"{variant}: drained {n} tasks, want {args.tasks}")
                rates[variant].append(n / secs)
                print(f"round {rnd + 1} {variant:>8}: {n / secs:8.0f} tasks/s", flush=True)
    finally:
        if embedded is not None:
            embedded.stop()
    med = {v: statistics.median(r) for v, r in rates.items()}
    print(
        f"\n{args.tasks} tasks, {args.workers} workers,"
        f" claims of {args.batch}, {args.rounds} rounds"
    )
    print(f"{'variant':>8}  {'median/s':>9}  {'vs none':>7}")
    for v, m in med.items():
        print(f"{v:>8}  {m:9.0f}  {m / med['none']:7.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
