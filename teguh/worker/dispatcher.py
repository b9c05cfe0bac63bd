"""The dispatcher: decide when to claim which queue's runs, as a state object.

`Dispatcher` keeps per-queue state (`QueueState`: is work probably ready,
was the last claim full, when is the next run due, when to tick) and offers
small steps that the loop composes and tests can call one at a time:

- `Dispatcher.claim_once`: claim for every queue that probably has ready
  work, sharing the free slots fairly (round robin from a rotating start, each
  queue at most its share), so a backlog in one queue cannot starve another;
- `Dispatcher.next_timeout`: how long to wait: ``min(poll_interval, time
  until the next known due run, next tick)``;
- `Dispatcher.on_notify`: mark the notified queues;
- `Dispatcher.on_tick`: run the ticker of the queues this worker leads.

The loop waits on the LISTEN connection and on a socketpair that
finishing handlers write to when enough slots are free.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
from psycopg_pool import ConnectionPool

from teguh import _engine as E
from teguh._readiness import readable as wait_readable
from teguh.context import RunState
from teguh.errors import TeguhError
from teguh.records import Run
from teguh.worker.listener import Listener

__all__ = ["AHEAD_MAX_HANDLER", "Dispatcher", "QueueState", "Slots"]

logger = logging.getLogger("teguh.worker")

# In backlog mode (the last claim was full) the dispatcher waits up to this
# long for half its slots to free before claiming, so claims stay batched.
_BATCH_WINDOW = 0.005
# Longest wait between attempts to reconnect the LISTEN session: after an
# outage, the worker is back within about this long of the server.
_RECONNECT_MAX = 1.0
_CLAIM_ERROR_BACKOFF = 1.0
AHEAD_MAX_HANDLER = 0.025
"""A worker claims ahead (`Slots`) only while its handlers take less than this on average."""
# Every wait for a pooled connection is short, so an outage cannot pin the
# dispatcher (and stop()) for the pool's default 30 s.
POOL_WAIT = 2.0


@dataclass
class QueueState:
    """What the dispatcher knows about one queue."""

    name: str
    cap: int | None = None  # most slots this queue may hold (None: any)
    pending: bool = True  # a run may be ready: claim when a slot is free
    full: bool = False  # the last claim was full: more runs are probably ready
    due_at: float | None = None  # monotonic time of the next known due run
    last_claim: float = 0.0
    next_tick: float = 0.0


class Slots:
    """Runs in flight, per queue, and the wake-up of the dispatcher when slots free.

    Claiming ahead: a claim commits synchronously (a WAL flush, milliseconds
    on real disks), and with short handlers that wait, not the handlers, sets
    the pace. While recent handlers are short (their running mean under
    `AHEAD_MAX_HANDLER`), a worker holds up to ``ahead`` claimed runs more
    than ``concurrency``: they wait in the executor's queue and start as soon
    as a handler thread frees, while the dispatcher's next claim is in
    flight. With long handlers no run waits behind one (a worker would hold
    runs another could start). Runs claimed ahead are leased and extended
    like the others; a stopping worker hands them back unrun.
    """

    def __init__(self, concurrency: int, min_batch: int, ahead: int = 0) -> None:
        self.concurrency = concurrency
        self.ahead = ahead
        self.capacity = concurrency  # concurrency + ahead while handlers are short
        self.base_batch = min_batch
        self.min_batch = min_batch  # grows by half of the ahead room while claiming ahead
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)
        # one entry per execution: a resumed run comes back with the same run id
        # while its previous execution may still be unwinding
        self.inflight: dict[RunState, str] = {}
        self.running: dict[str, int] = {}
        self.poke_at = 0  # free slots at which a finishing handler wakes the dispatcher
        self._mean: float | None = None  # running mean of handler durations (seconds)
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)

    @property
    def free(self) -> int:
        return self.capacity - len(self.inflight)

    def take(self, state: RunState, queue: str) -> None:
        with self.lock:
            self.inflight[state] = queue
            self.running[queue] = self.running.get(queue, 0) + 1

    def give_back(self, state: RunState, duration: float | None = None) -> None:
        """Free the slot of a run that ended (``duration``: its handler's, if it ran)."""
        with self.lock:
            queue = self.inflight.pop(state, None)
            if queue is not None:
                self.running[queue] -= 1
            if duration is not None and self.ahead:
                mean = duration if self._mean is None else self._mean * 0.8 + duration * 0.2
                self._mean = mean
                short = mean < AHEAD_MAX_HANDLER
                self.capacity = self.concurrency + (self.ahead if short else 0)
                # claiming ahead, a backlog claim waits for more free room:
                # more runs per claim (per WAL flush)
                self.min_batch = self.base_batch + (self.ahead // 2 if short else 0)
            free = self.capacity - len(self.inflight)
            if not self.inflight:
                self.idle.notify_all()
        # Wake the dispatcher only when it waits for this many free slots:
        # one wake-up per claim batch, not one per run.
        poke_at = self.poke_at
        if poke_at and free >= poke_at:
            self.poke_at = 0
            self.poke()

    def poke(self) -> None:
        with contextlib.suppress(OSError):
            self.wake_w.send(b"\0")

    def drain_pokes(self) -> None:
        with contextlib.suppress(OSError):
            self.wake_r.recv(4096)

    def close(self) -> None:
        self.wake_r.close()
        self.wake_w.close()


class Dispatcher:
    """Claim runs for a worker's queues and submit them (see the module docstring)."""

    def __init__(
        self,
        *,
        queues: list[QueueState],
        pool: ConnectionPool[Any],
        engine: E.Engine,
        listener: Listener,
        slots: Slots,
        submit: Callable[[RunState, str], None],
        worker_id: str,
        claim_timeout: int,
        batch_size: int,
        poll_interval: float,
        ticker_interval: float,
        stopping: threading.Event,
    ) -> None:
        self.queues = queues
        self.pool = pool
        self.engine = engine
        self.listener = listener
        self.slots = slots
        self.submit = submit
        self.worker_id = worker_id
        self.claim_timeout = claim_timeout
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.ticker_interval = ticker_interval
        self.stopping = stopping
        self._rotate = 0
        self._claim_ok_at = 0.0
        self._batch_started: float | None = None
        self._wait_slots: float | None = None
        self._reconnect_at = 0.0
        self._backoff = 0.1
        self._combined = True  # claim several queues in one transaction

    # -- steps ----------------------------------------------------------------------

    def claim_once(self, now: float) -> int:
        """Claim for every queue with probable work and room; return how many runs."""
        self._wait_slots = None
        if now < self._claim_ok_at:
            return 0
        ready = [q for q in self.queues if q.pending and self._room(q) > 0]
        free = self.slots.free
        if not ready or free <= 0:
            return 0
        if any(q.full for q in ready) and free < self.slots.min_batch:
            # Backlog: let more slots free up so the next claim is a batch.
            self._batch_started = self._batch_started or now
            wait = self._batch_started + _BATCH_WINDOW - now
            if wait > 0:
                self._wait_slots = wait
                return 0
        self._batch_started = None
        n = len(ready)
        start = self._rotate % n
        self._rotate += 1
        ordered = [ready[(start + i) % n] for i in range(n)]
        if n > 1 and self._combined:
            try:
                return self.claim_queues(ordered, free)
            except psycopg.OperationalError as exc:
                self._claim_failed(", ".join(q.name for q in ordered), exc)
                return 0
            except psycopg.errors.UndefinedFunction as exc:
                logger.warning(
                    "claiming several queues in one transaction needs a newer schema "
                    "(run `teguh install`); claiming queue by queue: %s",
                    exc,
                )
                self._combined = False
            except Exception as exc:
                # one queue's trouble must not stop the others: claim them one
                # by one, where a failure names its queue
                logger.debug("the combined claim failed, claiming queue by queue: %s", exc)
        total = 0
        for i, q in enumerate(ordered):
            free = self.slots.free
            if free <= 0:
                break
            share = math.ceil(free / (n - i))
            want = min(share, self._most(q))
            try:
                total += self.claim_queue(q, want)
            except psycopg.OperationalError as exc:
                self._claim_failed(q.name, exc)
                break
            except Exception:
                logger.exception("claiming runs on queue %s failed", q.name)
                self._claim_ok_at = time.monotonic() + _CLAIM_ERROR_BACKOFF
                break
        return total

    def _most(self, q: QueueState) -> int:
        """The most runs one claim may take for ``q`` now."""
        # a claim may take the runs claimed ahead too (up to `Slots.capacity`)
        return min(self._room(q), self.batch_size + self.slots.capacity - self.slots.concurrency)

    def _claim_failed(self, queues: str, exc: psycopg.OperationalError) -> None:
        # Broken pool connections (server restart, killed backends): replace
        # them all now, not one per claim.
        logger.error("claiming runs on queue %s failed: %s", queues, exc)
        with contextlib.suppress(Exception):
            self.pool.check()
        self._claim_ok_at = time.monotonic() + 0.1

    def claim_queue(self, q: QueueState, want: int) -> int:
        """Claim up to ``want`` runs of one queue and submit them; return how many."""
        with self.pool.connection(timeout=POOL_WAIT) as conn:
            # taken before the claim is sent: the lease surely ends no earlier
            sent_at = time.monotonic()
            # one round trip: a short claim also says when the next run is due
            runs, bad, due_in = self.engine.claim_next(
                conn, q.name, self.worker_id, self.claim_timeout, want
            )
            self._start(conn, q, runs, bad, sent_at)
        self._claimed(q, full=len(runs) + len(bad) == want, due_in=due_in)
        return len(runs)

    def claim_queues(self, ordered: list[QueueState], free: int) -> int:
        """Claim for several queues in one transaction (their order: who claims
        first) and submit the runs; return how many."""
        with self.pool.connection(timeout=POOL_WAIT) as conn:
            sent_at = time.monotonic()
            claims = self.engine.claim_queues_next(
                conn,
                [(q.name, self._most(q)) for q in ordered],
                self.worker_id,
                self.claim_timeout,
                free,
            )
            total = 0
            for q in ordered:
                claim = claims.get(q.name)
                if claim is None:
                    continue  # nothing was left for it this time: it stays pending
                self._start(conn, q, claim.runs, claim.bad, sent_at)
                self._claimed(q, full=not claim.short, due_in=claim.due_in)
                total += len(claim.runs)
        return total

    def _start(
        self,
        conn: psycopg.Connection[Any],
        q: QueueState,
        runs: list[Run],
        bad: list[tuple[UUID, Exception]],
        sent_at: float,
    ) -> None:
        """Fail the undecodable runs, submit the others."""
        for run_id, exc in bad:
            self.engine.fail_undecodable(conn, q.name, run_id, exc)
        for run in runs:
            state = RunState(run, lease_until=sent_at + self.claim_timeout)
            self.slots.take(state, q.name)
            self.submit(state, q.name)
        if runs and logger.isEnabledFor(logging.DEBUG):
            logger.debug("claimed %d run(s) on queue %s", len(runs), q.name)

    def _claimed(self, q: QueueState, *, full: bool, due_in: float | None) -> None:
        """Update ``q`` after its claim (``full``: it got all it asked for)."""
        now = time.monotonic()
        q.last_claim = now
        q.full = full
        if not q.full:
            q.pending = False
            # From after the claim: the due time was measured at its end.
            q.due_at = None
            if due_in is not None:
                q.due_at = now + (due_in if due_in > 0 else 0.05)
                if q.name in self.listener.leading:
                    q.next_tick = min(q.next_tick, q.due_at)

    def on_notify(self, queues: set[str]) -> None:
        """Mark notified queues as probably having ready work."""
        for q in self.queues:
            if q.name in queues:
                q.pending = True

    def on_tick(self, now: float) -> None:
        """Run the ticker of the queues whose tick is due (if this worker leads them)."""
        if self.listener.conn is None:
            return
        for q in self.queues:
            if now < q.next_tick:
                continue
            try:
                if self.listener.tick(q.name):
                    q.pending = True
            except psycopg.OperationalError:
                raise
            except (psycopg.Error, TeguhError):
                # a queue dropped under the worker, say: its claims fail and
                # log too, the other queues go on
                logger.exception("ticker failed on queue %s", q.name)
            q.next_tick = now + self.ticker_interval
        # Notifications that arrived during the queries are in psycopg's backlog.
        self.on_notify(self.listener.notified())

    def on_timers(self, now: float) -> None:
        """Mark queues whose poll interval elapsed or whose next run is due."""
        lost = self.listener.conn is None
        for q in self.queues:
            if lost or now - q.last_claim >= self.poll_interval:
                q.pending = True
            if q.due_at is not None and now >= q.due_at:
                q.pending = True
                q.due_at = None

    def next_timeout(self, now: float) -> float:
        """Return how long the loop may wait for a notification or a freed slot."""
        timeout = 5.0
        free = self.slots.free
        pending = [q for q in self.queues if q.pending]
        if pending:
            # Ask finishing handlers to wake us; re-check after asking, as one
            # may have finished just before.
            poke_at = self.slots.min_batch if any(q.full for q in pending) else 1
            self.slots.poke_at = poke_at
            ready = any(self._room(q) > 0 for q in pending)
            if ready and self.slots.free >= poke_at and now >= self._claim_ok_at:
                timeout = 0.0
            elif ready and now < self._claim_ok_at:
                timeout = min(timeout, self._claim_ok_at - now)
        else:
            self.slots.poke_at = 0
        if free > 0:
            for q in self.queues:
                timeout = min(timeout, self.poll_interval - (now - q.last_claim))
                if q.due_at is not None:
                    timeout = min(timeout, q.due_at - now)
            if self._wait_slots is not None:
                timeout = min(timeout, self._wait_slots)
        if self.listener.conn is None:
            timeout = min(timeout, self._reconnect_at - now, 1.0)
        else:
            timeout = min(timeout, *(q.next_tick - now for q in self.queues))
        return max(timeout, 0.0)

    def _room(self, q: QueueState) -> int:
        if q.cap is None:
            return self.slots.free
        return min(self.slots.free, q.cap - self.slots.running.get(q.name, 0))

    # -- the loop -------------------------------------------------------------------

    def ensure_listening(self, now: float) -> None:
        """Reconnect the LISTEN connection when it was lost (with backoff)."""
        if self.listener.conn is not None or now < self._reconnect_at:
            return
        try:
            self.listener.connect()
        except Exception as exc:
            self._reconnect_at = now + self._backoff
            logger.warning("cannot LISTEN (retrying in %.1fs): %s", self._backoff, exc)
            self._backoff = min(self._backoff * 2, _RECONNECT_MAX)
            return
        if self._backoff > 0.1:
            logger.info("the LISTEN connection is back")
        self._backoff = 0.1
        for q in self.queues:
            q.pending = True  # notifications may have been missed
            q.next_tick = now

    def lost_listen(self, exc: BaseException) -> None:
        """Drop a broken LISTEN connection; the next step reconnects."""
        logger.warning("lost the LISTEN connection: %s", exc)
        self.listener.close()
        self._reconnect_at = time.monotonic()

    def step(self) -> None:
        """One turn of the loop: reconnect, tick, claim, then wait for something."""
        now = time.monotonic()
        self.ensure_listening(now)
        try:
            self.on_tick(now)
        except psycopg.OperationalError as exc:
            self.lost_listen(exc)
            return
        if self.claim_once(now):
            return
        timeout = self.next_timeout(now)
        fds: list[Any] = [self.slots.wake_r]
        if self.listener.conn is not None:
            fds.append(self.listener.fileno())
        readable = wait_readable(fds, timeout)
        if self.slots.wake_r in readable:
            self.slots.drain_pokes()
        if self.listener.conn is not None and len(readable) > (self.slots.wake_r in readable):
            try:
                self.on_notify(self.listener.notified())
            except psycopg.OperationalError as exc:
                self.lost_listen(exc)
        self.on_timers(time.monotonic())

    def run(self) -> None:
        """Loop until ``stopping`` is set; exceptions propagate to the caller."""
        try:
            while not self.stopping.is_set():
                self.step()
        finally:
            self.listener.close()
