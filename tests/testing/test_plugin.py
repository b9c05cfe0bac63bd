"""teguh.testing: the fixtures, the fake clock, and the plugin's opt-in."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

import teguh
from teguh.embedded import EmbeddedPostgres
from teguh.testing import FakeClock, TestDatabases

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "testing-your-tasks.md"
_FILE_BLOCK = re.compile(r"^```python file=(\S+)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def page_files() -> dict[str, str]:
    """The files docs/testing-your-tasks.md tells the reader to save, by name."""
    return dict(_FILE_BLOCK.findall(PAGE.read_text(encoding="utf-8")))


def test_the_page_shows_a_conftest_and_a_test() -> None:
    assert set(page_files()) == {"conftest.py", "test_onboarding.py"}


def test_the_pages_test_passes_as_a_reader_runs_it(
    pytester: pytest.Pytester, pg_server: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page's files, saved as they are, pass under pytest (on this session's server)."""
    monkeypatch.setenv("TEGUH_TEST_DSN", pg_server.dsn())
    for name, code in page_files().items():
        pytester.path.joinpath(name).write_text(code, encoding="utf-8")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_the_plugin_is_off_until_enabled(
    pytester: pytest.Pytester, pg_server: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEGUH_TEST_DSN", pg_server.dsn())
    # teguh_dsn only: with TEGUH_TEST_DSN set it starts nothing (cheap to run 3 times)
    pytester.makepyfile(
        test_dsn="""
        import os

        def test_dsn(teguh_dsn):
            assert teguh_dsn == os.environ["TEGUH_TEST_DSN"]
        """
    )
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(errors=1)
    pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "teguh.testing").assert_outcomes(
        passed=1
    )
    pytester.makeini("[pytest]\nteguh_testing = true\n")
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_teguh_database_is_fresh_and_allows_fake_time(teguh_database: str) -> None:
    with psycopg.connect(teguh_database, autocommit=True) as conn:
        assert conn.execute("select count(*) from teguh.list_queues()").fetchone() == (0,)
        conn.execute("set teguh.fake_now = '2030-01-01T00:00:00Z'")
        now = conn.execute("select teguh.current_time()").fetchone()
    assert now == (datetime(2030, 1, 1, tzinfo=UTC),)


def test_without_the_clock_the_engine_uses_real_time(teguh_app: teguh.App) -> None:
    before = datetime.now(UTC)
    assert teguh_app.client.current_time() >= before - timedelta(seconds=5)


def test_the_clock_moves_every_pooled_connection(
    teguh_app: teguh.App, teguh_clock: FakeClock
) -> None:
    pool = teguh_app.client.pool
    start = teguh_clock.now
    with pool.connection() as first, pool.connection() as second:
        for conn in (first, second):
            assert conn.execute("select teguh.current_time()").fetchone() == (start,)
    teguh_clock.advance(timedelta(days=1))
    with pool.connection() as first, pool.connection() as second:
        for conn in (first, second):
            assert conn.execute("select teguh.current_time()").fetchone() == (
                start + timedelta(days=1),
            )
    assert teguh_app.client.current_time() == start + timedelta(days=1)


def test_advance_and_set() -> None:
    clock = FakeClock(datetime(2030, 1, 1, tzinfo=UTC))
    assert clock.advance(90) == datetime(2030, 1, 1, 0, 1, 30, tzinfo=UTC)
    assert clock.advance(hours=1) == datetime(2030, 1, 1, 1, 1, 30, tzinfo=UTC)
    assert clock.set(datetime(2029, 1, 1, tzinfo=UTC)) == datetime(2029, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="delta"):
        clock.advance(timedelta(seconds=-1))
    with pytest.raises(TypeError, match="advance"):
        clock.advance()
    with pytest.raises(ValueError, match="when"):
        clock.set(datetime(2030, 1, 1))  # naive


def test_drain_runs_what_is_due_by_the_clock(
    teguh_app: teguh.App, teguh_clock: FakeClock, teguh_drain: Callable[..., int]
) -> None:
    @teguh_app.task(name="later")
    def later(ctx: teguh.TaskContext) -> str:
        return "done"

    spawned = later.configure(delay=3600).spawn()
    assert teguh_drain() == 0
    teguh_clock.advance(timedelta(minutes=59))
    assert teguh_drain() == 0
    teguh_clock.advance(timedelta(minutes=1))
    assert teguh_drain() == 1
    result = teguh_app.client.get_task_result("default", spawned.task_id)
    assert result is not None and result.completed_payload == "done"


def test_two_sessions_in_one_process_keep_their_own_templates(pg_server: EmbeddedPostgres) -> None:
    # pytester runs a second session in this process, on this server
    first, second = TestDatabases(pg_server.dsn()), TestDatabases(pg_server.dsn())
    try:
        first.create_template()
        second.create_template()
        second.close()
        clone = first.create()
        with psycopg.connect(clone, autocommit=True) as conn:
            assert conn.execute("select teguh.version()").fetchone() is not None
        first.drop(clone)
    finally:
        first.close()
        second.close()
