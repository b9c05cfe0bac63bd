"""Helpers shared by the test suites (import as ``from tests.helpers import wait_for``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

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
