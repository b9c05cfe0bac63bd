"""Generated inputs never break a queue (issue 8 §1).

Hypothesis drives one queue through spawn → claim → fail/expire/sleep/wait/
retry/cancel → ticker → stats → cleanup, with values inside and outside the
documented ranges and a fake clock that jumps forward by up to years. A call
may be refused (22023 for a bad value, or the error a worker gets for a run
that is not active), but the sweeps never fail: after every step claims,
the ticker, queue_stats, next_wake_at and cleanup run without an error or a
WARNING, and at the end a fresh task is still claimed and completed.
"""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import psycopg
from hypothesis import given
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from .conftest import Engine

# errors a caller may get back; anything else is a defect
REFUSED = {
    "22023",  # a value outside its range
    "AB001",  # the task was cancelled
    "AB002",  # the run is not active
    "P0002",  # no such task
    "55000",  # only a failed task can be retried in place
}

NUMBERS = st.one_of(
    st.integers(min_value=-5, max_value=100),
    st.integers(min_value=-(2**31), max_value=2**31),
    st.sampled_from(
        [0, 1, 2, 300, 315_360_000, 315_360_001, 2**31 - 1, 2**31, 1e13, 1e300, -1e300]
    ),
    st.floats(min_value=-1e15, max_value=1e15, allow_nan=False),
)
# a timestamp: seconds from the engine clock, or a literal
WHEN = st.one_of(
    st.integers(min_value=-4000 * 86400, max_value=4000 * 86400),
    st.sampled_from(
        [0, 1, 60, 3600, "infinity", "-infinity", "9999-12-31 00:00Z", "0001-01-01 00:00Z"]
    ),
)
RETRY = st.fixed_dictionaries(
    {},
    optional={
        "kind": st.sampled_from(["none", "fixed", "exponential"]),
        "base_seconds": NUMBERS,
        "factor": NUMBERS,
        "max_seconds": NUMBERS,
    },
)
OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "max_attempts": NUMBERS,
        "priority": NUMBERS,
        "delay_seconds": NUMBERS,
        "available_at": WHEN,
        "retry_strategy": RETRY,
        "cancellation": st.fixed_dictionaries(
            {}, optional={"max_delay": NUMBERS, "max_duration": NUMBERS}
        ),
        "idempotency_key": st.sampled_from(["a", "b"]),
    },
)
PICK = st.integers(min_value=0, max_value=50)
TIMEOUT = st.one_of(st.none(), NUMBERS.filter(lambda n: isinstance(n, int) and abs(n) < 2**31))
INT_ARG = st.one_of(
    st.integers(min_value=-2, max_value=120),
    st.sampled_from([315_360_000, 315_360_001, 2**31 - 1]),
)

STEPS = st.one_of(
    st.tuples(st.just("spawn"), OPTIONS),
    st.tuples(st.just("claim"), st.integers(min_value=0, max_value=5), INT_ARG),
    st.tuples(st.just("complete"), PICK),
    st.tuples(st.just("fail"), PICK, st.one_of(st.none(), WHEN)),
    st.tuples(st.just("sleep"), PICK, WHEN),
    st.tuples(st.just("wait"), PICK, st.sampled_from(["e1", "e2"]), TIMEOUT),
    st.tuples(st.just("emit"), st.sampled_from(["e1", "e2"])),
    st.tuples(st.just("cancel"), PICK),
    st.tuples(st.just("retry"), PICK, st.booleans()),
    st.tuples(st.just("extend"), PICK, INT_ARG),
    st.tuples(
        st.just("advance"), st.sampled_from([1, 5, 31, 61, 3600, 86400, 400 * 86400, 3650 * 86400])
    ),
    st.tuples(st.just("tick")),
    # cleanup_tasks takes integer: a larger Python int resolves to no function (42883)
    st.tuples(st.just("cleanup"), st.integers(min_value=-1, max_value=2**31 - 1)),
)

_queues = itertools.count(1)


