"""`teguh install` over a database that holds the Go reference's schema.

The Go reference's SQL is not published on its own. Its closest public relative is
absurd's schema, which the PyPI package ``absurdctl`` bundles
(``absurdctl.BUNDLED_SCHEMA_SQL``, schema ``absurd``): with the schema name
replaced by ``teguh`` it stands in for "a database holding the Go reference's
schema". It is loaded at run time from the installed package, never copied here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from teguh import schema
from teguh.errors import SchemaError

from .test_schema_upgrade import fingerprint

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def reference_sql() -> bytes:
    absurdctl = pytest.importorskip(
        "absurdctl",
        reason="absurdctl (the dev extra) bundles the schema standing in for the Go reference's",
    )
    return re.sub(r"\babsurd\b", "teguh", absurdctl.BUNDLED_SCHEMA_SQL).encode()


@pytest.fixture
def refdb(conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """A fresh database holding only the Go reference's schema (the absurd stand-in)."""
    sql = reference_sql()
    name = "teguh_go_reference_test"
    conn.execute(f'drop database if exists "{name}" with (force)')
    conn.execute(f'create database "{name}"')
    info = conn.info
    try:
        with psycopg.connect(
            f"postgresql://{info.user}@{info.host}:{info.port}/{name}", autocommit=True
        ) as ref:
            ref.execute(sql)
            ref.execute("select set_config('teguh.fake_now', %s, false)", (T0.isoformat(),))
            yield ref
    finally:
        conn.execute(f'drop database if exists "{name}" with (force)')


def without_fake_time(conn: psycopg.Connection[Any]) -> None:
    conn.execute("select set_config('teguh.fake_now', '', false)")


def install_keeping_fake_time(conn: psycopg.Connection[Any], now: datetime) -> list[str]:
    """Switch to teguh, then let the test's clock go on (teguh honours fake time only
    where the database owner allowed it: docs/security.md)."""
    without_fake_time(conn)
    applied = schema.install(conn)
    conn.execute("select teguh.allow_fake_time(true)")
    conn.execute("select set_config('teguh.fake_now', %s, false)", (now.isoformat(),))
    return applied


