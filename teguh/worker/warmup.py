"""Warm a worker's new pool connections before they serve a run.

A new PostgreSQL session compiles each PL/pgSQL function, and plans its
statements, the first time it runs them: 3 to 5 ms per hot function on a
fresh backend against 0.5 to 1 ms warm (a shared 2-core machine). A worker's
pool hands out its ``concurrency + 3`` connections in turn, so without a
warm-up the first claim, completion and checkpoint read on *each* connection
paid that: an idle worker started its first dozen runs 6 to 10 ms late, which
made all of the latency benchmark's p95 and p99.

The pool's ``configure`` callback therefore makes the worker's hot calls once
on every new connection (at start, and when the pool replaces one), inside a
transaction that is always rolled back. A throwaway task is spawned and
claimed, a step checkpointed and the run completed, so that the branches a
claim takes when it finds a run are planned too (an empty claim plans only
half of them). The rollback undoes all of it, its NOTIFY included: nothing
durable happens, no other session ever sees the task, and a real run the
claim may have touched instead is back as it was. The compiled functions and
their plans stay with the session (psycopg drops its prepared statements on
a rollback; preparing them again is cheap). A warm-up that fails only logs:
the connection is left idle and serves as usual, merely cold.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from teguh import _engine as E

__all__ = ["warm_up", "warmer"]

logger = logging.getLogger("teguh.worker")

# The throwaway task outranks every real run, so the claim takes it first.
_WARM_UP_TASK = "teguh.warm_up"
_TOP_PRIORITY = 2**31 - 1


def warm_up(
    conn: psycopg.Connection[Any],
    engine: E.Engine,
    queues: Sequence[str],
    worker_id: str,
    claim_timeout: int,
) -> None:
    """Run the worker's hot calls on ``conn`` once and roll them back; never raises."""
    try:
        with conn.transaction(force_rollback=True):
            for queue in queues:
                engine.spawn_task(conn, queue, _WARM_UP_TASK, None, {"priority": _TOP_PRIORITY})
                runs, _bad, _due = engine.claim_next(conn, queue, worker_id, claim_timeout, 1)
                for run in runs:  # what a handler's first step does
                    engine.load_checkpoints(conn, queue, run.task_id, run.run_id)
                    engine.set_checkpoint(
                        conn, queue, run.task_id, "step", "null", run.run_id, claim_timeout
                    )
                done = [run.run_id for run in runs]
                engine.complete_runs(conn, queue, done, ["null"] * len(done))
                # and a claim that comes back short: it also asks for the next due time
                engine.claim_next(conn, queue, worker_id, claim_timeout, 1)
            if len(queues) > 1:  # the claim of a worker of several queues
                wants = [(queue, 1) for queue in queues]
                engine.claim_queues_next(conn, wants, worker_id, claim_timeout, len(wants))
    except Exception as exc:  # a cold connection still works: never fail the pool
        logger.info("could not warm up a new connection of worker %s: %s", worker_id, exc)


def warmer(
    engine: E.Engine, queues: Sequence[str], worker_id: str, claim_timeout: int
) -> Callable[[psycopg.Connection[Any]], None]:
    """The ``configure`` callback of a worker's pool: `warm_up` for these queues."""
    names = list(queues)

    def configure(conn: psycopg.Connection[Any]) -> None:
        warm_up(conn, engine, names, worker_id, claim_timeout)

    return configure
