"""The tasks the chaos suite's worker processes run (``teguh worker tests.chaos.tasks``).

One multi-step workflow with a durable sleep and an injected failure, on each
of two queues (the workers serve both, so their claims and completions span
queues in one transaction), and a probe that measures wake-up latency. Each
step body records a side effect in table ``chaos_effects`` and, in the same
transaction, a row in ``chaos_violations`` if the step's checkpoint had
already committed when the body started. After a step returns from a body run by this execution (its
checkpoint write was accepted), the handler records an ack in
``chaos_acks``: two acks for one step mean its checkpoint was written twice.

The database for these records comes from ``TEGUH_CHAOS_DSN``.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import psycopg

import teguh

QUEUE = "chaos"  # the probe's queue, and the first workflow queue
QUEUES = (QUEUE, "chaosb")
WORKFLOWS = {QUEUE: "workflow", "chaosb": "workflow_b"}  # the task of each queue
STEPS = 3

# `teguh worker tests.chaos.tasks --dsn ...` runs this App on its --dsn.
app = teguh.App()


def _record(ctx: teguh.TaskContext, step: str) -> str:
    token = uuid.uuid4().hex
    with (
        psycopg.connect(os.environ["TEGUH_CHAOS_DSN"], autocommit=True) as conn,
        conn.transaction(),
    ):
        conn.execute(
            "insert into chaos_violations (task_id, step, run_id, pid)"
            " select %s, %s, %s, %s from chaos_checkpoints"
            " where task_id = %s and checkpoint_name = %s",
            (ctx.task_id, step, ctx.run_id, os.getpid(), ctx.task_id, step),
        )
        conn.execute(
            "insert into chaos_effects (task_id, step, run_id, attempt, pid, token)"
            " values (%s, %s, %s, %s, %s, %s)",
            (ctx.task_id, step, ctx.run_id, ctx.attempt, os.getpid(), token),
        )
    return token


def _ack(ctx: teguh.TaskContext, step: str, token: str) -> None:
    with psycopg.connect(os.environ["TEGUH_CHAOS_DSN"], autocommit=True) as conn:
        conn.execute(
            "insert into chaos_acks (task_id, step, run_id, pid, token)"
            " values (%s, %s, %s, %s, %s)",
            (ctx.task_id, step, ctx.run_id, os.getpid(), token),
        )


def workflow(
    ctx: teguh.TaskContext, sleep: float = 0.0, fail: bool = False, slow: float = 0.0
) -> list[str]:
    """Three recorded steps, a durable sleep after the first, a failure after the second.

    ``slow``: seconds each step body waits before it records anything, so
    that a server crash right after the claim finds the handler running
    without having written anything durable yet.
    """
    tokens: list[str] = []
    for i in range(STEPS):
        step = f"s{i}"
        ran: list[str] = []

        def body(step: str = step, ran: list[str] = ran) -> str:
            time.sleep(slow)
            ran.append(_record(ctx, step))
            return ran[-1]

        token: str = ctx.step(step, body)
        if ran:
            _ack(ctx, step, token)
        tokens.append(token)
        if i == 0 and sleep:
            ctx.sleep_for(sleep)
        if i == 1 and fail and ctx.attempt == 1:
            raise RuntimeError("injected failure")
    return tokens


for _queue, _name in WORKFLOWS.items():
    app.task(queue=_queue, name=_name, max_attempts=100)(workflow)


@app.task(queue=QUEUE, name="probe", max_attempts=100)
def probe(ctx: teguh.TaskContext) -> Any:
    """Return when the handler started (wall clock), for wake-up latency."""
    return time.time()
