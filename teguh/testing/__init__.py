"""Test your own tasks against a real PostgreSQL: fixtures, a fake clock, drain.

A pytest plugin, off until a project turns it on, in one of three ways::

    # conftest.py (the top-level one)
    pytest_plugins = ["teguh.testing"]

    # or pyproject.toml: [tool.pytest.ini_options] teguh_testing = true
    # or the command line: pytest -p teguh.testing

Fixtures:

- ``teguh_dsn`` (session): a server to create databases on: ``TEGUH_TEST_DSN``
  when set, else a throwaway `teguh.embedded.EmbeddedPostgres`.
- ``teguh_database``: a fresh database with teguh installed (cloned from a
  template made once per session), dropped after the test.
- ``teguh_app``: an `App` on that database, queue ``"default"`` created.
- ``teguh_clock``: a `FakeClock` that is the engine's clock on ``teguh_app``'s
  pool; ``advance(timedelta(days=1))`` instead of sleeping.
- ``teguh_drain``: ``drain(queues=None, timeout=30)``, run due work until idle
  in the test's thread (``worker.drain()``).

See docs/testing-your-tasks.md.
"""

from __future__ import annotations

from teguh.testing.clock import FakeClock
from teguh.testing.databases import TestDatabases
from teguh.testing.fixtures import (
    DSN_VARIABLE,
    _teguh_clock_slot,
    teguh_app,
    teguh_clock,
    teguh_database,
    teguh_databases,
    teguh_drain,
    teguh_dsn,
)

__all__ = [
    "DSN_VARIABLE",
    "FakeClock",
    "TestDatabases",
    "_teguh_clock_slot",
    "teguh_app",
    "teguh_clock",
    "teguh_database",
    "teguh_databases",
    "teguh_drain",
    "teguh_dsn",
]
