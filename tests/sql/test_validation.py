"""Bad input: SQLSTATE 22023 (42704 for an unknown queue) naming the argument; nothing changes."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from .conftest import Engine


def assert_invalid(eng: Engine, sql: str, params: tuple[Any, ...], argument: str) -> None:
    before = eng.one("select (select count(*) from teguh.t_q) + (select count(*) from teguh.p_q)")
    with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
        eng.conn.execute(sql, params)
    assert info.value.diag.column_name == argument, str(info.value)
    assert argument.split(".")[0] in str(info.value)
    after = eng.one("select (select count(*) from teguh.t_q) + (select count(*) from teguh.p_q)")
    assert before == after


SPAWN = "select * from teguh.spawn_task('q', %s, %s, %s)"


@pytest.mark.parametrize(
    ("options", "argument"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 1.5}, "max_attempts"),
        ({"max_attempts": "3"}, "max_attempts"),
        ({"retry_strategy": {"kind": "linear"}}, "retry_strategy.kind"),
        ({"retry_strategy": {"kind": "fixed", "base_seconds": -1}}, "retry_strategy.base_seconds"),
        ({"retry_strategy": {"kind": "fixed", "jitter": 1}}, "retry_strategy"),
        ({"retry_strategy": "fast"}, "retry_strategy"),
        ({"headers": [1]}, "headers"),
        ({"priority": "high"}, "priority"),
        ({"cancellation": {"max_delay": 0}}, "cancellation.max_delay"),
        ({"cancellation": {"max_duration": -5}}, "cancellation.max_duration"),
        ({"cancellation": {"after": 1}}, "cancellation"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"idempotency_key": 5}, "idempotency_key"),
        ({"available_at": "tomorrow-ish"}, "available_at"),
        ({"available_at": 12}, "available_at"),
        ({"available_at": "2030-01-01T00:00:00Z", "delay_seconds": 1}, "available_at"),
        ({"delay_seconds": -1}, "delay_seconds"),
        ({"colour": "red"}, "options"),
    ],
)
def test_bad_spawn_options(eng: Engine, options: dict[str, Any], argument: str) -> None:
    assert_invalid(eng, SPAWN, ("t", Jsonb({}), Jsonb(options)), argument)


def test_options_must_be_an_object(eng: Engine) -> None:
    assert_invalid(eng, SPAWN, ("t", Jsonb({}), Jsonb([1])), "options")


@pytest.mark.parametrize("name", ["", None])
def test_empty_task_name(eng: Engine, name: str | None) -> None:
    assert_invalid(eng, SPAWN, (name, Jsonb({}), Jsonb({})), "task_name")


def test_batch_params_must_be_an_array(eng: Engine) -> None:
    assert_invalid(
        eng, "select * from teguh.spawn_tasks('q', 't', %s)", (Jsonb({"a": 1}),), "params"
    )


@pytest.mark.parametrize(
    ("sql", "params", "argument"),
    [
        ("select * from teguh.claim_task('q', '', 30, 1)", (), "worker_id"),
        ("select * from teguh.claim_task('q', 'w', -1, 1)", (), "claim_timeout"),
        # a null claim_timeout is the queue policy's lease_timeout (test_policies.py)
        ("select * from teguh.claim_task('q', 'w', 30, 0)", (), "qty"),
        ("select teguh.extend_claim('q', gen_random_uuid(), 0)", (), "extend_by"),
        ("select teguh.extend_claim('q', gen_random_uuid(), -3)", (), "extend_by"),
        ("select teguh.extend_claim('q', gen_random_uuid(), null)", (), "extend_by"),
        ("select * from teguh.extend_claims('q', 'w', null, 30)", (), "run_ids"),
        ("select teguh.fail_run('q', gen_random_uuid(), null)", (), "reason"),
        ("select teguh.schedule_run('q', gen_random_uuid(), null)", (), "wake_at"),
        ("select teguh.emit_event('q', '', '1')", (), "event_name"),
        (
            "select * from teguh.wait_event('q', gen_random_uuid(), gen_random_uuid(), 's', 'e', -1)",  # noqa: E501
            (),
            "timeout",
        ),
        (
            "select * from teguh.await_event('q', gen_random_uuid(), gen_random_uuid(), '', 'e')",
            (),
            "step_name",
        ),
        ("select teguh.cleanup_tasks('q', -1, 10)", (), "ttl_seconds"),
        ("select teguh.cleanup_tasks('q', 10, 0)", (), "limit"),
        (
            "select * from teguh.retry_task('q', gen_random_uuid(), '{\"spawn_new\": 1}')",
            (),
            "spawn_new",
        ),
        (
            "select * from teguh.retry_task('q', gen_random_uuid(), '{\"again\": true}')",
            (),
            "options",
        ),
    ],
)
def test_bad_worker_arguments(
    eng: Engine, sql: str, params: tuple[Any, ...], argument: str
) -> None:
    assert_invalid(eng, sql, params, argument)


@pytest.mark.parametrize("name", ["Bad", "1q", "a-b", "x" * 56, ""])
def test_invalid_queue_names(conn: psycopg.Connection[Any], name: str) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="invalid queue"):
        conn.execute("select teguh.create_queue(%s)", (name,))
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="invalid queue"):
        conn.execute("select * from teguh.spawn_task(%s, 't', '{}')", (name,))


def test_unknown_queue_is_named(conn: psycopg.Connection[Any]) -> None:
    for sql in (
        "select * from teguh.spawn_task('nope', 't', '{}')",
        "select * from teguh.claim_task('nope', 'w')",
        "select teguh.emit_event('nope', 'e')",
        "select teguh.next_wake_at('nope')",
        "select teguh.ticker('nope')",
    ):
        with pytest.raises(psycopg.errors.UndefinedObject, match='queue "nope" does not exist'):
            conn.execute(sql)


def test_null_params_are_stored_as_json_null(eng: Engine) -> None:
    eng.conn.execute("select * from teguh.spawn_task('q', 't', null)")
    assert eng.claim()[0][4] is None


def test_complete_runs_arguments(eng: Engine) -> None:
    assert_invalid(eng, "select * from teguh.complete_runs('q', null)", (), "run_ids")
    assert_invalid(
        eng,
        "select * from teguh.complete_runs('q', array[gen_random_uuid()], array['1'::jsonb, '2'])",
        (),
        "states",
    )
