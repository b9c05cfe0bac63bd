"""Fixtures for the ``teguh`` command tests: run the real command as a subprocess.

``teguh(*args)`` runs ``python -m teguh ARGS`` in the repository root with a
clean environment (no ``TEGUH_*``/``PG*`` variables from the caller, except
``TEGUH_PG_BINDIR``) and returns the `subprocess.CompletedProcess`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from pytest_postgresql.janitor import DatabaseJanitor

from teguh.cli.main import main
from teguh.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parents[2]

Run = Callable[..., subprocess.CompletedProcess[str]]
# Which PostgreSQL a throwaway server uses: the command must pick the one the suite runs on.
_SERVER_VARS = {"TEGUH_PG_BINDIR", "TEGUH_PG_NO_SYSTEM"}


def command_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return a clean environment for ``python -m teguh`` (plus ``extra``)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not (key.startswith("PG") or (key.startswith("TEGUH_") and key not in _SERVER_VARS))
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def teguh_argv(*args: str) -> list[str]:
    """Return the argv that runs the ``teguh`` command with ``args``."""
    return [sys.executable, "-m", "teguh", *args]


@pytest.fixture
def teguh() -> Run:
    """Return ``run(*args, env=None, timeout=60)``: run the command, capture its output."""

    def run(
        *args: str, env: Mapping[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            teguh_argv(*args),
            capture_output=True,
            text=True,
            env=command_env(env),
            cwd=ROOT,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    return run


@pytest.fixture
def empty_dsn(pg_server: EmbeddedPostgres) -> Iterator[str]:
    """URL of a fresh database WITHOUT the teguh schema; dropped after the test."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    dbname = f"teguh_cli_empty{worker}_{os.getpid()}"
    janitor = DatabaseJanitor(
        user=pg_server.user,
        host=pg_server.host,
        port=pg_server.port,
        dbname=dbname,
        maintenance_dbname="postgres",
    )
    with janitor:
        yield pg_server.dsn(dbname)


def assert_user_error(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    """Assert a clean failure: exit ``code``, one line on stderr holding ``fragments``."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture
def cli(dsn: str, capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """``teguh`` in this process: ``run(*args) -> (status, stdout, stderr)``."""

    def run(*args: str) -> tuple[int, str, str]:
        status = main(["--dsn", dsn, *args])
        out, err = capsys.readouterr()
        return status, out, err

    return run
