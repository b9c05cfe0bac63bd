"""The heartbeat thread: extend every in-flight lease, notice cancelled and lost runs.

Every ``heartbeat_interval`` one ``teguh.extend_claims`` statement per queue
extends all of that queue's in-flight leases; the runs the engine reports
cancelled or lost are marked, so that their handlers' next teguh call raises
and nothing more is recorded for them.

It also keeps the worker's presence (``teguh.register_worker``: id, host,
pid, queues) alive, so that ``teguh workers``, ``queue_workers`` and
``queue_stats`` show who serves a queue, and reports with it how many of the
worker's handlers hang (``teguh workers``); `stop` removes it. A presence
lapses ``presence_ttl`` seconds after the last beat (a worker killed without
stopping).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

import psycopg
from psycopg_pool import ConnectionPool

from teguh import _engine as E
from teguh.context import CANCELLED, LOST, RunState
from teguh.worker.completions import run_extra
from teguh.worker.dispatcher import POOL_WAIT, Slots

__all__ = ["Heartbeat"]

logger = logging.getLogger("teguh.worker")


class Heartbeat:
    """Extend the leases of a worker's runs (see the module docstring)."""

    def __init__(
        self,
        pool: ConnectionPool[Any],
        engine: E.Engine,
        slots: Slots,
        *,
        worker_id: str,
        interval: float,
        claim_timeout: int,
        after_beat: Callable[[], None] | None = None,
        queues: Sequence[str] = (),
    ) -> None:
        self._pool = pool
        self._engine = engine
        self._slots = slots
        self._worker_id = worker_id
        self._interval = interval
        self._claim_timeout = claim_timeout
        self._after_beat = after_beat
        self._queues = list(queues)
        # several missed beats before the presence lapses
        self.presence_ttl = max(60, int(interval * 4) + 1)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"teguh-heartbeat-{worker_id}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(max(timeout, 0.0))
        if self._queues:
            try:
                with self._pool.connection(timeout=min(max(timeout, 0.1), POOL_WAIT)) as conn:
                    self._engine.unregister_worker(conn, self._worker_id)
            except Exception as exc:  # it lapses after presence_ttl anyway
                logger.info("could not unregister worker %s: %s", self._worker_id, exc)

    def register(self, conn: Any) -> None:
        """Register the worker's presence on ``conn`` (at start)."""
        if self._queues:
            self._engine.register_worker(
                conn,
                self._worker_id,
                self._queues,
                socket.gethostname(),
                os.getpid(),
                self.presence_ttl,
            )

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.beat()
            except psycopg.OperationalError as exc:  # the server is away: no traceback
                logger.warning("heartbeat of worker %s failed: %s", self._worker_id, exc)
            except Exception:
                logger.exception("heartbeat of worker %s failed", self._worker_id)
            try:
                self._presence()
            except Exception:
                logger.exception("presence of worker %s not renewed", self._worker_id)
            if self._after_beat is not None:
                try:
                    self._after_beat()
                except Exception:
                    logger.exception("checking the handlers of worker %s failed", self._worker_id)

    def _presence(self) -> None:
        if not self._queues:
            return
        hung = self.hung_handlers()
        with self._pool.connection(timeout=POOL_WAIT) as conn:
            if not self._engine.worker_heartbeat(conn, self._worker_id, self.presence_ttl, hung):
                self.register(conn)  # it lapsed (a long pause): come back

    def hung_handlers(self) -> int:
        """Count the handlers hung ``claim_timeout`` seconds after a cancellation or lost lease.

        The rule of `teguh.Worker.hung_handlers`, reported with the presence.
        """
        with self._slots.lock:
            states = list(self._slots.inflight)
        return sum(1 for state in states if state.abandoned_for() >= self._claim_timeout)

    def beat(self) -> int:
        """Extend every in-flight lease now; return how many runs were found gone."""
        with self._slots.lock:
            by_queue: dict[str, list[RunState]] = {}
            for state, queue in self._slots.inflight.items():
                if state.status is None:
                    by_queue.setdefault(queue, []).append(state)
        gone_count = 0
        for queue, states in by_queue.items():
            with self._pool.connection(timeout=POOL_WAIT) as conn:
                sent_at = time.monotonic()
                gone_rows = self._engine.extend_claims(
                    conn,
                    queue,
                    self._worker_id,
                    [s.run.run_id for s in states],
                    self._claim_timeout,
                )
            gone: dict[UUID, str] = {row.run_id: row.status for row in gone_rows}
            gone_count += len(gone)
            for state in states:
                status = gone.get(state.run.run_id)
                if status is None:
                    state.renewed(sent_at, self._claim_timeout)
                    continue
                state.mark(CANCELLED if status == "cancelled" else LOST)
                logger.info(
                    "run %s is %s; its handler will be stopped at its next teguh call",
                    state.run.run_id,
                    status,
                    extra=run_extra(queue, state.run),
                )
        return gone_count
