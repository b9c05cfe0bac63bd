"""teguh.start()/stop() with and without pg_cron, for real.

pg_cron jobs never run as a superuser: start() schedules them as the owner of
schema teguh, or as the role it is given, and refuses a superuser (42501).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.helpers import wait_for
from tests.sql.conftest import raises_sqlstate

CRON_ROLE = "teguh_cron_test"
OWNER_ROLE = "teguh_cron_owner"


def test_start_without_pg_cron_only_notices(conn: psycopg.Connection[Any]) -> None:
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(str(d.message_primary)))
    conn.execute("select teguh.start()")
    conn.execute("select teguh.stop()")
    assert len(notices) == 2 and all("pg_cron is not installed" in n for n in notices)


@pytest.fixture
def cron_conn(cron_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A superuser connection to the pg_cron database, with a login role for the jobs."""
    with psycopg.connect(cron_dsn, autocommit=True) as conn:
        for role in (CRON_ROLE, OWNER_ROLE):
            if conn.execute("select to_regrole(%s)", (role,)).fetchone() == (None,):
                conn.execute(f"create role {role} login")  # test-only identifiers
        yield conn


def _jobs(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "select jobname, command, username from cron.job order by jobname"
    ).fetchall()


def test_start_refuses_to_schedule_jobs_as_a_superuser(cron_conn: psycopg.Connection[Any]) -> None:
    # the schema owner (the default) is the superuser who installed teguh here
    with raises_sqlstate("42501", "superuser"):
        cron_conn.execute("select teguh.start()")
    with raises_sqlstate("42501", "superuser"):
        cron_conn.execute("select teguh.start(current_user)")
    with raises_sqlstate("22023", "no role named"):
        cron_conn.execute("select teguh.start('no_such_role')")
    assert _jobs(cron_conn) == []


def test_start_schedules_ticker_and_cleanup_as_the_given_role(
    cron_conn: psycopg.Connection[Any],
) -> None:
    cron_conn.execute("select teguh.create_queue('cq')")
    cron_conn.execute("select teguh.start(%s)", (CRON_ROLE,))
    cron_conn.execute("select teguh.start(%s)", (CRON_ROLE,))  # idempotent: replaces the jobs
    assert _jobs(cron_conn) == [
        ("teguh_cleanup", "select teguh.cleanup_all_queues()", CRON_ROLE),
        ("teguh_ticker", "select teguh.ticker()", CRON_ROLE),
    ]
    # the role may run exactly what the jobs run, as pg_cron will
    with psycopg.connect(cron_conn.info.dsn, user=CRON_ROLE, autocommit=True) as as_cron:
        assert as_cron.execute("select teguh.ticker()").fetchone() == (0,)
        assert as_cron.execute("select teguh.cleanup_all_queues()").fetchone() is not None
        with raises_sqlstate("42501"):
            as_cron.execute("select teguh.spawn_task('cq', 't', '{}')")
    cron_conn.execute("select teguh.stop()")
    assert _jobs(cron_conn) == []


def test_start_schedules_as_a_non_superuser_schema_owner_by_default(
    cron_conn: psycopg.Connection[Any],
) -> None:
    cron_conn.execute(f"alter schema teguh owner to {OWNER_ROLE}")
    try:
        cron_conn.execute("select teguh._secure_schema()")  # what re-installing does
        cron_conn.execute(f"grant usage on schema cron to {OWNER_ROLE}")
        cron_conn.execute(f"set role {OWNER_ROLE}")
        cron_conn.execute("select teguh.start()")
        assert [job[2] for job in _jobs(cron_conn)] == [OWNER_ROLE, OWNER_ROLE]
        cron_conn.execute("select teguh.stop()")
        assert _jobs(cron_conn) == []
    finally:
        cron_conn.execute("reset role")
        cron_conn.execute("select cron.unschedule(jobid) from cron.job")
        cron_conn.execute("alter schema teguh owner to current_user")
        cron_conn.execute("select teguh._secure_schema()")
        cron_conn.execute(f"revoke usage on schema cron from {OWNER_ROLE}")


@pytest.mark.slow
def test_pg_cron_runs_the_ticker_as_a_role_that_is_not_a_superuser(
    cron_conn: psycopg.Connection[Any],
) -> None:
    """pg_cron itself runs teguh.ticker() (every second on pg_cron 1.5+, every minute before)."""
    cron_conn.execute("select teguh.create_queue('cq')")
    cron_conn.execute("select teguh.start(%s)", (CRON_ROLE,))
    row = cron_conn.execute("select jobid from cron.job where jobname = 'teguh_ticker'").fetchone()
    assert row is not None
    runs = "select status, username, return_message from cron.job_run_details where jobid = %s"

    def ran() -> list[tuple[Any, ...]]:
        done = [r for r in cron_conn.execute(runs, (row[0],)) if r[0] in ("succeeded", "failed")]
        return done

    try:
        finished = wait_for(ran, timeout=75, interval=0.5, message="pg_cron to run teguh.ticker()")
    finally:
        cron_conn.execute("select teguh.stop()")
    assert finished[0][:2] == ("succeeded", CRON_ROLE), finished
