"""The public surface: exports, the exception tree, conversions, option building."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import teguh
from teguh import _arguments as C
from teguh import errors
from teguh.client import Client


def test_all_is_sorted_and_complete() -> None:
    # isort-style, as ruff's RUF022 keeps it: CONSTANTS, then Classes, then functions
    def key(name: str) -> tuple[int, str]:
        group = 0 if name.isupper() else 1 if name[0].isupper() else 2
        return group, name

    assert list(teguh.__all__) == sorted(teguh.__all__, key=key)
    for name in teguh.__all__:
        assert hasattr(teguh, name), name
    assert isinstance(teguh.__version__, str)


def test_signals_escape_except_exception() -> None:
    for cls in (teguh.Suspend, teguh.TaskCancelled, teguh.LeaseLost):
        assert issubclass(cls, teguh.TeguhSignal)
        assert issubclass(cls, BaseException)
        assert not issubclass(cls, Exception)

    def body() -> None:
        try:
            raise teguh.TaskCancelled("x")
        except Exception:  # what a careless handler writes
            pytest.fail("except Exception swallowed a control-flow signal")

    with pytest.raises(teguh.TaskCancelled):
        body()


def test_error_tree() -> None:
    assert issubclass(teguh.InvalidArgument, ValueError)
    assert issubclass(teguh.InvalidArgument, teguh.TeguhError)
    assert issubclass(teguh.QueueNotFound, LookupError)
    assert issubclass(teguh.TaskNotFound, LookupError)
    assert issubclass(teguh.EventTimeout, TimeoutError)
    assert issubclass(teguh.SchemaMissing, teguh.SchemaError)
    assert issubclass(teguh.SchemaOutdated, teguh.SchemaError)
    assert issubclass(teguh.RunNotActive, teguh.TeguhError)
    err = teguh.InvalidArgument("bad", argument="max_attempts")
    assert err.argument == "max_attempts"
    assert err.sqlstate == "22023"
    assert teguh.TaskCancelled.sqlstate == "AB001"
    # every class of the tree is drawn in the module docstring
    assert errors.__doc__ is not None
    for name in errors.__all__:
        if name[0].isupper():
            assert name in errors.__doc__, name


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 0.0), (2, 2.0), (2.5, 2.5), (timedelta(minutes=1, milliseconds=500), 60.5)],
)
def test_seconds(value: C.Duration, expected: float) -> None:
    assert C.seconds(value, "d") == expected


def test_whole_seconds_round_up() -> None:
    assert C.whole_seconds(0.2, "d") == 1
    assert C.whole_seconds(timedelta(seconds=2, microseconds=1), "d") == 3
    assert C.whole_seconds(5, "d") == 5


@pytest.mark.parametrize("bad", [-1, -0.5, math.nan, timedelta(seconds=-1)])
def test_negative_durations_rejected(bad: C.Duration) -> None:
    with pytest.raises(ValueError, match="d must be >= 0"):
        C.seconds(bad, "d")


@pytest.mark.parametrize("bad", ["5", None, True])
def test_non_durations_rejected(bad: object) -> None:
    with pytest.raises(TypeError, match="seconds"):
        C.seconds(bad, "d")  # type: ignore[arg-type]


def test_naive_datetime_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        C.aware(datetime(2030, 1, 1), "when")
    when = datetime(2030, 1, 1, tzinfo=UTC)
    assert C.aware(when, "when") is when


def test_dump_names_what_failed() -> None:
    with pytest.raises(TypeError, match="params is not JSON-serializable"):
        C.dump(C.default_dumps, {"x": object()}, "params")
    with pytest.raises(TypeError, match="not JSON-serializable"):
        C.dump(C.default_dumps, math.nan, "params")
    assert C.dump(C.default_dumps, {"a": [1, 2]}, "params") == '{"a":[1,2]}'
    assert C.load(C.default_loads, None) is None
    assert C.load(C.default_loads, "[1]") == [1]


def test_spawn_options_only_given_keys() -> None:
    assert C.spawn_options({}) == {}
    when = datetime(2030, 1, 1, tzinfo=UTC)
    options = C.spawn_options(
        {
            "headers": {"h": 1},
            "retry_strategy": {"kind": "fixed", "base_seconds": 2},
            "max_attempts": 3,
            "cancellation": {"max_delay": timedelta(seconds=1.5), "max_duration": 10},  # type: ignore[dict-item]
            "available_at": when,
            "priority": 7,
        }
    )
    assert options == {
        "headers": {"h": 1},
        "retry_strategy": {"kind": "fixed", "base_seconds": 2},
        "max_attempts": 3,
        "cancellation": {"max_delay": 2, "max_duration": 10},
        "available_at": "2030-01-01T00:00:00+00:00",
        "priority": 7,
    }
    assert C.spawn_options({"delay": timedelta(seconds=2.5)}) == {"delay_seconds": 2.5}
    with pytest.raises(TypeError, match="unknown spawn option"):
        C.spawn_options({"max_attempt": 3})


def test_spawn_options_reject_both_times() -> None:
    with pytest.raises(ValueError, match="not both"):
        C.spawn_options({"available_at": datetime(2030, 1, 1, tzinfo=UTC), "delay": 1})


@pytest.mark.parametrize(
    ("call", "error", "argument"),
    [
        (lambda: C.text(5, "queue"), TypeError, None),
        (lambda: C.text("a\x00b", "task_name"), teguh.InvalidArgument, "task_name"),
        (lambda: C.integer(2**40, "qty"), teguh.InvalidArgument, "qty"),
        (lambda: C.integer(True, "qty"), TypeError, None),
        (lambda: C.uuid("not-a-uuid", "task_id"), teguh.InvalidArgument, "task_id"),
        (lambda: C.uuid(12, "task_id"), TypeError, None),
        (lambda: C.dump(C.default_dumps, {"a": "\x00"}, "params"), teguh.InvalidArgument, "params"),
        (lambda: C.seconds(math.inf, "delay"), ValueError, None),
    ],
)
def test_wrong_values_name_the_argument(call: Any, error: type[Exception], argument: str) -> None:
    with pytest.raises(error) as caught:
        call()
    if argument is not None:
        assert caught.value.argument == argument  # type: ignore[attr-defined]
    if error is TypeError:
        assert "must be" in str(caught.value)


def test_a_literal_backslash_u0000_is_not_a_nul() -> None:
    assert C.dump(C.default_dumps, {"a": "\\u0000"}, "params") == '{"a":"\\\\u0000"}'


def test_client_rejects_a_malformed_conninfo_at_once() -> None:
    with pytest.raises(teguh.InvalidArgument, match="invalid conninfo") as caught:
        Client("not a dsn")
    assert caught.value.argument == "conninfo"
    with pytest.raises(teguh.InvalidArgument, match="invalid conninfo"):
        teguh.App("not a dsn")


def test_every_public_name_is_documented() -> None:
    from pathlib import Path

    reference = (Path(__file__).resolve().parents[2] / "docs" / "python-reference.md").read_text()
    missing = [name for name in teguh.__all__ if name not in reference]
    assert missing == []
    client_methods = [  # the class's own and its mixins' (teguh._runs, teguh._admin)
        name
        for cls in Client.__mro__
        if cls.__module__.startswith("teguh")
        for name in vars(cls)
        if not name.startswith("_") and callable(getattr(Client, name))
    ]
    assert "claim_task" in client_methods and "create_schedule" in client_methods
    undocumented = [name for name in client_methods if f"`{name}(" not in reference]
    assert undocumented == []
