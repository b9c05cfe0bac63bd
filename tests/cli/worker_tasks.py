"""Tasks for the ``teguh worker`` tests (imported by the command as ``tests.cli.worker_tasks``)."""

from __future__ import annotations

import time

import teguh


@teguh.task(queue="q", name="add")
def add(ctx: teguh.TaskContext, a: int, b: int) -> int:
    total: int = ctx.step("sum", lambda: a + b)
    return total


@teguh.task(queue="q", name="slow")
def slow(ctx: teguh.TaskContext, seconds: float) -> str:
    # a checkpoint the tests wait for: the handler has started (a claimed run
    # whose handler has not started yet is handed back unrun by a stop)
    ctx.step("began", lambda: True)
    time.sleep(seconds)
    return f"slept {seconds}"


@teguh.task(queue="other", name="elsewhere")
def elsewhere(ctx: teguh.TaskContext) -> None:
    return None
