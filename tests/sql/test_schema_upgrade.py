"""Re-applying teguh.sql (an upgrade to the same version) leaves the catalog as a fresh install.

When schema/migrations/<from>-<to>.sql files exist, the same fingerprint compares a
database migrated along the chain with a fresh install (see schema/migrations/README.md).
"""

from __future__ import annotations

from typing import Any

import psycopg

from tests.conftest import SCHEMA_FILE

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
