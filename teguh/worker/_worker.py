"""`Worker`: run the handlers of one or more queues on threads.

Threads of a started worker (all named ``teguh-...``):

- the dispatcher (`teguh.worker.dispatcher`): owns the one LISTEN connection
  (one channel per queue, `teguh.worker.listener`), claims as many runs as
  there are free slots, fairly across queues, and runs the ticker of the
  queues it leads;
- the executor's ``concurrency`` threads run handlers inside the app's
  middleware (`teguh.worker.executor`); each takes connections from the
  worker's pool for its own calls;
- one completer records completions in batches (`teguh.worker.completions`);
- one heartbeat thread extends every lease (`teguh.worker.heartbeat`).

`Worker.start` is all-or-nothing, `Worker.stop` is bounded, a dispatcher that
dies stops the worker and `Worker.run` re-raises its error, and `Worker.run`
owns the signal policy (`teguh.worker.signals`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import types
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Self, Unpack

from psycopg_pool import ConnectionPool

from teguh import _engine as E
from teguh import schema
from teguh._pool import check_connection
from teguh.context import RunState
from teguh.errors import QueueNotFound
from teguh.records import WorkerOptions
from teguh.schedules import sync_schedules
from teguh.worker._settings import Parts, WorkerSettings, assemble
from teguh.worker.completions import Completions, run_extra
from teguh.worker.dispatcher import Slots
from teguh.worker.executor import Handler, NotFound
from teguh.worker.listener import Listener
from teguh.worker.signals import SignalPolicy
from teguh.worker.warmup import warmer

if TYPE_CHECKING:
    from teguh.app import App

__all__ = ["STOP_GRACE", "Worker"]

logger = logging.getLogger("teguh.worker")

STOP_GRACE = 5.0
"""Seconds `Worker.stop` may take beyond its ``timeout`` to hand back and close."""

# The worker's own pool gives up a failed connection attempt after this long
# (psycopg_pool backs off exponentially from 1 s until then); a waiting claim
# starts a new attempt at once, so reconnection does not slow down with the
# outage's length.
_POOL_RECONNECT_TIMEOUT = 2.0


class Worker(WorkerSettings):
    """Run the handlers of an app's tasks for one or more queues.

    Made by ``app.worker(queues, concurrency=..., **WorkerOptions)``.
    ``queues`` is a list of queue names, or ``{name: slots}`` to cap the slots
    a queue may hold; by default the queues of the app's tasks.
    ``concurrency``: handlers running at once (threads), shared by all queues;
    no queue starves another. ``not_found``: what to do with a run whose task
    has no handler here: ``"hand_back"`` (default), ``"fail"``, or a fallback
    ``fn(ctx)``. See `teguh.WorkerOptions` for the rest.

    A handler still running ``claim_timeout`` seconds after its task was
    cancelled (``max_duration`` included) or its lease lost is *hung*: it
    holds a slot for nothing. Each is logged once as a warning and counted by
    `hung_handlers`. With ``recycle_when_stuck``, a worker whose every slot
    is held by a hung handler stops claiming and asks to be recycled
    (`recycle_requested`; `run` returns, ``teguh worker`` exits with status
    75 for its process manager to start a fresh one).

    Extra raw ``fn(ctx)`` handlers are routed with `handle`. Then `start`
    (background threads), `run` (blocks, handles signals) or `drain` (runs
    due work in the calling thread, for tests and scripts).
    """

    def __init__(
        self,
        app: App,
        queues: Iterable[str] | Mapping[str, int] | None = None,
        *,
        concurrency: int = 10,
        not_found: NotFound = "hand_back",
        **options: Unpack[WorkerOptions],
    ) -> None:
        super().__init__(app, queues, concurrency=concurrency, not_found=not_found, **options)
        self._running = False
        self._stopping = threading.Event()
        self._stop_deadline: float | None = None
        self._crash: BaseException | None = None
        self._parts: Parts | None = None

    def __repr__(self) -> str:
        return f"<teguh.Worker queues={self.queues!r} id={self.worker_id!r}>"

    # -- registration ---------------------------------------------------------------

    def handle(self, pattern: str, fn: Handler) -> None:
        """Route task ``pattern`` to a raw ``fn(ctx)`` handler.

        ``pattern`` is a task name or a prefix ending in ``*`` (``"email.*"``;
        ``"*"`` matches every task); the app's tasks and exact names win over
        prefixes, and the longest prefix wins. A second handler for the same
        pattern, or for a name the app already has a task for, raises
        `ValueError`; an ``async def`` raises `TypeError`.
        """
        self._router.add(pattern, fn)

    @property
    def handlers(self) -> dict[str, Handler]:
        """The worker's own routes, by pattern (a copy; the app's tasks are in ``app.tasks``)."""
        return self._router.routes()

    @property
    def in_flight(self) -> int:
        """How many runs are executing now."""
        parts = self._parts
        return 0 if parts is None else len(parts.slots.inflight)

    @property
    def hung_handlers(self) -> int:
        """How many slots are held by handlers hung after a cancellation or a lost lease."""
        return len(self._hung())

    @property
    def recycle_requested(self) -> bool:
        """Whether the worker stopped claiming to be recycled (see ``recycle_when_stuck``)."""
        return self._recycle

    @property
    def is_running(self) -> bool:
        """Whether the worker is started and not stopping (nor stopped by a failure)."""
        return self._running and not self._stopping.is_set()

    @property
    def is_ticker(self) -> bool:
        """Whether this worker currently runs the ticker of one of its queues."""
        parts = self._parts
        return parts is not None and bool(parts.listener.leading)

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> Self:
        """Start the worker's threads and return; all-or-nothing.

        Connects (waiting at most ``connect_timeout`` seconds), checks the
        schema and that every queue exists (`teguh.QueueNotFound`), opens
        the pool, then starts the threads. On any failure everything opened
        is closed, `is_running` stays false and the error propagates.
        """
        if self._running:
            raise RuntimeError("this worker is already running")
        kwargs = self._connect_kwargs("teguh-worker")
        listen_kwargs = self._connect_kwargs("teguh-listen")
        listener = Listener(self.app.conninfo, listen_kwargs, self.queues, self.app.engine)
        pool: ConnectionPool[Any] | None = None
        slots: Slots | None = None
        self._stopping = threading.Event()
        self._crash = None
        self._recycle = False
        try:
            conn = listener.connect()
            if self.app._client_options.get("check_schema", True):
                schema.check(conn)
            existing = set(self.app.engine.list_queues(conn))
            missing = [q for q in self.queues if q not in existing]
            if missing:
                raise QueueNotFound(
                    f"queue {missing[0]!r} does not exist: create it with "
                    f"app.client.create_queue({missing[0]!r}) or `teguh queue create {missing[0]}`"
                )
            # the app's @app.periodic declarations for these queues (docs/schedules.md)
            sync_schedules(self.app, conn, self.queues)
            if self._pool_arg is not None:
                pool = self._pool_arg
            else:
                size = self.concurrency + 3
                pool = ConnectionPool(
                    self.app.conninfo,
                    min_size=size,
                    max_size=size,
                    kwargs=kwargs,
                    check=check_connection,
                    configure=warmer(
                        self.app.engine, self.queues, self.worker_id, self.claim_timeout
                    ),
                    name=f"teguh-worker-{self.worker_id}",
                    reconnect_timeout=_POOL_RECONNECT_TIMEOUT,
                    open=True,
                )
                pool.wait(timeout=self.connect_timeout)
            min_batch = max(1, self.batch_size // 2)
            # claim ahead: a claim's batch is ready when handlers free up
            slots = Slots(self.concurrency, min_batch, ahead=max(2, min_batch))
            assert pool is not None
            parts = assemble(self, pool, listener, slots, self._stopping, self._check_hung)
            parts.heartbeat.register(conn)  # presence: `teguh workers`, queue_workers()
            self._parts = parts
        except BaseException:
            listener.close()
            if pool is not None and self._pool_arg is None:
                pool.close(timeout=1.0)
            if slots is not None:
                slots.close()
            raise
        self._running = True
        self._parts.start(self._dispatch_main)
        logger.info(
            "worker %s started on queue(s) %s (concurrency %d)",
            self.worker_id,
            ", ".join(self.queues),
            self.concurrency,
            extra={"queue": ",".join(self.queues), "worker_id": self.worker_id},
        )
        return self

    def _dispatch_main(self) -> None:
        parts = self._parts
        assert parts is not None
        try:
            parts.dispatcher.run()
        except BaseException as exc:
            logger.critical(
                "the dispatcher of worker %s died: %r", self.worker_id, exc, exc_info=exc
            )
            self._crash = exc
            self._stopping.set()

    def run(self, *, handle_signals: bool = True) -> int:
        """Start, block until `stop`, a signal or a failure, then stop; re-raise a failure.

        The signal policy (from the main thread only, with ``handle_signals``):
        the first SIGINT/SIGTERM drains (no new claims, running handlers get
        ``shutdown_timeout``), the second hands running runs back at once, the
        third exits the process with status 128 + the signal. Returns 0, or
        128 + the signal when a second signal handed runs back. A dispatcher
        that died is re-raised as `RuntimeError` from its error.
        """
        with SignalPolicy(install=handle_signals) as signals:
            self.start()
            try:
                while not self._stopping.is_set() and not signals.count:
                    signals.event.wait(0.2)
                if signals.count:
                    logger.info(
                        "stopping: no new claims; waiting up to %gs for %d running handler(s) "
                        "(signal again to hand them back)",
                        self.shutdown_timeout,
                        self.in_flight,
                    )
            finally:
                self.stop(self.shutdown_timeout, _signals=signals)
        if self._crash is not None:
            raise RuntimeError(f"worker {self.worker_id} stopped: its dispatcher died") from (
                self._crash
            )
        return signals.exit_code if signals.count >= 2 else 0

    def stop(
        self, timeout: E.Duration | None = None, *, _signals: SignalPolicy | None = None
    ) -> None:
        """Stop claiming, let in-flight handlers finish, then hand the rest back.

        Waits up to ``timeout`` seconds (default ``shutdown_timeout``) for
        running handlers; runs still executing then are handed back at once
        (no attempt consumed) and their handlers' next teguh call raises
        `teguh.LeaseLost`. Returns within ``timeout`` plus `STOP_GRACE`
        seconds, even if a handler never returns. Idempotent; a call made
        while another stop waits only shortens that wait.
        """
        wait = self.shutdown_timeout if timeout is None else E.seconds(timeout, "timeout")
        if self._stop_deadline is not None:
            self._stop_deadline = min(self._stop_deadline, time.monotonic() + wait)
            return
        parts = self._parts
        if not self._running or parts is None:
            return
        self._stopping.set()  # before is_running turns false: no claim after that
        self._running = False
        self._stop_deadline = time.monotonic() + wait
        try:
            self._shut_down(parts, _signals)
        finally:
            self._stop_deadline = None

    def _shut_down(self, parts: Parts, signals: SignalPolicy | None) -> None:
        # The dispatcher first (woken at once): a claim it is making is then
        # submitted and waited for like the other runs.
        parts.join_dispatcher(time.monotonic() + 2.0)
        slots = parts.slots
        with slots.lock:
            # short waits: a later stop() or signal may bring the deadline forward
            while slots.inflight:
                if signals is not None and signals.count >= 2:
                    if signals.count >= 3:
                        logging.shutdown()
                        os._exit(signals.exit_code)
                    if self._stop_deadline != 0.0:
                        name = signal.Signals(signals.last or signal.SIGTERM).name
                        logger.warning(
                            "second %s: handing %d running run(s) back and exiting",
                            name,
                            len(slots.inflight),
                        )
                    self._stop_deadline = 0.0
                remaining = (self._stop_deadline or 0) - time.monotonic()
                if remaining <= 0:
                    break
                slots.idle.wait(min(remaining, 0.1))
            leftovers = list(slots.inflight.items())
        grace = time.monotonic() + STOP_GRACE - 2.0
        for state, queue in leftovers:
            if time.monotonic() < grace:
                parts.completions.release(state, queue)
        parts.close(grace, own_pool=self._pool_arg is None)
        logger.info(
            "worker %s stopped (%d run(s) handed back)",
            self.worker_id,
            len(leftovers),
            extra={"worker_id": self.worker_id},
        )

    def _hung(self) -> list[tuple[RunState, str]]:
        parts = self._parts
        if parts is None:
            return []
        with parts.slots.lock:
            states = list(parts.slots.inflight.items())
        return [(s, q) for s, q in states if s.abandoned_for() >= self.claim_timeout]

    def _check_hung(self) -> None:
        """Report hung handlers once each; ask for recycling when they hold every slot."""
        hung = self._hung()
        for state, queue in hung:
            if state.reported:
                continue
            state.reported = True
            run = state.run
            logger.warning(
                "the handler of run %s (task %s, %s) still runs %.0fs after its task was %s:"
                " it holds a slot until it returns",
                run.run_id,
                run.task_id,
                run.task_name,
                state.abandoned_for(),
                state.status,
                extra=run_extra(queue, run),
            )
        if self.recycle_when_stuck and len(hung) >= self.concurrency and not self._recycle:
            self._recycle = True
            logger.error(
                "every slot of worker %s is held by a hung handler: it stops claiming and asks"
                " to be recycled",
                self.worker_id,
                extra={"queue": ",".join(self.queues), "worker_id": self.worker_id},
            )
            self._stopping.set()
            parts = self._parts
            if parts is not None:
                parts.slots.poke()

    def heartbeat(self) -> int:
        """Extend every in-flight lease now; return how many runs were found gone."""
        parts = self._parts
        return 0 if parts is None else parts.heartbeat.beat()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.stop()

    # -- drain ----------------------------------------------------------------------

    def drain(self, timeout: E.Duration | None = None) -> int:
        """Run due work in the calling thread until none is due; return how many runs ran.

        For tests and scripts: claims one run at a time from each queue in
        turn, runs it (middleware included) and records its outcome at once.
        Stops when a pass over every queue claims nothing, or when
        ``timeout`` seconds have passed. Uses the app's pool; the worker must
        not be started.
        """
        if self._running:
            raise RuntimeError("drain() runs a worker that is not started")
        deadline = None if timeout is None else time.monotonic() + E.seconds(timeout, "timeout")
        client = self.app.client
        client.ensure_schema()
        engine = self.app.engine
        pool = self._pool_arg or client.pool
        completions = Completions(pool, engine, self.worker_id, batched=False)
        executor = self.executor(completions, pool)
        count = 0
        while True:
            claimed = 0
            for queue in self.queues:
                if deadline is not None and time.monotonic() >= deadline:
                    return count
                with pool.connection() as conn:
                    sent_at = time.monotonic()
                    runs, bad = engine.claim(conn, queue, self.worker_id, self.claim_timeout, 1)
                    for run_id, exc in bad:
                        engine.fail_undecodable(conn, queue, run_id, exc)
                for run in runs:
                    state = RunState(run, lease_until=sent_at + self.claim_timeout)
                    executor.execute(state, queue)
                    claimed += 1
            count += claimed
            if not claimed:
                return count
