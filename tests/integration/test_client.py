"""Client methods against a real database: spawn, results, errors, transactions."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

import teguh
from teguh import _engine
from teguh.embedded import EmbeddedPostgres


def test_spawn_and_result_round_trip(client: teguh.Client, queue: str) -> None:
    spawned = client.spawn_task(queue, "add", {"a": [1, "x", None, {"b": True}]})
    assert spawned.created
    assert spawned.attempt == 1
    [run] = client.claim_task(queue, "w1", qty=5)
    assert run.task_id == spawned.task_id
    assert run.params == {"a": [1, "x", None, {"b": True}]}
    assert run.task_name == "add"
    assert client.claim_task(queue, "w1") == []
    client.complete_run(queue, run.run_id, {"sum": 3, "list": [1.5, "é"]})
    result = client.get_task_result(queue, spawned.task_id)
    assert result is not None
    assert result.state == "completed"
    assert result.completed_payload == {"sum": 3, "list": [1.5, "é"]}
    assert result.attempts == 1
    assert client.get_task_result(queue, uuid.uuid4()) is None
    info = client.get_task(queue, spawned.task_id)
    assert info is not None
    assert info.task_name == "add"
    assert info.params == {"a": [1, "x", None, {"b": True}]}


def test_non_json_params_raise_before_writing(client: teguh.Client, queue: str) -> None:
    with pytest.raises(TypeError, match="params is not JSON-serializable"):
        client.spawn_task(queue, "t", {"when": object()})
    with pytest.raises(TypeError, match="not JSON-serializable"):
        client.spawn_tasks(queue, "t", [{"ok": 1}, {"bad": {1, 2}}])
    [stats] = client.queue_stats(queue)
    assert stats.pending == 0
    assert client.claim_task(queue, "w") == []


def test_spawn_tasks_is_ordered_and_idempotent(client: teguh.Client, queue: str) -> None:
    results = client.spawn_tasks(queue, "t", [{"i": i} for i in range(5)], priority=3)
    assert len(results) == 5
    assert len({r.task_id for r in results}) == 5
    runs = client.claim_task(queue, "w", qty=10)
    assert [r.params["i"] for r in runs] == [0, 1, 2, 3, 4]
    first = client.spawn_task(queue, "t", {}, idempotency_key="k1")
    again = client.spawn_task(queue, "t", {}, idempotency_key="k1")
    assert first.created
    assert not again.created
    assert again.task_id == first.task_id


def test_invalid_argument_names_the_argument(client: teguh.Client, queue: str) -> None:
    with pytest.raises(teguh.InvalidArgument) as caught:
        client.spawn_task(queue, "t", {}, max_attempts=0)
    assert caught.value.argument == "max_attempts"
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value.__cause__, psycopg.Error)


def test_unknown_queue(client: teguh.Client) -> None:
    with pytest.raises(teguh.QueueNotFound):
        client.spawn_task("nope", "t", {})


def test_queues(client: teguh.Client) -> None:
    client.create_queue("b_queue")
    client.create_queue("a_queue")
    client.create_queue("a_queue")
    assert client.list_queues() == ["a_queue", "b_queue"]
    client.drop_queue("a_queue")
    assert client.list_queues() == ["b_queue"]


def test_worker_calls_on_a_cancelled_task_raise_task_cancelled(
    client: teguh.Client, queue: str
) -> None:
    spawned = client.spawn_task(queue, "t", {})
    [run] = client.claim_task(queue, "w")
    client.cancel_task(queue, spawned.task_id)
    with pytest.raises(teguh.TaskCancelled):
        client.complete_run(queue, run.run_id, 1)
    with pytest.raises(teguh.TaskCancelled):
        client.extend_claim(queue, run.run_id, 10)
    result = client.get_task_result(queue, spawned.task_id)
    assert result is not None
    assert result.state == "cancelled"
    assert result.cancelled_at is not None
    assert client.claim_task(queue, "w") == []


def test_unknown_run_is_not_active(client: teguh.Client, queue: str) -> None:
    with pytest.raises(teguh.RunNotActive):
        client.complete_run(queue, uuid.uuid4(), None)


def test_retry_running_task_is_invalid_state(client: teguh.Client, queue: str) -> None:
    spawned = client.spawn_task(queue, "t", {})
    client.claim_task(queue, "w")
    with pytest.raises(teguh.InvalidState):
        client.retry_task(queue, spawned.task_id)
    with pytest.raises(teguh.TaskNotFound):
        client.retry_task(queue, uuid.uuid4())


def test_fail_and_manual_retry(client: teguh.Client, queue: str) -> None:
    spawned = client.spawn_task(queue, "t", {}, max_attempts=1)
    [run] = client.claim_task(queue, "w")
    client.fail_run(queue, run.run_id, {"name": "Boom", "message": "x"})
    result = client.get_task_result(queue, spawned.task_id)
    assert result is not None
    assert result.state == "failed"
    info = client.get_task(queue, spawned.task_id)
    assert info is not None
    assert info.last_failure["name"] == "Boom"
    again = client.retry_task(queue, spawned.task_id)
    assert again.task_id == spawned.task_id
    assert again.attempt == 2


def test_checkpoints_and_events(client: teguh.Client, queue: str) -> None:
    spawned = client.spawn_task(queue, "t", {})
    [run] = client.claim_task(queue, "w")
    client.set_checkpoint(queue, spawned.task_id, "s1", {"v": 1}, run.run_id, extend_claim_by=30)
    assert client.get_checkpoint(queue, spawned.task_id, "s1") == {"v": 1}
    assert client.get_checkpoints(queue, spawned.task_id, run.run_id) == {"s1": {"v": 1}}
    client.emit_event(queue, "ev", None)
    waited = client.await_event_in_run(queue, spawned.task_id, run.run_id, "w1", "ev")
    assert waited == teguh.WaitResult(should_suspend=False, payload=None, timed_out=False)
    waited = client.await_event_in_run(queue, spawned.task_id, run.run_id, "w2", "later", timeout=5)
    assert waited.should_suspend


def test_transactional_spawn_commit_and_rollback(
    client: teguh.Client, queue: str, make_conn: Any
) -> None:
    listener = make_conn()
    listener.execute("listen teguh_q")
    app = make_conn(autocommit=False)

    with app.transaction():
        rolled_back = client.spawn_task(queue, "t", {"n": 1}, conn=app)
        raise psycopg.Rollback
    assert client.get_task_result(queue, rolled_back.task_id) is None
    assert client.claim_task(queue, "w") == []
    assert list(listener.notifies(timeout=0.2)) == []

    with app.transaction():
        committed = client.spawn_task(queue, "t", {"n": 2}, conn=app)
        # not visible to others, and no notification, before the commit
        assert client.get_task_result(queue, committed.task_id) is None
        assert list(listener.notifies(timeout=0.05)) == []
    assert list(listener.notifies(timeout=5, stop_after=1))
    result = client.get_task_result(queue, committed.task_id)
    assert result is not None
    assert result.state == "pending"


def test_ticker_and_stats(client: teguh.Client, queue: str) -> None:
    assert client.ticker(queue) == 0
    assert client.next_wake_at(queue) is None
    client.spawn_task(queue, "t", {}, delay=60)
    wake = client.next_wake_at(queue)
    assert wake is not None
    assert wake > client.current_time()
    [stats] = client.queue_stats(queue)
    assert stats.queue_name == queue
    assert client.cleanup_tasks(queue, 3600, 10) == 0
    # the engine returns a row per queue; the client sums the tasks deleted
    assert client.cleanup_all_queues() == 0
    assert client.cleanup_all_queues(queue) == 0
    assert client.version() == teguh.SCHEMA_VERSION


def test_translate_custom_sqlstates(conn: psycopg.Connection[Any]) -> None:
    for state, cls in [
        ("AB001", teguh.TaskCancelled),
        ("AB002", teguh.RunNotActive),
        ("P0002", teguh.TaskNotFound),
        ("42704", teguh.QueueNotFound),
        ("55000", teguh.InvalidState),
    ]:
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(f"do $$ begin raise exception 'boom' using errcode = '{state}'; end $$")
        mapped = _engine.translate(caught.value)
        assert isinstance(mapped, cls), state
        assert str(mapped) == "boom"
    with pytest.raises(psycopg.Error) as caught:
        conn.execute("select 1/0")
    assert _engine.translate(caught.value) is None


def test_schema_missing_and_outdated(pg_server: EmbeddedPostgres) -> None:
    name = f"bare_{uuid.uuid4().hex[:8]}"
    pg_server.create_database(name)
    dsn = pg_server.dsn(name)
    with teguh.Client(dsn, max_size=2) as client:
        with pytest.raises(teguh.SchemaMissing, match="teguh install"):
            client.list_queues()
        client.install()
        client.install()  # idempotent
        assert client.check_schema() == teguh.SCHEMA_VERSION
        client.create_queue("q")
        assert client.list_queues() == ["q"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "create or replace function teguh.version() returns text"
            " language sql as $$ select '0' $$"
        )
    with teguh.Client(dsn, max_size=2) as client:
        with pytest.raises(teguh.SchemaOutdated, match="run `teguh install`") as caught:
            client.list_queues()
        assert caught.value.installed == "0"