class Ref:
    """Calls on one connection, as the Go client would, before and after the switch."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.now = T0

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.conn.execute("select set_config('teguh.fake_now', %s, false)", (self.now.isoformat(),))

    def spawn(self, name: str, **options: Any) -> Any:
        row = self.conn.execute(
            "select task_id from teguh.spawn_task('jobs', %s, %s, %s)",
            (name, Jsonb({"n": name}), Jsonb(options)),
        ).fetchone()
        assert row is not None
        return row[0]

    def claim(self, qty: int = 1, timeout: int = 300) -> list[tuple[Any, ...]]:
        return self.conn.execute(
            "select run_id, task_id, attempt, task_name"
            " from teguh.claim_task('jobs', 'go', %s, %s)",
            (timeout, qty),
        ).fetchall()

    def claim_one(self, task_id: Any) -> Any:
        [(run_id, claimed, _, _)] = self.claim()
        assert claimed == task_id
        return run_id

    def state(self, task_id: Any) -> tuple[Any, ...]:
        row = self.conn.execute(
            "select state, completed_payload from teguh.get_task_result('jobs', %s)", (task_id,)
        ).fetchone()
        assert row is not None
        return tuple(row)


def populate(ref: Ref) -> dict[str, Any]:
    """Queues and tasks in every state the switch must carry over, made by the reference."""
    c = ref.conn
    c.execute("select teguh.create_queue('jobs'), teguh.create_queue('empty')")
    t: dict[str, Any] = {}
    t["sleeper"] = ref.spawn("sleeper")
    t["sleeper_run"] = ref.claim_one(t["sleeper"])
    c.execute(
        "select teguh.schedule_run('jobs', %s, %s)", (t["sleeper_run"], T0 + timedelta(seconds=60))
    )

    t["waiter"] = ref.spawn("waiter")
    t["waiter_run"] = ref.claim_one(t["waiter"])
    c.execute(
        "select teguh.set_task_checkpoint_state('jobs', %s, 'step1', %s, %s)",
        (t["waiter"], Jsonb({"x": 1}), t["waiter_run"]),
    )
    assert c.execute(
        "select should_suspend from teguh.await_event('jobs', %s, %s, 'wait', 'paid')",
        (t["waiter"], t["waiter_run"]),
    ).fetchone() == (True,)

    t["timeout"] = ref.spawn("timeout")
    t["timeout_run"] = ref.claim_one(t["timeout"])
    c.execute(
        "select * from teguh.await_event('jobs', %s, %s, 'w2', 'never', 30)",
        (t["timeout"], t["timeout_run"]),
    )

    t["done"] = ref.spawn("done")
    c.execute(
        "select teguh.complete_run('jobs', %s, %s)", (ref.claim_one(t["done"]), Jsonb({"ok": 1}))
    )

    t["retry"] = ref.spawn(
        "retry", max_attempts=3, retry_strategy={"kind": "fixed", "base_seconds": 10}
    )
    failing = ref.claim_one(t["retry"])
    c.execute("select teguh.fail_run('jobs', %s, %s)", (failing, Jsonb({"name": "Boom"})))

    t["running"] = ref.spawn("running")
    t["running_run"] = ref.claim_one(t["running"])

    t["pending"] = ref.spawn("pending")
    t["keyed"] = ref.spawn("keyed", idempotency_key="k1")
    c.execute("select teguh.emit_event('jobs', 'already', %s)", (Jsonb({"p": 1}),))
    return t


def test_install_migrates_the_go_reference_in_place(refdb: psycopg.Connection[Any]) -> None:
    ref = Ref(refdb)
    t = populate(ref)
    created = dict(refdb.execute("select queue_name, created_at from teguh.queues").fetchall())
    assert schema.installed_version(refdb) is None

    applied = install_keeping_fake_time(refdb, ref.now)

    assert applied == ["go-reference", "teguh.sql"]
    assert schema.check(refdb) == schema.SCHEMA_VERSION
    assert refdb.execute("select to_regnamespace('teguh_go_reference')").fetchone() == (None,)
    assert dict(refdb.execute("select * from teguh.list_queues()").fetchall()) == created
    states = {
        name: ref.state(t[name])[0]
        for name in ("sleeper", "waiter", "timeout", "done", "retry", "running", "pending", "keyed")
    }
    assert states == {
        "sleeper": "sleeping",
        "waiter": "sleeping",
        "timeout": "sleeping",
        "done": "completed",
        "retry": "pending",
        "running": "running",
        "pending": "pending",
        "keyed": "pending",
    }
    assert ref.state(t["done"]) == ("completed", {"ok": 1})
    again = refdb.execute(
        "select task_id, created from teguh.spawn_task('jobs', 'keyed', null, %s)",
        (Jsonb({"idempotency_key": "k1"}),),
    ).fetchone()
    assert again == (t["keyed"], False)

    # the running task's lease carried over: its worker completes it
    refdb.execute("select teguh.complete_run('jobs', %s, '1')", (t["running_run"],))
    # the two pending tasks are claimable now; the event wakes the waiter
    refdb.execute("select teguh.emit_event('jobs', 'paid', %s)", (Jsonb({"amount": 3}),))
    claimed = {row[1]: row for row in ref.claim(qty=10)}
    assert set(claimed) == {t["pending"], t["keyed"], t["waiter"]}
    waiter = claimed[t["waiter"]]
    assert waiter[0] == t["waiter_run"]  # the same run resumes
    assert refdb.execute(
        "select teguh.get_task_checkpoint_state('jobs', %s, 'step1')", (t["waiter"],)
    ).fetchone() == ({"x": 1},)
    assert refdb.execute(
        "select * from teguh.await_event('jobs', %s, %s, 'wait', 'paid')",
        (t["waiter"], t["waiter_run"]),
    ).fetchone() == (False, {"amount": 3})
    # an event the reference recorded as emitted is still there
    assert refdb.execute(
        "select * from teguh.await_event('jobs', %s, %s, 'early', 'already')",
        (t["waiter"], t["waiter_run"]),
    ).fetchone() == (False, {"p": 1})
    for run_id, *_ in claimed.values():
        refdb.execute("select teguh.complete_run('jobs', %s, '2')", (run_id,))

    ref.advance(10)  # the delayed retry: attempt 2 by failures
    [retry] = ref.claim()
    assert retry[1] == t["retry"] and retry[2] == 2
    refdb.execute("select teguh.complete_run('jobs', %s, '3')", (retry[0],))

    ref.advance(20)  # the event wait times out, distinguishably
    [timeout] = ref.claim()
    assert timeout[:2] == (t["timeout_run"], t["timeout"])
    assert refdb.execute(
        "select * from teguh.wait_event('jobs', %s, %s, 'w2', 'never', 30)",
        (t["timeout"], t["timeout_run"]),
    ).fetchone() == (False, None, True)
    refdb.execute("select teguh.complete_run('jobs', %s, '4')", (timeout[0],))

    ref.advance(30)  # the sleep falls due: the Go sleep idiom sees attempt 2 and goes on
    [sleeper] = ref.claim()
    assert sleeper[:3] == (t["sleeper_run"], t["sleeper"], 2)
    refdb.execute("select teguh.complete_run('jobs', %s, '5')", (sleeper[0],))

    assert ref.claim() == []
    left = refdb.execute("select state, count(*) from teguh.t_jobs group by state").fetchall()
    assert left == [("completed", 8)]


def test_a_failed_switch_leaves_the_reference_untouched(refdb: psycopg.Connection[Any]) -> None:
    populate(Ref(refdb))
    # a user's view on a reference table: dropping that table would need CASCADE
    refdb.execute("create view public.job_names as select task_name from teguh.t_jobs")
    before = fingerprint(refdb)
    rows = refdb.execute("select count(*) from teguh.t_jobs").fetchone()

    without_fake_time(refdb)
    with pytest.raises(psycopg.errors.DependentObjectsStillExist) as info:
        schema.install(refdb)

    assert "cannot replace the Go reference's schema" in str(info.value)
    assert "Nothing was changed" in (info.value.diag.message_hint or "")
    assert fingerprint(refdb) == before
    assert refdb.execute("select count(*) from teguh.t_jobs").fetchone() == rows
    assert refdb.execute("select to_regprocedure('teguh.version()')").fetchone() == (None,)
    assert refdb.execute("select count(*) from public.job_names").fetchone() == rows


def test_a_queue_teguh_cannot_name_is_refused_before_any_change(
    refdb: psycopg.Connection[Any],
) -> None:
    refdb.execute("select teguh.create_queue('Orders-EU')")
    before = fingerprint(refdb)

    without_fake_time(refdb)
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match='"Orders-EU"'):
        schema.install(refdb)

    assert fingerprint(refdb) == before
    assert refdb.execute("select queue_name from teguh.queues").fetchall() == [("Orders-EU",)]


def test_an_unknown_schema_named_teguh_is_refused(conn: psycopg.Connection[Any]) -> None:
    conn.execute("drop schema teguh cascade")
    conn.execute("create schema teguh")
    conn.execute("create table teguh.mine (id int)")

    with pytest.raises(SchemaError, match="neither teguh"):
        schema.install(conn)

    assert conn.execute("select to_regclass('teguh.mine') is not null").fetchone() == (True,)
    assert conn.execute("select to_regclass('teguh.queues')").fetchone() == (None,)


def test_a_partitioned_queue_carries_over(refdb: psycopg.Connection[Any]) -> None:
    """absurd's partitioned storage: the parents hold every partition's rows."""
    refdb.execute("select teguh.create_queue('parts', 'partitioned')")
    refdb.execute("select teguh.spawn_task('parts', 'a', '{}', '{\"idempotency_key\": \"x\"}')")

    install_keeping_fake_time(refdb, T0)

    assert refdb.execute("select task_name from teguh.claim_task('parts', 'w')").fetchall() == [
        ("a",)
    ]
    again = refdb.execute(
        "select created from teguh.spawn_task('parts', 'a', '{}', '{\"idempotency_key\": \"x\"}')"
    ).fetchone()
    assert again == (False,)
