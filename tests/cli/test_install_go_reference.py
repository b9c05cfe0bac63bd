"""`teguh install` over the Go reference's schema (absurd's, renamed, stands in for it)."""

from __future__ import annotations

import json

import psycopg

from tests.sql.test_go_reference_install import reference_sql

from .conftest import Run, assert_user_error


def test_install_migrates_the_go_reference(teguh: Run, empty_dsn: str) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(reference_sql())
        conn.execute("select teguh.create_queue('jobs')")
        conn.execute("select teguh.spawn_task('jobs', 'send', '{\"to\": 1}')")

    result = teguh("--dsn", empty_dsn, "install", "--json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["action"] == "imported"
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        claimed = conn.execute("select task_name from teguh.claim_task('jobs', 'w')").fetchall()
    assert claimed == [("send",)]


def test_install_refuses_what_it_cannot_carry_over(teguh: Run, empty_dsn: str) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(reference_sql())
        conn.execute("select teguh.create_queue('jobs')")
        conn.execute("create view public.names as select task_name from teguh.t_jobs")

    result = teguh("--dsn", empty_dsn, "install")

    assert_user_error(result, 1, "cannot replace the Go reference's schema", "Nothing was changed")
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert conn.execute("select to_regprocedure('teguh.version()')").fetchone() == (None,)
