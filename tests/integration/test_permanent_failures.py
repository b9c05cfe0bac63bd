"""Failures that must not retry: `teguh.PermanentError`, ``retry_on`` / ``dont_retry_on``
and params that do not fit the handler (issue 10)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

import teguh


def _run_one(app: teguh.App, queue: str, task: teguh.Task[Any, Any], **params: Any) -> Any:
    spawned = task.spawn(**params)
    app.worker([queue]).drain()
    info = app.client.get_task(queue, spawned.task_id)
    assert info is not None
    return info


def test_permanent_error_fails_now_whatever_attempts_are_left(app: teguh.App, queue: str) -> None:
    @app.task(name="charge", queue=queue, max_attempts=5, retry={"kind": "none"})
    def charge(ctx: teguh.TaskContext, card: str) -> None:
        raise teguh.PermanentError(f"card {card} was declined")

    info = _run_one(app, queue, charge, card="4242")
    assert (info.state, info.attempts) == ("failed", 1)
    assert info.last_failure["name"] == "PermanentError"
    assert info.last_failure["message"] == "card 4242 was declined"
    assert info.last_failure["retryable"] is False
    assert info.last_failure["not_retried"] == "PermanentError"
    assert "Traceback" in info.last_failure["traceback"]


def test_an_ordinary_exception_still_retries(app: teguh.App, queue: str) -> None:
    @app.task(name="flaky", queue=queue, max_attempts=3, retry={"kind": "none"})
    def flaky(ctx: teguh.TaskContext) -> None:
        raise ConnectionError("try again")

    info = _run_one(app, queue, flaky)
    assert (info.state, info.attempts) == ("failed", 3)
    assert "retryable" not in info.last_failure


@pytest.mark.parametrize(
    ("raised", "state", "attempts", "note"),
    [
        (ValueError, "failed", 1, "ValueError is in the task's dont_retry_on"),
        (KeyError, "failed", 1, "KeyError is in the task's dont_retry_on"),  # a LookupError
        (ConnectionError, "failed", 3, None),
    ],
)
def test_dont_retry_on(
    app: teguh.App,
    queue: str,
    raised: type[Exception],
    state: str,
    attempts: int,
    note: str | None,
) -> None:
    @app.task(
        name="t",
        queue=queue,
        max_attempts=3,
        retry={"kind": "none"},
        dont_retry_on=(ValueError, LookupError),
    )
    def t(ctx: teguh.TaskContext) -> None:
        raise raised("boom")

    info = _run_one(app, queue, t)
    assert (info.state, info.attempts) == (state, attempts)
    assert info.last_failure.get("not_retried") == note


def test_retry_on_retries_only_those_classes(app: teguh.App, queue: str) -> None:
    @app.task(
        name="fetch", queue=queue, max_attempts=3, retry={"kind": "none"}, retry_on=TimeoutError
    )
    def fetch(ctx: teguh.TaskContext, fail_with: str) -> None:
        raise {"timeout": TimeoutError, "value": ValueError}[fail_with]("x")

    retried = _run_one(app, queue, fetch, fail_with="timeout")
    assert (retried.state, retried.attempts) == ("failed", 3)
    now = _run_one(app, queue, fetch, fail_with="value")
    assert (now.state, now.attempts) == ("failed", 1)
    assert now.last_failure["not_retried"] == "ValueError is not in the task's retry_on"
    assert now.last_failure["retryable"] is False


def test_params_that_do_not_fit_fail_permanently_with_a_clear_reason(
    app: teguh.App, queue: str, conn: psycopg.Connection[Any]
) -> None:
    @app.task(name="greet", queue=queue, max_attempts=5)
    def greet(ctx: teguh.TaskContext, name: str) -> str:
        return f"hello {name}"

    # spawned from SQL (or Go, or an older deploy), so not checked at spawn
    sql = "select task_id from teguh.spawn_task(%s, 'greet', %s::jsonb)"
    (task_id,) = conn.execute(sql, (queue, '{"nmae": "ada"}')).fetchone() or ()
    app.worker([queue]).drain()
    info = app.client.get_task(queue, task_id)
    assert info is not None
    assert (info.state, info.attempts) == ("failed", 1)
    assert info.last_failure["name"] == "PermanentError"
    assert "'greet' cannot take params ['nmae']" in info.last_failure["message"]
    assert "name" in info.last_failure["message"]

    (wrong_shape,) = conn.execute(sql, (queue, "[1, 2]")).fetchone() or ()
    app.worker([queue]).drain()
    info = app.client.get_task(queue, wrong_shape)
    assert info is not None and (info.state, info.attempts) == ("failed", 1)
    assert "takes a JSON object of keyword arguments" in info.last_failure["message"]


@pytest.mark.parametrize("argument", ["retry_on", "dont_retry_on"])
def test_retry_classes_must_be_exception_classes(app: teguh.App, argument: str) -> None:
    with pytest.raises(TypeError, match=argument):
        app.task(name="x", **{argument: "ValueError"})(lambda ctx: None)
    with pytest.raises(TypeError, match=argument):
        app.task(name="y", **{argument: (ValueError, int)})(lambda ctx: None)
    assert "x" not in app.tasks and "y" not in app.tasks
