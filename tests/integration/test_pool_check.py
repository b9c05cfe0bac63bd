"""The pools' connection check: dead connections are replaced before use, live
ones cost no round trip (teguh/_pool.py)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

import teguh
from teguh._pool import check_connection
from teguh.embedded import EmbeddedPostgres
from tests.helpers import pg_ctl


def _last_state_change(admin: psycopg.Connection[Any], pid: int) -> Any:
    row = admin.execute(
        "select state_change from pg_stat_activity where pid = %s", (pid,)
    ).fetchone()
    assert row is not None
    return row[0]


def test_a_live_idle_connection_passes_without_a_round_trip(
    make_conn: Any, conn: psycopg.Connection[Any]
) -> None:
    pooled = make_conn()
    pooled.execute("select 1")
    pid = pooled.info.backend_pid
    before = _last_state_change(conn, pid)
    for _ in range(50):
        check_connection(pooled)
    # a query (even an empty one) would have moved the backend to active and back
    assert _last_state_change(conn, pid) == before


def test_a_terminated_connection_fails_the_check(
    make_conn: Any, conn: psycopg.Connection[Any]
) -> None:
    pooled = make_conn()
    pooled.execute("select 1")
    conn.execute("select pg_terminate_backend(%s, 10000)", (pooled.info.backend_pid,))
    with pytest.raises(psycopg.OperationalError):
        check_connection(pooled)


def test_a_closed_connection_fails_the_check(make_conn: Any) -> None:
    pooled = make_conn()
    pooled.close()
    with pytest.raises(psycopg.OperationalError):
        check_connection(pooled)


def test_the_first_call_after_a_terminated_session_succeeds(
    dsn: str, queue: str, conn: psycopg.Connection[Any]
) -> None:
    with teguh.Client(dsn, min_size=1, max_size=1) as client:
        client.spawn_task(queue, "t", {})
        with client.pool.connection() as pooled:
            pid = pooled.info.backend_pid
        conn.execute("select pg_terminate_backend(%s, 10000)", (pid,))
        spawned = client.spawn_task(queue, "t", {})
        assert client.get_task(queue, spawned.task_id).state == "pending"
        assert client.pool.get_stats().get("connections_lost", 0) == 1


def test_the_first_calls_after_a_server_restart_succeed() -> None:
    server = EmbeddedPostgres().start()  # its own server: this test restarts it
    try:
        dsn = server.create_database("restart")
        with teguh.App(dsn, min_size=3, max_size=3) as app:
            client = app.client
            client.install()
            client.create_queue("q")
            client.pool.wait(timeout=10)
            before = client.spawn_task("q", "t", {})
            pg_ctl(server, "-m", "fast", "restart")
            # every pooled connection died with the old server: each call finds a live one
            for _ in range(5):
                client.spawn_task("q", "t", {})
            assert client.get_task("q", before.task_id).state == "pending"
            assert client.queue_stats("q")[0].pending == 6
    finally:
        server.stop()
