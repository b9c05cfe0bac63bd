"""Helpers shared by the test suites (import as ``from tests.helpers import wait_for``)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from teguh.embedded import EmbeddedPostgres

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.01,
    message: str | None = None,
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that value.

    Use it for anything that happens in another thread, connection or process:
    the deadline is generous so a slow CI machine does not flake, and the test
    still ends as soon as the condition holds. Raises ``AssertionError`` (with
    ``message`` or the predicate's name) when ``timeout`` seconds pass first;
    exceptions from the predicate propagate.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__name__", repr(predicate))
            raise AssertionError(f"condition not met within {timeout}s: {what}")
        time.sleep(interval)


def pg_ctl(server: EmbeddedPostgres, *args: str) -> None:
    """Run pg_ctl on `server`'s data directory: stop, start or restart it."""
    result = server._run(
        [
            os.path.join(server.bindir, "pg_ctl"),
            "--pgdata",
            server.data_dir,
            "--log",
            server.log_file,
            "--wait",
            *args,
        ],
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
