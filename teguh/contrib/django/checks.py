"""System checks: configuration (every command) and database state (``--database``).

Configuration errors come from `TeguhBackend.check` (Django runs it with the
task framework's checks). Database checks are tagged ``database`` so they run
only when asked (``manage.py check --database default``, ``migrate``): they
are warnings, because ``migrate`` runs them before it installs the very schema
whose absence they report.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from teguh import schema as teguh_schema
from teguh.contrib.django import _conf

if TYPE_CHECKING:
    from teguh.contrib.django.backend import TeguhBackend

_QUEUE_NAME = re.compile(r"[a-z][a-z0-9_]*")
APP = "teguh.contrib.django"


def check_backend(backend: TeguhBackend) -> list[CheckMessage]:
    """Return the configuration errors of one teguh backend (no database query)."""
    found: list[CheckMessage] = []
    where = f"TASKS[{backend.alias!r}]"
    database = settings.DATABASES.get(backend.database)
    if database is None:
        found.append(
            Error(
                f"{where} uses database {backend.database!r}, which is not in DATABASES.",
                hint="Set OPTIONS['DATABASE'] to an alias of settings.DATABASES.",
                id="teguh.E001",
            )
        )
        return found
    engine = database.get("ENGINE", "")
    if engine != "django.db.backends.postgresql":
        found.append(
            Error(
                f"{where} needs PostgreSQL on psycopg 3; database {backend.database!r} "
                f"uses {engine!r}.",
                hint="Use ENGINE 'django.db.backends.postgresql' with psycopg 3 installed.",
                id="teguh.E002",
            )
        )
    else:
        from django.db.backends.postgresql.psycopg_any import is_psycopg3

        if not is_psycopg3:
            found.append(
                Error(
                    f"{where} needs psycopg 3; Django is using psycopg2 for "
                    f"database {backend.database!r}.",
                    hint="pip install 'psycopg[binary]' (Django prefers it when installed).",
                    id="teguh.E003",
                )
            )
    for queue in sorted(backend.queues):
        if not _QUEUE_NAME.fullmatch(queue) or len(queue.encode()) > 55:
            found.append(
                Error(
                    f"{where}: {queue!r} is not a valid teguh queue name.",
                    hint="Queue names match ^[a-z][a-z0-9_]*$ and have at most 55 bytes.",
                    id="teguh.E004",
                )
            )
    if APP not in settings.INSTALLED_APPS:
        found.append(
            Warning(
                f"{where} is a teguh backend but {APP!r} is not in INSTALLED_APPS.",
                hint=f"Add {APP!r} to INSTALLED_APPS so that migrate installs the schema "
                "and creates the queues.",
                id="teguh.W001",
            )
        )
    return found


def check_database(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """Return warnings about the schema and queues of the databases being checked."""
    found: list[CheckMessage] = []
    backends = [b for b in _conf.teguh_backends() if databases and b.database in databases]
    for database in sorted({b.database for b in backends}):
        try:
            conn = _conf.raw_connection(database)
            version = teguh_schema.installed_version(conn)
            client = _conf.connection_client(check_schema=False)  # the version is checked here
            existing = set(client.list_queues(conn=conn)) if version else set()
        except Exception as exc:  # Django's own checks report an unreachable database
            found.append(
                Warning(
                    f"cannot check teguh's schema in database {database!r}: {exc}",
                    id="teguh.W100",
                )
            )
            continue
        if version is None:
            found.append(
                Warning(
                    f"teguh's schema is not installed in database {database!r}.",
                    hint="Run `python manage.py migrate` (with 'teguh.contrib.django' in "
                    "INSTALLED_APPS).",
                    id="teguh.W101",
                )
            )
            continue
        if version != teguh_schema.SCHEMA_VERSION:
            found.append(
                Warning(
                    f"teguh's schema in database {database!r} is version {version}; this "
                    f"teguh needs version {teguh_schema.SCHEMA_VERSION}.",
                    hint="Run `python manage.py migrate`: it upgrades the schema in place.",
                    id="teguh.W102",
                )
            )
        for backend in backends:
            if backend.database != database:
                continue
            for queue in sorted(set(backend.queues) - existing):
                found.append(
                    Warning(
                        f"TASKS[{backend.alias!r}] names queue {queue!r}, which does not exist "
                        f"in database {database!r}.",
                        hint="Run `python manage.py migrate`: it creates the configured queues.",
                        id="teguh.W103",
                    )
                )
    return found
