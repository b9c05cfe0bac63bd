"""claim_runs_next: the Python worker's claim, which also reports the next due time."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from .conftest import Engine, raises_sqlstate

COLUMNS = (
    "run_id, task_id, attempt, task_name, params, retry_strategy, max_attempts, headers,"
    " wake_event, event_payload"
)


def claim_next(eng: Engine, qty: int = 1, worker: str = "w1") -> list[tuple[Any, ...]]:
    return eng.rows("select * from teguh.claim_runs_next(%s, %s, %s, %s)", eng.q, worker, 30, qty)


def test_a_full_claim_returns_the_runs_only(eng: Engine) -> None:
    eng.spawn("a")
    eng.spawn("b")
    rows = claim_next(eng, qty=2)
    assert [r[3] for r in rows] == ["a", "b"]
    assert all(r[10] is None and r[11] is None for r in rows)


def test_a_short_claim_ends_with_the_next_due_time(eng: Engine) -> None:
    eng.spawn("now")
    eng.spawn("later", delay_seconds=90)
    rows = claim_next(eng, qty=5)
    assert [r[3] for r in rows[:-1]] == ["now"]
    last = rows[-1]
    assert last[:10] == (None,) * 10
    # the due time is measured after the claim: the claimed run's lease (30 s) comes first
    assert last[10] == eng.now + timedelta(seconds=30)
    assert last[11] == pytest.approx(30.0)
    assert last[10] == eng.one("select teguh.next_wake_at(%s)", eng.q)


def test_nothing_pending_gives_one_row_of_nulls(eng: Engine) -> None:
    assert claim_next(eng, qty=3) == [(None,) * 12]


def test_claims_what_claim_runs_claims(eng: Engine) -> None:
    """Same runs, same attempt numbers (a resume keeps its attempt) as claim_runs."""
    task_id = eng.spawn("t")[0]
    [run] = claim_next(eng)
    eng.fail(run[0])
    eng.advance(3600)
    [again] = eng.rows(f"select {COLUMNS} from teguh.claim_runs_next(%s, 'w1')", eng.q)[:1]
    assert again[1] == task_id and again[2] == 2


@pytest.mark.parametrize(
    ("args", "argument"),
    [
        (("w", 30, 0), "qty"),
        (("w", 30, None), "qty"),
        (("w", -1, 1), "claim_timeout"),
        (("", 30, 1), "worker_id"),
        ((None, 30, 1), "worker_id"),
    ],
)
def test_bad_arguments_change_nothing(eng: Engine, args: tuple[Any, ...], argument: str) -> None:
    eng.spawn("t")
    with raises_sqlstate("22023"):
        eng.rows("select * from teguh.claim_runs_next(%s, %s, %s, %s)", eng.q, *args)
    assert eng.count("r") == 0


def test_unknown_queue(eng: Engine) -> None:
    with raises_sqlstate("42704"):
        eng.rows("select * from teguh.claim_runs_next('nope', 'w')")


@given(spawned=st.integers(0, 6), delayed=st.integers(0, 3), qty=st.integers(1, 8))
def test_generated_backlogs(eng: Engine, spawned: int, delayed: int, qty: int) -> None:
    eng.conn.execute("select teguh.drop_queue(%s)", (eng.q,))
    eng.conn.execute("select teguh.create_queue(%s)", (eng.q,))
    for i in range(spawned):
        eng.spawn(f"t{i}")
    for i in range(delayed):
        eng.spawn(f"d{i}", delay_seconds=100 + i)
    rows = claim_next(eng, qty=qty)
    runs = [r for r in rows if r[0] is not None]
    assert len(runs) == min(spawned, qty)
    tail = [r for r in rows if r[0] is None]
    if len(runs) == qty:
        assert tail == []
    else:
        [last] = tail
        assert rows[-1] is last
        assert last[10] == eng.one("select teguh.next_wake_at(%s)", eng.q)
        if last[10] is None:
            assert last[11] is None
        else:
            assert last[11] == pytest.approx((last[10] - eng.now).total_seconds())
