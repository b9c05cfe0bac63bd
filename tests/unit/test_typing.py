"""The decorators type-check for users: mypy --strict over a sample that uses them.

`TaskOptions` and `ScheduleOptions` are taken as ``**options: Unpack[...]``;
this proves that ``@app.task``, ``@app.task(...)``, ``@teguh.task``, the
Flask extension's ``task`` and ``@app.periodic`` keep the wrapped signature
and that a misspelt or mistyped option is a type error, not only a runtime one.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

GOOD = """
from typing import assert_type

import teguh
from teguh.contrib.flask import Teguh

app = teguh.App()
ext = Teguh()


@app.task
def bare(ctx: teguh.TaskContext, to: str) -> int:
    return len(to)


@app.periodic("@daily", params={"to": "x"}, timezone="Europe/Paris", catch_up="none")
@app.task(name="send", queue="emails", max_attempts=3, retry={"kind": "fixed"},
          retry_on=(OSError,), dont_retry_on=ValueError, headers={"a": 1})
def send(ctx: teguh.TaskContext, to: str, subject: str = "hi") -> str:
    return to + subject


@teguh.task
def inert(ctx: teguh.TaskContext, n: int) -> None:
    return None


@teguh.task(queue="emails", priority=2, cancellation={"max_delay": 60})
def inert2(ctx: teguh.TaskContext, n: int) -> None:
    return None


@ext.task
def flask_bare(ctx: teguh.TaskContext, n: int) -> int:
    return n


@ext.task(queue="emails", max_attempts=2)
def flask_task(ctx: teguh.TaskContext, n: int) -> int:
    return n


t1: teguh.Task[[str], int] = bare
t2: teguh.Task[[str, str], str] = send
t3: teguh.Task[[int], None] = inert
t4: teguh.Task[[int], None] = inert2
t5: teguh.Task[[int], int] = flask_bare
t6: teguh.Task[[int], int] = flask_task


def spawns(ctx: teguh.TaskContext) -> None:
    assert_type(bare(ctx, "x"), int)
    assert_type(send(ctx, "x", "y"), str)
    assert_type(flask_task(ctx, 1), int)
    send.spawn("a@b", subject="s")
    send.configure(priority=1, delay=5).spawn(to="a@b")
    inert.spawn(3)
    app.client.create_schedule("q", "n", "@daily", "t", None, timezone="UTC", max_attempts=2)
"""

# Each line is one error mypy must report (the line's comment says which).
BAD = """
import teguh

app = teguh.App()


@app.task(queue="emails", max_attemps=3)  # unknown option
def a(ctx: teguh.TaskContext, n: int) -> None:
    return None


@teguh.task(priority="high")  # wrong type
def b(ctx: teguh.TaskContext, n: int) -> None:
    return None


@app.periodic("@daily", time_zone="UTC")  # unknown option
@app.task
def c(ctx: teguh.TaskContext, n: int) -> None:
    return None


def spawns() -> None:
    c.spawn("three")  # wrong argument type
    app.client.create_schedule("q", "n", "@daily", "t", catch_up="all")  # wrong literal
"""


def test_decorators_type_check(tmp_path: Path) -> None:
    good = tmp_path / "good_sample.py"
    bad = tmp_path / "bad_sample.py"
    good.write_text(textwrap.dedent(GOOD))
    bad.write_text(textwrap.dedent(BAD))
    out, err, _ = mypy_api.run(
        [
            "--strict",
            "--no-incremental",
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            "--show-error-codes",
            "--no-error-summary",
            str(good),
            str(bad),
        ]
    )
    assert err == ""
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert [e for e in errors if "good_sample" in e] == []
    expected = {
        number
        for number, line in enumerate(BAD.splitlines(), start=1)
        if re.search(r"# (unknown option|wrong type|wrong argument type|wrong literal)$", line)
    }
    reported = {int(e.split(":")[1]) for e in errors if "bad_sample" in e}
    assert reported == expected, out
