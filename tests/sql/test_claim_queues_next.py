"""claim_queues_next: one claim, one transaction, for the queues of a worker."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from .conftest import Engine, raises_sqlstate

QUEUES = ["qa", "qb", "qc"]


def claim(
    eng: Engine, queues: list[str], qtys: list[int], total: int, worker: str = "w1"
) -> list[tuple[Any, ...]]:
    return eng.rows(
        "select * from teguh.claim_queues_next(%s::text[], %s, 30, %s::integer[], %s)",
        queues,
        worker,
        qtys,
        total,
    )


def fill(eng: Engine, counts: dict[str, int]) -> None:
    for queue, n in counts.items():
        eng.one("select teguh.create_queue(%s)", queue)
        for i in range(n):
            eng.one("select task_id from teguh.spawn_task(%s, %s, '{}')", queue, f"{queue}-{i}")


def runs_by_queue(rows: list[tuple[Any, ...]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in rows:
        if row[1] is not None:
            out[row[0]] = out.get(row[0], 0) + 1
    return out


def test_each_queue_claims_its_share_in_order(eng: Engine) -> None:
    fill(eng, {"qa": 5, "qb": 5, "qc": 5})
    rows = claim(eng, QUEUES, [10, 10, 10], 7)
    # ceil(7/3) = 3, then ceil(4/2) = 2, then 2
    assert runs_by_queue(rows) == {"qa": 3, "qb": 2, "qc": 2}
    assert [row[0] for row in rows] == ["qa"] * 3 + ["qb"] * 2 + ["qc"] * 2
    assert all(row[11] is None for row in rows)  # every queue got its share: no due rows
    # the claimed runs are leased to the worker, in their own queues
    for queue, n in {"qa": 3, "qb": 2, "qc": 2}.items():
        assert eng.one(f"select count(*) from teguh.r_{queue} where worker_id = 'w1'") == n


def test_a_queue_short_of_its_share_leaves_the_rest_to_the_next(eng: Engine) -> None:
    fill(eng, {"qa": 1, "qb": 5, "qc": 5})
    rows = claim(eng, QUEUES, [10, 10, 10], 6)
    assert runs_by_queue(rows) == {"qa": 1, "qb": 3, "qc": 2}
    # qa's claim came back short: its next-due row follows its runs
    qa = [row for row in rows if row[0] == "qa"]
    assert qa[0][1] is not None and qa[1][1:11] == (None,) * 10
    assert qa[1][11] == eng.one("select teguh.next_wake_at('qa')")


def test_a_queue_takes_no_more_than_its_qty(eng: Engine) -> None:
    fill(eng, {"qa": 5, "qb": 5})
    rows = claim(eng, ["qa", "qb"], [1, 10], 8)
    assert runs_by_queue(rows) == {"qa": 1, "qb": 5}
    # qa got all it asked for (no due row); qb's 7 left found 5 (a due row)
    assert [row[0] for row in rows if row[1] is None] == ["qb"]


def test_queues_after_the_total_is_spent_return_no_row(eng: Engine) -> None:
    fill(eng, {"qa": 5, "qb": 5, "qc": 5})
    rows = claim(eng, QUEUES, [10, 10, 10], 2)
    assert runs_by_queue(rows) == {"qa": 1, "qb": 1}
    assert {row[0] for row in rows} == {"qa", "qb"}
    assert eng.one("select count(*) from teguh.r_qc") == 0


def test_claims_what_claim_runs_claims(eng: Engine) -> None:
    """Same attempt numbers (a resume keeps its attempt), same columns."""
    fill(eng, {"qa": 1})
    [run] = eng.rows("select run_id from teguh.claim_runs('qa', 'w1', 30, 1)")
    eng.one("select teguh.fail_run('qa', %s, '{}'::jsonb, null)", run[0])
    eng.advance(3600)
    [row, _due] = claim(eng, ["qa"], [5], 5)
    assert row[3] == 2 and row[4] == "qa-0"


@pytest.mark.parametrize(
    ("queues", "worker", "timeout", "qtys", "total", "argument"),
    [
        ([], "w", 30, [], 5, "queue_names"),
        (None, "w", 30, [1], 5, "queue_names"),
        (["qa", "qa"], "w", 30, [1, 1], 5, "queue_names"),
        (["qa", None], "w", 30, [1, 1], 5, "queue_names"),
        (["qa", "qb"], "w", 30, [1], 5, "qtys"),
        (["qa", "qb"], "w", 30, None, 5, "qtys"),
        (["qa", "qb"], "w", 30, [1, 0], 5, "qtys"),
        (["qa", "qb"], "w", 30, [1, None], 5, "qtys"),
        (["qa", "qb"], "w", 30, [1, 10001], 5, "qtys"),
        (["qa", "qb"], "w", 30, [1, 1], 0, "total"),
        (["qa", "qb"], "w", 30, [1, 1], None, "total"),
        (["qa", "qb"], "", 30, [1, 1], 5, "worker_id"),
        (["qa", "qb"], "w", -1, [1, 1], 5, "claim_timeout"),
        ([f"q{i}" for i in range(101)], "w", 30, [1] * 101, 5, "queue_names"),
    ],
)
def test_bad_arguments_change_nothing(
    eng: Engine,
    queues: Any,
    worker: str,
    timeout: int,
    qtys: Any,
    total: Any,
    argument: str,
) -> None:
    fill(eng, {"qa": 2, "qb": 2})
    with raises_sqlstate("22023", f"invalid {argument}:"):
        eng.rows(
            "select * from teguh.claim_queues_next(%s::text[], %s, %s, %s::integer[], %s)",
            queues,
            worker,
            timeout,
            qtys,
            total,
        )
    assert (
        eng.one("select count(*) from teguh.r_qa") + eng.one("select count(*) from teguh.r_qb") == 0
    )


def test_an_unknown_queue_claims_nothing_anywhere(eng: Engine) -> None:
    fill(eng, {"qa": 2})
    with raises_sqlstate("42704"):
        claim(eng, ["qa", "nope"], [5, 5], 5)
    assert eng.one("select count(*) from teguh.r_qa") == 0


@given(
    counts=st.lists(st.integers(0, 6), min_size=1, max_size=4),
    qtys=st.lists(st.integers(1, 8), min_size=4, max_size=4),
    total=st.integers(1, 20),
)
def test_generated_claims_share_as_described(
    eng: Engine, counts: list[int], qtys: list[int], total: int
) -> None:
    queues = [f"g{i}" for i in range(len(counts))]
    for queue in queues:
        eng.conn.execute("select teguh.drop_queue(%s)", (queue,))
    fill(eng, dict(zip(queues, counts, strict=True)))
    qtys = qtys[: len(queues)]
    rows = claim(eng, queues, qtys, total)
    got = runs_by_queue(rows)
    # the same fair shares, computed here
    left = total
    for i, queue in enumerate(queues):
        if left <= 0:
            assert queue not in {row[0] for row in rows}
            continue
        want = min(qtys[i], math.ceil(left / (len(queues) - i)))
        claimed = min(want, counts[i])
        assert got.get(queue, 0) == claimed
        due_rows = [row for row in rows if row[0] == queue and row[1] is None]
        assert len(due_rows) == (1 if claimed < want else 0)
        if due_rows:
            assert due_rows[0][11] == eng.one("select teguh.next_wake_at(%s)", queue)
        left -= claimed
    assert sum(got.values()) <= total
