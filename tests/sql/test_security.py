"""The security model (docs/security.md), on a real server with real login roles.

A non-superuser role owns schema teguh (as the recipe prescribes); each kind
of application role connects as itself and is shown what it can do, and
refused (42501) the rest. The escalation attempts of issue 8 fail: a trigger
or view on a queue table, objects pre-created in the schema, functions in
schema public shadowing built-ins, owner-only functions, moving the clock.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

import teguh
from teguh import schema
from tests.conftest import SCHEMA_FILE
from tests.helpers import wait_for
from tests.sql.conftest import raises_sqlstate
from tests.sql.test_schema_upgrade import V1_SQL, _fresh_database

_counter = itertools.count(1)

Connect = Callable[[str], psycopg.Connection[Any]]


class Roles:
    """Creates login roles for one test and connects as them; drops them after."""

    def __init__(self, admin: psycopg.Connection[Any], dsn: str) -> None:
        self.admin = admin
        self.dsn = dsn
        self.created: list[str] = []
        self.owner = ""
        self.conns: list[psycopg.Connection[Any]] = []
        worker = os.environ.get("PYTEST_XDIST_WORKER", "")
        self.prefix = f"sec{worker}_{next(_counter)}_"

    def create(self, name: str, *, login: bool = True) -> str:
        role = self.prefix + name
        attr = sql.SQL("login" if login else "nologin")
        self.admin.execute(sql.SQL("create role {} {}").format(sql.Identifier(role), attr))
        self.created.append(role)
        return role

    def connect(self, role: str) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.dsn, user=role, autocommit=True)
        self.conns.append(conn)
        return conn

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
        for role in reversed(self.created):
            ident = sql.Identifier(role)
            self.admin.execute(sql.SQL("drop owned by {} cascade").format(ident))
            self.admin.execute(sql.SQL("drop role {}").format(ident))


@pytest.fixture
def roles(conn: psycopg.Connection[Any], dsn: str) -> Iterator[Roles]:
    """Login roles for this test; the schema is handed to a non-superuser owner first."""
    made = Roles(conn, dsn)
    try:
        owner = made.create("owner", login=False)
        conn.execute(sql.SQL("alter schema teguh owner to {}").format(sql.Identifier(owner)))
        conn.execute("select teguh._secure_schema()")  # what re-installing does
        made.owner = owner
        yield made
    finally:
        conn.execute("alter schema teguh owner to current_user")
        conn.execute("select teguh._secure_schema()")
        made.close()


def _granted(conn: psycopg.Connection[Any], roles: Roles, kind: str) -> psycopg.Connection[Any]:
    role = roles.create(kind)
    conn.execute("select teguh.grant_role(%s, %s)", (role, kind))
    return roles.connect(role)


def _spawn(conn: psycopg.Connection[Any], queue: str = "q", params: Any = None) -> Any:
    row = conn.execute(
        "select task_id from teguh.spawn_task(%s, 't', %s)", (queue, Jsonb(params or {}))
    ).fetchone()
    assert row is not None
    return row[0]


def _refused(conn: psycopg.Connection[Any], statements: list[str], *args: Any) -> None:
    """Each statement fails with 42501 (insufficient privilege) and changes nothing."""
    for statement in statements:
        with raises_sqlstate("42501"):
            conn.execute(statement, args if "%s" in statement else None)


# -- the catalog: every function pinned, classified, not executable by PUBLIC -------------


def test_every_function_is_pinned_and_public_ones_run_as_the_owner(
    conn: psycopg.Connection[Any], queue: str
) -> None:
    rows = conn.execute(
        """select p.proname, p.prosecdef, p.proconfig, p.proacl::text[],
                  pg_get_userbyid(p.proowner) = pg_get_userbyid(n.nspowner)
             from pg_proc p join pg_namespace n on n.oid = p.pronamespace
            where n.nspname = 'teguh'"""
    ).fetchall()
    assert any(name.startswith("_claim_") for name, *_ in rows)  # the queue's own functions too
    # run per spawned task: schema-qualified throughout instead of a pinned path
    qualified = {"portable_uuidv7", "_uuidv7_at"}
    for name, secdef, config, acl, owned in rows:
        pinned = "search_path=pg_catalog, pg_temp" in (config or [])
        assert pinned == (name not in qualified), name
        assert owned, name
        assert acl is not None and not any(item.startswith("=") for item in acl), (name, acl)
        runs_as_owner = not name.startswith("_") and name not in {"start", "stop", *qualified}
        assert secdef == runs_as_owner, name


def test_the_unpinned_uuid_functions_ignore_a_hostile_search_path(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute("create schema evil")
    for fn in ["uuid_send(uuid)", "gen_random_uuid()", "encode(bytea, text)", "clock_timestamp()"]:
        name = fn.split("(")[0]
        conn.execute(
            f"create function evil.{fn} returns int language sql as 'select 1/0'"  # test-only
            if name != "clock_timestamp"
            else "create function evil.clock_timestamp() returns timestamptz"
            " language sql as $$ select '1999-01-01'::timestamptz $$"
        )
    conn.execute(
        "create function evil.int4and(int, int) returns int language sql as 'select 1/0';"
        " create operator evil.& (function = evil.int4and, leftarg = int, rightarg = int)"
    )
    conn.execute("set search_path = evil, pg_catalog")
    ids = [conn.execute("select teguh.portable_uuidv7()").fetchone() for _ in range(3)]
    conn.execute("select set_config('teguh.fake_now', '2031-05-06T07:08:09Z', false)")
    fake = conn.execute("select teguh.portable_uuidv7()::text").fetchone()
    conn.execute("reset search_path")
    assert all(row is not None and str(row[0])[14] == "7" for row in ids)
    assert fake is not None and fake[0].startswith("01")
    # a v7 id at the fake instant: its first 48 bits are that instant in ms
    assert conn.execute(
        "select to_timestamp(('x' || lpad(replace(left(%s, 13), '-', ''), 16, '0'))"
        "::bit(64)::bigint / 1000.0) = '2031-05-06T07:08:09Z'",
        (fake[0],),
    ).fetchone() == (True,)


def test_every_public_function_belongs_to_a_kind_of_role(conn: psycopg.Connection[Any]) -> None:
    """A new public function must be classified in teguh._role_functions() (even as 'owner')."""
    public = {
        name
        for (name,) in conn.execute(
            "select proname from pg_proc where pronamespace = 'teguh'::regnamespace"
            " and left(proname, 1) <> '_'"
        )
    }
    classified = {
        name for (name,) in conn.execute("select function_name from teguh._role_functions()")
    }
    unclassified = public - classified
    assert not unclassified, f"add {sorted(unclassified)} to a kind in teguh._role_functions()"
    every = {
        n
        for (n,) in conn.execute(
            "select proname from pg_proc where pronamespace = 'teguh'::regnamespace"
        )
    }
    assert classified - every == set()  # no stale names either


# -- the roles of the recipe ------------------------------------------------------------


def test_producer_spawns_and_reads_results_and_nothing_else(
    conn: psycopg.Connection[Any], roles: Roles
) -> None:
    conn.execute("select teguh.create_queue('q')")
    producer = _granted(conn, roles, "producer")
    task_id = _spawn(producer, params={"n": 1})
    producer.execute("select teguh.spawn_tasks('q', 't', %s)", (Jsonb([{"n": 2}, {"n": 3}]),))
    assert producer.execute(
        "select state from teguh.get_task_result('q', %s)", (task_id,)
    ).fetchone() == ("pending",)
    assert producer.execute("select teguh.version()").fetchone() is not None
    assert producer.execute("select queue_name from teguh.list_queues()").fetchall() == [("q",)]
    _refused(
        producer,
        [
            "select * from teguh.claim_task('q', 'w')",
            "select teguh.cancel_task('q', %s)",
            "select * from teguh.get_task('q', %s)",
            "select teguh.emit_event('q', 'e')",
            "select * from teguh.queue_stats()",
            "select teguh.create_queue('mine')",
            "select teguh.drop_queue('q')",
            "select teguh.ticker()",
            "select teguh.cleanup_all_queues()",
            "select teguh.start()",
            "select teguh.allow_fake_time(true)",
            "select teguh.grant_worker(current_user)",
            "select * from teguh.t_q",
            "insert into teguh.p_q (task_id, run_id, attempt, priority, available_at)"
            " values (gen_random_uuid(), gen_random_uuid(), 1, 0, now())",
            "select * from teguh.queues",
            "select teguh._recover_expired('q', now(), 10)",
            "create table teguh.mine (x int)",
        ],
        task_id,
    )
    assert conn.execute("select count(*) from teguh.t_q").fetchone() == (3,)


def test_worker_runs_tasks_on_queues_created_after_the_grant(
    conn: psycopg.Connection[Any], roles: Roles
) -> None:
    worker = _granted(conn, roles, "worker")
    admin = _granted(conn, roles, "admin")
    admin.execute("select teguh.create_queue('later')")  # created after both grants
    task_id = _spawn(worker, "later")
    claimed = worker.execute(
        "select run_id, task_id from teguh.claim_task('later', 'w1')"
    ).fetchall()
    assert [c[1] for c in claimed] == [task_id]
    run_id = claimed[0][0]
    worker.execute(
        "select teguh.set_task_checkpoint_state('later', %s, 'step', %s, %s)",
        (task_id, Jsonb(1), run_id),
    )
    worker.execute("select teguh.extend_claim('later', %s, 30)", (run_id,))
    worker.execute("select teguh.emit_event('later', 'ping', %s)", (Jsonb(2),))
    worker.execute("select teguh.complete_run('later', %s, %s)", (run_id, Jsonb({"ok": True})))
    assert worker.execute(
        "select state, completed_payload from teguh.get_task_result('later', %s)", (task_id,)
    ).fetchone() == ("completed", {"ok": True})
    assert worker.execute("select teguh.ticker()").fetchone() == (0,)
    assert worker.execute("select teguh.next_wake_at('later')").fetchone() == (None,)
    _refused(
        worker,
        [
            "select teguh.create_queue('mine')",
            "select teguh.drop_queue('later')",
            "select teguh.cancel_task('later', %s)",
            "select * from teguh.retry_task('later', %s)",
            "select teguh.cleanup_all_queues()",
            "select * from teguh.queue_stats()",
            "update teguh.t_later set state = 'pending'",
            "select teguh.start()",
        ],
        task_id,
    )


def test_monitor_reads_every_queue_and_changes_nothing(
    conn: psycopg.Connection[Any], roles: Roles
) -> None:
    conn.execute("select teguh.create_queue('q')")
    conn.execute("select teguh.create_queue('other')")
    task_id = _spawn(conn, "other")
    monitor = _granted(conn, roles, "monitor")
    stats = monitor.execute("select queue_name, pending from teguh.queue_stats()").fetchall()
    assert stats == [("other", 1), ("q", 0)]
    assert monitor.execute(
        "select state from teguh.get_task('other', %s)", (task_id,)
    ).fetchone() == ("pending",)
    assert monitor.execute(
        "select state from teguh.get_task_result('other', %s)", (task_id,)
    ).fetchone() == ("pending",)
    _refused(
        monitor,
        [
            "select * from teguh.spawn_task('q', 't', '{}')",
            "select * from teguh.claim_task('q', 'w')",
            "select teguh.cancel_task('other', %s)",
            "select teguh.emit_event('q', 'e')",
            "select teguh.ticker()",
            "select teguh.create_queue('mine')",
            "select * from teguh.t_other",
        ],
        task_id,
    )


def test_admin_manages_queues_without_owning_anything(
    conn: psycopg.Connection[Any], roles: Roles
) -> None:
    admin = _granted(conn, roles, "admin")
    admin.execute("select teguh.create_queue('jobs')")
    owners = conn.execute(
        """select distinct pg_get_userbyid(relowner) from pg_class
            where relnamespace = 'teguh'::regnamespace and relname like '%jobs%'
           union
           select distinct pg_get_userbyid(proowner) from pg_proc
            where pronamespace = 'teguh'::regnamespace and proname like '%jobs'"""
    ).fetchall()
    assert owners == [(roles.owner,)]
    task_id = _spawn(conn, "jobs")
    admin.execute("select teguh.cancel_task('jobs', %s)", (task_id,))
    admin.execute("select * from teguh.retry_task('jobs', %s, '{\"spawn_new\": true}')", (task_id,))
    assert admin.execute("select pending from teguh.queue_stats('jobs')").fetchone() == (1,)
    admin.execute("select teguh.cleanup_all_queues()")
    # names are validated before any identifier is built
    for name in ["x; drop schema teguh cascade", 'a"b', "Jobs", "t_q cascade --"]:
        with raises_sqlstate("22023"):
            admin.execute("select teguh.create_queue(%s)", (name,))
    admin.execute("select teguh.drop_queue('jobs')")
    assert conn.execute("select to_regclass('teguh.t_jobs')").fetchone() == (None,)


# -- escalation attempts ---------------------------------------------------------------


def test_no_trigger_view_or_rule_can_be_hung_on_a_queue_table(
    conn: psycopg.Connection[Any], roles: Roles
) -> None:
    admin = _granted(conn, roles, "admin")
    admin.execute("select teguh.create_queue('q')")
    admin.execute(
        "create function pg_temp.evil() returns trigger language plpgsql as"
        " $$ begin alter role current_user superuser; return null; end $$"
    )
    _refused(
        admin,
        [
            "create trigger evil after update on teguh.t_q execute function pg_temp.evil()",
            "create rule evil as on delete to teguh.p_q do also notify evil",
            "alter table teguh.t_q enable row level security",
            "create policy evil on teguh.t_q using (true)",
            "alter table teguh.t_q add column x int",
            # a queue table pre-created as a view, before create_queue('evil')
            "create view teguh.t_evil as select 1 as task_id",
            "create table teguh.t_later (task_id uuid)",
            "create function teguh.ticker(p_queue_name integer) returns integer"
            " language sql as 'select 1'",
            "select * from teguh.t_q",
        ],
    )
    # the owner/superuser's ticker and stats run as before
    assert conn.execute("select teguh.ticker()").fetchone() == (0,)
    assert conn.execute("select count(*) from teguh.queue_stats()").fetchone() == (1,)
    rolsuper = conn.execute(
        "select bool_or(rolsuper) from pg_roles where rolname = any(%s)", (roles.created,)
    )
    assert rolsuper.fetchone() == (False,)


def test_functions_in_schema_public_cannot_shadow_built_ins(
    conn: psycopg.Connection[Any], roles: Roles
) -> None:
    """CVE-2018-1058's pattern: a better-matching overload in a schema on the caller's path."""
    conn.execute("select teguh.create_queue('q')")
    attacker = roles.create("attacker")
    # PostgreSQL 14 and older let everybody create in public; simulate it
    conn.execute(sql.SQL("grant create on schema public to {}").format(sql.Identifier(attacker)))
    evil = roles.connect(attacker)
    # make_interval(secs => <integer>) needs a cast to reach pg_catalog's version: an
    # exact-match overload in public wins for any caller that has public on its path
    evil.execute(
        """create function public.make_interval(secs integer) returns interval
           language plpgsql as $$
           begin
             raise exception 'shadowed make_interval ran as %', current_user;
           end $$"""
    )
    evil.execute("grant execute on function public.make_interval(integer) to public")
    with raises_sqlstate("P0001", "shadowed make_interval ran as"):
        conn.execute("select make_interval(secs => 1)")  # the trap is armed for this session
    eng_task = _spawn(conn)
    claimed = conn.execute("select run_id from teguh.claim_task('q', 'w', 30)").fetchall()
    assert len(claimed) == 1  # claim_task adds make_interval(secs => claim_timeout)
    conn.execute("select teguh.complete_run('q', %s)", (claimed[0][0],))
    assert conn.execute("select teguh.cleanup_tasks('q', 60)").fetchone() == (0,)
    assert conn.execute("select teguh.cleanup_all_queues()").fetchone() is not None
    assert conn.execute("select teguh.ticker()").fetchone() == (0,)
    assert conn.execute("select state from teguh.get_task('q', %s)", (eng_task,)).fetchone() == (
        "completed",
    )
    conn.execute("drop function public.make_interval(integer)")


def test_a_session_search_path_does_not_reach_teguh_functions(
    conn: psycopg.Connection[Any], roles: Roles
) -> None:
    """Even an exact-signature overload wins when a session puts pg_catalog after it."""
    conn.execute("select teguh.create_queue('q')")
    attacker = roles.create("attacker2")
    conn.execute(sql.SQL("create schema evil authorization {}").format(sql.Identifier(attacker)))
    evil = roles.connect(attacker)
    evil.execute(
        """create function evil.statement_timestamp() returns timestamptz language plpgsql as
           $$ begin raise exception 'shadowed statement_timestamp ran as %', current_user; end $$"""
    )
    conn.execute("set search_path = evil, pg_catalog, public")
    with raises_sqlstate("P0001", "shadowed"):
        conn.execute("select statement_timestamp()")
    conn.execute("reset teguh.fake_now")
    assert conn.execute("select teguh.ticker()").fetchone() == (0,)
    assert conn.execute(
        "select teguh.current_time() <= pg_catalog.now() + '1 hour'"
    ).fetchone() == (True,)
    _spawn(conn)
    conn.execute("reset search_path")
    conn.execute("drop schema evil cascade")


# -- fake time --------------------------------------------------------------------------


def test_fake_time_is_refused_unless_the_owner_allowed_it(
    conn: psycopg.Connection[Any], roles: Roles
) -> None:
    conn.execute("select teguh.create_queue('q')")
    conn.execute("select teguh.allow_fake_time(false)")
    worker = _granted(conn, roles, "worker")
    task_id = _spawn(worker)
    worker.execute("set teguh.fake_now = '2999-01-01T00:00:00Z'")
    for statement in [
        "select * from teguh.claim_task('q', 'w')",
        "select teguh.ticker()",
        "select teguh.current_time()",
        "select * from teguh.spawn_task('q', 't', '{}')",
    ]:
        with raises_sqlstate("42501", "teguh.fake_now is set"):
            worker.execute(statement)
    # nothing moved: the task is still pending, once
    assert conn.execute("select state from teguh.get_task('q', %s)", (task_id,)).fetchone() == (
        "pending",
    )
    assert conn.execute("select count(*) from teguh.t_q").fetchone() == (1,)
    # only the owner may allow it
    _refused(worker, ["select teguh.allow_fake_time(true)", "delete from teguh.settings"])
    worker.execute("reset teguh.fake_now")
    assert worker.execute("select teguh.current_time() < '2999-01-01'").fetchone() == (True,)

    conn.execute("select teguh.allow_fake_time(true)")
    worker.execute("set teguh.fake_now = '2999-01-01T00:00:00Z'")
    assert worker.execute("select teguh.current_time() = '2999-01-01T00:00:00Z'").fetchone() == (
        True,
    )


@pytest.mark.parametrize("value", ["not a time", "infinity", "-infinity", "2030-13-45"])
def test_an_unparsable_fake_now_is_an_error_naming_the_setting(
    conn: psycopg.Connection[Any], value: str
) -> None:
    conn.execute("select set_config('teguh.fake_now', %s, false)", (value,))
    with pytest.raises(psycopg.Error) as info:
        conn.execute("select teguh.current_time()")
    assert info.value.sqlstate == "22023"
    assert info.value.diag.column_name == "teguh.fake_now"


# -- grants survive upgrades -----------------------------------------------------------


def test_grants_survive_reinstall_and_functions_a_migration_recreates(
    conn: psycopg.Connection[Any], roles: Roles
) -> None:
    conn.execute("select teguh.create_queue('q')")
    worker = _granted(conn, roles, "worker")
    _spawn(worker)
    # a migration drops and recreates a function: its ACL is gone with it
    conn.execute("drop function teguh.claim_task(text, text, integer, integer)")
    conn.execute(SCHEMA_FILE.read_bytes())
    assert len(worker.execute("select * from teguh.claim_task('q', 'w')").fetchall()) == 1
    conn.execute(SCHEMA_FILE.read_bytes())
    assert worker.execute("select teguh.ticker()").fetchone() == (0,)
    # taking the kind back takes everything back
    conn.execute("select teguh.revoke_role(%s)", (roles.created[-1],))
    _refused(worker, ["select teguh.ticker()", "select teguh.version()"])
    assert conn.execute(
        "select count(*) from teguh.role_grants where role_name = %s", (roles.created[-1],)
    ).fetchone() == (0,)


def test_grant_role_checks_its_arguments(conn: psycopg.Connection[Any]) -> None:
    for args, column in [
        (("no_such_role", "worker"), "role"),
        ((None, "worker"), "role"),
        (("postgres", "root"), "kind"),
        (("postgres", "owner"), "kind"),
        (("postgres", None), "kind"),
    ]:
        with pytest.raises(psycopg.Error) as info:
            conn.execute("select teguh.grant_role(%s, %s)", args)
        assert info.value.sqlstate == "22023" and info.value.diag.column_name == column


def test_upgrade_from_version_1_takes_the_schema_back_from_application_roles(
    conn: psycopg.Connection[Any], roles: Roles
) -> None:
    """Version 1's docs had app roles create queues with CREATE on the schema."""
    app = roles.create("v1app")
    dsn = _fresh_database(conn, "teguh_v1_security")
    try:
        with psycopg.connect(dsn, autocommit=True) as old:
            old.execute(V1_SQL.read_bytes())
            ident = sql.Identifier(app)
            old.execute(sql.SQL("grant usage, create on schema teguh to {}").format(ident))
            old.execute(
                sql.SQL("grant execute on all functions in schema teguh to {}").format(ident)
            )
            old.execute(sql.SQL("grant all on all tables in schema teguh to {}").format(ident))
            with psycopg.connect(dsn, user=app, autocommit=True) as as_app:
                as_app.execute("select teguh.create_queue('mine')")
                as_app.execute(
                    "create function teguh.evil() returns trigger language plpgsql as"
                    " $$ begin return null; end $$"
                )
                as_app.execute(
                    "create trigger evil after update on teguh.t_mine execute function teguh.evil()"
                )
            warnings: list[str] = []
            old.add_notice_handler(
                lambda d: (
                    warnings.append(str(d.message_primary)) if d.severity == "WARNING" else None
                )
            )
            schema.install(old)
            assert any("trigger evil on teguh.t_mine" in w for w in warnings), warnings
            foreign = old.execute(
                """select relname from pg_class where relnamespace = 'teguh'::regnamespace
                     and relowner <> (select nspowner from pg_namespace where nspname = 'teguh')
                   union all
                   select proname from pg_proc where pronamespace = 'teguh'::regnamespace
                     and proowner <> (select nspowner from pg_namespace where nspname = 'teguh')"""
            ).fetchall()
            assert foreign == []
            assert old.execute(
                "select has_schema_privilege(%s, 'teguh', 'create')", (app,)
            ).fetchone() == (False,)
            assert old.execute(
                "select has_table_privilege(%s, 'teguh.queues', 'trigger')", (app,)
            ).fetchone() == (False,)
            # the role keeps working, now through its recorded kinds
            assert old.execute(
                "select array_agg(kind order by kind) from teguh.role_grants where role_name = %s",
                (app,),
            ).fetchone() == (["admin", "worker"],)
            with psycopg.connect(dsn, user=app, autocommit=True) as as_app:
                as_app.execute("select teguh.create_queue('again')")
                claimed = as_app.execute("select * from teguh.claim_task('mine', 'w')")
                assert claimed.fetchall() == []
                with raises_sqlstate("42501"):
                    as_app.execute("create table teguh.t_x (task_id uuid)")
            old.execute("delete from teguh.role_grants")
            old.execute(sql.SQL("drop owned by {}").format(ident))
    finally:
        conn.execute('drop database if exists "teguh_v1_security" with (force)')


