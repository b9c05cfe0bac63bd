"""Worker regressions found in review, each reproduced before its fix."""

from __future__ import annotations

import time
from typing import Any

import pytest

import teguh
import teguh.worker.executor as worker_mod
from tests.integration.conftest import wait_state


def test_a_resumed_run_reclaimed_before_its_last_execution_unwound_stays_tracked(
    client: teguh.Client,
    queue: str,
    make_worker: Any,
    monkeypatch: Any,
) -> None:
    real_unbind = worker_mod.unbind

    def slow_unbind(token: Any) -> None:
        # stands in for the handler thread being descheduled (GIL switch,
        # CPU pressure) between the Suspend and its `finally`
        time.sleep(0.5)
        real_unbind(token)

    monkeypatch.setattr(worker_mod, "unbind", slow_unbind)
    calls: list[tuple[Any, int]] = []
    seen_in_flight: list[int] = []
    w: list[teguh.Worker] = []

    def handler(ctx: teguh.TaskContext) -> str:
        calls.append((ctx.run_id, ctx.attempt))
        ctx.sleep_for(0.01)  # suspends once; the same run id is claimable 10 ms later
        time.sleep(1.0)
        seen_in_flight.append(w[0].in_flight)
        time.sleep(3.0)  # longer than claim_timeout: only heartbeats keep the lease
        return "ok"

    w.append(
        make_worker(
            {"sleepy": handler},
            concurrency=2,
            claim_timeout=2,
            heartbeat_interval=0.5,
            ticker_interval=0.5,
        )
    )
    task_id = client.spawn_task(queue, "sleepy", {}).task_id
    result = wait_state(client, task_id, timeout=20)
    assert result.state == "completed"
    # the second execution must be tracked (and heartbeated) by the worker
    assert seen_in_flight and seen_in_flight[0] == 1, seen_in_flight
    # one suspension + one completion: no lease-expiry retry
    assert [a for _r, a in calls] == [1, 1], calls


def test_heartbeat_interval_must_be_shorter_than_the_lease(app: teguh.App, queue: str) -> None:
    # a 5 s lease with the old fixed 10 s heartbeat expired under every long handler
    assert app.worker([queue], claim_timeout=6).heartbeat_interval == 2
    with pytest.raises(ValueError, match="heartbeat_interval must be > 0 and shorter than"):
        app.worker([queue], claim_timeout=5, heartbeat_interval=10)


def test_worker_claims_commit_asynchronously_without_touching_the_session(
    client: teguh.Client, queue: str, dsn: str
) -> None:
    import psycopg

    from teguh import _queries as Q

    spawned = client.spawn_task(queue, "t", {"n": 1})
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("set synchronous_commit = on")  # the test server runs with it off
        rows = conn.execute(Q.WORKER_CLAIM_TASK, (queue, "w", 30, 5)).fetchall()
        assert [r[1] for r in rows] == [spawned.task_id]
        # the setting was local to the claim's own transaction
        assert conn.execute("show synchronous_commit").fetchone() == ("on",)
    # and the claim itself is committed
    assert client.get_task_result(queue, spawned.task_id).state == "running"  # type: ignore[union-attr]
