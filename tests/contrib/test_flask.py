"""teguh.contrib.flask with a real Flask + Flask-SQLAlchemy app (tests/contrib/flask_app)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

pytest.importorskip("flask")
pytest.importorskip("flask_sqlalchemy")

from flask import Flask

import teguh
from tests.contrib.flask_app.app import Order, create_app, db, fulfil, teguh_ext
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
APP_PATH = "tests.contrib.flask_app.app:create_app"


@pytest.fixture
def app(dsn: str) -> Iterator[Flask]:
    flask_app = create_app(database_url=dsn, TEGUH_POOL_MAX_SIZE=3)
    with flask_app.app_context():
        db.create_all()
    result = flask_app.test_cli_runner().invoke(args=["teguh", "install"])
    assert result.exit_code == 0, result.output
    assert "created queue default" in result.output
    yield flask_app
    teguh_ext.stop_worker(flask_app, timeout=5)
    flask_app.extensions["teguh"].close()
    with flask_app.app_context():
        db.engine.dispose()


def _task(app: Flask, task_id: str) -> teguh.TaskInfo | None:
    return teguh_ext.client_for(app).get_task("default", UUID(task_id))


def _orders(app: Flask) -> list[tuple[str, bool]]:
    with app.app_context():
        return [(o.email, o.fulfilled) for o in db.session.scalars(db.select(Order))]


def test_view_commit_runs_the_task_in_the_app_context(app: Flask) -> None:
    response = app.test_client().post("/orders", data={"email": "ada@example.com"})
    assert response.status_code == 200
    body = response.get_json()
    info = _task(app, body["task_id"])
    assert info is not None and info.state == "pending" and info.max_attempts == 3
    worker = teguh_ext.make_worker(app).start()
    try:
        result = teguh_ext.client_for(app).wait_result("default", UUID(body["task_id"]), timeout=30)
    finally:
        worker.stop(5)
    assert result.state == "completed"
    assert result.completed_payload == {"order_id": body["order_id"], "attempt": 1}
    assert _orders(app) == [("ada@example.com", True)]


def test_view_rollback_leaves_no_task(app: Flask) -> None:
    response = app.test_client().post("/orders", data={"email": "no@example.com", "fail": "1"})
    assert response.status_code == 409
    assert _orders(app) == []
    assert teguh_ext.client_for(app).queue_stats("default")[0].pending == 0


def test_in_process_worker_starts_on_the_first_request(app: Flask) -> None:
    app.config["TEGUH_WORKER_IN_PROCESS"] = True
    in_process = create_app(
        database_url=app.config["SQLALCHEMY_DATABASE_URI"].replace(
            "postgresql+psycopg://", "postgresql://"
        ),
        TEGUH_WORKER_IN_PROCESS=True,
    )
    try:
        state = in_process.extensions["teguh"]
        assert state.worker is None  # nothing runs before the first request
        body = in_process.test_client().post("/orders", data={"email": "b@x"}).get_json()
        assert state.worker is not None and state.worker.is_running
        wait_for(
            lambda: (
                (_task(app, body["task_id"]) or None)
                and _task(app, body["task_id"]).state == "completed"
            )
        )  # type: ignore[union-attr]
        in_process.test_client().get("/health")
        assert in_process.extensions["teguh"].worker is state.worker  # still one worker
    finally:
        teguh_ext.stop_worker(in_process, timeout=5)
        in_process.extensions["teguh"].close()
        with in_process.app_context():
            db.engine.dispose()
    assert not state.worker


def test_spawn_outside_a_transaction_uses_the_app_pool(app: Flask) -> None:
    with app.app_context():
        spawned = fulfil.spawn(order_id=12345)
    info = _task(app, str(spawned.task_id))
    assert info is not None and info.params == {"order_id": 12345}


def test_stats_command(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["teguh", "stats"])
    assert result.exit_code == 0, result.output
    assert "default" in result.output
    header, row = result.output.splitlines()[:2]
    assert header.split()[-1] == "workers" and row.split()[-1] == "0"


def test_config_errors(dsn: str) -> None:
    from teguh.contrib.flask import Teguh, database_url

    bare = Flask("bare")
    with pytest.raises(RuntimeError, match="TEGUH_DATABASE_URL"):
        database_url(bare)
    bare.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
    with pytest.raises(RuntimeError, match="needs PostgreSQL"):
        database_url(bare)
    bare.config["SQLALCHEMY_DATABASE_URI"] = "postgresql+psycopg://u:p@h:5/db"
    assert database_url(bare) == "postgresql://u:p@h:5/db"
    with bare.app_context(), pytest.raises(RuntimeError, match="init_app"):
        _ = Teguh().client


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _flask(dsn: str, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", APP_PATH, *args],
        cwd=ROOT,
        env={**os.environ, "TEGUH_TEST_DATABASE_URL": dsn, "PYTHONPATH": str(ROOT), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_worker_command_runs_tasks_and_stops_on_sigterm(app: Flask) -> None:
    body = app.test_client().post("/orders", data={"email": "cli@example.com"}).get_json()
    proc = _flask(app.config["TEGUH_DATABASE_URL"] or _url(app), "teguh", "worker")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("teguh worker: queues default")
        wait_for(lambda: _orders(app) == [("cli@example.com", True)], timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert _task(app, body["task_id"]).state == "completed"  # type: ignore[union-attr]


def test_debug_reloader_runs_exactly_one_worker(app: Flask) -> None:
    port = _free_port()
    proc = _flask(_url(app), "run", "--debug", "--port", str(port), TEGUH_TEST_IN_PROCESS="1")
    try:

        def up() -> Any:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for(up, timeout=60, interval=0.2)
        body = app.test_client().post("/orders", data={"email": "dev@example.com"}).get_json()
        wait_for(lambda: _task(app, body["task_id"]).state == "completed", timeout=30)  # type: ignore[union-attr]
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    started = [line for line in out.splitlines() if "in-process worker started" in line]
    assert len(started) == 1, out


def _url(app: Flask) -> str:
    from teguh.contrib.flask import database_url

    return database_url(app)


def test_concurrent_first_requests_start_one_worker(app: Flask) -> None:
    import threading

    state = app.extensions["teguh"]
    barrier = threading.Barrier(4)
    started: list[Any] = []

    def first_request() -> None:
        barrier.wait()
        started.append(state.start_worker())

    threads = [threading.Thread(target=first_request) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(started) == 4 and len({id(g) for g in started}) == 1


def test_middleware_runs_inside_the_app_context(app: Flask) -> None:
    from flask import current_app

    seen: list[str] = []

    def record(ctx: teguh.TaskContext, call_next: Any) -> Any:
        seen.append(current_app.name)  # raises outside an app context
        return call_next(ctx)

    teguh_ext.use(record)
    try:
        with app.app_context():
            spawned = fulfil.spawn(order_id=1)
        worker = teguh_ext.make_worker(app)
        assert worker.drain(timeout=30) == 1
    finally:
        teguh_ext.middleware.remove(record)
    assert seen == [app.name]
    # no order 1: the task failed inside the app context, as the handler ran there too
    info = _task(app, str(spawned.task_id))
    assert info is not None and "no order 1" in str(info.last_failure)
