"""Regression tests for defects found in review, each reproduced before its fix."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from .conftest import Engine
from .test_races import Blocked


def test_long_queue_names_get_their_own_functions_and_indexes(
    conn: psycopg.Connection[Any],
) -> None:
    # 55-byte names that differ only at the end: every generated name must fit in
    # 63 bytes, or PostgreSQL truncates two queues' names to the same one.
    a, b = "a" * 53 + "aa", "a" * 53 + "bb"
    for name in (a, b):
        conn.execute("select teguh.create_queue(%s)", (name,))
    for name in (a, b):
        eng = Engine(conn, name)
        task_id = eng.spawn("t")[0]
        [run] = eng.claim()
        conn.execute(
            "select teguh.set_task_checkpoint_state(%s, %s, 's', '1', %s)", (name, task_id, run[0])
        )
        eng.complete(run[0], {"queue": name[-2:]})
        assert eng.task(task_id)["completed_payload"] == {"queue": name[-2:]}

    def objects(kind: str) -> int:
        sql = (
            "select count(*) from pg_proc where pronamespace = 'teguh'::regnamespace"
            " and proname like '%%aaaa%%'"
            if kind == "function"
            else "select count(*) from pg_indexes"
            " where schemaname = 'teguh' and indexname like '%%aaaa%%'"
        )
        row = conn.execute(sql).fetchone()
        assert row is not None
        return int(row[0])

    assert objects("function") == 10  # five per queue
    indexes = objects("index")
    conn.execute("select teguh.drop_queue(%s)", (a,))
    assert objects("function") == 5
    assert objects("index") == indexes // 2


def test_spawn_tasks_racing_on_a_key_returns_the_winner(eng: Engine, make_engine: Any) -> None:
    first = make_engine()
    first.conn.autocommit = False
    [(winner, *_)] = first.rows(
        "select * from teguh.spawn_tasks('q', 't', %s, %s)",
        Jsonb([{}]),
        Jsonb({"idempotency_keys": ["k"]}),
    )
    second = Blocked(
        eng,
        make_engine(),
        lambda e: e.rows(
            "select * from teguh.spawn_tasks('q', 't', %s, %s)",
            Jsonb([{}]),
            Jsonb({"idempotency_keys": ["k"]}),
        ),
    )
    second.wait_until_blocked()  # on the uncommitted key
    first.conn.commit()
    [(task_id, run_id, attempt, created)] = second.join()
    assert second.error is None
    assert (task_id, created, attempt) == (winner, False, 1) and run_id is not None


def test_schedule_run_racing_a_resume_of_the_same_run(eng: Engine, make_engine: Any) -> None:
    # The same run id sleeps and is resumed by one session while a second
    # schedule_run of it waits: the second must act on the new lease.
    task_id = eng.spawn()[0]
    [run] = eng.claim()
    other = make_engine()
    other.conn.autocommit = False
    other.conn.execute("select teguh.schedule_run('q', %s, teguh.current_time())", (run[0],))
    late = Blocked(
        eng,
        make_engine(),
        lambda e: e.conn.execute(
            "select teguh.schedule_run('q', %s, teguh.current_time())", (run[0],)
        ),
    )
    late.wait_until_blocked()
    assert other.claim()[0][0] == run[0]
    other.conn.commit()
    late.join()
    assert late.error is None
    # sleeping with its wake-up queued and no lease left behind
    assert (eng.state(task_id), eng.count("p"), eng.count("r")) == ("sleeping", 1, 0)


def test_heartbeat_and_batched_completion_of_one_worker_do_not_deadlock(
    eng: Engine, make_engine: Any
) -> None:
    beat, done = make_engine(), make_engine()
    errors: list[BaseException] = []
    for _ in range(30):
        eng.conn.execute("select * from teguh.spawn_tasks('q', 't', %s)", (Jsonb([{}] * 200),))
        runs = [r[0] for r in eng.claim(qty=200, worker="w1")]
        start = threading.Barrier(2)

        def heartbeat(ids: list[Any] = runs, start: threading.Barrier = start) -> None:
            start.wait()
            for _ in range(5):
                try:
                    reported = beat.rows(
                        "select * from teguh.extend_claims('q', 'w1', %s, 30)", ids
                    )
                    # runs being completed right now are skipped, not called lost
                    assert all(status == "lost" for _run, status in reported)
                except BaseException as exc:
                    errors.append(exc)

        thread = threading.Thread(target=heartbeat)
        thread.start()
        start.wait()
        try:
            assert done.rows("select * from teguh.complete_runs('q', %s)", runs) == []
        except BaseException as exc:
            errors.append(exc)
        thread.join()
        assert errors == []
    assert eng.count("r") == 0
