"""Re-applying teguh.sql (an upgrade to the same version) leaves the catalog as a fresh install.

When schema/migrations/<from>-<to>.sql files exist, the same fingerprint compares a
database migrated along the chain with a fresh install (see schema/migrations/README.md).
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from teguh import schema
from tests.conftest import SCHEMA_FILE

# schema/teguh.sql as released at each earlier version, to prove the upgrade paths.
DATA = SCHEMA_FILE.parent.parent / "tests" / "sql" / "data"
V1_SQL = DATA / "teguh-v1.sql"
RELEASED = {"1": V1_SQL, "2": DATA / "teguh-v2.sql"}

FINGERPRINT = """
select 'table',
       c.relname || '(' || string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                                      || case when a.attnotnull then ' not null' else '' end,
                                      ', ' order by a.attnum)
       || ')' || coalesce(c.reloptions::text, '')
  from pg_class c join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
 where c.relnamespace = 'teguh'::regnamespace and c.relkind = 'r'
 group by c.relname, c.reloptions
union all
select 'index', pg_get_indexdef(i.indexrelid)
  from pg_index i join pg_class c on c.oid = i.indrelid
 where c.relnamespace = 'teguh'::regnamespace
union all
select 'function', p.oid::regprocedure::text || ' ' || md5(pg_get_functiondef(p.oid))
  from pg_proc p where p.pronamespace = 'teguh'::regnamespace
order by 1, 2
"""


def fingerprint(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    return [(kind, text) for kind, text in conn.execute(FINGERPRINT)]


def test_reinstall_equals_fresh_install(dsn: str, make_conn: Any) -> None:
    fresh: psycopg.Connection[Any] = make_conn()
    fresh.execute("select teguh.create_queue('alpha')")
    expected = fingerprint(fresh)
    assert any(kind == "function" and "_claim_alpha" in text for kind, text in expected)

    fresh.execute(SCHEMA_FILE.read_bytes())
    fresh.execute(SCHEMA_FILE.read_bytes())
    assert fingerprint(fresh) == expected


def test_migration_files_follow_the_naming_convention() -> None:
    migrations = SCHEMA_FILE.parent / "migrations"
    for path in migrations.glob("*.sql"):
        start, _, end = path.stem.partition("-")
        assert start.isdigit() and end.isdigit() and int(end) == int(start) + 1, path.name


def _fresh_database(conn: psycopg.Connection[Any], name: str) -> str:
    conn.execute(f'drop database if exists "{name}"')
    conn.execute(f'create database "{name}"')
    info = conn.info
    return f"postgresql://{info.user}@{info.host}:{info.port}/{name}"


@pytest.mark.parametrize("version", sorted(RELEASED))
def test_an_older_database_upgrades_in_place_to_a_fresh_install(
    conn: psycopg.Connection[Any], make_conn: Any, version: str
) -> None:
    fresh = make_conn()
    fresh.execute("select teguh.create_queue('alpha')")
    expected = fingerprint(fresh)

    database = f"teguh_v{version}_upgrade"
    dsn = _fresh_database(conn, database)
    try:
        with psycopg.connect(dsn, autocommit=True) as old:
            old.execute(RELEASED[version].read_bytes())
            old.execute("select teguh.create_queue('alpha')")
            spawned = old.execute(
                "select task_id from teguh.spawn_task('alpha', 'job', '{\"n\": 1}')"
            ).fetchone()
            assert spawned is not None
            assert schema.installed_version(old) == version

            applied = schema.install(old)

            steps = [p.name for p in schema.migration_path(version)]
            assert applied == [*steps, "teguh.sql"]
            assert schema.installed_version(old) == schema.SCHEMA_VERSION
            assert fingerprint(old) == expected
            # the task spawned under version 1 survives and is claimable
            claimed = old.execute(
                "select task_id from teguh.claim_task(p_queue_name => 'alpha', p_worker_id => 'w')"
            ).fetchall()
            assert claimed == [spawned]
    finally:
        conn.execute(f'drop database if exists "{database}" with (force)')


def test_a_failed_upgrade_changes_nothing(conn: psycopg.Connection[Any]) -> None:
    dsn = _fresh_database(conn, "teguh_v1_failed")
    try:
        with psycopg.connect(dsn, autocommit=True) as old:
            old.execute(V1_SQL.read_bytes())
            # a view that depends on a function the migration must drop
            old.execute(
                "create view teguh.blocker as select teguh.ticker('x'::text) as n where false"
            )
            before = fingerprint(old)
            try:
                schema.install(old)
            except psycopg.Error:
                pass
            else:
                raise AssertionError("install over a blocked function should have failed")
            assert schema.installed_version(old) == "1"
            assert fingerprint(old) == before
    finally:
        conn.execute('drop database if exists "teguh_v1_failed" with (force)')