class Driver:
    def __init__(self, eng: Engine) -> None:
        self.eng = eng
        self.tasks: list[Any] = []
        self.runs: list[tuple[Any, Any]] = []  # (run_id, task_id)
        self.warnings: list[str] = []
        eng.conn.add_notice_handler(self._notice)

    def _notice(self, diag: psycopg.errors.Diagnostic) -> None:
        if diag.severity_nonlocalized == "WARNING":
            self.warnings.append(diag.message_primary or "")

    def when(self, value: int | str) -> str:
        if isinstance(value, int):
            return (self.eng.now + timedelta(seconds=value)).isoformat()
        return value

    def task(self, pick: int) -> Any:
        return self.tasks[pick % len(self.tasks)] if self.tasks else None

    def run(self, pick: int) -> tuple[Any, Any]:
        return self.runs[pick % len(self.runs)] if self.runs else (None, None)

    def call(self, sql: str, *params: Any) -> list[tuple[Any, ...]] | None:
        try:
            return self.eng.rows(sql, *params)
        except psycopg.Error as exc:
            if exc.sqlstate not in REFUSED:
                raise AssertionError(f"{sql} {params}: {exc.sqlstate} {exc}") from exc
            return None

    def step(self, op: str, *args: Any) -> None:
        q = self.eng.q
        if op == "spawn":
            options = dict(args[0])
            if "available_at" in options:
                options["available_at"] = self.when(options["available_at"])
            before = self.eng.one(f"select count(*) from teguh.t_{q}")
            rows = self.call(
                "select task_id from teguh.spawn_task(%s, 't', '{}', %s)", q, Jsonb(options)
            )
            if rows is None:  # refused: nothing changed
                assert self.eng.one(f"select count(*) from teguh.t_{q}") == before
            else:
                self.tasks.append(rows[0][0])
        elif op == "claim":
            rows = self.call(
                "select run_id, task_id from teguh.claim_task(%s, 'w', %s, %s)", q, args[1], args[0]
            )
            self.runs.extend((r[0], r[1]) for r in rows or [])
        elif op == "complete":
            self.call("select teguh.complete_run(%s, %s, '1')", q, self.run(args[0])[0])
        elif op == "fail":
            retry_at = None if args[1] is None else self.when(args[1])
            self.call(
                'select teguh.fail_run(%s, %s, \'{"name": "Boom"}\', %s::timestamptz)',
                q,
                self.run(args[0])[0],
                retry_at,
            )
        elif op == "sleep":
            self.call(
                "select teguh.schedule_run(%s, %s, %s::timestamptz)",
                q,
                self.run(args[0])[0],
                self.when(args[1]),
            )
        elif op == "wait":
            run_id, task_id = self.run(args[0])
            self.call(
                "select * from teguh.wait_event(%s, %s, %s, 'step', %s, %s)",
                q,
                task_id,
                run_id,
                args[1],
                args[2],
            )
        elif op == "emit":
            self.call("select teguh.emit_event(%s, %s, '{}')", q, args[0])
        elif op == "cancel":
            self.call("select teguh.cancel_task(%s, %s)", q, self.task(args[0]))
        elif op == "retry":
            rows = self.call(
                "select task_id from teguh.retry_task(%s, %s, %s)",
                q,
                self.task(args[0]),
                Jsonb({"spawn_new": args[1]}),
            )
            self.tasks.extend(r[0] for r in rows or [])
        elif op == "extend":
            self.call("select teguh.extend_claim(%s, %s, %s)", q, self.run(args[0])[0], args[1])
        elif op == "advance":
            self.eng.advance(args[0])
        elif op == "tick":
            self.eng.one("select teguh.ticker()")
        elif op == "cleanup":
            self.call("select teguh.cleanup_tasks(%s, %s, 100)", q, args[0])
        self.check()

    def check(self) -> None:
        """The sweeps work after every step: no error, no isolated failure."""
        q = self.eng.q
        self.eng.one("select teguh.ticker()")
        assert (
            self.eng.rows(
                "select queue_name, error from teguh.queue_stats() where error is not null"
            )
            == []
        )
        self.eng.one("select teguh.next_wake_at(%s)", q)
        # every task says what it waits for: an unfinished one always has a wait or a lease
        waits = self.eng.rows(
            "select g.state, g.wait_kind, g.worker_id from teguh.list_tasks(%s, '{}', null, 1000) l"
            " cross join lateral teguh.get_task(%s, l.task_id) g",
            q,
            q,
        )
        for state, kind, worker in waits:
            assert (kind is not None) == (state in ("pending", "sleeping")), (state, kind)
            if state == "running":
                assert worker is not None
        assert self.warnings == []

    def finish(self) -> None:
        q = self.eng.q
        self.eng.advance(3650 * 86400)  # everything delayed is due, every lease expired
        self.check()
        cleaned = self.eng.rows("select queue_name, error from teguh.cleanup_all_queues()")
        assert all(error is None for _, error in cleaned), cleaned
        [(sentinel,)] = self.eng.rows(
            "select task_id from teguh.spawn_task(%s, 'sentinel', '{}')", q
        )
        claimed = self.eng.rows(
            "select run_id, task_id from teguh.claim_task(%s, 'w', 30, 10000)", q
        )
        [run_id] = [run for run, task in claimed if task == sentinel]
        self.eng.complete(run_id, "done")
        assert self.eng.state(sentinel) == "completed"
        assert self.warnings == []


@given(steps=st.lists(STEPS, max_size=30))
def test_no_accepted_value_breaks_the_queue(
    conn: psycopg.Connection[Any], steps: list[tuple[Any, ...]]
) -> None:
    queue = f"g{next(_queues)}"
    conn.execute("select teguh.create_queue(%s)", (queue,))
    driver = Driver(Engine(conn, queue))
    try:
        for op, *args in steps:
            driver.step(op, *args)
        driver.finish()
    finally:
        conn.remove_notice_handler(driver._notice)
        conn.execute("select teguh.drop_queue(%s)", (queue,))
