"""@teguh.task and @teguh.step without a database."""

from __future__ import annotations

import types
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import teguh


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


def test_an_inert_task_cannot_spawn_until_an_app_includes_it() -> None:
    fresh = teguh.task(name="fresh")(lambda ctx: None)
    with pytest.raises(RuntimeError, match=r"app\.include"):
        fresh.spawn()
    app = teguh.App()
    app.include(fresh)
    assert fresh.app is app


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


def test_app_registration_and_include() -> None:
    app = teguh.App()  # opens nothing

    @app.task(queue="emails", name="a")
    def a(ctx: teguh.TaskContext) -> int:
        return 1

    app.include(send_email)
    module = types.ModuleType("m")
    module.t = send_email  # type: ignore[attr-defined]
    module.other = bare  # type: ignore[attr-defined]
    app.include(module)
    assert set(app.tasks) == {"a", "send-email", bare.name}
    assert send_email.app is app and a.app is app
    with pytest.raises(TypeError):
        app.include(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="two tasks named 'a'"):
        app.task(name="a")(lambda ctx: None)


def test_worker_routing_most_specific_wins() -> None:
    app = teguh.App()
    app.include(send_email)
    worker = app.worker(["emails"])

    def any_task(ctx: teguh.TaskContext) -> str:
        return "any"

    def email(ctx: teguh.TaskContext) -> str:
        return "email"

    def exact(ctx: teguh.TaskContext) -> str:
        return "exact"

    worker.handle("*", any_task)
    worker.handle("email.*", email)
    worker.handle("email.welcome", exact)
    router = worker._router
    assert router.find("email.welcome") is exact
    assert router.find("email.other") is email
    assert router.find("sms.x") is any_task
    assert router.find("send-email") == send_email.handle
    assert set(worker.handlers) == {"*", "email.*", "email.welcome"}
    with pytest.raises(ValueError, match="already registered"):
        worker.handle("email.*", exact)
    with pytest.raises(ValueError, match="already registered"):
        worker.handle("send-email", exact)  # the app has a task of that name


def test_async_handlers_are_rejected_at_registration() -> None:
    app = teguh.App()

    async def handler(ctx: teguh.TaskContext) -> None:
        return None

    with pytest.raises(TypeError, match="async def"):
        app.task(name="a")(handler)
    with pytest.raises(TypeError, match="async def"):
        app.worker(["q"]).handle("b", handler)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"queue": "Bad-Name"}, teguh.InvalidArgument, "invalid queue name"),
        ({"queue": "x" * 56}, teguh.InvalidArgument, "invalid queue name"),
        ({"max_attempts": "3"}, TypeError, "max_attempts must be an int"),
        ({"priority": 2**40}, teguh.InvalidArgument, "priority must be between"),
        ({"max_attemps": 3}, TypeError, r"unknown task option\(s\): max_attemps \(expected: "),
        ({"retry_on": "OSError"}, TypeError, "retry_on must be an exception class"),
        ({"retry": [1]}, TypeError, "retry_strategy must be a mapping"),
    ],
)
def test_declaration_time_checks(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        teguh.App().task(name="t", **kwargs)(lambda ctx: None)


def test_a_function_that_cannot_take_the_context_is_refused() -> None:
    def no_params() -> None:
        return None

    def keyword_only(*, ctx: Any) -> None:
        return None

    for fn in (no_params, keyword_only):
        with pytest.raises(TypeError, match="TaskContext as its first"):
            teguh.App().task(name="t")(fn)  # type: ignore[arg-type]


def test_a_task_in_main_needs_a_name() -> None:
    def handler(ctx: teguh.TaskContext) -> None:
        return None

    handler.__module__ = "__main__"
    with pytest.raises(ValueError, match="pass name="):
        teguh.App().task(handler)
    assert teguh.App().task(name="ok")(handler).name == "ok"


def test_registered_defaults_and_hooks_shape_every_spawn() -> None:
    app = teguh.App()
    app.include(send_email)
    calls: list[tuple[str, Any]] = []

    @app.before_spawn
    def hook(name: str, params: Any, options: dict[str, Any]) -> dict[str, Any]:
        calls.append((name, params))
        return {**options, "headers": {"trace": "t1"}}

    options = app._spawn_options("send-email", {"to": "x"}, {})
    assert options == {"max_attempts": 3, "headers": {"trace": "t1"}}
    assert app._spawn_options("send-email", {"to": "x"}, {"max_attempts": 9})["max_attempts"] == 9
    assert app._spawn_options("unknown", {}, {}) == {"headers": {"trace": "t1"}}
    with pytest.raises(TypeError, match="takes a JSON object"):
        app._spawn_options("send-email", [1, 2], {})
    with pytest.raises(TypeError, match="missing a required argument: 'to'"):
        app._spawn_options("send-email", {}, {})
    assert calls[0] == ("send-email", {"to": "x"})


def test_worker_options_are_checked() -> None:
    app = teguh.App()
    with pytest.raises(TypeError, match="unknown worker option"):
        app.worker(["q"], concurency=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="list of queue names"):
        app.worker("q")
    with pytest.raises(teguh.InvalidArgument, match="invalid queue name"):
        app.worker(["Q"])
    worker = app.worker({"a": 2, "b": 1}, concurrency=3)
    assert worker.caps == {"a": 2, "b": 1}
    assert app.worker().queues == ["default"]


@given(st.text(min_size=1).filter(lambda k: k not in {*teguh.TaskOptions.__annotations__, "fn"}))
def test_an_unknown_task_option_is_refused_and_registers_nothing(key: str) -> None:
    app = teguh.App()
    for declare in (app.task, teguh.task):
        with pytest.raises(TypeError, match="unknown task option"):
            declare(**{key: 1})(lambda ctx: None)
    assert app.tasks == {}


_PERIODIC_ARGUMENTS = {"self", "spec", "name", "params"}


@given(
    st.text(min_size=1).filter(
        lambda k: k not in teguh.ScheduleOptions.__annotations__ and k not in _PERIODIC_ARGUMENTS
    )
)
def test_an_unknown_schedule_option_is_refused_and_declares_nothing(key: str) -> None:
    app = teguh.App()
    with pytest.raises(TypeError, match="unknown schedule option"):
        app.periodic("@daily", **{key: 1})
    assert app.schedules.declared == {}


def test_schedule_options_are_checked_at_the_decorator() -> None:
    app = teguh.App()
    with pytest.raises(TypeError, match=r"unknown schedule option\(s\): time_zone"):
        app.periodic("@daily", time_zone="UTC")  # type: ignore[call-arg]
    with app, pytest.raises(TypeError, match="unknown schedule option"):
        app.client.create_schedule("q", "n", "@daily", "t", every=3)  # type: ignore[call-arg]

    @app.periodic("@daily", timezone="Europe/Paris", catch_up=None)
    @app.task(name="nightly", max_attempts=2, retry={"kind": "none"})
    def nightly(ctx: teguh.TaskContext) -> None:
        return None

    declared = app.schedules.declared["nightly"]
    assert declared.options == {
        "max_attempts": 2,
        "retry_strategy": {"kind": "none"},
        "timezone": "Europe/Paris",
    }
