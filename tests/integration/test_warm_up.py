"""A worker warms every new pool connection, and the warm-up changes nothing
(teguh/worker/warmup.py)."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import pytest

import teguh
from teguh import _engine as E
from teguh.worker import warmup
from teguh.worker.warmup import warm_up

TOP = 2**31 - 1


def _tasks(conn: psycopg.Connection[Any], queue: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        f"select task_id, task_name, state, attempts, current_run_id from teguh.t_{queue}"
        " order by task_id"
    ).fetchall()


def _dispatch(conn: psycopg.Connection[Any], queue: str) -> list[tuple[Any, ...]]:
    return conn.execute(f"select task_id, run_id from teguh.p_{queue} order by run_id").fetchall()


def test_every_connection_of_a_started_worker_is_warmed_once(
    dsn: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    warmed: list[tuple[int, tuple[str, ...]]] = []

    def recording(conn: psycopg.Connection[Any], *args: Any) -> None:
        warm_up(conn, *args)
        warmed.append((conn.info.backend_pid, tuple(args[1])))

    monkeypatch.setattr(warmup, "warm_up", recording)
    app = teguh.App(dsn)
    with app:
        app.client.create_queue("a")
        app.client.create_queue("b")
        worker = app.worker(["a", "b"], concurrency=2)
        worker.start()
        try:
            parts = worker._parts
            assert parts is not None
            pids = {
                pid
                for (pid,) in conn.execute(
                    "select pid from pg_stat_activity where application_name like 'teguh-worker:%%'"
                )
            }
            assert len(pids) == parts.pool.max_size
            # pool.wait() in start() returned after every connection was warmed
            assert sorted(warmed) == sorted((pid, ("a", "b")) for pid in pids)
        finally:
            worker.stop(5)
        # the warm-ups left no task behind, in either queue
        assert _tasks(conn, "a") == [] and _tasks(conn, "b") == []


def _warm_up_counting_calls(make_conn: Any, queues: list[str]) -> dict[str, int]:
    """Warm a new connection up; return how often each teguh function ran."""
    warming = make_conn()
    warming.execute("set track_functions = 'all'")
    warm_up(warming, E.Engine(), queues, "w", 30)
    warming.execute("select pg_stat_force_next_flush()")  # reported when it turns idle
    rows = make_conn().execute(
        "select funcname, calls from pg_stat_user_functions where schemaname = 'teguh'"
    )
    return dict(rows.fetchall())


def test_a_warm_up_runs_the_hot_calls(make_conn: Any, queue: str) -> None:
    calls = _warm_up_counting_calls(make_conn, [queue])
    assert calls["spawn_task"] == 1
    assert calls["claim_runs_next"] == 2  # one claim that finds a run, one short claim
    assert calls["get_task_checkpoint_states"] == 1
    assert calls["set_task_checkpoint_state"] == 1
    assert calls["complete_runs"] == 1
    assert "claim_queues_next" not in calls  # one queue: the worker claims it alone
    # the per-queue functions behind them ran too
    for name in ("_spawn_", "_claim_", "_step_", "_done_", "_wake_"):
        assert calls[name + queue] >= 1, name


def test_the_warm_up_of_several_queues_runs_their_combined_claim(
    make_conn: Any, conn: psycopg.Connection[Any]
) -> None:
    for queue in ("a", "b"):
        conn.execute("select teguh.create_queue(%s)", (queue,))
    calls = _warm_up_counting_calls(make_conn, ["a", "b"])
    assert calls["claim_queues_next"] == 1
    assert calls["claim_runs_next"] == 4  # two per queue
    assert conn.execute("select count(*) from teguh.t_a").fetchone() == (0,)


def test_a_warm_up_changes_nothing_and_sends_no_notification(
    dsn: str, queue: str, conn: psycopg.Connection[Any], make_conn: Any
) -> None:
    engine = E.Engine()
    with teguh.Client(dsn) as client:
        # real work the warm-up's claims could reach: a run that a worker
        # holds, and ready runs at the top priority and at the default one
        client.spawn_task(queue, "held", {"n": 3}, priority=TOP)
        held = conn.execute("select task_name from teguh.claim_task(%s, 'other', 60, 1)", (queue,))
        assert held.fetchall() == [("held",)]
        client.spawn_task(queue, "urgent", {"n": 1}, priority=TOP)
        client.spawn_task(queue, "normal", {"n": 2})
    listener = make_conn()
    listener.execute(f"listen teguh_{queue}")
    tasks, dispatch = _tasks(conn, queue), _dispatch(conn, queue)
    runs = conn.execute(f"select * from teguh.r_{queue} order by run_id").fetchall()

    warming = make_conn()
    warm_up(warming, engine, [queue], "warming-worker", 30)

    assert warming.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert _tasks(conn, queue) == tasks
    assert _dispatch(conn, queue) == dispatch
    assert conn.execute(f"select * from teguh.r_{queue} order by run_id").fetchall() == runs
    assert list(listener.notifies(timeout=0.3, stop_after=1)) == []
    # the ready runs are still claimable, by priority, with their first
    # attempt, and the warmed connection serves as usual
    runs_claimed, _, _ = engine.claim_next(warming, queue, "w", 30, 5)
    assert [(r.task_name, r.attempt) for r in runs_claimed] == [("urgent", 1), ("normal", 1)]


def test_a_failed_warm_up_leaves_the_connection_usable(
    make_conn: Any, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    warming = make_conn()
    with caplog.at_level(logging.INFO, logger="teguh.worker"):
        warm_up(warming, E.Engine(), ["no_such_queue"], "w", 30)
    assert "could not warm up" in caplog.text
    assert warming.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert warming.execute("select teguh.next_wake_at(%s)", (queue,)).fetchone() == (None,)
