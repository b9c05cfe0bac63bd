"""What the suite runs on: the server CI asked for, and what the engine uses there.

CI runs the suite once per PostgreSQL server (noxfile.py, ``tests_pg``) and says
which one it expects through ``TEGUH_TEST_PG_MAJOR`` and ``TEGUH_TEST_PG_SOURCE``,
so that a matrix entry that silently fell back to another server fails here
instead of testing the same server twice.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import psycopg
import pytest

from teguh.embedded import EmbeddedPostgres

Conn = psycopg.Connection[Any]


def _major(conn: Conn) -> int:
    row = conn.execute("select current_setting('server_version_num')::int").fetchone()
    assert row is not None
    return int(row[0]) // 10000


def test_server_is_the_one_asked_for(pg_server: EmbeddedPostgres, conn: Conn) -> None:
    major = os.environ.get("TEGUH_TEST_PG_MAJOR")
    source = os.environ.get("TEGUH_TEST_PG_SOURCE")
    if not major and not source:
        pytest.skip("TEGUH_TEST_PG_MAJOR/TEGUH_TEST_PG_SOURCE not set: any server will do")
    if major:
        assert _major(conn) == int(major), f"server binaries from {pg_server.bindir}"
    if source:
        assert pg_server.source == source, f"server binaries from {pg_server.bindir}"


def test_native_uuidv7_on_18(conn: Conn) -> None:
    if _major(conn) < 18:
        pytest.skip("uuidv7() is native from PostgreSQL 18; older servers use teguh._uuidv7_at")
    row = conn.execute(
        "select pg_get_functiondef('teguh.portable_uuidv7()'::regprocedure)"
    ).fetchone()
    assert row is not None and "pg_catalog.uuidv7()" in row[0]
    # Behaviour, not just text: the native function is monotonic within a session
    # (sub-millisecond bits), while the portable one is random within a millisecond,
    # so a thousand ids drawn in one statement come out strictly increasing.
    ids = [
        r[0]
        for r in conn.execute(
            "select id from (select teguh.portable_uuidv7() as id, n"
            " from generate_series(1, 1000) n) s order by n"
        ).fetchall()
    ]
    assert all(a < b for a, b in itertools.pairwise(ids))
    assert {u.version for u in ids} == {7}


def test_fake_time_ids_follow_the_fake_clock_on_every_version(conn: Conn) -> None:
    # On 18 too, fake time must win over the native uuidv7() (ids order like time).
    conn.execute("set teguh.fake_now = '2001-02-03 04:05:06+00'")
    row = conn.execute("select teguh.portable_uuidv7()").fetchone()
    assert row is not None
    millis = int(row[0].hex[:12], 16)
    assert millis == 981173106000
