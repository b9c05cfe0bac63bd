"""The worker's one LISTEN connection: one channel per queue, and the ticker election.

The connection is autocommit and owned by the dispatcher thread (opened by
`Worker.start`, which hands it over). Notifications name their channel,
``teguh_<queue>``, so one connection serves every queue. The same session
holds the ticker locks: the worker holding a queue's session-level advisory
lock runs ``teguh.ticker(q)`` for it; when the connection goes, so do the
locks, and another worker takes over.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import psycopg

from teguh import _engine as E
from teguh import _queries as Q

__all__ = ["LISTEN_QUERY_TIMEOUT", "Listener", "abort_after"]

logger = logging.getLogger("teguh.worker")

# A query on the LISTEN session (LISTEN, ticker election, ticker) that takes
# longer than this is abandoned with its connection: a frozen or half-open
# session must not stall the dispatcher, hence the claims.
LISTEN_QUERY_TIMEOUT = 5.0
# TCP keepalives on the LISTEN session: a peer that vanished without a reset
# is noticed in about 11 s instead of the kernel's two hours; unacknowledged
# data is given up after 10 s. Conninfo parameters of the same name win.
_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}
# Longest wait for the LISTEN session to connect (a lower conninfo value wins).
_CONNECT_TIMEOUT = 5


class Listener:
    """A LISTEN connection for ``queues`` (see the module docstring)."""

    def __init__(
        self,
        conninfo: str,
        connect_kwargs: dict[str, Any],
        queues: Iterable[str],
        engine: E.Engine,
    ) -> None:
        self._conninfo = conninfo
        kwargs = dict(connect_kwargs)
        kwargs["connect_timeout"] = min(int(kwargs.get("connect_timeout", 10)), _CONNECT_TIMEOUT)
        for key, value in _KEEPALIVES.items():
            if key not in conninfo:
                kwargs.setdefault(key, value)
        self._kwargs = kwargs
        self.queues = list(queues)
        self._engine = engine
        self._by_channel = {Q.channel(q): q for q in self.queues}
        self.conn: psycopg.Connection[Any] | None = None
        self.leading: set[str] = set()

    def connect(self) -> psycopg.Connection[Any]:
        """Open the connection and LISTEN on every queue's channel."""
        conn: psycopg.Connection[Any] = psycopg.Connection.connect(self._conninfo, **self._kwargs)
        try:
            with abort_after(conn, LISTEN_QUERY_TIMEOUT):
                for queue in self.queues:
                    conn.execute(Q.listen(queue))
        except BaseException:
            conn.close()
            raise
        self.conn = conn
        return conn

    def close(self) -> None:
        """Close the connection (releasing the ticker locks)."""
        conn, self.conn = self.conn, None
        self.leading.clear()
        if conn is not None:
            try:
                conn.close()
            except Exception:
                logger.debug("closing the LISTEN connection failed", exc_info=True)

    def fileno(self) -> int:
        """The socket to ``select()`` on."""
        assert self.conn is not None
        return self.conn.fileno()

    def notified(self) -> set[str]:
        """Return the queues notified since the last call (never blocks)."""
        assert self.conn is not None
        found: set[str] = set()
        for notify in self.conn.notifies(timeout=0):
            queue = self._by_channel.get(notify.channel)
            if queue is not None:
                found.add(queue)
        return found

    def tick(self, queue: str) -> bool:
        """Try to lead ``queue``'s ticker and run it if so; True if it changed tasks."""
        conn = self.conn
        assert conn is not None
        with abort_after(conn, LISTEN_QUERY_TIMEOUT):
            if queue not in self.leading and self._engine.try_ticker_lock(conn, queue):
                self.leading.add(queue)
                logger.info(
                    "this worker runs the ticker of queue %s", queue, extra={"queue": queue}
                )
            if queue in self.leading:
                return self._engine.ticker(conn, queue) > 0
        return False


@contextlib.contextmanager
def abort_after(conn: psycopg.Connection[Any], timeout: float) -> Iterator[None]:
    """Shut ``conn``'s socket down if the block takes longer than ``timeout`` seconds.

    A query blocked on a session that stopped answering (its backend frozen,
    a half-open TCP connection) then fails at once with
    `psycopg.OperationalError`, and the caller reconnects. A server-side
    statement_timeout cannot do this: a frozen backend enforces nothing.
    """
    timer = threading.Timer(timeout, _shut_socket, (conn,))
    timer.name = "teguh-listen-watchdog"
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        # a cancelled timer's thread still has to wake up and exit: wait for it,
        # so a stopped worker leaves no thread behind
        timer.join(1.0)


def _shut_socket(conn: psycopg.Connection[Any]) -> None:
    logger.warning("a query on the LISTEN session did not answer in time: dropping the session")
    with contextlib.suppress(OSError, psycopg.Error, ValueError):
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()
