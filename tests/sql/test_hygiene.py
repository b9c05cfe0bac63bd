"""Performance hygiene, checked through PostgreSQL's own counters (no timing)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from tests.helpers import wait_for

from .conftest import Engine


def table_stats(observer: Engine, table: str) -> dict[str, int]:
    observer.conn.execute("select pg_stat_clear_snapshot()")
    cur = observer.conn.execute(
        "select seq_scan, coalesce(idx_scan, 0) as idx_scan, n_tup_upd, n_tup_hot_upd,"
        " n_tup_ins, n_tup_del"
        " from pg_stat_user_tables where schemaname = 'teguh' and relname = %s",
        (table,),
    )
    row = cur.fetchone()
    assert row is not None and cur.description is not None
    return dict(zip([c.name for c in cur.description], row, strict=True))


def flush_stats(eng: Engine) -> None:
    eng.conn.execute("select pg_stat_force_next_flush()")
    eng.conn.execute("select 1")  # the flush happens when the backend goes idle


def drain(eng: Engine, n: int, batch: int = 100) -> None:
    eng.conn.execute("select * from teguh.spawn_tasks('q', 't', %s)", (Jsonb(list(range(n))),))
    while runs := eng.claim(qty=batch):
        for run in runs:
            eng.complete(run[0], None)


def test_claim_never_scans_the_task_table(eng: Engine, make_engine: Any) -> None:
    drain(eng, 3000)
    eng.conn.execute("analyze teguh.t_q")
    observer = make_engine()
    flush_stats(eng)
    before = wait_for(lambda: table_stats(observer, "t_q"))

    for _ in range(50):  # idle claims
        assert eng.claim() == []
    for i in range(20):  # claims that find work
        eng.spawn("t", i)
        [run] = eng.claim()
        eng.complete(run[0])
    flush_stats(eng)
    after = wait_for(
        lambda: (s := table_stats(observer, "t_q"))["n_tup_upd"] >= before["n_tup_upd"] + 40 and s,
        message="statistics to be flushed",
    )
    assert after["seq_scan"] == before["seq_scan"]


def test_dispatch_table_is_never_updated_and_task_updates_are_hot(
    eng: Engine, make_engine: Any
) -> None:
    drain(eng, 10_000, batch=200)
    # plus every other path that writes p_: retry, sleep, event wake, timeout
    eng.spawn("r", retry_strategy={"kind": "none"})
    [run] = eng.claim()
    eng.fail(run[0])
    [run] = eng.claim()
    eng.conn.execute("select teguh.schedule_run('q', %s, teguh.current_time())", (run[0],))
    [run] = eng.claim()
    eng.one("select * from teguh.wait_event('q', %s, %s, 's', 'e', 0)", run[1], run[0])
    [run] = eng.claim()
    eng.one("select * from teguh.wait_event('q', %s, %s, 's2', 'e2')", run[1], run[0])
    eng.conn.execute("select teguh.emit_event('q', 'e2')")
    [run] = eng.claim()
    eng.complete(run[0])

    observer = make_engine()
    flush_stats(eng)
    p = wait_for(lambda: (s := table_stats(observer, "p_q"))["n_tup_del"] >= 10_005 and s)
    t = table_stats(observer, "t_q")
    assert p["n_tup_upd"] == 0
    assert t["n_tup_upd"] >= 20_000
    hot_ratio = t["n_tup_hot_upd"] / t["n_tup_upd"]
    print(
        f"t_q HOT ratio over a 10k drain: {hot_ratio:.3f} ({t['n_tup_hot_upd']}/{t['n_tup_upd']})"
    )
    assert hot_ratio > 0.9


def test_one_notification_per_transaction(eng: Engine, make_conn: Any) -> None:
    listener: psycopg.Connection[Any] = make_conn()
    listener.execute("listen teguh_q")
    eng.conn.execute("select * from teguh.spawn_tasks('q', 't', %s)", (Jsonb(list(range(1000))),))
    with eng.conn.transaction():
        for i in range(20):
            eng.spawn("t", i)
    got = list(listener.notifies(timeout=1.0))
    assert [n.channel for n in got] == ["teguh_q", "teguh_q"]
