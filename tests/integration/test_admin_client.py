"""Client methods for schedules, queue policies and task listing, against a real server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import teguh
from teguh.records import ScheduleInfo, TaskSummary


def fake_now(conn: Any, when: datetime) -> None:
    conn.execute("select set_config('teguh.fake_now', %s, false)", (when.isoformat(),))


def test_schedules_round_trip(client: teguh.Client, queue: str) -> None:
    with client.pool.connection() as conn:
        fake_now(conn, datetime(2030, 1, 1, tzinfo=UTC))
        nxt = client.create_schedule(
            queue,
            "nightly",
            "0 3 * * *",
            "report",
            {"kind": "daily"},
            timezone="Europe/Paris",
            max_attempts=2,
            headers={"team": "ops"},
            conn=conn,
        )
        assert nxt == datetime(2030, 1, 1, 2, 0, tzinfo=UTC)
        [info] = client.list_schedules(queue, conn=conn)
        assert isinstance(info, ScheduleInfo)
        assert (info.schedule_name, info.timezone, info.catch_up) == (
            "nightly",
            "Europe/Paris",
            "latest",
        )
        assert info.params == {"kind": "daily"}
        assert info.options == {"max_attempts": 2, "headers": {"team": "ops"}}
        client.pause_schedule(queue, "nightly", conn=conn)
        assert client.list_schedules(conn=conn)[0].paused
        client.resume_schedule(queue, "nightly", conn=conn)
        fake_now(conn, datetime(2030, 1, 1, 2, 0, 5, tzinfo=UTC))
        client.ticker(queue, conn=conn)
        [task] = client.list_tasks(queue, conn=conn)
        assert task.task_name == "report" and task.headers["teguh.schedule"] == "nightly"
        assert client.drop_schedule(queue, "nightly", conn=conn) is True
        with pytest.raises(teguh.TaskNotFound):
            client.pause_schedule(queue, "nightly", conn=conn)
        with pytest.raises(teguh.InvalidArgument, match="spec"):
            client.create_schedule(queue, "bad", "61 * * * *", "t", conn=conn)


def test_queue_policy_and_list_tasks(client: teguh.Client, queue: str) -> None:
    policy = client.set_queue_policy(queue, {"default_max_attempts": 3, "paused": True})
    assert policy["default_max_attempts"] == 3 and policy["paused"] is True
    assert client.get_queue_policy(queue)["cleanup"] == "delete"
    spawned = [client.spawn_task(queue, "t", {"n": n}) for n in range(5)]
    assert client.claim_task(queue, "w", qty=5) == []
    client.set_queue_policy(queue, {"paused": None})
    page = client.list_tasks(queue, state="pending", limit=3)
    assert all(isinstance(t, TaskSummary) for t in page)
    assert len(page) == 3 and all(t.max_attempts == 3 for t in page)
    rest = client.list_tasks(queue, state=["pending"], after=page[-1].task_id)
    assert {t.task_id for t in page + rest} == {s.task_id for s in spawned}
    assert client.locate_task(spawned[0].task_id) == queue
    soon = datetime.now(UTC) + timedelta(hours=1)
    assert len(client.list_tasks(queue, created_before=soon, task_name="t")) == 5
    with pytest.raises(teguh.InvalidArgument, match="retention"):
        client.set_queue_policy(queue, {"retention": -1})


def test_release_run_and_worker_presence(client: teguh.Client, queue: str) -> None:
    spawned = client.spawn_task(queue, "t", {})
    [run] = client.claim_task(queue, "w")
    client.release_run(queue, run.run_id, reason={"name": "NoHandler", "message": "not here"})
    info = client.get_task(queue, spawned.task_id)
    assert info is not None and info.state == "pending"
    assert info.last_failure == {"name": "NoHandler", "message": "not here"}
    [again] = client.claim_task(queue, "w")
    assert (again.run_id, again.attempt) == (run.run_id, 1)

    client.register_worker("w1", [queue], host="h", pid=7, ttl=30)
    [worker] = client.list_workers(queue)
    assert (worker.worker_id, worker.queues, worker.host, worker.pid) == ("w1", [queue], "h", 7)
    assert client.queue_workers() == {queue: 1}
    assert client.worker_heartbeat("w1") is True
    assert client.unregister_worker("w1") is True
    assert client.worker_heartbeat("w1") is False
    assert client.queue_workers(queue) == {queue: 0}
