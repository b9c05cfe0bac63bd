"""Queue policies: pause, spawn defaults, lease timeout, retention with delete or archive."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from .conftest import Engine, raises_sqlstate


def set_policy(eng: Engine, **policy: Any) -> dict[str, Any]:
    return eng.one("select teguh.set_queue_policy('q', %s)", Jsonb(policy))  # type: ignore[no-any-return]


def finish(eng: Engine, n: int, checkpoint: bool = False) -> list[Any]:
    eng.conn.execute("select * from teguh.spawn_tasks('q', 't', %s)", (Jsonb(list(range(n))),))
    ids = []
    for run in eng.claim(qty=n):
        if checkpoint:
            eng.conn.execute(
                "select teguh.set_task_checkpoint_state('q', %s, 'step', %s, %s)",
                (run[1], Jsonb({"v": run[4]}), run[0]),
            )
        eng.complete(run[0], run[4])
        ids.append(run[1])
    return ids


def test_defaults_and_merge(eng: Engine) -> None:
    policy = eng.one("select teguh.get_queue_policy('q')")
    assert policy == {
        "retention": None,
        "cleanup": "delete",
        "paused": False,
        "default_max_attempts": 5,
        "default_retry_strategy": {
            "kind": "exponential",
            "base_seconds": 1,
            "factor": 2,
            "max_seconds": 300,
        },
        "lease_timeout": 30,
    }
    assert set_policy(eng, retention=60)["retention"] == 60
    after = set_policy(eng, default_retry_strategy={"kind": "fixed", "base_seconds": 3})
    assert after["retention"] == 60  # merged, not replaced
    assert after["default_retry_strategy"] == {"kind": "fixed", "base_seconds": 3}
    assert set_policy(eng, retention=None)["retention"] is None  # null: back to the default


@pytest.mark.parametrize(
    ("policy", "argument"),
    [
        ({"retention": -1}, "retention"),
        ({"retention": "1d"}, "retention"),
        ({"cleanup": "shred"}, "cleanup"),
        ({"paused": "yes"}, "paused"),
        ({"default_max_attempts": 0}, "default_max_attempts"),
        ({"default_retry_strategy": {"kind": "linear"}}, "retry_strategy.kind"),
        ({"lease_timeout": 0}, "lease_timeout"),
        ({"retention": 5, "colour": "red"}, "policy"),
    ],
)
def test_bad_policies_change_nothing(eng: Engine, policy: dict[str, Any], argument: str) -> None:
    set_policy(eng, retention=10)
    with pytest.raises(psycopg.Error) as info:
        eng.conn.execute("select teguh.set_queue_policy('q', %s)", (Jsonb(policy),))
    assert info.value.sqlstate == "22023"
    assert info.value.diag.column_name == argument
    assert eng.one("select teguh.get_queue_policy('q')")["retention"] == 10
    with raises_sqlstate("42704"):
        eng.conn.execute("select teguh.get_queue_policy('nope')")


def test_a_paused_queue_hands_out_nothing(eng: Engine, make_engine: Any) -> None:
    task_id = eng.spawn()[0]
    set_policy(eng, paused=True)
    assert eng.claim() == []
    # the per-queue claim function itself, as the worker's batched claims use it
    assert eng.rows("select * from teguh.claim_runs('q', 'w', 30, 10)") == []
    assert eng.rows("select * from teguh._claim_q('w', 30, 10, teguh.current_time(), false)") == []
    other: Engine = make_engine()
    assert other.claim() == []
    # spawning still works; resuming hands the tasks out
    eng.spawn()
    set_policy(eng, paused=False)
    assert task_id in [r[1] for r in eng.claim(qty=10)]


def test_spawn_defaults_apply_where_the_caller_gave_none(eng: Engine) -> None:
    set_policy(eng, default_max_attempts=2, default_retry_strategy={"kind": "none"})
    plain = eng.task(eng.spawn()[0])
    assert plain["max_attempts"] == 2 and plain["retry_strategy"] == {"kind": "none"}
    explicit = eng.task(eng.spawn(max_attempts=9, retry_strategy={"kind": "fixed"})[0])
    assert explicit["max_attempts"] == 9 and explicit["retry_strategy"]["kind"] == "fixed"
    eng.conn.execute("select teguh.spawn_tasks('q', 'many', '[1, 2]')")
    assert {
        r[0] for r in eng.rows("select max_attempts from teguh.t_q where task_name = 'many'")
    } == {2}


def test_lease_timeout_for_runs_claimed_without_one(eng: Engine) -> None:
    set_policy(eng, lease_timeout=120)
    eng.spawn()
    eng.spawn()
    eng.rows("select * from teguh.claim_task('q', 'w', null)")
    eng.claim(timeout=5)
    leases = sorted(r[0] for r in eng.rows("select expires_at - claimed_at from teguh.r_q"))
    assert leases == [timedelta(seconds=5), timedelta(seconds=120)]


def test_ticker_applies_retention_by_deleting_in_batches(eng: Engine) -> None:
    old = finish(eng, 3, checkpoint=True)
    eng.conn.execute("select teguh.emit_event('q', 'old-event', '1')")
    eng.advance(100)
    recent = finish(eng, 2)
    set_policy(eng, retention=50)
    eng.one("select teguh.ticker()")
    remaining = {r[0] for r in eng.rows("select task_id from teguh.t_q")}
    assert remaining == set(recent) and not set(old) & remaining
    assert eng.count("c") == 0 and eng.count("e") == 0
    assert eng.one("select teguh.get_task('q', %s)", old[0]) is None


def test_retention_runs_in_bounded_batches(eng: Engine) -> None:
    finish(eng, 5)
    set_policy(eng, retention=0)
    eng.advance(1)
    assert eng.one("select teguh._apply_retention('q', teguh.current_time(), 2)") == 2
    assert eng.count("t") == 3


def test_archive_moves_tasks_with_checkpoints_and_get_task_finds_them(eng: Engine) -> None:
    old = finish(eng, 3, checkpoint=True)
    waiting = eng.spawn("waiter")[0]
    [run] = [r for r in eng.claim() if r[1] == waiting]
    eng.conn.execute(
        "select * from teguh.await_event('q', %s, %s, 'w', 'later')", (waiting, run[0])
    )
    eng.conn.execute("select teguh.emit_event('q', 'used', '{\"x\": 1}')")
    eng.advance(100)
    set_policy(eng, retention=50, cleanup="archive")
    eng.one("select teguh.ticker()")
    assert eng.count("t") == 1 and eng.count("c") == 0  # only the waiting task is left
    assert eng.one("select count(*) from teguh.a_q") == 3
    assert eng.rows("select event_name from teguh.ae_q") == [("used",)]
    assert eng.rows("select event_name from teguh.e_q") == []
    info = eng.task(old[0])
    assert info["archived"] is True and info["state"] == "completed"
    assert info["task_name"] == "t" and info["finished_at"] is not None
    checkpoints = eng.one("select checkpoints from teguh.a_q where task_id = %s", old[0])
    assert checkpoints["step"]["state"] == {"v": 0}
    assert eng.task(waiting)["archived"] is False


def test_cleanup_tasks_takes_a_strategy(eng: Engine) -> None:
    ids = finish(eng, 4)
    eng.advance(10)
    assert eng.one("select teguh.cleanup_tasks('q', 5, 2, 'archive')") == 2
    assert eng.one("select teguh.cleanup_tasks('q', 5, 1, 'delete')") == 1
    # the Go signature still works; null strategy follows the policy (delete)
    assert eng.one("select teguh.cleanup_tasks('q', 5, 10)") == 1
    archived = [r[0] for r in eng.rows("select task_id from teguh.a_q")]
    assert len(archived) == 2 and set(archived) <= set(ids) and eng.count("t") == 0
    assert all(eng.task(i)["archived"] for i in archived)
    with raises_sqlstate("22023", "strategy"):
        eng.conn.execute("select teguh.cleanup_tasks('q', 5, 10, 'shred')")


def test_archive_batches_are_atomic_and_skip_locked_rows(eng: Engine, make_engine: Any) -> None:
    ids = finish(eng, 3)
    eng.advance(10)
    holder: Engine = make_engine()
    with holder.conn.transaction():
        holder.conn.execute("select 1 from teguh.t_q where task_id = %s for update", (ids[0],))
        assert eng.one("select teguh.cleanup_tasks('q', 5, 10, 'archive')") == 2
    assert eng.one("select teguh.cleanup_tasks('q', 5, 10, 'archive')") == 1
    assert eng.count("t") == 0 and eng.one("select count(*) from teguh.a_q") == 3


def test_drop_queue_drops_archive_and_policy(eng: Engine) -> None:
    set_policy(eng, cleanup="archive", paused=True)
    eng.conn.execute("select teguh.drop_queue('q')")
    assert eng.one("select to_regclass('teguh.a_q')") is None
    assert eng.one("select count(*) from teguh.queue_policies") == 0
