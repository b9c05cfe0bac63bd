"""Ticker, next_wake_at, cleanup and stats, all on teguh.current_time()."""

from __future__ import annotations

from datetime import timedelta

from psycopg.types.json import Jsonb

from .conftest import Engine


def finish(eng: Engine, n: int) -> list[object]:
    eng.conn.execute("select * from teguh.spawn_tasks('q', 't', %s)", (Jsonb(list(range(n))),))
    ids = []
    for run in eng.claim(qty=n):
        eng.complete(run[0], run[4])
        ids.append(run[1])
    return ids


def test_ticker_recovers_expired_leases(eng: Engine) -> None:
    task_id = eng.spawn(retry_strategy={"kind": "none"}, max_attempts=2)[0]
    eng.claim(timeout=5)
    assert eng.one("select teguh.next_wake_at('q')") == eng.now + timedelta(seconds=5)
    assert eng.one("select teguh.ticker()") == 0
    eng.advance(6)
    assert eng.one("select teguh.ticker()") == 1
    assert eng.state(task_id) == "pending" and eng.count("r") == 0
    eng.claim(timeout=5)
    eng.advance(6)
    assert eng.one("select teguh.ticker('q')") == 1
    assert eng.state(task_id) == "failed"


def test_next_wake_at_is_null_when_idle(eng: Engine) -> None:
    assert eng.one("select teguh.next_wake_at('q')") is None
    finish(eng, 3)
    assert eng.one("select teguh.next_wake_at('q')") is None


def test_cleanup_measures_age_from_finish(eng: Engine) -> None:
    old = eng.spawn()[0]
    [run] = eng.claim()
    eng.conn.execute("select teguh.set_task_checkpoint_state('q', %s, 's', '1', %s)", (old, run[0]))
    eng.advance(3600)  # created an hour before it finished
    eng.complete(run[0])
    eng.advance(10)
    recent = finish(eng, 2)
    still_running = eng.spawn()[0]
    eng.claim()

    # age counts from the finish: 100 s after it, a 95 s ttl removes only `old`
    eng.advance(100 - 10)
    assert eng.one("select teguh.cleanup_tasks('q', 3000, 100)") == 0
    assert eng.one("select teguh.cleanup_tasks('q', 95, 100)") == 1
    assert {r[0] for r in eng.rows("select task_id from teguh.t_q")} == {*recent, still_running}
    assert eng.count("c") == 0
    eng.advance(1000)
    assert eng.one("select teguh.cleanup_tasks('q', 0, 1)") == 1
    assert eng.one("select teguh.cleanup_tasks('q', 0, 100)") == 1
    assert eng.one("select count(*) from teguh.t_q") == 1  # the running one stays


def test_cleanup_all_queues_uses_queue_retention(eng: Engine) -> None:
    finish(eng, 3)
    eng.conn.execute("select teguh.emit_event('q', 'old')")
    eng.conn.execute("update teguh.queues set cleanup_ttl_seconds = 60 where queue_name = 'q'")
    # one row per queue, the Go reference's (queue_name, tasks_deleted) first
    assert eng.rows("select * from teguh.cleanup_all_queues()") == [("q", 0, 0, None)]
    eng.advance(61)
    assert eng.rows("select queue_name, tasks_deleted from teguh.cleanup_all_queues('q')") == [
        ("q", 3)
    ]
    assert eng.count("e") == 0


def test_queue_stats(eng: Engine) -> None:
    finish(eng, 2)
    eng.spawn()
    eng.spawn()
    eng.claim()
    eng.advance(5)
    row = eng.one("select * from teguh.queue_stats('q')")
    assert row == ("q", 1, 1, 0, 2, 0, 0, 5.0, 1, None, 0)
