"""Helpers for calling the stored functions directly, as psql or Go would."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from psycopg.types.json import Jsonb

T0 = datetime(2030, 1, 1, tzinfo=UTC)


class Engine:
    """Thin caller of teguh's stored functions on one connection, with fake time."""

    def __init__(self, conn: psycopg.Connection[Any], queue: str = "q") -> None:
        self.conn = conn
        self.q = queue
        self.now = T0
        self.set_time(T0)

    def set_time(self, when: datetime) -> None:
        self.now = when
        self.conn.execute("select set_config('teguh.fake_now', %s, false)", (when.isoformat(),))

    def advance(self, seconds: float) -> None:
        self.set_time(self.now + timedelta(seconds=seconds))

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, params).fetchall()

    def one(self, sql: str, *params: Any) -> Any:
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else (row[0] if len(row) == 1 else row)

    def spawn(self, name: str = "t", params: Any = None, **options: Any) -> tuple[Any, ...]:
        return self.conn.execute(
            "select * from teguh.spawn_task(%s, %s, %s, %s)",
            (self.q, name, Jsonb(params), Jsonb(options)),
        ).fetchone()  # type: ignore[return-value]

    def claim(self, qty: int = 1, worker: str = "w1", timeout: int = 30) -> list[tuple[Any, ...]]:
        """Claim through claim_runs: attempt is the attempt number (a resume keeps it)."""
        return self.rows(
            "select * from teguh.claim_runs(%s, %s, %s, %s)", self.q, worker, timeout, qty
        )

    def claim_go(
        self, qty: int = 1, worker: str = "w1", timeout: int = 30
    ) -> list[tuple[Any, ...]]:
        """Claim as the Go client does: attempt is the run sequence."""
        return self.rows(
            "select * from teguh.claim_task(%s, %s, %s, %s)", self.q, worker, timeout, qty
        )

    def complete(self, run_id: Any, result: Any = None) -> None:
        self.conn.execute("select teguh.complete_run(%s, %s, %s)", (self.q, run_id, Jsonb(result)))

    def fail(self, run_id: Any, reason: Any = None, retry_at: datetime | None = None) -> None:
        self.conn.execute(
            "select teguh.fail_run(%s, %s, %s, %s)",
            (self.q, run_id, Jsonb(reason or {"name": "Boom"}), retry_at),
        )

    def task(self, task_id: Any) -> dict[str, Any]:
        cur = self.conn.execute("select * from teguh.get_task(%s, %s)", (self.q, task_id))
        row = cur.fetchone()
        assert row is not None, f"task {task_id} not found"
        assert cur.description is not None
        return dict(zip([c.name for c in cur.description], row, strict=True))

    def state(self, task_id: Any) -> str:
        return str(self.task(task_id)["state"])

    def count(self, prefix: str) -> int:
        return int(
            self.one(f"select count(*) from teguh.{prefix}_{self.q}")
        )  # test-only identifiers


@pytest.fixture
def eng(conn: psycopg.Connection[Any], queue: str) -> Engine:
    return Engine(conn, queue)


@pytest.fixture
def make_engine(make_conn: Any, queue: str) -> Any:
    def factory() -> Engine:
        return Engine(make_conn(), queue)

    return factory


class _SqlState:
    def __init__(self, code: str, match: str | None) -> None:
        self.code = code
        self.match = match
        self._ctx = pytest.raises(psycopg.Error)

    def __enter__(self) -> None:
        self._info = self._ctx.__enter__()

    def __exit__(self, *exc: Any) -> bool:
        handled = self._ctx.__exit__(*exc)
        err = self._info.value
        assert err.sqlstate == self.code, (
            f"expected SQLSTATE {self.code}, got {err.sqlstate}: {err}"
        )
        if self.match is not None:
            assert self.match in str(err), f"{self.match!r} not in {err}"
        return bool(handled)


def raises_sqlstate(code: str, match: str | None = None) -> _SqlState:
    """Like pytest.raises for a psycopg error with a given SQLSTATE (custom codes too)."""
    return _SqlState(code, match)


# -- generated-input tests (hypothesis) -------------------------------------------
#
# Each example talks to a real server, so examples are few and have no deadline.
# TEGUH_HYPOTHESIS_PROFILE picks a profile: "dev" (the default), "ci" (the
# default when CI=true: reproducible, a few more examples) or "thorough".
settings.register_profile(
    "dev",
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile("ci", settings.get_profile("dev"), max_examples=30, derandomize=True)
settings.register_profile("thorough", settings.get_profile("dev"), max_examples=500)
settings.load_profile(
    os.environ.get(
        "TEGUH_HYPOTHESIS_PROFILE",
        "ci" if os.environ.get("CI", "").lower() == "true" else "dev",
    )
)
