"""A fake clock for tests: moves the engine's time (``teguh.fake_now``) instead of sleeping."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from teguh import _arguments as A

_SET_FAKE_NOW = "select pg_catalog.set_config('teguh.fake_now', %s, false)"


class FakeClock:
    """The engine's clock for one test: frozen at `now` until `advance` or `set` moves it.

    Install `apply` on every connection that talks to the engine: as a
    ``psycopg_pool.ConnectionPool(check=clock.apply)`` callback it sets
    ``teguh.fake_now`` each time a connection leaves the pool, so connections
    opened before the clock moved see the new time too. The database must
    allow fake time (``select teguh.allow_fake_time(true)`` by the schema
    owner, see docs/security.md); the ``teguh_app`` fixture does that.

    ``start`` defaults to the wall-clock time, whole seconds, in UTC.
    """

    def __init__(self, start: datetime | None = None) -> None:
        if start is None:
            start = datetime.now(UTC).replace(microsecond=0)
        self._now = A.aware(start, "start")
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<teguh.testing.FakeClock now={self.now.isoformat()}>"

    @property
    def now(self) -> datetime:
        """The engine's current (fake) time."""
        with self._lock:
            return self._now

    def set(self, when: datetime) -> datetime:
        """Move the clock to ``when`` (timezone-aware; backwards too) and return it."""
        when = A.aware(when, "when")
        with self._lock:
            self._now = when
        return when

    def advance(self, delta: timedelta | float | None = None, **units: float) -> datetime:
        """Move the clock forward by ``delta`` (a timedelta or seconds) or by keyword units.

        ``clock.advance(timedelta(days=1))``, ``clock.advance(90)`` and
        ``clock.advance(hours=2, minutes=5)`` all work; returns the new time.
        Moving backwards is `set`'s job: a negative amount raises ValueError.
        """
        if delta is None and not units:
            raise TypeError("advance() needs a timedelta, seconds, or units such as days=1")
        step = timedelta(**units)
        if delta is not None:
            step += delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        if step < timedelta(0):
            raise ValueError(f"delta: cannot move the clock backwards ({step}); use set()")
        with self._lock:
            self._now += step
            return self._now

    def apply(self, conn: psycopg.Connection[Any]) -> None:
        """Set ``teguh.fake_now`` on ``conn`` (session-wide) to the clock's time.

        Leaves the connection idle as it found it, so it fits a pool's
        ``check`` (or ``configure``) callback.
        """
        value = self.now.isoformat()
        if conn.autocommit:
            conn.execute(_SET_FAKE_NOW, (value,))
        else:
            with conn.transaction():
                conn.execute(_SET_FAKE_NOW, (value,))
