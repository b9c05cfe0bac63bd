"""Spawn, claim, complete, fail, retry and sleep, called directly from SQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg.types.json import Jsonb

from teguh import schema

from .conftest import Engine, raises_sqlstate


def test_spawn_claim_complete_round_trip(eng: Engine) -> None:
    task_id, run_id, attempt, created = eng.spawn("send", {"to": "a@b"}, headers={"trace": "x"})
    assert (attempt, created) == (1, True)
    assert eng.state(task_id) == "pending"

    [run] = eng.claim()
    assert run[:5] == (run_id, task_id, 1, "send", {"to": "a@b"})
    assert run[6] == 5 and run[7] == {"trace": "x"} and run[8:] == (None, None)
    assert eng.state(task_id) == "running"
    assert eng.count("p") == 0 and eng.count("r") == 1

    eng.complete(run_id, {"sent": True})
    result = eng.one("select * from teguh.get_task_result('q', %s)", task_id)
    assert result[1:4] == ("completed", 1, {"sent": True})
    assert eng.count("r") == 0
    assert eng.claim() == []


def test_get_task_result_of_unknown_task_is_no_row(eng: Engine) -> None:
    assert eng.rows("select * from teguh.get_task_result('q', gen_random_uuid())") == []


def test_claim_respects_qty_priority_and_fifo(eng: Engine) -> None:
    low = [eng.spawn("t", i)[0] for i in range(3)]
    high = eng.spawn("t", "hi", priority=10)[0]
    runs = eng.claim(qty=3)
    assert [r[1] for r in runs] == [high, low[0], low[1]]
    assert [r[1] for r in eng.claim(qty=3)] == [low[2]]


def test_delayed_spawn_is_claimable_only_when_due(eng: Engine) -> None:
    task_id = eng.spawn(delay_seconds=60)[0]
    assert eng.claim() == []
    assert eng.one("select teguh.next_wake_at('q')") == eng.now + timedelta(seconds=60)
    eng.advance(59)
    assert eng.claim() == []
    eng.advance(1)
    assert [r[1] for r in eng.claim()] == [task_id]


def test_available_at_option(eng: Engine) -> None:
    when = eng.now + timedelta(hours=1)
    task_id = eng.spawn(available_at=when.isoformat())[0]
    eng.set_time(when - timedelta(seconds=1))
    assert eng.claim() == []
    eng.set_time(when)
    assert [r[1] for r in eng.claim()] == [task_id]


def test_idempotency_key_returns_existing_task(eng: Engine) -> None:
    first = eng.spawn("t", 1, idempotency_key="order-1")
    again = eng.spawn("t", 2, idempotency_key="order-1")
    assert again[0] == first[0] and again[3] is False
    assert eng.count("t") == 1 and eng.count("p") == 1


def test_batch_spawn_returns_ids_in_input_order(eng: Engine) -> None:
    rows = eng.rows(
        "select * from teguh.spawn_tasks('q', 'b', %s, %s)",
        Jsonb([{"i": i} for i in range(50)]),
        Jsonb({"priority": 3}),
    )
    assert len(rows) == 50 and all(r[2] == 1 and r[3] for r in rows)
    runs = eng.claim(qty=50)
    assert [r[1] for r in runs] == [r[0] for r in rows]
    assert [r[4] for r in runs] == [{"i": i} for i in range(50)]


def test_batch_spawn_idempotency_keys(eng: Engine) -> None:
    existing = eng.spawn("b", 0, idempotency_key="k0")[0]
    rows = eng.rows(
        "select * from teguh.spawn_tasks('q', 'b', %s, %s)",
        Jsonb([1, 2, 3, 4]),
        Jsonb({"idempotency_keys": ["k0", "k1", None, "k1"]}),
    )
    assert rows[0][0] == existing and rows[0][3] is False
    assert rows[1][3] is True and rows[2][3] is True
    assert rows[3][0] == rows[1][0] and rows[3][3] is False
    assert eng.count("t") == 3


def test_batch_spawn_is_all_or_nothing(eng: Engine) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        eng.rows(
            "select * from teguh.spawn_tasks('q', 'b', %s, %s)",
            Jsonb([1, 2]),
            Jsonb({"idempotency_keys": ["a"]}),
        )
    assert eng.count("t") == 0
    assert eng.rows("select * from teguh.spawn_tasks('q', 'b', '[]')") == []


def test_failure_retries_with_backoff_then_fails(eng: Engine) -> None:
    task_id = eng.spawn(
        max_attempts=3, retry_strategy={"kind": "exponential", "base_seconds": 10, "factor": 3}
    )[0]
    [run] = eng.claim()
    eng.fail(run[0], {"name": "E1"})
    assert eng.task(task_id)["state"] == "pending"
    assert eng.task(task_id)["last_failure"] == {"name": "E1"}
    eng.advance(9)
    assert eng.claim() == []
    eng.advance(1)
    [run2] = eng.claim()
    assert run2[2] == 2 and run2[0] != run[0]
    eng.fail(run2[0])
    eng.advance(29)
    assert eng.claim() == []
    eng.advance(1)
    [run3] = eng.claim()
    assert run3[2] == 3
    eng.fail(run3[0], {"name": "Final"})
    task = eng.task(task_id)
    assert (task["state"], task["attempts"], task["last_failure"]) == (
        "failed",
        3,
        {"name": "Final"},
    )
    assert eng.count("p") == 0 and eng.count("r") == 0


@pytest.mark.parametrize(
    ("strategy", "delays"),
    [
        ({"kind": "none"}, [0, 0, 0]),
        ({"kind": "fixed", "base_seconds": 7}, [7, 7, 7]),
        ({"kind": "exponential", "base_seconds": 2, "factor": 2, "max_seconds": 5}, [2, 4, 5]),
    ],
)
def test_retry_strategies(eng: Engine, strategy: dict[str, Any], delays: list[int]) -> None:
    eng.spawn(max_attempts=4, retry_strategy=strategy)
    for delay in delays:
        [run] = eng.claim()
        eng.fail(run[0])
        due = eng.one("select teguh.next_wake_at('q')")
        assert due == eng.now + timedelta(seconds=delay)
        eng.set_time(due)


def test_fail_with_explicit_retry_at(eng: Engine) -> None:
    eng.spawn()
    [run] = eng.claim()
    eng.fail(run[0], retry_at=eng.now + timedelta(seconds=3))
    assert eng.one("select teguh.next_wake_at('q')") == eng.now + timedelta(seconds=3)


def test_sleep_keeps_run_and_attempt(eng: Engine) -> None:
    task_id = eng.spawn()[0]
    [run] = eng.claim()
    eng.conn.execute(
        "select teguh.schedule_run('q', %s, %s)", (run[0], eng.now + timedelta(seconds=5))
    )
    assert eng.state(task_id) == "sleeping" and eng.count("r") == 0
    assert eng.claim() == []
    eng.advance(5)
    [again] = eng.claim()
    assert (again[0], again[2]) == (run[0], 1)
    assert eng.task(task_id)["attempts"] == 1


def test_checkpoints_round_trip(eng: Engine) -> None:
    task_id = eng.spawn()[0]
    [run] = eng.claim()
    eng.conn.execute(
        "select teguh.set_task_checkpoint_state('q', %s, 'step-a', %s, %s, 60)",
        (task_id, Jsonb([1, 2]), run[0]),
    )
    assert eng.one("select teguh.get_task_checkpoint_state('q', %s, 'step-a')", task_id) == [1, 2]
    assert eng.one("select teguh.get_task_checkpoint_state('q', %s, 'nope')", task_id) is None
    eng.conn.execute(
        "select teguh.set_task_checkpoint_state('q', %s, 'step-a', %s, %s)",
        (task_id, Jsonb("v2"), run[0]),
    )
    assert eng.rows(
        "select * from teguh.get_task_checkpoint_states('q', %s, %s)", task_id, run[0]
    ) == [("step-a", "v2")]
    # the lease was extended by the checkpoint write
    assert eng.one("select expires_at from teguh.r_q") == eng.now + timedelta(seconds=60)


def test_checkpoints_survive_a_failed_attempt(eng: Engine) -> None:
    task_id = eng.spawn(retry_strategy={"kind": "none"})[0]
    [run] = eng.claim()
    eng.conn.execute(
        "select teguh.set_task_checkpoint_state('q', %s, 's1', '1', %s)", (task_id, run[0])
    )
    eng.fail(run[0])
    [run2] = eng.claim()
    assert eng.rows(
        "select * from teguh.get_task_checkpoint_states('q', %s, %s)", task_id, run2[0]
    ) == [("s1", 1)]
    # the old run may no longer write
    with raises_sqlstate("AB002"):
        eng.conn.execute(
            "select teguh.set_task_checkpoint_state('q', %s, 's2', '2', %s)", (task_id, run[0])
        )


def test_manual_retry_of_failed_task(eng: Engine) -> None:
    task_id = eng.spawn(max_attempts=1)[0]
    [run] = eng.claim()
    eng.fail(run[0])
    assert eng.state(task_id) == "failed"
    row = eng.one("select * from teguh.retry_task('q', %s)", task_id)
    # created: a new run, as the Go reference reports it
    assert row[0] == task_id and row[2] == 2 and row[3] is True
    [run2] = eng.claim()
    assert run2[2] == 2 and run2[6] == 2
    eng.complete(run2[0], "ok")
    assert eng.state(task_id) == "completed"


def test_manual_retry_spawn_new_and_wrong_state(eng: Engine) -> None:
    task_id = eng.spawn("t", {"a": 1})[0]
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
        eng.one("select * from teguh.retry_task('q', %s)", task_id)
    new = eng.one("select * from teguh.retry_task('q', %s, '{\"spawn_new\": true}')", task_id)
    assert new[0] != task_id and new[3] is True
    assert eng.task(new[0])["params"] == {"a": 1}
    with pytest.raises(psycopg.errors.NoDataFound):
        eng.one("select * from teguh.retry_task('q', gen_random_uuid())")


def test_lease_expiry_is_recovered_by_claim(eng: Engine) -> None:
    task_id = eng.spawn(retry_strategy={"kind": "none"})[0]
    [run] = eng.claim(timeout=10)
    eng.advance(11)
    [run2] = eng.claim(worker="w2")
    assert run2[1] == task_id and run2[2] == 2
    assert eng.task(task_id)["last_failure"]["name"] == "LeaseExpired"
    with raises_sqlstate("AB002"):
        eng.complete(run[0])


def test_queue_management(conn: psycopg.Connection[Any]) -> None:
    conn.execute("select teguh.create_queue('a_1')")
    conn.execute("select teguh.create_queue('a_1')")  # idempotent
    conn.execute("select teguh.create_queue('b')")
    names = conn.execute("select queue_name from teguh.list_queues()").fetchall()
    assert names == [("a_1",), ("b",)]
    conn.execute("select teguh.drop_queue('a_1')")
    conn.execute("select teguh.drop_queue('a_1')")
    assert conn.execute("select queue_name from teguh.list_queues()").fetchall() == [("b",)]
    assert conn.execute("select to_regclass('teguh.t_a_1')").fetchone() == (None,)


def test_schema_is_idempotent_and_versioned(conn: psycopg.Connection[Any], queue: str) -> None:
    from tests.conftest import SCHEMA_FILE

    conn.execute("select * from teguh.spawn_task('q', 't', '{}')")
    conn.execute(SCHEMA_FILE.read_bytes())
    assert conn.execute("select count(*) from teguh.t_q").fetchone() == (1,)
    assert conn.execute("select teguh.version()").fetchone() == (schema.SCHEMA_VERSION,)


def test_complete_runs_batch_reports_cancelled_and_lost(eng: Engine) -> None:
    ids = [eng.spawn("t", i)[0] for i in range(4)]
    runs = eng.claim(qty=4)
    eng.conn.execute("select teguh.cancel_task('q', %s)", (ids[1],))
    unknown = UUID("00000000-0000-7000-8000-000000000000")
    rows = eng.rows(
        "select * from teguh.complete_runs('q', %s::uuid[], %s::jsonb[])",
        [r[0] for r in runs] + [unknown],
        [Jsonb({"n": i}) for i in range(5)],
    )
    assert sorted(rows, key=str) == sorted([(runs[1][0], "cancelled"), (unknown, "lost")], key=str)
    for i in (0, 2, 3):
        assert eng.task(ids[i])["completed_payload"] == {"n": i}
    assert eng.state(ids[1]) == "cancelled"
    # a second completion of the same runs is refused
    again = eng.rows("select * from teguh.complete_runs('q', %s::uuid[])", [runs[0][0]])
    assert again == [(runs[0][0], "lost")]


def test_drop_queue_removes_its_functions_and_reinstall_regenerates_them(
    conn: psycopg.Connection[Any], queue: str
) -> None:
    from tests.conftest import SCHEMA_FILE

    def functions() -> list[str]:
        return [
            r[0]
            for r in conn.execute(
                "select proname from pg_proc where pronamespace = 'teguh'::regnamespace"
                " and proname like '%%\\_q' order by proname"
            )
        ]

    assert functions() == ["_claim_q", "_done_q", "_spawn_q", "_step_q", "_wake_q"]
    conn.execute("drop function teguh._claim_q")  # as if an upgrade replaced the template
    conn.execute(SCHEMA_FILE.read_bytes())
    assert functions() == ["_claim_q", "_done_q", "_spawn_q", "_step_q", "_wake_q"]
    conn.execute("select teguh.drop_queue('q')")
    assert functions() == []


def test_a_non_retryable_failure_fails_the_task_now(eng: Engine) -> None:
    task_id = eng.spawn(max_attempts=5)[0]
    [run] = eng.claim()
    reason = {"name": "PermanentError", "message": "bad input", "retryable": False}
    eng.fail(run[0], reason)
    info = eng.task(task_id)
    assert (info["state"], info["attempts"]) == ("failed", 1)
    assert info["last_failure"] == reason
    assert eng.count("p") == 0 and eng.count("r") == 0
    assert info["finished_at"] == eng.now


def test_retryable_true_or_absent_retries(eng: Engine) -> None:
    task_id = eng.spawn(max_attempts=3, retry_strategy={"kind": "none"})[0]
    [run] = eng.claim()
    eng.fail(run[0], {"name": "Flaky", "retryable": True})
    assert eng.state(task_id) == "pending"
    [run] = eng.claim()
    eng.fail(run[0], {"name": "Flaky"})
    assert eng.state(task_id) == "pending"
    [run] = eng.claim()
    with raises_sqlstate("22023", "reason.retryable"):
        eng.fail(run[0], {"name": "Flaky", "retryable": "no"})
    assert eng.state(task_id) == "running"


def test_a_released_run_is_pending_not_sleeping_and_keeps_its_attempt(eng: Engine) -> None:
    task_id = eng.spawn(max_attempts=1)[0]
    [run] = eng.claim()
    reason = {"name": "NoHandler", "message": "worker w1 has no handler for task 't'"}
    eng.conn.execute(
        "select teguh.release_run('q', %s, %s, %s)",
        (run[0], eng.now + timedelta(seconds=5), Jsonb(reason)),
    )
    info = eng.task(task_id)
    assert (info["state"], info["attempts"], info["last_failure"]) == ("pending", 1, reason)
    assert eng.claim() == []
    eng.advance(5)
    [again] = eng.claim()
    assert (again[0], again[2]) == (run[0], 1)  # same run, same attempt: none used up
    eng.conn.execute("select teguh.release_run('q', %s)", (again[0],))
    [third] = eng.claim()
    eng.complete(third[0])
    assert eng.state(task_id) == "completed"
    with raises_sqlstate("AB002"):
        eng.conn.execute("select teguh.release_run('q', %s)", (third[0],))
