"""``teguh schedule``, ``queue pause|resume|policy``, ``task list``, ``task show``
without ``--queue``, ``workers`` and ``stats --watch`` (issue 10), run in-process."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
import pytest

import teguh

Conn = psycopg.Connection[Any]


def spawn(conn: Conn, queue: str, name: str = "t", options: str = "{}") -> uuid.UUID:
    row = conn.execute(
        "select task_id from teguh.spawn_task(%s, %s, '{}'::jsonb, %s::jsonb)",
        (queue, name, options),
    ).fetchone()
    assert row is not None
    task_id: uuid.UUID = row[0]
    return task_id


def fail_once(conn: Conn, queue: str, name: str = "boom") -> uuid.UUID:
    task_id = spawn(conn, queue, name, '{"max_attempts": 1}')
    (run_id,) = (
        conn.execute("select run_id from teguh.claim_task(%s, 'w')", (queue,)).fetchone() or ()
    )
    reason = {"name": "ValueError", "message": "bad", "traceback": "Traceback ...\nValueError: bad"}
    conn.execute("select teguh.fail_run(%s, %s, %s::jsonb)", (queue, run_id, json.dumps(reason)))
    return task_id


def test_schedule_add_list_pause_resume_remove(cli: Any, queue: str) -> None:
    status, out, _ = cli(
        "schedule", "add", queue, "nightly", "@daily", "report", "--timezone", "Europe/Paris"
    )
    assert status == 0 and "next run at" in out
    status, out, _ = cli("schedule", "list")
    assert status == 0 and "nightly" in out and "Europe/Paris" in out and "active" in out
    assert cli("schedule", "pause", queue, "nightly")[0] == 0
    status, out, _ = cli("--json", "schedule", "list", queue)
    (row,) = json.loads(out)
    assert (row["schedule_name"], row["paused"], row["task_name"]) == ("nightly", True, "report")
    assert cli("schedule", "resume", queue, "nightly")[0] == 0
    assert cli("schedule", "remove", queue, "nightly")[0] == 0
    status, _, err = cli("schedule", "remove", queue, "nightly")
    assert status == 1 and "no schedule 'nightly'" in err
    status, _, err = cli("schedule", "pause", queue, "nightly")
    assert status == 1 and "no schedule 'nightly'" in err


def test_schedule_add_names_a_bad_spec(cli: Any, queue: str) -> None:
    status, _, err = cli("schedule", "add", queue, "x", "61 * * * *", "report")
    assert status == 1 and "spec" in err and "Traceback" not in err
    assert json.loads(cli("--json", "schedule", "list")[1]) == []


def test_queue_pause_resume_and_policy(cli: Any, queue: str, conn: Conn) -> None:
    spawn(conn, queue)
    assert cli("queue", "pause", queue)[0] == 0
    claimed = conn.execute("select * from teguh.claim_task(%s, 'w')", (queue,)).fetchall()
    assert claimed == []
    status, out, _ = cli("--json", "queue", "policy", "show", queue)
    assert status == 0 and json.loads(out)["policy"]["paused"] is True
    assert cli("queue", "resume", queue)[0] == 0
    assert len(conn.execute("select * from teguh.claim_task(%s, 'w')", (queue,)).fetchall()) == 1
    status, out, _ = cli(
        "queue", "policy", "set", queue, '{"retention": 3600, "cleanup": "archive"}'
    )
    assert status == 0 and "retention" in out and "3600" in out
    status, _, err = cli("queue", "policy", "set", queue, '{"cleanup": "shred"}')
    assert status == 1 and "cleanup" in err


def test_task_list_filters(cli: Any, queue: str, conn: Conn) -> None:
    failed = fail_once(conn, queue)
    pending = spawn(conn, queue, "other")
    status, out, _ = cli("task", "list", "--state", "failed")
    assert status == 0 and str(failed) in out and str(pending) not in out
    assert "ValueError: bad" in out
    rows = json.loads(cli("--json", "task", "list", "--queue", queue, "--name", "other")[1])
    assert [r["task_id"] for r in rows] == [str(pending)]
    rows = json.loads(cli("--json", "task", "list", "--since", "1h")[1])
    assert {r["task_id"] for r in rows} == {str(failed), str(pending)}
    with pytest.raises(SystemExit) as usage:
        cli("task", "list", "--since", "soon")
    assert usage.value.code == 2


def test_task_show_finds_the_queue_by_id(cli: Any, queue: str, conn: Conn) -> None:
    conn.execute("select teguh.create_queue('other')")
    task_id = fail_once(conn, queue)
    status, out, _ = cli("task", "show", str(task_id), "--traceback")
    assert status == 0
    assert "queue:" in out and queue in out and "ValueError: bad" in out and "Traceback ..." in out
    status, _, err = cli("task", "show", str(uuid.uuid4()))
    assert status == 1 and "does not exist in any queue" in err


def test_workers_shows_who_serves_each_queue(cli: Any, dsn: str, queue: str) -> None:
    status, out, err = cli("workers")
    assert status == 0 and "no worker serves: q" in err
    with teguh.App(dsn) as app, app.worker([queue], worker_id="w-cli", poll_interval=30):
        status, out, _ = cli("workers")
        assert status == 0 and "w-cli" in out
        data = json.loads(cli("--json", "workers", queue)[1])
        assert data["queues"] == {queue: 1}
        assert [w["worker_id"] for w in data["workers"]] == ["w-cli"]


def test_stats_watch_refreshes(cli: Any, queue: str) -> None:
    status, out, _ = cli("stats", "--watch", "--interval", "0.01", "--count", "2")
    assert status == 0 and out.count("in flight") == 2


# -- task show: what a task waits for; stats and workers: who serves a queue ------------


def claim(conn: Conn, queue: str, worker: str = "w") -> uuid.UUID:
    row = conn.execute("select run_id from teguh.claim_task(%s, %s)", (queue, worker)).fetchone()
    assert row is not None
    run_id: uuid.UUID = row[0]
    return run_id


def test_task_show_says_when_a_retry_comes(cli: Any, queue: str, conn: Conn) -> None:
    task_id = spawn(
        conn, queue, "flaky", '{"retry_strategy": {"kind": "fixed", "base_seconds": 600}}'
    )
    tb = (
        "Traceback (most recent call last):\n"
        + "".join(f'  File "job.py", line {n}, in f{n}\n    f{n + 1}()\n' for n in range(20))
        + "ValueError: flaky"
    )
    reason = {"name": "ValueError", "message": "flaky", "traceback": tb}
    conn.execute(
        "select teguh.fail_run(%s, %s, %s::jsonb)", (queue, claim(conn, queue), json.dumps(reason))
    )
    status, out, _ = cli("task", "show", str(task_id))
    assert status == 0
    assert "waiting for:  a retry after a failure (attempt 2 of 5)" in out
    assert "next attempt:" in out and "(in 9m" in out
    assert "workers:      none serves queue q" in out
    # the last failure with the end of its traceback (all of it with --traceback)
    assert "last failure: ValueError: flaky" in out
    assert "earlier lines: --traceback shows them" in out and "ValueError: flaky" in out
    assert "in f0" not in out and "in f19" in out
    status, out, _ = cli("task", "show", str(task_id), "--traceback")
    assert "in f0" in out and "earlier lines" not in out
    report = json.loads(cli("--json", "task", "show", str(task_id))[1])
    assert report["wait_kind"] == "retry" and report["next_attempt_at"] is not None
    assert report["last_failure"]["traceback"] == tb
    assert (report["hand_backs"], report["queue_paused"], report["worker_id"]) == (0, False, None)


def test_task_show_says_what_a_suspended_task_waits_for(cli: Any, queue: str, conn: Conn) -> None:
    sleeper = spawn(conn, queue, "sleeper")
    conn.execute(
        "select teguh.schedule_run(%s, %s, teguh.current_time() + interval '2 hours')",
        (queue, claim(conn, queue)),
    )
    status, out, _ = cli("task", "show", str(sleeper))
    assert status == 0 and "sleeping" in out
    assert "waiting for:  a durable sleep" in out and "wakes:" in out and "(in 1h59m)" in out

    waiter = spawn(conn, queue, "waiter")
    conn.execute(
        "select * from teguh.wait_event(%s, %s, %s, 'pay', 'order.paid', 3600)",
        (queue, waiter, claim(conn, queue)),
    )
    status, out, _ = cli("task", "show", str(waiter))
    assert "waiting for:  event 'order.paid'" in out and "times out:" in out
    report = json.loads(cli("--json", "task", "show", str(waiter))[1])
    assert (report["wait_kind"], report["wait_event"]) == ("event", "order.paid")
    assert report["wait_timeout_at"] == report["next_attempt_at"] is not None

    forever = spawn(conn, queue, "forever")
    conn.execute(
        "select * from teguh.wait_event(%s, %s, %s, 'ok', 'approval')",
        (queue, forever, claim(conn, queue)),
    )
    out = cli("task", "show", str(forever))[1]
    assert "event 'approval'" in out and "times out:    never" in out

    running = spawn(conn, queue, "busy")
    claim(conn, queue, "w-busy")
    out = cli("task", "show", str(running))[1]
    assert "running on:   worker w-busy, lease" in out


def test_a_handed_back_task_does_not_look_like_a_sleep(cli: Any, queue: str, conn: Conn) -> None:
    task_id = spawn(conn, queue, "nobody.handles.this")
    conn.execute("select teguh.hand_back_run(%s, %s, 30, 10, 'w-1')", (queue, claim(conn, queue)))
    out = cli("task", "show", str(task_id))[1]
    assert "state:        pending" in out
    assert "handed back 1 time(s), no attempt used" in out and "next attempt:" in out
    assert "HandedBack" in out and "sleep" not in out
    out = cli("task", "list")[1]
    assert "pending (handed back)" in out and "sleeping" not in out


def test_task_show_names_a_paused_queue(cli: Any, queue: str, conn: Conn) -> None:
    task_id = spawn(conn, queue)
    assert cli("queue", "pause", queue)[0] == 0
    out = cli("task", "show", str(task_id))[1]
    assert "waiting for:  its first attempt (attempt 1 of 5)" in out
    assert "queue paused: nothing is claimed until `teguh queue resume q`" in out


def test_stats_show_the_workers_serving_each_queue(cli: Any, queue: str, conn: Conn) -> None:
    conn.execute("select teguh.create_queue('other')")
    spawn(conn, "other")
    conn.execute("select teguh.register_worker('w1', '{q}')")
    status, out, err = cli("stats")
    assert status == 0
    header, _, *rows = out.splitlines()
    assert header.split()[-1] == "workers"
    cells = {row.split()[0]: row.split()[-1] for row in rows}
    assert cells == {"other": "0", "q": "1"}
    assert "no worker serves: other" in err
    stats = json.loads(cli("--json", "stats")[1])
    assert {s["queue_name"]: s["workers"] for s in stats} == {"other": 0, "q": 1}
    status, out, _ = cli("stats", "--watch", "--interval", "0.01", "--count", "1")
    assert status == 0 and "workers" in out


def test_workers_show_hung_handlers(cli: Any, queue: str, conn: Conn) -> None:
    conn.execute("select teguh.register_worker('w-stuck', '{q}')")
    conn.execute("select teguh.worker_heartbeat('w-stuck', 60, 2)")
    status, out, err = cli("workers")
    assert status == 0
    header = out.splitlines()[0]
    assert header.split()[-1] == "hung"
    assert "w-stuck: 2 handler(s) still run" in err
    data = json.loads(cli("--json", "workers")[1])
    assert data["workers"][0]["hung_handlers"] == 2


def test_task_show_names_a_capped_concurrency_key(cli: Any, queue: str, conn: Conn) -> None:
    conn.execute("select teguh.set_concurrency_limit(%s, 'tenant-1', 1)", (queue,))
    spawn(conn, queue, "t", '{"concurrency_key": "tenant-1"}')
    waiting = spawn(conn, queue, "t", '{"concurrency_key": "tenant-1"}')
    claim(conn, queue)
    out = cli("task", "show", str(waiting))[1]
    assert "concurrency:  key 'tenant-1': 1 of 1 running (at its limit" in out
    report = json.loads(cli("--json", "task", "show", str(waiting))[1])
    assert (report["concurrency_key"], report["concurrency_limit"]) == ("tenant-1", 1)
    assert report["concurrency_running"] == 1
