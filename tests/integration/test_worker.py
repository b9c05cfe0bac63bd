"""Worker threads against a real database: dispatch, limits, retries, stop, reconnect."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

import teguh
from tests.helpers import wait_for
from tests.integration.conftest import wait_state
from tests.integration.sigkill_worker import make_handler

ROOT = Path(__file__).resolve().parents[2]
MakeWorker = Callable[..., teguh.Worker]


@teguh.task(queue="q", name="double")
def double(ctx: teguh.TaskContext, n: int) -> int:
    assert teguh.current_context() is ctx
    return n * 2


def test_dispatch_and_result_round_trip(
    app: teguh.App, client: teguh.Client, queue: str, make_worker: MakeWorker
) -> None:
    app.include(double)
    worker = make_worker(start=False)

    def echo(ctx: teguh.TaskContext) -> Any:
        return {"params": ctx.params, "attempt": ctx.attempt, "name": ctx.task_name}

    worker.handle("echo", echo)
    worker.start()
    spawned = client.spawn_task(queue, "echo", {"x": [1, 2]}, headers={"h": 1})
    result = wait_state(client, spawned.task_id)
    assert result.state == "completed"
    assert result.completed_payload == {"params": {"x": [1, 2]}, "attempt": 1, "name": "echo"}
    typed = double.spawn(n=21)
    assert wait_state(client, typed.task_id).completed_payload == 42


def test_concurrency_limit_is_respected(
    client: teguh.Client, queue: str, make_worker: MakeWorker
) -> None:
    lock = threading.Lock()
    running = 0
    peak = 0
    release = threading.Event()

    def slow(ctx: teguh.TaskContext) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        release.wait(10)
        with lock:
            running -= 1

    worker = make_worker({"slow": slow}, concurrency=3)
    spawned = client.spawn_tasks(queue, "slow", [{}] * 10)
    wait_for(lambda: peak == 3 and worker.in_flight == 3)
    [stats] = client.queue_stats(queue)
    assert stats.running == 3
    release.set()
    for s in spawned:
        assert wait_state(client, s.task_id).state == "completed"
    assert peak == 3


def test_catch_all_and_unknown_task(
    client: teguh.Client, queue: str, make_worker: MakeWorker
) -> None:
    seen: list[str] = []
    make_worker({"known": lambda ctx: "known"}, unknown_task_delay=0.1)
    unknown = client.spawn_task(queue, "other", {})

    # handed back: pending (not a durable sleep), not failed, no attempt consumed
    def handed_back() -> bool:
        result = client.get_task_result(queue, unknown.task_id)
        return result is not None and (result.state, result.attempts) == ("pending", 1)

    wait_for(handed_back)

    def any_task(ctx: teguh.TaskContext) -> str:
        seen.append(ctx.task_name)
        return "caught"

    make_worker({"*": any_task})
    result = wait_state(client, unknown.task_id, timeout=15)
    assert result.completed_payload == "caught"
    assert result.attempts == 1
    assert seen == ["other"]


def test_exception_retries_then_succeeds(
    client: teguh.Client, queue: str, make_worker: MakeWorker
) -> None:
    attempts: list[int] = []

    def flaky(ctx: teguh.TaskContext) -> str:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise RuntimeError(f"boom {ctx.attempt}")
        return "ok"

    make_worker({"flaky": flaky})
    spawned = client.spawn_task(
        queue, "flaky", {}, retry_strategy={"kind": "fixed", "base_seconds": 0}, max_attempts=5
    )
    result = wait_state(client, spawned.task_id)
    assert result.state == "completed"
    assert result.completed_payload == "ok"
    assert attempts == [1, 2, 3]
    info = client.get_task(queue, spawned.task_id)
    assert info is not None
    assert info.last_failure["name"] == "RuntimeError"
    assert info.last_failure["message"] == "boom 2"
    assert "Traceback" in info.last_failure["traceback"]


def test_exhausted_attempts_fail(client: teguh.Client, queue: str, make_worker: MakeWorker) -> None:
    def bad(ctx: teguh.TaskContext) -> None:
        raise ValueError("nope")

    make_worker({"bad": bad})
    spawned = client.spawn_task(queue, "bad", {}, retry_strategy={"kind": "none"}, max_attempts=1)
    assert wait_state(client, spawned.task_id).state == "failed"


def test_steps_run_once_across_a_failed_attempt(
    client: teguh.Client, queue: str, make_worker: MakeWorker
) -> None:
    calls: list[str] = []

    @teguh.step(name="charge")
    def charge(amount: int) -> dict[str, int]:
        calls.append(f"charge {amount}")
        return {"charged": amount}

    def handler(ctx: teguh.TaskContext) -> Any:
        first = charge(10)
        second = charge(20)  # same step name: numbered charge#2
        note = ctx.step("note", lambda: calls.append("note") or (1, 2))
        if ctx.attempt == 1:
            raise RuntimeError("crash after the steps")
        return [first, second, note]

    make_worker({"pay": handler})
    spawned = client.spawn_task(
        queue, "pay", {}, retry_strategy={"kind": "fixed", "base_seconds": 0}
    )
    result = wait_state(client, spawned.task_id)
    assert result.completed_payload == [{"charged": 10}, {"charged": 20}, [1, 2]]
    assert calls == ["charge 10", "charge 20", "note"]
    names = set(client.get_checkpoints(queue, spawned.task_id, spawned.run_id))
    assert names == {"charge", "charge#2", "note"}


def test_step_result_must_be_json(
    client: teguh.Client, queue: str, make_worker: MakeWorker
) -> None:
    def handler(ctx: teguh.TaskContext) -> None:
        ctx.step("bad-step", object)

    make_worker({"t": handler})
    spawned = client.spawn_task(queue, "t", {}, max_attempts=1)
    assert wait_state(client, spawned.task_id).state == "failed"
    info = client.get_task(queue, spawned.task_id)
    assert info is not None
    assert info.last_failure["name"] == "TypeError"
    assert "bad-step" in info.last_failure["message"]
    assert client.get_checkpoints(queue, spawned.task_id, spawned.run_id) == {}


def test_sleep_resumes_without_pg_cron_and_keeps_attempts(
    client: teguh.Client, queue: str, make_worker: MakeWorker
) -> None:
    runs: list[int] = []

    def sleeper(ctx: teguh.TaskContext) -> str:
        runs.append(ctx.attempt)
        before = ctx.step("before", lambda: "b")
        ctx.sleep_for(1.0)
        return before + "-awake"

    make_worker({"sleeper": sleeper}, poll_interval=60)  # the wake-up must not rely on polling
    spawned = client.spawn_task(queue, "sleeper", {})
    wait_state(client, spawned.task_id, ("sleeping",))
    result = wait_state(client, spawned.task_id, timeout=15)
    assert result.state == "completed"
    assert result.completed_payload == "b-awake"
    assert result.attempts == 1
    assert runs == [1, 1]
    wake = client.get_checkpoint(queue, spawned.task_id, "$sleep")
    assert "wake_at" in wake


def test_emit_before_and_after_await(
    client: teguh.Client, queue: str, make_worker: MakeWorker
) -> None:
    def waiter(ctx: teguh.TaskContext) -> Any:
        return ctx.await_event(ctx.params["event"], timeout=60)

    make_worker({"waiter": waiter})
    client.emit_event(queue, "early", {"v": 1})
    early = client.spawn_task(queue, "waiter", {"event": "early"})
    assert wait_state(client, early.task_id).completed_payload == {"v": 1}

    late = client.spawn_task(queue, "waiter", {"event": "late"})
    wait_state(client, late.task_id, ("sleeping",))
    client.emit_event(queue, "late", None)
    result = wait_state(client, late.task_id)
    assert result.state == "completed"
    assert result.completed_payload is None  # a null payload, not a timeout
    assert result.attempts == 1


def test_event_timeout(client: teguh.Client, queue: str, make_worker: MakeWorker) -> None:
    def waiter(ctx: teguh.TaskContext) -> str:
        try:
            ctx.await_event("never", timeout=1)
        except teguh.EventTimeout as exc:
            return f"timed out: {exc.event_name}"
        return "emitted"

    make_worker({"waiter": waiter}, poll_interval=60)
    spawned = client.spawn_task(queue, "waiter", {})
    result = wait_state(client, spawned.task_id, timeout=15)
    assert result.completed_payload == "timed out: never"


def test_cancellation_reaches_a_running_handler(
    client: teguh.Client, queue: str, make_worker: MakeWorker
) -> None:
    started = threading.Event()
    outcome: list[str] = []

    def loop(ctx: teguh.TaskContext) -> str:
        started.set()
        try:
            for _ in range(2000):
                try:
                    ctx.check_cancelled()
                except Exception:  # must not swallow the cancellation
                    outcome.append("swallowed")
                threading.Event().wait(0.01)
        except teguh.TaskCancelled:
            outcome.append("cancelled")
            raise
        return "finished"

    make_worker({"loop": loop})
    spawned = client.spawn_task(queue, "loop", {})
    assert started.wait(10)
    client.cancel_task(queue, spawned.task_id)
    wait_for(lambda: outcome == ["cancelled"])
    result = client.get_task_result(queue, spawned.task_id)
    assert result is not None
    assert result.state == "cancelled"
    assert result.completed_payload is None


def test_heartbeat_marks_cancelled_runs(
    client: teguh.Client, queue: str, make_worker: MakeWorker
) -> None:
    contexts: list[teguh.TaskContext] = []
    go = threading.Event()
    outcome: list[str] = []

    def handler(ctx: teguh.TaskContext) -> str:
        contexts.append(ctx)
        go.wait(10)
        try:
            ctx.step("after", lambda: "ran")
        except teguh.TaskCancelled:
            outcome.append("cancelled")
            raise
        return "done"

    make_worker({"h": handler}, heartbeat_interval=0.1)
    spawned = client.spawn_task(queue, "h", {})
    wait_for(lambda: contexts)
    client.cancel_task(queue, spawned.task_id)
    wait_for(lambda: contexts[0].cancelled, message="heartbeat noticing the cancel")
    go.set()
    wait_for(lambda: outcome == ["cancelled"])
    assert client.get_checkpoint(queue, spawned.task_id, "after") is None


def test_graceful_stop_lets_in_flight_work_finish(
    client: teguh.Client, queue: str, make_worker: MakeWorker
) -> None:
    entered = threading.Event()
    release = threading.Event()

    def slow(ctx: teguh.TaskContext) -> str:
        entered.set()
        release.wait(10)
        return "finished"

    worker = make_worker({"slow": slow}, concurrency=1)
    spawned = client.spawn_task(queue, "slow", {})
    assert entered.wait(10)
    assert worker.is_running
    stopper = threading.Thread(target=worker.stop, kwargs={"timeout": 10})
    stopper.start()
    wait_for(lambda: not worker.is_running)
    queued = client.spawn_task(queue, "slow", {})  # spawned while stopping: not claimed
    release.set()
    stopper.join(15)
    assert not stopper.is_alive()
    assert wait_state(client, spawned.task_id).completed_payload == "finished"
    result = client.get_task_result(queue, queued.task_id)
    assert result is not None
    assert result.state == "pending"


def test_stop_timeout_releases_the_run_for_another_worker(
    client: teguh.Client, queue: str, make_worker: MakeWorker
) -> None:
    first = threading.Event()
    stuck = threading.Event()
    errors: list[BaseException] = []

    def handler(ctx: teguh.TaskContext) -> str:
        if not first.is_set():
            first.set()
            stuck.wait(10)
            try:
                ctx.step("late", lambda: "late")
            except BaseException as exc:
                errors.append(exc)
                raise
            return "first"
        return "second"

    worker = make_worker({"h": handler}, claim_timeout=60)
    spawned = client.spawn_task(queue, "h", {})
    assert first.wait(10)
    worker.stop(timeout=0.1)
    # released at once, not after the 60 s lease: another worker finishes it
    make_worker({"h": handler})
    result = wait_state(client, spawned.task_id)
    assert result.completed_payload == "second"
    assert result.attempts == 1
    stuck.set()
    wait_for(lambda: errors)
    assert isinstance(errors[0], teguh.LeaseLost)


def test_listen_connection_killed(
    client: teguh.Client, queue: str, make_worker: MakeWorker, conn: psycopg.Connection[Any]
) -> None:
    make_worker({"t": lambda ctx: "ok"}, poll_interval=60)
    listening = "select pid from pg_stat_activity where application_name = 'teguh-listen:q'"
    wait_for(lambda: conn.execute(listening).fetchall())
    [(pid,)] = conn.execute(listening).fetchall()
    conn.execute("select pg_terminate_backend(%s)", (pid,))
    first = client.spawn_task(queue, "t", {})
    assert wait_state(client, first.task_id).completed_payload == "ok"
    # reconnected: a new LISTEN backend, and notifications work again
    wait_for(lambda: [row for row in conn.execute(listening).fetchall() if row[0] != pid])
    second = client.spawn_task(queue, "t", {})
    assert wait_state(client, second.task_id, timeout=5).completed_payload == "ok"


def test_one_ticker_per_queue(client: teguh.Client, queue: str, make_worker: MakeWorker) -> None:
    a = make_worker({})
    b = make_worker({})
    wait_for(lambda: a.is_ticker or b.is_ticker)
    assert not (a.is_ticker and b.is_ticker)
    leader, other = (a, b) if a.is_ticker else (b, a)
    leader.stop(timeout=1)
    wait_for(lambda: other.is_ticker, timeout=15)


def test_worker_process_killed_after_step_one(
    client: teguh.Client,
    queue: str,
    make_worker: MakeWorker,
    conn: psycopg.Connection[Any],
    dsn: str,
) -> None:
    conn.execute("create table executions (what text not null)")
    spawned = client.spawn_task(
        queue, "killme", {}, retry_strategy={"kind": "fixed", "base_seconds": 0}
    )
    env = {**os.environ, "TEGUH_TEST_BLOCK": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.sigkill_worker", dsn], cwd=ROOT, env=env
    )
    try:
        wait_for(
            lambda: client.get_checkpoint(queue, spawned.task_id, "step1") == "step1",
            timeout=30,
            message="step 1 checkpointed by the worker process",
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    make_worker({"killme": make_handler(dsn, block=False)}, claim_timeout=1)
    result = wait_state(client, spawned.task_id, timeout=30)
    assert result.state == "completed"
    assert result.completed_payload == "step1+step2"
    assert result.attempts == 2
    executions = [row[0] for row in conn.execute("select what from executions").fetchall()]
    assert sorted(executions) == ["step1", "step2"]


def test_spawn_from_handler_and_task_objects(
    app: teguh.App, client: teguh.Client, queue: str, make_worker: MakeWorker
) -> None:
    app.include(double)
    worker = make_worker(start=False)

    def parent(ctx: teguh.TaskContext) -> str:
        child = ctx.step("spawn", lambda: str(ctx.spawn("double", {"n": 5}).task_id))
        return child

    worker.handle("parent", parent)
    worker.start()
    spawned = client.spawn_task(queue, "parent", {})
    child_id = wait_state(client, spawned.task_id).completed_payload
    child = wait_state(client, __import__("uuid").UUID(child_id))
    assert child.completed_payload == 10
    many = double.spawn_many([{"n": 1}, {"n": 2}])
    assert [wait_state(client, r.task_id).completed_payload for r in many] == [2, 4]


@pytest.mark.parametrize("concurrency", [1, 4])
def test_drains_a_backlog(
    client: teguh.Client, queue: str, make_worker: MakeWorker, concurrency: int
) -> None:
    spawned = client.spawn_tasks(queue, "noop", [{"i": i} for i in range(200)])
    make_worker({"noop": lambda ctx: ctx.params["i"]}, concurrency=concurrency)
    for s in spawned[-5:]:
        wait_state(client, s.task_id)
    [stats] = client.queue_stats(queue)
    assert stats.completed == 200


def test_lost_pool_connections_are_replaced(
    client: teguh.Client, queue: str, make_worker: MakeWorker, conn: psycopg.Connection[Any]
) -> None:
    make_worker({"t": lambda ctx: "ok"}, concurrency=2)
    first = client.spawn_task(queue, "t", {})
    assert wait_state(client, first.task_id).completed_payload == "ok"
    killed = conn.execute(
        "select pg_terminate_backend(pid) from pg_stat_activity"
        " where application_name = 'teguh-worker:q'"
    ).fetchall()
    assert len(killed) == 5  # concurrency + 3
    # the worker logs the broken connections, replaces them and keeps working
    for _ in range(3):
        spawned = client.spawn_task(queue, "t", {})
        assert wait_state(client, spawned.task_id, timeout=15).completed_payload == "ok"
