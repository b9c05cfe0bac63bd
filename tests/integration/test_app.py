"""The App against a real database: spawn paths, defaults, hooks, middleware, bad input."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import psycopg
import pytest

import teguh
from tests.integration.conftest import wait_state


def count_tasks(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("select count(*) from teguh.t_q").fetchone()
    assert row is not None
    return int(row[0])


def test_spawning_by_name_applies_the_declared_defaults(app: teguh.App, queue: str) -> None:
    @app.task(queue="q", name="twice", max_attempts=2, priority=3)
    def twice(ctx: teguh.TaskContext) -> None:
        return None

    by_name = app.client.spawn_task(queue, "twice", {})
    info = app.client.get_task(queue, by_name.task_id)
    assert info is not None
    assert (info.max_attempts, info.priority) == (2, 3)
    overridden = app.client.spawn_task(queue, "twice", {}, max_attempts=4)
    assert app.client.get_task(queue, overridden.task_id).max_attempts == 4  # type: ignore[union-attr]
    # a bare Client knows no tasks: the engine's default
    with teguh.Client(app.conninfo) as bare:
        plain = bare.spawn_task(queue, "twice", {})
        assert bare.get_task(queue, plain.task_id).max_attempts == 5  # type: ignore[union-attr]


def test_params_of_the_wrong_shape_fail_at_spawn(
    app: teguh.App, queue: str, conn: psycopg.Connection[Any]
) -> None:
    @app.task(queue="q", name="add")
    def add(ctx: teguh.TaskContext, a: int, b: int) -> int:
        return a + b

    with pytest.raises(TypeError, match="missing a required argument"):
        add.spawn(a=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="takes a JSON object"):
        app.client.spawn_task(queue, "add", [1, 2])
    with pytest.raises(TypeError, match="unexpected keyword argument 'c'"):
        app.client.spawn_tasks(queue, "add", [{"a": 1, "b": 2}, {"a": 1, "b": 2, "c": 3}])
    assert count_tasks(conn) == 0


def test_before_spawn_runs_on_every_spawn_path(
    app: teguh.App, queue: str, make_worker: Any
) -> None:
    seen: list[tuple[str, Any]] = []

    @app.before_spawn
    def trace(task_name: str, params: Any, options: dict[str, Any]) -> dict[str, Any]:
        seen.append((task_name, params))
        return {**options, "headers": {"trace": "t1"}}

    @app.task(queue="q", name="child")
    def child(ctx: teguh.TaskContext) -> Any:
        return ctx.headers

    @app.task(queue="q", name="parent")
    def parent(ctx: teguh.TaskContext) -> str:
        return str(ctx.step("spawn", lambda: str(ctx.spawn("child").task_id)))

    spawned = parent.spawn()
    app.client.spawn_task(queue, "child", {})
    app.client.spawn_tasks(queue, "child", [{}, {}])
    make_worker()
    child_id = wait_state(app.client, spawned.task_id).completed_payload
    assert wait_state(app.client, uuid.UUID(child_id)).completed_payload == {"trace": "t1"}
    assert [name for name, _ in seen] == ["parent", "child", "child", "child"]
    assert seen[2] == ("child", [{}, {}])  # spawn_tasks: the hook sees the list


def test_spawn_many_is_atomic(app: teguh.App, queue: str, conn: psycopg.Connection[Any]) -> None:
    @app.task(queue="q", name="one")
    def one(ctx: teguh.TaskContext, n: int) -> int:
        return n

    with pytest.raises(TypeError):
        one.spawn_many([{"n": 1}, {"m": 2}])
    assert count_tasks(conn) == 0
    assert len(one.spawn_many([{"n": 1}, {"n": 2}])) == 2


def test_spawn_joins_the_callers_transaction(
    app: teguh.App, queue: str, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    @app.task(queue="q", name="tx")
    def tx(ctx: teguh.TaskContext) -> None:
        return None

    with psycopg.connect(dsn) as own:
        tx.configure(conn=own).spawn()
        own.rollback()
    assert count_tasks(conn) == 0
    with psycopg.connect(dsn) as own:
        tx.configure(conn=own, priority=1).spawn()
    assert count_tasks(conn) == 1


def test_middleware_wraps_every_execution_in_order(app: teguh.App, queue: str) -> None:
    order: list[str] = []

    @app.use
    def outer(ctx: teguh.TaskContext, call_next: Any) -> Any:
        order.append("outer")
        return {"outer": call_next(ctx)}

    @app.use
    def inner(ctx: teguh.TaskContext, call_next: Any) -> Any:
        order.append("inner")
        return call_next(ctx)

    app.use(teguh.LifecycleLogging())

    @app.task(queue="q", name="mw")
    def mw(ctx: teguh.TaskContext) -> str:
        order.append("handler")
        return "ok"

    spawned = mw.spawn()
    assert app.worker([queue]).drain() == 1
    assert order == ["outer", "inner", "handler"]
    assert app.client.get_task_result(queue, spawned.task_id).completed_payload == {  # type: ignore[union-attr]
        "outer": "ok"
    }


@pytest.mark.parametrize(
    ("call", "error", "argument"),
    [
        (lambda c: c.spawn_task(5, "t"), TypeError, None),
        (lambda c: c.spawn_task("q", None), TypeError, None),
        (lambda c: c.spawn_task("q", "t", {"a": "x\u0000y"}), teguh.InvalidArgument, "params"),
        (lambda c: c.spawn_task("q", "t", {}, max_attempts=2**40), teguh.InvalidArgument, None),
        (lambda c: c.spawn_tasks("q", "t", "abc"), TypeError, None),
        (lambda c: c.spawn_tasks("q", "t", b"abc"), TypeError, None),
        (lambda c: c.claim_task("q", "w", qty=2**40), teguh.InvalidArgument, "qty"),
        (lambda c: c.cancel_task("q", "not-a-uuid"), teguh.InvalidArgument, "task_id"),
        (lambda c: c.get_task("q", 12), TypeError, None),
        (lambda c: c.emit_event("q", "e\u0000"), teguh.InvalidArgument, "event_name"),
    ],
)
def test_wrong_python_values_are_named_before_anything_is_sent(
    client: teguh.Client,
    queue: str,
    conn: psycopg.Connection[Any],
    call: Any,
    error: type[Exception],
    argument: str | None,
) -> None:
    with pytest.raises(error) as caught:
        call(client)
    if argument is not None:
        assert caught.value.argument == argument  # type: ignore[attr-defined]
    assert count_tasks(conn) == 0


def test_claim_task_fails_an_undecodable_row_and_returns_the_rest(
    dsn: str, queue: str, conn: psycopg.Connection[Any]
) -> None:
    import json

    def picky(data: str | bytes) -> Any:
        value = json.loads(data)
        if isinstance(value, dict) and value.get("bad"):
            raise ValueError("cannot read this one")
        return value

    with teguh.Client(dsn, json_loads=picky) as client:
        client.spawn_tasks(queue, "t", [{"i": 1}, {"bad": True}, {"i": 3}])
        runs = client.claim_task(queue, "w", qty=3)
        assert sorted(r.params["i"] for r in runs) == [1, 3]
        row = conn.execute(
            "select state, last_failure->>'message' from teguh.t_q where params ? 'bad'"
        ).fetchone()
        assert row is not None
        assert row[0] in ("pending", "failed")  # failed this attempt (retried by the strategy)
        assert "cannot read this one" in row[1]


def test_app_opens_nothing_until_used(dsn: str, conn: psycopg.Connection[Any]) -> None:
    def sessions() -> int:
        row = conn.execute(
            "select count(*) from pg_stat_activity where datname = current_database()"
            " and pid <> pg_backend_pid()"
        ).fetchone()
        assert row is not None
        return int(row[0])

    before = sessions()
    app = teguh.App(dsn)

    @app.task(queue="q", name="lazy")
    def lazy(ctx: teguh.TaskContext) -> None:
        return None

    app.worker(["q"])
    assert sessions() == before
    with app:
        assert app.client.version() == teguh.SCHEMA_VERSION
    assert threading.active_count() >= 1
