"""@teguh.task and @teguh.step without a database."""

from __future__ import annotations

import types
from typing import Any

import pytest

import teguh
from teguh.worker import Worker


@teguh.task(queue="emails", name="send-email", max_attempts=3)
def send_email(ctx: teguh.TaskContext, to: str, subject: str = "hi", **extra: Any) -> str:
    return f"{to}:{subject}"


@teguh.task
def bare(ctx: teguh.TaskContext) -> None:
    return None


def test_task_object_carries_its_defaults() -> None:
    assert isinstance(send_email, teguh.Task)
    assert send_email.name == "send-email"
    assert send_email.queue == "emails"
    assert bare.name == f"{__name__}.bare"
    assert bare.queue == "default"
    assert bare.__name__ == "bare"


def test_params_are_bound_by_name() -> None:
    assert send_email.params("a@b") == {"to": "a@b", "subject": "hi"} or send_email.params(
        "a@b"
    ) == {"to": "a@b"}
    assert send_email.params("a@b", subject="s", lang="en") == {
        "to": "a@b",
        "subject": "s",
        "lang": "en",
    }
    with pytest.raises(TypeError):
        send_email.params()  # type: ignore[call-arg]


def test_spawn_without_client_says_what_to_do() -> None:
    teguh.set_default_client(None)
    with pytest.raises(RuntimeError, match="set_default_client"):
        send_email.spawn("a@b")


def test_step_outside_a_handler_just_runs() -> None:
    calls: list[int] = []

    @teguh.step
    def add(a: int, b: int) -> int:
        calls.append(1)
        return a + b

    @teguh.step(name="named")
    def named() -> str:
        return "x"

    assert add(1, 2) == 3
    assert named() == "x"
    assert calls == [1]
    assert add.__name__ == "add"


def test_current_context_outside_a_handler() -> None:
    with pytest.raises(RuntimeError, match="outside a task handler"):
        teguh.current_context()


def test_worker_registration() -> None:
    worker = Worker.__new__(Worker)  # registration needs no database
    worker.queue = "emails"
    worker._handlers = {}

    @worker.task("a")
    def a(ctx: teguh.TaskContext) -> int:
        return 1

    worker.handle("*", a)
    worker.include(send_email)
    assert set(worker.handlers) == {"a", "*", "send-email"}
    with pytest.raises(ValueError, match="belongs to queue"):
        worker.include(bare)
    module = types.ModuleType("m")
    module.t = send_email  # type: ignore[attr-defined]
    module.other = bare  # type: ignore[attr-defined]
    worker._handlers = {}
    worker.include(module)
    assert set(worker.handlers) == {"send-email"}
    with pytest.raises(TypeError):
        worker.include(42)  # type: ignore[arg-type]
