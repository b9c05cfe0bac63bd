"""teguh.list_tasks: filters, keyset pagination, and an index-driven walk of t_."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from .conftest import Engine


def listed(
    eng: Engine, filters: dict[str, Any] | None = None, after: Any = None, limit: int = 100
) -> list[Any]:
    return [
        r[0]
        for r in eng.rows(
            "select task_id from teguh.list_tasks('q', %s, %s, %s)",
            Jsonb(filters or {}),
            after,
            limit,
        )
    ]


def test_filters(eng: Engine) -> None:
    first = eng.spawn("a")[0]
    eng.advance(60)
    [run] = eng.claim()
    eng.fail(run[0], {"name": "Boom", "message": "no"})  # first: pending again (retry)
    failing = eng.spawn("b", max_attempts=1)[0]
    [run] = [r for r in eng.claim(qty=5) if r[1] == failing]
    eng.advance(60)
    eng.fail(run[0], {"name": "Boom", "message": "bad input"})
    eng.advance(60)
    done = eng.spawn("a")[0]
    [run] = [r for r in eng.claim(qty=5) if r[1] == done]
    eng.complete(run[0])

    assert listed(eng) == [done, failing, first]  # newest first
    assert listed(eng, {"state": "failed"}) == [failing]
    assert listed(eng, {"state": ["failed", "completed"]}) == [done, failing]
    assert listed(eng, {"task_name": "a"}) == [done, first]
    t0 = eng.now - timedelta(seconds=180)
    assert listed(eng, {"created_after": (t0 + timedelta(seconds=60)).isoformat()}) == [
        done,
        failing,
    ]
    assert listed(eng, {"created_before": (t0 + timedelta(seconds=60)).isoformat()}) == [first]
    assert listed(eng, {"finished_after": (t0 + timedelta(seconds=100)).isoformat()}) == [
        done,
        failing,
    ]
    assert listed(eng, {"finished_before": (t0 + timedelta(seconds=150)).isoformat()}) == [failing]
    [row] = eng.rows(
        "select state, last_failure from teguh.list_tasks('q', '{\"state\": \"failed\"}')"
    )
    assert row == ("failed", {"name": "Boom", "message": "bad input"})


def test_keyset_pagination_is_stable_under_inserts(eng: Engine) -> None:
    ids = []
    for _ in range(7):
        ids.append(eng.spawn()[0])
        eng.advance(1)
    newest_first = ids[::-1]
    page1 = listed(eng, limit=3)
    assert page1 == newest_first[:3]
    for _ in range(3):  # spawned between two pages: they do not shift the next ones
        eng.spawn()
    page2 = listed(eng, after=page1[-1], limit=3)
    page3 = listed(eng, after=page2[-1], limit=3)
    assert page2 + page3 == newest_first[3:]
    assert listed(eng, after=page3[-1], limit=3) == []


@pytest.mark.parametrize(
    ("filters", "limit", "argument"),
    [
        ({"state": "done"}, 10, "state"),
        ({"state": []}, 10, "state"),
        ({"state": 3}, 10, "state"),
        ({"task_name": 1}, 10, "task_name"),
        ({"created_after": "yesterday-ish"}, 10, "created_after"),
        ({"finished_before": 5}, 10, "finished_before"),
        ({"colour": "red"}, 10, "filters"),
        ({}, 0, "limit"),
        ({}, 1001, "limit"),
    ],
)
def test_bad_filters_name_the_argument(
    eng: Engine, filters: dict[str, Any], limit: int, argument: str
) -> None:
    with pytest.raises(psycopg.Error) as info:
        eng.rows("select * from teguh.list_tasks('q', %s, null, %s)", Jsonb(filters), limit)
    assert info.value.sqlstate == "22023"
    assert info.value.diag.column_name == argument


def seq_scans(eng: Engine) -> int:
    """Sequential scans of t_q so far, this backend's unflushed ones included.

    A backend publishes its counters when it goes idle, at most once a second
    unless forced: without the forced flush, the index builds of create_queue
    (which count as scans) could be published between two readings.
    """
    eng.one("select pg_stat_force_next_flush()")
    eng.one("select pg_stat_clear_snapshot()")
    return int(
        eng.one("select seq_scan from pg_stat_user_tables where relid = 'teguh.t_q'::regclass")
    )


@pytest.mark.slow
def test_list_tasks_never_scans_t_sequentially(eng: Engine) -> None:
    # 100k tasks, one in a thousand failed, spread over ten days
    eng.conn.execute(
        """
        insert into teguh.t_q (task_id, task_name, params, headers, retry_strategy, max_attempts,
                               priority, state, current_run_id, created_at, available_at,
                               finished_at, attempts)
        select teguh._uuidv7_at(at), case when i % 10 = 0 then 'report' else 'email' end,
               '{}', '{}', '{"kind": "none"}', 1, 0,
               case when i % 1000 = 0 then 'failed' else 'completed' end,
               gen_random_uuid(), at, at, at + interval '1 second', 1
          from generate_series(1, 100000) i,
               lateral (select timestamptz '2029-12-22' + i * interval '8 seconds') as t(at)
        """
    )
    eng.conn.execute("analyze teguh.t_q")
    plans: list[str] = []
    eng.conn.add_notice_handler(lambda diag: plans.append(diag.message_primary or ""))
    # auto_explain shows the plan of the query inside list_tasks; a server built
    # without contrib modules (the pgserver wheel) has none: the scan counters
    # below still prove the point there.
    try:
        eng.conn.execute("load 'auto_explain'")
    except psycopg.errors.UndefinedFile:
        explained = False
    else:
        explained = True
        for setting, value in [
            ("auto_explain.log_min_duration", "0"),
            ("auto_explain.log_nested_statements", "on"),
            ("auto_explain.log_level", "notice"),
        ]:
            eng.conn.execute("select set_config(%s, %s, false)", (setting, value))
    before = seq_scans(eng)
    queries = [
        ({"state": "failed"}, None),
        ({"task_name": "report", "state": ["failed", "cancelled"]}, None),
        ({"created_after": "2029-12-25T00:00:00Z", "created_before": "2029-12-26T00:00:00Z"}, None),
        ({"finished_before": "2029-12-23T00:00:00Z"}, None),
        ({}, None),
    ]
    pages = []
    for filters, after in queries:
        pages.append(listed(eng, filters, after, 100))
    # the next page of failures continues where the first stopped
    pages.append(listed(eng, {"state": "failed"}, pages[0][-1], 100))
    if explained:
        eng.conn.execute("select set_config('auto_explain.log_min_duration', '-1', false)")
    assert seq_scans(eng) == before
    if explained:
        inner = [p for p in plans if "from teguh.t_q t" in p]
        assert len(inner) == len(pages), plans
        for plan in inner:
            assert "Seq Scan" not in plan, plan
            assert "Index Scan Backward using " in plan and " on t_q t" in plan, plan
    assert len(pages[0]) == 100 and len(pages[-1]) == 0  # exactly 100 failures in all
    assert len(pages[2]) == 100 and len(pages[4]) == 100


def test_locate_task_finds_the_queue_of_a_live_or_archived_task(eng: Engine) -> None:
    eng.conn.execute("select teguh.create_queue('other')")
    here = eng.spawn()[0]
    there = eng.one("select task_id from teguh.spawn_task('other', 't', '{}')")
    assert eng.one("select teguh.locate_task(%s)", here) == "q"
    assert eng.one("select teguh.locate_task(%s)", there) == "other"
    assert eng.one("select teguh.locate_task(gen_random_uuid())") is None
    [run] = eng.claim()
    eng.complete(run[0])
    eng.advance(10)
    assert eng.one("select teguh.cleanup_tasks('q', 0, 10, 'archive')") == 1
    assert eng.one("select teguh.locate_task(%s)", here) == "q"
