"""Worker fixes found by killing workers and the server (issue 8, section 4)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from typing import Any

import psycopg
import pytest

import teguh
from teguh.embedded import EmbeddedPostgres
from teguh.worker.heartbeat import Heartbeat
from tests.helpers import pg_ctl, wait_for

from .conftest import wait_state

MakeWorker = Any


def test_a_task_with_no_handler_fails_naming_it_after_max_hand_backs(
    client: teguh.Client, queue: str, make_worker: MakeWorker
) -> None:
    # It used to circulate as 'sleeping' forever, attempt 1, with no reason.
    make_worker({"known": lambda ctx: "ok"}, unknown_task_delay=0, max_hand_backs=3)
    spawned = client.spawn_task(queue, "nobody.handles.this", {})
    wait_state(client, spawned.task_id, ("failed",))
    task = client.get_task(queue, spawned.task_id)
    assert task is not None and task.attempts == 1
    assert task.last_failure is not None
    assert task.last_failure["name"] == "NoHandler"
    assert "nobody.handles.this" in task.last_failure["message"]


def test_max_hand_backs_is_checked(app: teguh.App, queue: str) -> None:
    with pytest.raises(ValueError, match="max_hand_backs"):
        app.worker([queue], max_hand_backs=0)


def test_a_step_body_does_not_start_once_the_lease_may_have_expired(
    client: teguh.Client, queue: str, make_worker: MakeWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker frozen past its lease (here: its heartbeats stopped) used to run
    # the next step body, whose checkpoint another run may already have
    # committed, before its own write was refused.
    calls: list[int] = []
    outcomes: list[str] = []
    frozen = threading.Event()

    def handler(ctx: teguh.TaskContext) -> str:
        ctx.step("a", lambda: 1)
        if ctx.attempt == 1:
            frozen.set()
            time.sleep(1.3)  # longer than the 1 s lease, with no heartbeat
        try:
            ctx.step("b", lambda: calls.append(ctx.attempt))
        except teguh.LeaseLost:
            outcomes.append("lease lost")
            raise
        return "done"

    monkeypatch.setattr(Heartbeat, "beat", lambda self: 0)  # no lease is extended
    make_worker({"t": handler}, claim_timeout=1, ticker_interval=0.2)
    spawned = client.spawn_task(queue, "t", {})
    result = wait_state(client, spawned.task_id, timeout=20)
    assert result.state == "completed"
    assert outcomes == ["lease lost"]
    assert calls == [2]  # the step body ran once, in the run that took over


def _listen_backends(conn: psycopg.Connection[Any], queue: str) -> set[int]:
    rows = conn.execute(
        "select pid from pg_stat_activity"
        " where application_name like 'teguh-listen%%' and datname = current_database()"
    ).fetchall()
    return {int(row[0]) for row in rows}


def test_claims_go_on_while_the_listen_session_hangs(
    client: teguh.Client, queue: str, make_worker: MakeWorker, conn: psycopg.Connection[Any]
) -> None:
    # A frozen LISTEN session (its backend stopped, or a half-open TCP
    # connection) used to block the dispatcher in its next ticker query: no
    # claim at all until the session answered again.
    worker = make_worker({"t": lambda ctx: "ok"}, ticker_interval=0.2, poll_interval=1)
    wait_for(lambda: worker.is_ticker)
    [pid] = _listen_backends(conn, queue)
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(0.5)  # the dispatcher's next ticker query is now stuck on it
        spawned = client.spawn_task(queue, "t", {})
        assert wait_state(client, spawned.task_id, timeout=20).state == "completed"
        # and it listens again on a new session
        wait_for(lambda: _listen_backends(conn, queue) - {pid}, timeout=20)
    finally:
        os.kill(pid, signal.SIGCONT)


def test_a_worker_is_back_soon_after_an_outage_whatever_its_length() -> None:
    # Resumption used to grow with the outage (the pool's reconnection backoff
    # doubling from 1 s, the dispatcher blocked 30 s waiting for a connection).
    server = EmbeddedPostgres().start()  # its own server: this test stops it
    try:
        dsn = server.create_database("outage")
        with teguh.App(dsn, max_size=2) as app:
            client = app.client
            client.install()
            client.create_queue("q")
            worker = app.worker(["q"], concurrency=2, poll_interval=30)
            worker.handle("t", lambda ctx: "ok")
            with worker:
                first = client.spawn_task("q", "t", {})
                wait_state(client, first.task_id)
                pg_ctl(server, "-m", "fast", "stop")
                time.sleep(20)
                pg_ctl(server, "start")
                back = time.monotonic()
                spawned = None
                while spawned is None:
                    with contextlib.suppress(psycopg.OperationalError):
                        spawned = client.spawn_task("q", "t", {})
                wait_state(client, spawned.task_id, timeout=30)
                took = time.monotonic() - back
        # generous: ~0.6 s measured; the old backoff took 6.6 s after this 20 s outage
        assert took < 4, f"the worker resumed {took:.1f}s after the server came back"
    finally:
        server.stop()


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_an_outcome_the_database_refuses_fails_only_its_own_run(
    client: teguh.Client, queue: str, make_worker: MakeWorker
) -> None:
    # A result holding \u0000 made complete_runs fail: the whole batch was
    # logged and forgotten, its innocent runs re-ran after their leases
    # expired, and the culprit failed as LeaseExpired with its reason only in
    # a log. Failure reasons with \u0000 or a raising __str__ were lost too.
    gate = threading.Event()

    def good(ctx: teguh.TaskContext) -> str:
        gate.wait(10)  # finish together: their completions share a batch
        return "ok"

    def bad(ctx: teguh.TaskContext) -> str:
        gate.wait(10)
        return "a\x00b"

    def nul_message(ctx: teguh.TaskContext) -> None:
        raise ValueError("bad\x00byte")

    def unprintable(ctx: teguh.TaskContext) -> None:
        raise _Unprintable

    make_worker(
        {"good": good, "bad": bad, "nul": nul_message, "unprintable": unprintable},
        concurrency=12,
        claim_timeout=2,
    )
    goods = [client.spawn_task(queue, "good", {}, max_attempts=1) for _ in range(8)]
    culprit = client.spawn_task(queue, "bad", {}, max_attempts=1)
    nul = client.spawn_task(queue, "nul", {}, max_attempts=1)
    broken = client.spawn_task(queue, "unprintable", {}, max_attempts=1)
    wait_for(lambda: _running(client, queue) >= 9)
    gate.set()
    for spawned in goods:
        result = wait_state(client, spawned.task_id)
        assert (result.state, result.attempts) == ("completed", 1)
    refused = client.get_task(queue, wait_state(client, culprit.task_id).task_id)
    assert refused is not None and refused.state == "failed"
    assert refused.last_failure is not None
    # The App's encoder refuses a NUL before sending (a result the database
    # itself refuses fails as ResultRefused with the database's message).
    assert refused.last_failure["name"] == "InvalidArgument"
    assert "\\u0000" in refused.last_failure["message"]
    nul_task = client.get_task(queue, wait_state(client, nul.task_id).task_id)
    assert nul_task is not None and nul_task.last_failure is not None
    assert nul_task.last_failure["name"] == "ValueError"
    assert nul_task.last_failure["message"] == "bad\\u0000byte"
    broken_task = client.get_task(queue, wait_state(client, broken.task_id).task_id)
    assert broken_task is not None and broken_task.last_failure is not None
    assert broken_task.last_failure["name"] == "_Unprintable"
    assert "__str__ raised RuntimeError" in broken_task.last_failure["message"]


def _running(client: teguh.Client, queue: str) -> int:
    [stats] = client.queue_stats(queue)
    return int(stats.running)


def test_hung_handlers_are_reported_and_can_recycle_the_worker(
    client: teguh.Client, queue: str, make_worker: MakeWorker, caplog: pytest.LogCaptureFixture
) -> None:
    # Handlers hung after their task was cancelled held their slots forever,
    # silently, until the worker claimed nothing at all.
    release = threading.Event()

    def hang(ctx: teguh.TaskContext) -> None:
        release.wait(60)  # ignores cancellation: never calls teguh again

    worker = make_worker({"hang": hang}, concurrency=2, claim_timeout=1, recycle_when_stuck=True)
    try:
        first = client.spawn_task(queue, "hang", {})
        wait_state(client, first.task_id, ("running",))
        client.cancel_task(queue, first.task_id)
        wait_for(lambda: worker.hung_handlers == 1)
        wait_for(lambda: "still runs" in caplog.text)
        assert str(first.task_id) in caplog.text
        assert not worker.recycle_requested  # a slot is still free
        second = client.spawn_task(queue, "hang", {})
        wait_state(client, second.task_id, ("running",))
        client.cancel_task(queue, second.task_id)
        wait_for(lambda: worker.recycle_requested)
        assert worker.hung_handlers == 2
        # it claims no more
        third = client.spawn_task(queue, "hang", {})
        time.sleep(0.5)
        assert client.get_task_result(queue, third.task_id).state == "pending"  # type: ignore[union-attr]
    finally:
        release.set()
