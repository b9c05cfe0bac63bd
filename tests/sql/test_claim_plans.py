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


def _fill_on_the_real_clock(eng: Engine, n: int) -> None:
    """Fill the queue with time-ordered ids, autovacuum kept off its tables."""
    for table in ("p_q", "t_q", "r_q"):
        eng.conn.execute(f"alter table teguh.{table} set (autovacuum_enabled = false)")
    eng.conn.execute("select set_config('teguh.fake_now', '', false)")
    _fill(eng, n)


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


@pytest.mark.parametrize("backlog", [1_000, 3_000])
def test_a_claim_of_an_analyzed_mid_sized_backlog_reads_a_few_entries(
    eng: Engine, backlog: int
) -> None:
    # Every table analyzed with a backlog of a few thousand spawned on the
    # real clock: ids in time order correlate with the tables' physical
    # order, so a full index scan looked cheap, and the generic plan joined
    # the claimed runs to p_ and t_ by hashing a full index scan of each.
    # Every claim read the whole backlog twice: the drain of four queues of
    # 2,500 tasks ran at half the speed of one queue of 10,000. (Under the
    # fake clock every id has the same time and the plan was right.)
    _fill_on_the_real_clock(eng, backlog)
    eng.conn.execute("analyze")
    before = index_reads(eng)
    claimed = 0
    for _ in range(20):
        claimed += len(eng.claim(4))
    spent = index_reads(eng) - before
    assert claimed == 80
    # scanning the backlog twice per claim read 41,208 (1,000) and 121,156 (3,000)
    assert spent < 5_000, spent


def test_completions_next_to_an_analyzed_backlog_read_a_few_entries(eng: Engine) -> None:
    # the completion joins its runs to r_ and t_ as the claim does (see above)
    _fill_on_the_real_clock(eng, 3_000)
    runs = [row[0] for row in eng.claim(1_000)]
    eng.conn.execute("analyze")
    before = index_reads(eng)
    for i in range(0, 80, 4):
        eng.rows("select * from teguh.complete_runs(%s, %s::uuid[], null)", eng.q, runs[i : i + 4])
    spent = index_reads(eng) - before
    assert eng.one("select count(*) from teguh.t_q where state = 'completed'") == 80
    # hashing full index scans would read a few thousand entries per call
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
        "enable_hashjoin=off",
        "enable_mergejoin=off",
        "plan_cache_mode=force_generic_plan",
        "jit=off",
    ):
        assert setting in config
