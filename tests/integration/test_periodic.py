"""``@app.periodic``: schedules declared in code, synced to the engine (issue 10)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

import teguh


def fake_now(conn: psycopg.Connection[Any], when: datetime) -> None:
    conn.execute("select set_config('teguh.fake_now', %s, false)", (when.isoformat(),))


def declare(app: teguh.App, queue: str) -> teguh.Task[Any, Any]:
    @app.periodic("*/5 * * * *", name="reports.refresh", params={"full": True})
    @app.periodic("@daily", name="reports.nightly", timezone="Europe/Paris", max_attempts=2)
    @app.task(name="refresh", queue=queue, max_attempts=7, priority=3)
    def refresh(ctx: teguh.TaskContext, full: bool = False) -> bool:
        return full

    return refresh


def test_sync_creates_then_leaves_unchanged(app: teguh.App, queue: str) -> None:
    declare(app, queue)
    first = app.sync_schedules()
    assert sorted(first.created) == [(queue, "reports.nightly"), (queue, "reports.refresh")]
    again = app.sync_schedules()
    assert again.created == again.updated == [] and len(again.unchanged) == 2
    stored = {s.schedule_name: s for s in app.client.list_schedules(queue)}
    assert stored["reports.refresh"].spec == "*/5 * * * *"
    assert stored["reports.refresh"].params == {"full": True}
    # the task's declared defaults travel with the schedule; the schedule's own win
    assert stored["reports.refresh"].options["max_attempts"] == 7
    assert stored["reports.refresh"].options["priority"] == 3
    assert stored["reports.nightly"].options["max_attempts"] == 2
    assert stored["reports.nightly"].timezone == "Europe/Paris"


def test_a_changed_declaration_updates_the_stored_schedule(app: teguh.App, queue: str) -> None:
    declare(app, queue)
    app.sync_schedules()
    other = teguh.App(app.dsn)
    try:

        @other.periodic("0 * * * *", name="reports.refresh")
        @other.task(name="refresh", queue=queue)
        def refresh(ctx: teguh.TaskContext, full: bool = False) -> None: ...

        report = other.sync_schedules()
        assert report.updated == [(queue, "reports.refresh")]
        # not owned: the other app's undeclared schedule is left, and said so
        assert report.left == [(queue, "reports.nightly")] and report.dropped == []
        spec = {s.schedule_name: s.spec for s in other.client.list_schedules(queue)}
        assert spec == {"reports.refresh": "0 * * * *", "reports.nightly": "@daily"}

        other.own_schedules("reports.")
        report = other.sync_schedules()
        assert report.dropped == [(queue, "reports.nightly")]
        assert [s.schedule_name for s in other.client.list_schedules(queue)] == ["reports.refresh"]
    finally:
        other.close()


def test_owning_a_prefix_never_drops_other_names(app: teguh.App, queue: str) -> None:
    app.client.create_schedule(queue, "ops.vacuum", "@hourly", "vacuum")
    declare(app, queue)
    app.own_schedules("reports.")
    report = app.sync_schedules()
    assert report.left == [(queue, "ops.vacuum")] and report.dropped == []


def test_a_worker_start_syncs_its_queues(app: teguh.App, queue: str) -> None:
    declare(app, queue)
    worker = app.worker([queue], poll_interval=30)
    with worker:
        names = [s.schedule_name for s in app.client.list_schedules(queue)]
    assert names == ["reports.nightly", "reports.refresh"]


def test_a_bad_spec_fails_the_worker_start_and_changes_nothing(app: teguh.App, queue: str) -> None:
    declare(app, queue)

    @app.periodic("61 * * * *", name="reports.broken")
    @app.task(name="broken", queue=queue)
    def broken(ctx: teguh.TaskContext) -> None: ...

    worker = app.worker([queue], poll_interval=30)
    with pytest.raises(teguh.InvalidArgument) as err:
        worker.start()
    assert err.value.argument == "spec"
    assert not worker.is_running
    assert app.client.list_schedules(queue) == []


def test_the_ticker_fires_a_declared_schedule(
    app: teguh.App, queue: str, conn: psycopg.Connection[Any]
) -> None:
    declare(app, queue)
    fake_now(conn, datetime(2030, 1, 1, 0, 1, tzinfo=UTC))
    app.sync_schedules(conn=conn)
    fake_now(conn, datetime(2030, 1, 1, 0, 5, 30, tzinfo=UTC))
    conn.execute("select teguh.ticker(%s)", (queue,))
    (task,) = app.client.list_tasks(queue, conn=conn)
    assert (task.task_name, task.params, task.max_attempts) == ("refresh", {"full": True}, 7)


def test_declaration_mistakes_raise_at_import(app: teguh.App, queue: str) -> None:
    task = declare(app, queue)
    with pytest.raises(TypeError, match=r"stack it above @app\.task"):
        app.periodic("@daily")(lambda ctx: None)
    with pytest.raises(ValueError, match=r"two schedules named .reports\.refresh."):
        app.periodic("@daily", name="reports.refresh")(task)
    with pytest.raises(TypeError, match="'refresh'"):
        app.periodic("@daily", name="x", params={"fulll": 1})(task)
    with pytest.raises(teguh.InvalidArgument) as err:
        app.own_schedules("")
    assert err.value.argument == "prefix"


def test_leaving_an_undeclared_schedule_is_logged(
    app: teguh.App, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    app.client.create_schedule(queue, "legacy", "@hourly", "refresh")
    declare(app, queue)
    with caplog.at_level(logging.INFO, logger="teguh.schedules"):
        app.sync_schedules()
    assert any("legacy" in r.getMessage() for r in caplog.records)
