"""The check teguh's connection pools run on every connection they hand out.

`psycopg_pool.ConnectionPool.check_connection` sends an empty query: a round
trip on every checkout, which doubled the round trips of a single spawn and of
every claim and completion. An idle pooled connection receives nothing unless
the server ended it (a restart, ``pg_terminate_backend``, an idle timeout):
then its socket turns readable, with the server's farewell or end-of-file. So
the check asks the socket first, without waiting, and makes the round trip
only when something arrived. A dead connection is still found before use and
the pool replaces it; a live one costs one non-blocking poll.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from teguh._readiness import readable


def check_connection(conn: psycopg.Connection[Any]) -> None:
    """Raise if `conn` is broken; a full check only when the server has spoken."""
    if conn.closed:
        raise psycopg.OperationalError("the connection is closed")
    if readable([conn.fileno()], 0):
        ConnectionPool.check_connection(conn)
