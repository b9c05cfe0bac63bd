"""Find, install, check and migrate the SQL engine (``schema/teguh.sql``).

In a wheel the SQL ships as ``teguh/_sql/teguh.sql`` (with
``teguh/_sql/migrations/``); in a source checkout or an editable install it is
``<repo>/schema/teguh.sql``. `sql_dir` finds whichever exists.

`install` (alias `migrate`) applies, in one transaction, the
``migrations/<from>-<to>.sql`` files from the installed version up to
`SCHEMA_VERSION`, then the whole ``teguh.sql`` (idempotent: safe on an
installed database). Over the Go reference's schema (schema ``teguh`` with
``teguh.queues`` but no ``teguh.version()``) it migrates the queues and their
tasks in place, in the same transaction. `check` compares ``teguh.version()``
with `SCHEMA_VERSION` and raises `SchemaMissing` or `SchemaOutdated` with what
to run.
"""

from __future__ import annotations

import importlib.resources
import logging
import re
from pathlib import Path
from typing import Any

import psycopg

from teguh import _queries as Q
from teguh.errors import SchemaError, SchemaMissing, SchemaOutdated

__all__ = [
    "SCHEMA_VERSION",
    "SchemaMissing",
    "SchemaOutdated",
    "check",
    "install",
    "installed_version",
    "migrate",
    "migration_path",
    "sql_dir",
    "sql_text",
]

SCHEMA_VERSION = "3"
"""The schema version this library is written against."""

logger = logging.getLogger("teguh.schema")

_MIGRATION = re.compile(r"^(?P<src>[0-9]+)-(?P<dst>[0-9]+)\.sql$")


def sql_dir() -> Path:
    """Return the directory holding ``teguh.sql`` and ``migrations/``."""
    packaged = importlib.resources.files("teguh") / "_sql"
    if (packaged / "teguh.sql").is_file():
        return Path(str(packaged))
    source = Path(__file__).resolve().parent.parent / "schema"
    if (source / "teguh.sql").is_file():
        return source
    raise FileNotFoundError(
        f"teguh.sql not found in {packaged} (installed package) nor in {source} (source tree)"
    )


def sql_text() -> str:
    """Return the content of ``teguh.sql``."""
    return (sql_dir() / "teguh.sql").read_text(encoding="utf-8")


def install(conn: psycopg.Connection[Any]) -> list[str]:
    """Install or upgrade the schema in one transaction; return what was applied.

    On a database without teguh this applies ``teguh.sql``. On an older
    version it first applies the migrations from that version (see
    `migration_path`), then ``teguh.sql``: either everything commits or
    nothing changed. Idempotent on a current database. Concurrent installs are
    serialized with an advisory lock. On a connection that is not in
    autocommit the caller commits.

    Over the Go reference's schema it sets that schema aside (as
    ``teguh_go_reference``), applies ``teguh.sql``, carries every queue with
    its tasks, leases, sleeps, waits, checkpoints and events over, and drops
    the set-aside schema; the result then also lists ``"go-reference"``.
    Raises `SchemaError`, changing nothing, when schema ``teguh`` holds
    something else, and a ``psycopg.Error`` (rolled back) when the reference's
    data cannot be carried over.
    """
    script = sql_text()
    applied: list[str] = []
    with conn.transaction():
        conn.execute(Q.INSTALL_LOCK)
        version = installed_version(conn)
        go_reference = version is None and _holds_go_reference(conn)
        if go_reference:
            logger.info("found the Go reference's schema in schema teguh: migrating it in place")
            conn.execute(Q.SET_ASIDE_GO_REFERENCE)
        elif version is not None and version != SCHEMA_VERSION:
            for file in migration_path(version):
                conn.execute(file.read_text(encoding="utf-8").encode())
                logger.info("applied teguh migration %s", file.name)
                applied.append(file.name)
        # bytes: sent verbatim as one script (no placeholder processing)
        conn.execute(script.encode())
        if go_reference:
            row = conn.execute(Q.IMPORT_GO_REFERENCE).fetchone()
            logger.info("migrated %s queue(s) of the Go reference's schema", row[0] if row else 0)
            applied.append("go-reference")
    applied.append("teguh.sql")
    logger.info("installed teguh schema version %s", SCHEMA_VERSION)
    return applied


