"""``teguh schedule``, ``queue pause|resume|policy``, ``task list``, ``task show``
without ``--queue``, ``workers`` and ``stats --watch`` (issue 10), run in-process."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
import pytest

import teguh
from teguh.cli.main import main

Conn = psycopg.Connection[Any]


@pytest.fixture
def cli(dsn: str, capsys: pytest.CaptureFixture[str]) -> Any:
    """Return ``run(*args) -> (status, stdout, stderr)``."""

    def run(*args: str) -> tuple[int, str, str]:
        status = main(["--dsn", dsn, *args])
        out, err = capsys.readouterr()
        return status, out, err

    return run


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
