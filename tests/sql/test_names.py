"""Generated object names never collide between two queues (issue 8 §1).

Version 1 named a queue's indexes <table>_<suffix>: queue ``jobs``'s index
``t_jobs_ikey`` is also the table of queue ``jobs_ikey``, so whichever came
second failed, or silently went without its idempotency index. Every
per-queue object is now named <kind>_<queue> with an underscore-free kind.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from teguh import schema

from .conftest import Engine
from .test_schema_upgrade import V1_SQL, _fresh_database

# the indexes (and keys) of each table of a queue, by kind
INDEXES = {
    "t": {"tpk", "tikey", "tcncl"},
    "p": {"ppk", "porder", "pkey", "pdue"},
    "r": {"rpk", "rexp", "rkey"},
    "c": {"cpk"},
    "e": {"epk", "eat"},
    "w": {"wpk", "wevent"},
}
OLD_SUFFIXES = ["_pkey", "_ikey", "_cncl", "_order", "_due", "_exp", "_at", "_event", "_seq_seq"]


def assert_complete(conn: psycopg.Connection[Any], queue: str) -> None:
    """Every table, index, key, sequence and function of queue exists under its own name."""
    for table, kinds in INDEXES.items():
        rows = conn.execute(
            """select ic.relname from pg_index i
                 join pg_class ic on ic.oid = i.indexrelid
                 join pg_class tc on tc.oid = i.indrelid
                where tc.relnamespace = 'teguh'::regnamespace and tc.relname = %s
                  and tc.relkind = 'r'""",
            (f"{table}_{queue}",),
        ).fetchall()
        assert {r[0] for r in rows} == {f"{kind}_{queue}" for kind in kinds}, (queue, table)
    assert conn.execute(
        "select pg_get_serial_sequence(format('teguh.%%I', %s::text), 'seq')", (f"p_{queue}",)
    ).fetchone() == (f"teguh.pseq_{queue}",)
    functions = conn.execute(
        "select count(*) from pg_proc where pronamespace = 'teguh'::regnamespace"
        " and proname = any (%s)",
        ([f"_{kind}_{queue}" for kind in ("spawn", "claim", "done", "step", "wake")],),
    ).fetchone()
    assert functions == (5,), queue


def assert_works(conn: psycopg.Connection[Any], queue: str) -> None:
    eng = Engine(conn, queue)
    first = eng.spawn(idempotency_key="k")
    again = eng.spawn(idempotency_key="k")
    assert again[:2] == first[:2] and again[3] is False
    for run in eng.claim(qty=100):
        eng.complete(run[0], {"ok": queue})
    assert eng.state(first[0]) == "completed"


# Tables that are not per queue, with their keys and indexes (see the header of
# teguh.sql): their names never have the <kind>_<queue> form's short kind.
GLOBAL_TABLES = [
    "queues",
    "queues_ticks",
    "queue_policies",
    "schedules",
    "concurrency_limits",
    "workers",
    "settings",
    "role_grants",
]


def test_every_generated_name_is_kind_underscore_queue(eng: Engine) -> None:
    eng.conn.execute("select teguh.set_queue_policy('q', '{\"cleanup\": \"archive\"}')")
    names = eng.rows(
        """select c.relname from pg_class c
            where c.relnamespace = 'teguh'::regnamespace
              and c.relname <> all (%s)
              and not exists (select 1 from pg_index i join pg_class t on t.oid = i.indrelid
                               where i.indexrelid = c.oid and t.relname = any (%s))
           union all
           select p.proname from pg_proc p
            where p.pronamespace = 'teguh'::regnamespace and p.proname like '%%\\_q'""",
        GLOBAL_TABLES,
        GLOBAL_TABLES,
    )
    assert {"a_q", "ae_q", "apk_q", "aepk_q"} <= {name for (name,) in names}
    for (name,) in names:
        assert re.fullmatch(r"_?[a-z]{1,7}_q", name), name


@pytest.mark.parametrize("reverse", [False, True], ids=["base-first", "base-last"])
def test_queues_whose_names_extend_each_other_do_not_clash(
    conn: psycopg.Connection[Any], reverse: bool
) -> None:
    names = ["jobs", *(f"jobs{suffix}" for suffix in OLD_SUFFIXES)]
    # and names built from the new kinds, around the same base
    names += [f"{kind}_jobs" for kinds in INDEXES.values() for kind in kinds]
    names += ["pseq_jobs", "spawn_jobs", "t_jobs", "jobs_t"]
    for name in reversed(names) if reverse else names:
        conn.execute("select teguh.create_queue(%s)", (name,))
    for name in names:
        assert_complete(conn, name)
        assert_works(conn, name)


FRAGMENTS = st.sampled_from(
    [
        "jobs",
        "t",
        "p",
        "r",
        "w",
        "e",
        "c",
        "ikey",
        "pkey",
        "seq",
        "tpk",
        "tikey",
        "pseq",
        "at",
        "x1",
    ]
)
QUEUE_NAMES = st.lists(FRAGMENTS, min_size=1, max_size=4).map("_".join)


@given(names=st.lists(QUEUE_NAMES, min_size=2, max_size=5, unique=True))
def test_any_set_of_queue_names_gets_complete_queues(
    conn: psycopg.Connection[Any], names: list[str]
) -> None:
    # each example in a transaction rolled back: the examples share one database
    with conn.transaction(force_rollback=True):
        for name in names:
            conn.execute("select teguh.create_queue(%s)", (name,))
        for name in names:
            assert_complete(conn, name)
            assert_works(conn, name)


def test_a_version_1_collision_is_healed_by_the_upgrade(conn: psycopg.Connection[Any]) -> None:
    dsn = _fresh_database(conn, "teguh_v1_names")
    try:
        with psycopg.connect(dsn, autocommit=True) as old:
            old.execute(V1_SQL.read_bytes())
            old.execute("select teguh.create_queue('jobs_ikey')")
            # version 1 finds "t_jobs_ikey" taken and skips jobs' idempotency
            # index: every spawn on jobs then fails
            old.execute("select teguh.create_queue('jobs')")
            with pytest.raises(psycopg.errors.InvalidColumnReference):
                old.execute("select * from teguh.spawn_task('jobs', 't', '{}')")

            schema.install(old)
            old.execute("select teguh.allow_fake_time(true)")  # assert_works moves the clock

            for name in ("jobs", "jobs_ikey"):
                assert_complete(old, name)
                assert_works(old, name)
    finally:
        conn.execute('drop database if exists "teguh_v1_names" with (force)')
