"""Claims read a few index entries per run, whatever the planner's statistics say.

A queue filled faster than autovacuum analyzes it looked empty to the
planner, which then claimed by a bitmap scan of every ready task plus a sort:
each claim of a backlog read the whole backlog. The claim function pins its
planning (index scans only, one generic plan, no JIT); these tests fill a
queue under each state of the statistics and count what claims read.
"""

from __future__ import annotations

import pytest

from .conftest import Engine
from .test_concurrency_limits import index_reads

BACKLOG = 10_000


def _fill(eng: Engine, n: int, options: str = "{}") -> None:
    # in batches, as applications and the benchmarks spawn: one batch of
    # 10,000 happened to plan well, ten of 1,000 did not
    for _ in range(n // 1000):
        eng.one(
            "select count(*) from teguh.spawn_tasks(%s, 't',"
            " (select jsonb_agg(i) from generate_series(1, 1000) i), %s::jsonb)",
            eng.q,
            options,
        )


@pytest.mark.parametrize("statistics", ["never analyzed", "analyzed empty", "analyzed full"])
def test_a_claim_reads_a_few_entries_per_run_of_a_backlog(eng: Engine, statistics: str) -> None:
    # autovacuum must not analyze behind the test's back
    eng.conn.execute("alter table teguh.p_q set (autovacuum_enabled = false)")
    if statistics == "analyzed empty":
        eng.conn.execute("analyze teguh.p_q")
    _fill(eng, BACKLOG)
    if statistics == "analyzed full":
        eng.conn.execute("analyze teguh.p_q")
    before = index_reads(eng)
    claimed = 0
    for _ in range(20):  # past the plan cache's five custom plans
        claimed += len(eng.claim(10))
    spent = index_reads(eng) - before
    assert claimed == 200
    # a sort of the backlog would read 10,000 entries per claim (200,000 measured)
    assert spent < 5_000, spent


def test_a_claim_of_keyed_and_unkeyed_backlogs_reads_a_few_entries(eng: Engine) -> None:
    eng.conn.execute("alter table teguh.p_q set (autovacuum_enabled = false)")
    eng.one("select teguh.set_concurrency_limit('q', 'k', 1000)")
    _fill(eng, BACKLOG // 2)
    _fill(eng, BACKLOG // 2, '{"concurrency_key": "k"}')
    before = index_reads(eng)
    claimed = 0
    for _ in range(20):
        claimed += len(eng.claim(10))
    spent = index_reads(eng) - before
    assert claimed == 200
    assert spent < 10_000, spent


def test_the_claim_function_pins_its_planning(eng: Engine) -> None:
    config = eng.one("select proconfig from pg_proc where oid = 'teguh._claim_q'::regproc")
    for setting in (
        "enable_seqscan=off",
        "enable_bitmapscan=off",
        "plan_cache_mode=force_generic_plan",
        "jit=off",
    ):
        assert setting in config
