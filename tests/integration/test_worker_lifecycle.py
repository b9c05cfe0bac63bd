"""One worker for many queues, drain(), routing policies, and the lifecycle guarantees."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import psycopg
import pytest

import teguh
from teguh.worker import STOP_GRACE
from teguh.worker.completions import MAX_TRACEBACK, failure_reason
from teguh.worker.dispatcher import Dispatcher
from tests.helpers import wait_for
from tests.integration.conftest import wait_state


def teguh_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("teguh-")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_one_worker_serves_several_queues_without_starving_one(
    app: teguh.App, queue: str, conn: psycopg.Connection[Any]
) -> None:
    app.client.create_queue("urgent")
    release = threading.Event()

    @app.task(queue="q", name="bulk")
    def bulk(ctx: teguh.TaskContext, i: int) -> int:
        release.wait(0.05)
        return i

    @app.task(queue="urgent", name="ping")
    def ping(ctx: teguh.TaskContext) -> str:
        return "pong"

    bulk.spawn_many([{"i": i} for i in range(200)])
    with app.worker(["q", "urgent"], concurrency=2, poll_interval=30):
        wait_for(lambda: app.client.queue_stats(queue)[0].completed >= 4)
        urgent = ping.spawn()
        assert wait_state(app.client, urgent.task_id, queue="urgent").state == "completed"
        [backlog] = app.client.queue_stats(queue)
        # the urgent task ran while most of the backlog still waited
        assert backlog.pending > 100, backlog
        release.set()

    # the worker's LISTEN connection is closed with it (its backend exits
    # just after the client closes the socket: wait for the server to see it)
    def listening() -> Any:
        return conn.execute(
            "select count(*) from pg_stat_activity where application_name like 'teguh-listen%'"
        ).fetchone()

    wait_for(lambda: listening() == (0,), message="the LISTEN session to end")


def test_a_queue_cap_limits_its_slots(app: teguh.App, queue: str) -> None:
    lock = threading.Lock()
    running = peak = 0
    release = threading.Event()

    @app.task(queue="q", name="capped")
    def capped(ctx: teguh.TaskContext) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        release.wait(10)
        with lock:
            running -= 1

    spawned = capped.spawn_many([{}] * 6)
    with app.worker({"q": 2}, concurrency=5) as worker:
        wait_for(lambda: worker.in_flight == 2)
        time.sleep(0.3)  # give a wrong dispatcher the chance to claim more
        assert worker.in_flight == 2
        release.set()
        for s in spawned:
            wait_state(app.client, s.task_id)
    assert peak == 2


def test_drain_runs_due_work_and_returns_the_count(app: teguh.App, queue: str) -> None:
    @app.task(queue="q", name="chain")
    def chain(ctx: teguh.TaskContext, n: int) -> int:
        if n:
            ctx.step("next", lambda: str(ctx.spawn("chain", {"n": n - 1}).task_id))
        return n

    first = chain.spawn(n=2)
    worker = app.worker([queue])
    assert worker.drain() == 3  # the spawned children are due at once
    assert worker.drain() == 0
    assert app.client.get_task_result(queue, first.task_id).state == "completed"  # type: ignore[union-attr]
    chain.spawn_many([{"n": 0}] * 5)
    assert worker.drain(timeout=0) == 0


def test_not_found_policies(app: teguh.App, queue: str) -> None:
    failing = app.client.spawn_task(queue, "nobody-home", {})
    assert app.worker([queue], not_found="fail").drain() == 1
    info = app.client.get_task(queue, failing.task_id)
    assert info is not None
    assert info.last_failure["name"] == "NoHandler"
    assert "nobody-home" in info.last_failure["message"]

    fallback_seen: list[str] = []
    caught = app.client.spawn_task(queue, "other", {})
    worker = app.worker([queue], not_found=lambda ctx: fallback_seen.append(ctx.task_name))
    assert worker.drain() >= 1
    assert fallback_seen == ["other"]
    assert app.client.get_task_result(queue, caught.task_id).state == "completed"  # type: ignore[union-attr]

    handed = app.client.spawn_task(queue, "later", {})
    assert app.worker([queue], unknown_task_delay=60).drain() == 1
    # handed back (teguh.hand_back_run), not a durable sleep: pending, and its
    # last failure says why and how often
    back = app.client.get_task(queue, handed.task_id)
    assert back is not None and (back.state, back.attempts) == ("pending", 1)
    assert back.last_failure["name"] == "HandedBack"
    assert "no handler" in back.last_failure["message"]
    assert back.last_failure["hand_backs"] == 1


def test_start_against_an_unreachable_server_fails_fast_and_leaks_nothing() -> None:
    app = teguh.App(f"postgresql://teguh@127.0.0.1:{free_port()}/nothing")
    app.task(queue="q", name="t")(lambda ctx: None)
    worker = app.worker(["q"], connect_timeout=2)
    before = teguh_threads()
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        worker.start()
    assert time.monotonic() - started < 10
    assert not worker.is_running
    assert teguh_threads() == before
    worker.stop()  # a no-op


def test_start_raises_queue_not_found(app: teguh.App, queue: str) -> None:
    worker = app.worker(["q", "missing"])
    before = teguh_threads()
    with pytest.raises(teguh.QueueNotFound, match="missing"):
        worker.start()
    assert not worker.is_running
    assert teguh_threads() == before


def test_a_dying_dispatcher_stops_the_worker_and_run_reraises(
    app: teguh.App, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Dispatcher) -> None:
        raise RuntimeError("dispatcher bug")

    monkeypatch.setattr(Dispatcher, "step", broken)
    worker = app.worker([queue])
    with pytest.raises(RuntimeError, match="dispatcher died") as caught:
        worker.run(handle_signals=False)
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert str(caught.value.__cause__) == "dispatcher bug"
    assert not worker.is_running


def test_stop_is_bounded_with_a_handler_that_never_returns(app: teguh.App, queue: str) -> None:
    forever = threading.Event()
    started = threading.Event()

    @app.task(queue="q", name="stuck")
    def stuck(ctx: teguh.TaskContext) -> None:
        started.set()
        forever.wait()

    spawned = stuck.spawn()
    worker = app.worker([queue]).start()
    try:
        assert started.wait(10)
        t0 = time.monotonic()
        worker.stop(0.5)
        assert time.monotonic() - t0 < 0.5 + STOP_GRACE
        # handed back (due at once), still on its first attempt
        result = app.client.get_task_result(queue, spawned.task_id)
        assert result is not None and result.attempts == 1
        assert result.state in ("pending", "sleeping")
    finally:
        forever.set()


def test_stored_tracebacks_are_capped_with_a_marker(app: teguh.App, queue: str) -> None:
    reason = failure_reason(ValueError("x" * 100_000))
    assert len(reason["traceback"]) <= MAX_TRACEBACK
    assert reason["traceback"].startswith("... [traceback cut")

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    @app.task(queue="q", name="weird", max_attempts=1)
    def weird(ctx: teguh.TaskContext) -> None:
        raise Unprintable

    @app.task(queue="q", name="nul", max_attempts=1)
    def nul(ctx: teguh.TaskContext) -> None:
        raise ValueError("a\x00b")

    ids = [weird.spawn().task_id, nul.spawn().task_id]
    assert app.worker([queue]).drain() == 2
    for task_id in ids:
        info = app.client.get_task(queue, task_id)
        assert info is not None and info.state == "failed", info