# -- the Python library within each kind -------------------------------------------------


def test_the_python_library_runs_within_the_producer_and_worker_kinds(
    conn: psycopg.Connection[Any], roles: Roles, dsn: str
) -> None:
    """A producer app and a Worker connected as their roles: every call they make is granted."""
    conn.execute("select teguh.create_queue('q')")
    producer_role, worker_role = roles.create("app"), roles.create("runner")
    conn.execute("select teguh.grant_producer(%s)", (producer_role,))
    conn.execute("select teguh.grant_worker(%s)", (worker_role,))

    def handler(ctx: teguh.TaskContext) -> Any:
        doubled = ctx.step("double", lambda: ctx.params["n"] * 2)
        ctx.emit_event(f"done-{ctx.task_id}", doubled)
        return {"doubled": doubled}

    producer = teguh.Client(make_conninfo(dsn, user=producer_role), max_size=2)
    runner = teguh.App(make_conninfo(dsn, user=worker_role), max_size=4)
    with producer, runner:
        worker = runner.worker(["q"], poll_interval=0.2)
        worker.handle("double", handler)
        worker.start()
        try:
            spawned = producer.spawn_task("q", "double", {"n": 21})

            def finished() -> Any:
                result = producer.get_task_result("q", spawned.task_id)
                return result if result is not None and result.state == "completed" else None

            result = wait_for(finished, timeout=30, message="the worker role to run the task")
        finally:
            worker.stop(timeout=10)
        assert result.completed_payload == {"doubled": 42}
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            producer.claim_task("q", "intruder")