def _holds_go_reference(conn: psycopg.Connection[Any]) -> bool:
    """Tell whether schema teguh (without ``teguh.version()``) holds the Go reference's schema.

    Raises `SchemaError` when it holds something else, or when the name the
    reference's schema is set aside under is taken: nothing is changed.
    """
    row = conn.execute(Q.INSPECT_FOREIGN_SCHEMA).fetchone()
    assert row is not None
    exists, has_queues, relations, functions, aside_taken = row
    if not exists:
        return False
    if has_queues:
        if aside_taken:
            raise SchemaError(
                "schema teguh holds the Go reference's schema, but schema teguh_go_reference, "
                "where teguh install sets it aside while migrating it, already exists: drop or "
                "rename that schema, then run `teguh install` again (nothing was changed)"
            )
        return True
    if relations or functions:
        raise SchemaError(
            f"schema teguh exists but holds neither teguh (no teguh.version()) nor the Go "
            f"reference's schema (no teguh.queues): {relations} relation(s), {functions} "
            f"function(s); drop or rename that schema, then run `teguh install` again "
            f"(nothing was changed)"
        )
    return False


def installed_version(conn: psycopg.Connection[Any]) -> str | None:
    """Return ``teguh.version()``, or None when the schema is not installed."""
    row = conn.execute(Q.SCHEMA_EXISTS).fetchone()
    if row is None or not row[0]:
        return None
    try:
        # a savepoint when inside a transaction, so a failure leaves it usable
        with conn.transaction():
            row = conn.execute(Q.VERSION).fetchone()
    except psycopg.errors.UndefinedFunction:
        return None
    return None if row is None else str(row[0])


def check(conn: psycopg.Connection[Any]) -> str:
    """Return the installed version if it is `SCHEMA_VERSION`; raise otherwise.

    Raises `SchemaMissing` when teguh is not installed, `SchemaOutdated` when
    another version is.
    """
    version = installed_version(conn)
    if version is None:
        raise SchemaMissing(
            "the teguh schema is not installed in this database: run `teguh install` "
            "(or Client.install())"
        )
    if version != SCHEMA_VERSION:
        if _key(version) < _key(SCHEMA_VERSION):
            hint = "run `teguh install` (or Client.install()) to upgrade it"
        else:
            hint = "upgrade the teguh Python package"
        raise SchemaOutdated(
            f"the database has teguh schema version {version}, this library needs "
            f"{SCHEMA_VERSION}: {hint}",
            installed=version,
            expected=SCHEMA_VERSION,
        )
    return version


def migration_path(src: str, dst: str = SCHEMA_VERSION) -> list[Path]:
    """Return the migration files leading from version ``src`` to ``dst``, in order."""
    steps: dict[str, tuple[str, Path]] = {}
    directory = sql_dir() / "migrations"
    if directory.is_dir():
        for path in sorted(directory.iterdir()):
            if m := _MIGRATION.match(path.name):
                steps[m["src"]] = (m["dst"], path)
    path_: list[Path] = []
    current = src
    while current != dst:
        if current not in steps:
            raise SchemaError(f"no migration from teguh schema version {current} towards {dst}")
        current, file = steps[current]
        path_.append(file)
    return path_


def migrate(conn: psycopg.Connection[Any]) -> list[str]:
    """Bring the database to `SCHEMA_VERSION`; return the files applied.

    The same as `install`: the migrations from the installed version (none
    when the schema is missing or current), then ``teguh.sql``, in one
    transaction.
    """
    return install(conn)


def _key(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (0,)
