"""teguh.start()/stop() with and without pg_cron, for real."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.helpers import wait_for


def test_start_without_pg_cron_only_notices(conn: psycopg.Connection[Any]) -> None:
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(str(d.message_primary)))
    conn.execute("select teguh.start()")
    conn.execute("select teguh.stop()")
    assert len(notices) == 2 and all("pg_cron is not installed" in n for n in notices)


def test_start_schedules_ticker_and_cleanup_with_pg_cron(cron_dsn: str) -> None:
    with psycopg.connect(cron_dsn, autocommit=True) as conn:
        conn.execute("select teguh.create_queue('cq')")
        conn.execute("select teguh.start()")
        conn.execute("select teguh.start()")  # idempotent: jobs are upserted by name
        jobs = conn.execute("select jobname, command from cron.job order by jobname").fetchall()
        assert jobs == [
            ("teguh_cleanup", "select teguh.cleanup_all_queues()"),
            ("teguh_ticker", "select teguh.ticker()"),
        ]
        # the ticker's command is valid SQL in this database
        assert conn.execute(jobs[1][1]).fetchone() == (0,)
        conn.execute("select teguh.stop()")
        assert conn.execute("select count(*) from cron.job").fetchone() == (0,)


@pytest.mark.slow
def test_pg_cron_runs_the_ticker(cron_dsn: str) -> None:
    """pg_cron itself runs teguh.ticker() (every second on pg_cron 1.5+, every minute before)."""
    with psycopg.connect(cron_dsn, autocommit=True) as conn:
        conn.execute("select teguh.create_queue('cq')")
        conn.execute("select teguh.start()")
        row = conn.execute("select jobid from cron.job where jobname = 'teguh_ticker'").fetchone()
        assert row is not None
        succeeded = (
            "select count(*) from cron.job_run_details where jobid = %s and status = 'succeeded'"
        )

        def ran() -> bool:
            count = conn.execute(succeeded, (row[0],)).fetchone()
            return count is not None and count[0] > 0

        try:
            wait_for(ran, timeout=75, interval=0.5, message="pg_cron to run teguh.ticker()")
        finally:
            conn.execute("select teguh.stop()")
