"""`failure_reason` describes any exception, so that a failure is always recorded."""

from __future__ import annotations

import json

from teguh._engine import MAX_TRACEBACK, failure_reason


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_a_broken_str_is_described_by_the_class() -> None:
    reason = failure_reason(_raised(_Unprintable()))
    assert reason["name"] == "_Unprintable"
    assert reason["message"] == "<_Unprintable.__str__ raised RuntimeError>"


def test_what_postgresql_cannot_store_is_escaped() -> None:
    reason = failure_reason(_raised(ValueError("nul\x00 and a lone \ud800 surrogate")))
    assert reason["message"] == "nul\\u0000 and a lone \\ud800 surrogate"
    for value in reason.values():
        assert "\x00" not in value
        value.encode("utf-8")  # strict: no lone surrogate left
    json.dumps(reason, ensure_ascii=False).encode("utf-8")


def test_long_tracebacks_keep_their_end() -> None:
    reason = failure_reason(_raised(ValueError("x" * (3 * MAX_TRACEBACK))))
    assert len(reason["traceback"]) <= MAX_TRACEBACK + 100
    assert reason["traceback"].startswith("... [traceback cut")
