"""A real Django project (tests/contrib/django_project) on the test PostgreSQL server.

One empty database per session: ``migrate`` installs teguh's schema through
the contrib app's migration, as it would in a user's project.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

django = pytest.importorskip("django", minversion="6.1")

PROJECT = Path(__file__).resolve().parents[1] / "django_project"
DB_NAME = "teguh_django"


@pytest.fixture(scope="session")
def django_env(pg_server: Any) -> dict[str, str]:
    """Environment variables pointing the project at an empty database."""
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        for name in (DB_NAME, f"test_{DB_NAME}"):
            conn.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(DB_NAME)))
    return {
        "TEGUH_DJANGO_NAME": DB_NAME,
        "TEGUH_DJANGO_USER": pg_server.user,
        "TEGUH_DJANGO_HOST": str(pg_server.host),
        "TEGUH_DJANGO_PORT": str(pg_server.port),
        "DJANGO_SETTINGS_MODULE": "project.settings",
    }


@pytest.fixture(scope="session")
def django_project(django_env: dict[str, str]) -> Iterator[dict[str, Any]]:
    """Set Django up in this process and migrate; return the checks seen before migrating."""
    os.environ.update(django_env)
    sys.path.insert(0, str(PROJECT))
    django.setup()
    from django.core import checks
    from django.core.management import call_command
    from django.db import connections

    before = checks.run_checks(databases=["default"])
    connections.close_all()
    call_command("migrate", verbosity=0)
    yield {"checks_before_migrate": before}
    connections.close_all()


def manage(env: dict[str, str], *args: str, **kwargs: Any) -> subprocess.Popen[str]:
    """Start ``python manage.py <args>`` in the project directory."""
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT,
        env={**os.environ, **env, "PYTHONPATH": os.pathsep.join(sys.path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # a suite started as a background job inherits an ignored SIGINT, and
        # the tests stop runserver with one
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        **kwargs,
    )


@pytest.fixture(scope="session")
def worker_process(
    django_project: dict[str, Any], django_env: dict[str, str]
) -> Iterator[subprocess.Popen[str]]:
    """``manage.py teguh_worker`` as a subprocess; SIGTERM at the end must exit cleanly."""
    proc = manage(django_env, "teguh_worker", "--poll-interval", "0.5")
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("teguh worker: queues"), line + proc.stdout.read()
    yield proc
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "teguh worker: stopped" in out
