"""Per-key concurrency limits across real worker processes (tests/integration/limits_worker.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import teguh
from tests.helpers import wait_for
from tests.integration.conftest import wait_state
from tests.integration.limits_worker import make_handler

ROOT = Path(__file__).resolve().parents[2]
RETRY_NOW = {"kind": "fixed", "base_seconds": 0}


@pytest.fixture
def tables(conn: psycopg.Connection[Any]) -> None:
    conn.execute("create table inflight (run_id uuid primary key, key text not null)")
    conn.execute("create table seen (key text not null, n integer not null)")


@pytest.fixture
def start(dsn: str) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def factory(block: bool = False) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TEGUH_TEST_BLOCK": "1" if block else "0"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.limits_worker", dsn], cwd=ROOT, env=env
        )
        procs.append(proc)
        return proc

    yield factory
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)


def spawn(client: teguh.Client, key: str, limit: int, n: int) -> list[Any]:
    return [
        client.spawn_task(
            "q",
            "keyed",
            {"key": key, "limit": limit},
            concurrency_key=key,
            retry_strategy=RETRY_NOW,
        ).task_id
        for _ in range(n)
    ]


def peak(conn: psycopg.Connection[Any]) -> dict[str, int]:
    return dict(conn.execute("select key, max(n) from seen group by key").fetchall())


def test_two_worker_processes_of_ten_never_exceed_a_limit(
    client: teguh.Client, queue: str, conn: psycopg.Connection[Any], tables: None, start: Any
) -> None:
    client.set_concurrency_limit(queue, "k", 3)
    client.set_concurrency_limit(queue, "t:*", 2)
    ids = spawn(client, "k", 3, 24) + spawn(client, "t:1", 2, 12) + spawn(client, "free", 6, 12)
    start()
    start()
    for task_id in ids:
        assert wait_state(client, task_id, timeout=120).state == "completed"
    # every handler counted the runs of its key in flight: never over, and reached;
    # the key with no limit ran more at once than either limit
    seen = peak(conn)
    assert seen["k"] == 3 and seen["t:1"] == 2 and seen["free"] >= 6, seen


def test_a_killed_worker_frees_its_slot_when_its_lease_expires(
    client: teguh.Client,
    queue: str,
    conn: psycopg.Connection[Any],
    tables: None,
    start: Any,
    make_worker: Any,
    dsn: str,
) -> None:
    client.set_concurrency_limit(queue, "solo", 1)
    ids = spawn(client, "solo", 1, 3)
    proc = start(block=True)
    wait_for(
        lambda: conn.execute("select count(*) from inflight").fetchone() == (1,),
        timeout=60,
        message="one run of the key in flight in the worker process",
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    conn.execute("delete from inflight")  # what the killed handler never got to do
    make_worker({"keyed": make_handler(dsn, block=False)}, claim_timeout=1)
    for task_id in ids:
        assert wait_state(client, task_id, timeout=60).state == "completed"
    assert peak(conn) == {"solo": 1}
