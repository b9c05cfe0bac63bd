"""Seeing what is there: what a task waits for (get_task) and who serves a queue (queue_stats).

Fake time throughout: every expected instant is computed from the engine's clock.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from .conftest import Engine

WAIT_COLUMNS = (
    "next_attempt_at",
    "wait_kind",
    "wait_event",
    "wait_timeout_at",
    "hand_backs",
    "queue_paused",
    "worker_id",
    "lease_expires_at",
)


def wait(eng: Engine, task_id: Any) -> dict[str, Any]:
    info = eng.task(task_id)
    return {k: info[k] for k in WAIT_COLUMNS}


def expect(**changes: Any) -> dict[str, Any]:
    """The wait columns of a task that waits for nothing, with ``changes``."""
    base: dict[str, Any] = dict.fromkeys(WAIT_COLUMNS)
    base.update(hand_backs=0, queue_paused=False)
    base.update(changes)
    return base


def claim_one(eng: Engine, timeout: int = 30) -> Any:
    (run,) = eng.claim(timeout=timeout)
    return run[0]


def test_a_new_task_waits_for_its_first_attempt(eng: Engine) -> None:
    now = eng.now
    (task_id, *_) = eng.spawn()
    assert wait(eng, task_id) == expect(wait_kind="start", next_attempt_at=now)
    (delayed, *_) = eng.spawn(available_at=(now + timedelta(minutes=5)).isoformat())
    assert wait(eng, delayed) == expect(
        wait_kind="start", next_attempt_at=now + timedelta(minutes=5)
    )


def test_a_failed_attempt_shows_when_it_is_retried(eng: Engine) -> None:
    (task_id, *_) = eng.spawn(retry_strategy={"kind": "fixed", "base_seconds": 40})
    run_id = claim_one(eng)
    eng.advance(3)
    eng.fail(run_id, {"name": "ValueError", "message": "boom", "traceback": "Traceback ..."})
    info = eng.task(task_id)
    assert (info["state"], info["attempts"], info["last_failure"]["name"]) == (
        "pending",
        1,
        "ValueError",
    )
    assert wait(eng, task_id) == expect(
        wait_kind="retry", next_attempt_at=eng.now + timedelta(seconds=40)
    )
    # an explicit retry_at wins over the strategy
    eng.advance(40)
    run_id = claim_one(eng)
    eng.fail(run_id, {"name": "Again"}, retry_at=eng.now + timedelta(hours=2))
    assert wait(eng, task_id)["next_attempt_at"] == eng.now + timedelta(hours=2)


def test_a_running_task_shows_its_worker_and_lease(eng: Engine) -> None:
    (task_id, *_) = eng.spawn()
    eng.claim(worker="w-7", timeout=45)
    assert wait(eng, task_id) == expect(
        worker_id="w-7", lease_expires_at=eng.now + timedelta(seconds=45)
    )
    (forever, *_) = eng.spawn()
    eng.claim(worker="w-8", timeout=0)  # a lease that never expires
    assert wait(eng, forever) == expect(worker_id="w-8")


def test_a_sleeping_task_shows_its_wake_time(eng: Engine) -> None:
    (task_id, *_) = eng.spawn()
    run_id = claim_one(eng)
    wake = eng.now + timedelta(hours=1)
    eng.conn.execute("select teguh.schedule_run('q', %s, %s)", (run_id, wake))
    assert eng.state(task_id) == "sleeping"
    assert wait(eng, task_id) == expect(wait_kind="sleep", next_attempt_at=wake)
    eng.set_time(wake + timedelta(seconds=1))
    claim_one(eng)
    assert wait(eng, task_id)["wait_kind"] is None


def _await(eng: Engine, task_id: Any, run_id: Any, event: str, timeout: int | None) -> None:
    suspended = eng.one(
        "select should_suspend from teguh.wait_event('q', %s, %s, 'step', %s, %s)",
        task_id,
        run_id,
        event,
        timeout,
    )
    assert suspended is True


def test_an_event_wait_shows_the_event_and_its_timeout(eng: Engine) -> None:
    (task_id, *_) = eng.spawn()
    _await(eng, task_id, claim_one(eng), "order.paid", 600)
    timeout = eng.now + timedelta(seconds=600)
    assert wait(eng, task_id) == expect(
        wait_kind="event",
        wait_event="order.paid",
        wait_timeout_at=timeout,
        next_attempt_at=timeout,
    )
    # the event comes: the task resumes with it, due now
    eng.advance(10)
    eng.conn.execute("select teguh.emit_event('q', 'order.paid', '{\"ok\": true}')")
    assert wait(eng, task_id) == expect(
        wait_kind="resume", wait_event="order.paid", next_attempt_at=eng.now
    )


def test_an_event_wait_without_timeout_has_no_next_attempt(eng: Engine) -> None:
    (task_id, *_) = eng.spawn()
    _await(eng, task_id, claim_one(eng), "approval", None)
    assert wait(eng, task_id) == expect(wait_kind="event", wait_event="approval")


def test_an_event_wait_past_its_timeout_still_says_event(eng: Engine) -> None:
    (task_id, *_) = eng.spawn()
    _await(eng, task_id, claim_one(eng), "late", 5)
    eng.advance(60)  # timed out, not yet claimed: the wait is still what it waits on
    info = wait(eng, task_id)
    assert info["wait_kind"] == "event" and info["next_attempt_at"] == eng.now - timedelta(
        seconds=55
    )


def test_a_handed_back_task_is_pending_and_says_so(eng: Engine) -> None:
    (task_id, *_) = eng.spawn("no.handler")
    for count in (1, 2):
        run_id = claim_one(eng)
        outcome = eng.one("select teguh.hand_back_run('q', %s, 5, 10, 'w-1')", run_id)
        assert outcome == "handed_back"
        info = eng.task(task_id)
        # not a durable sleep: pending, attempts unchanged, the reason says why
        assert (info["state"], info["attempts"]) == ("pending", 1)
        assert info["last_failure"]["name"] == "HandedBack"
        assert wait(eng, task_id) == expect(
            wait_kind="handed_back",
            hand_backs=count,
            next_attempt_at=eng.now + timedelta(seconds=5),
        )
        eng.advance(5)
    [(state, failure)] = eng.rows("select state, last_failure from teguh.list_tasks('q')")
    assert state == "pending" and failure["name"] == "HandedBack"
    assert "handed back 2 time(s)" in failure["message"]


def test_a_run_released_by_a_stopping_worker_is_handed_back(eng: Engine) -> None:
    (task_id, *_) = eng.spawn()
    run_id = claim_one(eng)
    eng.conn.execute("select teguh.release_run('q', %s)", (run_id,))
    assert wait(eng, task_id) == expect(wait_kind="handed_back", next_attempt_at=eng.now)


def test_a_paused_queue_is_named(eng: Engine) -> None:
    (task_id, *_) = eng.spawn()
    eng.conn.execute("select teguh.set_queue_policy('q', '{\"paused\": true}')")
    assert wait(eng, task_id) == expect(
        wait_kind="start", next_attempt_at=eng.now, queue_paused=True
    )
    eng.conn.execute("select teguh.set_queue_policy('q', '{\"paused\": false}')")
    assert wait(eng, task_id)["queue_paused"] is False


def test_finished_and_archived_tasks_wait_for_nothing(eng: Engine) -> None:
    (done, *_) = eng.spawn()
    eng.complete(claim_one(eng))
    (cancelled, *_) = eng.spawn()
    eng.conn.execute("select teguh.cancel_task('q', %s)", (cancelled,))
    (failed, *_) = eng.spawn(max_attempts=1)
    eng.fail(claim_one(eng))
    for task_id in (done, cancelled, failed):
        assert wait(eng, task_id) == expect(), eng.state(task_id)
    eng.conn.execute(
        'select teguh.set_queue_policy(\'q\', \'{"retention": 60, "cleanup": "archive"}\')'
    )
    eng.advance(120)
    eng.conn.execute("select teguh.ticker('q')")
    info = eng.task(done)
    assert info["archived"] is True
    assert wait(eng, done) == expect()


def test_defensive_reads_of_odd_stored_values(eng: Engine) -> None:
    (task_id, *_) = eng.spawn()
    eng.conn.execute("update teguh.p_q set available_at = 'infinity'")
    eng.conn.execute(
        "insert into teguh.c_q (task_id, checkpoint_name, state, updated_at)"
        " values (%s, '$teguh:unhandled', '{\"count\": -1e300}', now())",
        (task_id,),
    )
    assert wait(eng, task_id) == expect(wait_kind="start")


# -- worker presence in the stats ------------------------------------------------------


def workers_by_queue(eng: Engine) -> dict[str, int]:
    return dict(eng.rows("select queue_name, workers from teguh.queue_stats()"))


def test_queue_stats_counts_the_workers_present(eng: Engine) -> None:
    eng.conn.execute("select teguh.create_queue('other')")
    eng.conn.execute("select teguh.create_queue('idle')")
    assert workers_by_queue(eng) == {"idle": 0, "other": 0, "q": 0}
    eng.conn.execute("select teguh.register_worker('both', '{q,other}', null, null, 30)")
    eng.conn.execute("select teguh.register_worker('one', '{q}', null, null, 120)")
    assert workers_by_queue(eng) == {"idle": 0, "other": 1, "q": 2}
    assert eng.one("select workers from teguh.queue_stats('other')") == 1
    eng.advance(31)  # 'both' missed its heartbeats: it no longer counts
    assert workers_by_queue(eng) == {"idle": 0, "other": 0, "q": 1}
    assert eng.one("select teguh.worker_heartbeat('both', 30)") is True
    assert workers_by_queue(eng) == {"idle": 0, "other": 1, "q": 2}
    eng.conn.execute("select teguh.unregister_worker('one')")
    assert workers_by_queue(eng) == {"idle": 0, "other": 1, "q": 1}
    # the same answer as queue_workers
    assert workers_by_queue(eng) == dict(eng.rows("select * from teguh.queue_workers()"))


def test_heartbeats_report_hung_handlers(eng: Engine) -> None:
    eng.conn.execute("select teguh.register_worker('w', '{q}')")
    hung = "select hung_handlers from teguh.list_workers()"
    assert eng.one(hung) == 0
    assert eng.one("select teguh.worker_heartbeat('w', 60, 2)") is True
    assert eng.one(hung) == 2
    assert eng.one("select teguh.worker_heartbeat('w')") is True  # not reported: kept
    assert eng.one(hung) == 2
    assert eng.one("select teguh.worker_heartbeat('w', 60, 0)") is True
    assert eng.one(hung) == 0


@given(st.integers(min_value=-(2**31), max_value=2**31 - 1))
def test_hung_handlers_is_checked(eng: Engine, value: int) -> None:
    eng.conn.execute("select teguh.register_worker('w', '{q}')")
    before = eng.one("select hung_handlers from teguh.workers")
    if value < 0:
        with pytest.raises(psycopg.Error) as info:
            eng.conn.execute("select teguh.worker_heartbeat('w', 60, %s)", (value,))
        assert info.value.sqlstate == "22023"
        assert info.value.diag.column_name == "hung_handlers"
        assert eng.one("select hung_handlers from teguh.workers") == before
    else:
        eng.conn.execute("select teguh.worker_heartbeat('w', 60, %s)", (value,))
        assert eng.one("select hung_handlers from teguh.workers") == value


def test_a_task_with_a_concurrency_key_shows_its_limit_and_the_runs_in_flight(eng: Engine) -> None:
    def concurrency(task_id: Any) -> tuple[Any, ...]:
        info = eng.task(task_id)
        return (info["concurrency_key"], info["concurrency_limit"], info["concurrency_running"])

    (free, *_) = eng.spawn(concurrency_key="tenant-9")
    assert concurrency(free) == ("tenant-9", None, None)  # no limit: nothing to count
    eng.conn.execute("select teguh.set_concurrency_limit('q', 'tenant-*', 1)")
    (first, *_) = eng.spawn(concurrency_key="tenant-1")
    (second, *_) = eng.spawn(concurrency_key="tenant-1")
    assert concurrency(second) == ("tenant-1", 1, 0)
    claimed = {row[1] for row in eng.claim(qty=10)}
    assert first in claimed and second not in claimed  # the key is at its limit
    assert concurrency(second) == ("tenant-1", 1, 1)
    assert wait(eng, second)["wait_kind"] == "start"  # due, and held back by the limit
    assert concurrency(first) == ("tenant-1", 1, 1)
    (plain, *_) = eng.spawn()
    assert concurrency(plain) == (None, None, None)
