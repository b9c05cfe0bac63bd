"""The worker's one LISTEN connection: one channel per queue, and the ticker election.

The connection is autocommit and owned by the dispatcher thread (opened by
`Worker.start`, which hands it over). Notifications name their channel,
``teguh_<queue>``, so one connection serves every queue. The same session
holds the ticker locks: the worker holding a queue's session-level advisory
lock runs ``teguh.ticker(q)`` for it; when the connection goes, so do the
locks, and another worker takes over.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import psycopg

from teguh import _engine as E
from teguh import _queries as Q

__all__ = ["Listener"]

logger = logging.getLogger("teguh.worker")


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
        self._kwargs = connect_kwargs
        self.queues = list(queues)
        self._engine = engine
        self._by_channel = {Q.channel(q): q for q in self.queues}
        self.conn: psycopg.Connection[Any] | None = None
        self.leading: set[str] = set()

    def connect(self) -> psycopg.Connection[Any]:
        """Open the connection and LISTEN on every queue's channel."""
        conn: psycopg.Connection[Any] = psycopg.Connection.connect(self._conninfo, **self._kwargs)
        try:
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
        assert self.conn is not None
        if queue not in self.leading and self._engine.try_ticker_lock(self.conn, queue):
            self.leading.add(queue)
            logger.info("this worker runs the ticker of queue %s", queue, extra={"queue": queue})
        if queue in self.leading:
            return self._engine.ticker(self.conn, queue) > 0
        return False
