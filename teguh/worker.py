"""`Worker`: claim runs of one queue and execute their handlers on threads.

Threads of a started worker:

- ``teguh-dispatch-<q>``: owns a dedicated autocommit connection that
  LISTENs on ``teguh_<q>``, and ``select()``s on it and on a socketpair that
  finishing handlers write to. It claims as many runs as there are free
  slots (one round trip per batch) and submits them to the executor. Its
  ``select()`` timeout is ``min(poll_interval, time until the next due
  run)``, so sleeps, delayed spawns and event timeouts start on time
  without pg_cron. It also takes part in the ticker election (see below).
- ``teguh-<q>_<n>``: the `ThreadPoolExecutor`'s ``concurrency`` threads. Each
  run takes connections from the worker's pool for its own calls; a failure
  is recorded by the handler's thread, a completion is queued for...
- ``teguh-complete-<q>``: records queued completions, all that accumulated
  in one pipelined transaction (`teguh._recorder`).
- ``teguh-heartbeat-<q>``: every ``heartbeat_interval`` extends all
  in-flight leases in one statement (``teguh.extend_claims``), and marks the
  runs the engine reports cancelled or lost, so that their handlers' next
  teguh call raises and nothing more is recorded for them.

Ticker election: the worker holding a session-level advisory lock on its
LISTEN connection (one per queue and database) runs ``teguh.ticker(q)`` at
the queue's next due time and every ``ticker_interval`` seconds: it recovers
expired leases and enforces cancellation deadlines. When that connection is
lost, so is the lock, and another worker takes over.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import threading
import time
import types
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Self, TypeVar
from uuid import UUID

import psycopg
from psycopg_pool import ConnectionPool

from teguh import _convert as C
from teguh import _queries as Q
from teguh._recorder import Recorder, failure_reason, run_extra
from teguh.context import CANCELLED, LOST, RunState, TaskContext, bind, unbind
from teguh.errors import LeaseLost, Suspend, TaskCancelled
from teguh.tasks import Task

if TYPE_CHECKING:
    from teguh.client import Client

__all__ = ["Handler", "Worker"]

logger = logging.getLogger("teguh.worker")

Handler = Callable[[TaskContext], Any]
H = TypeVar("H", bound=Handler)

CATCH_ALL = "*"
# In backlog mode (the last claim was full) the dispatcher waits up to this
# long for half its slots to free before claiming, so claims stay batched.
_BATCH_WINDOW = 0.005
# Longest wait between attempts to reconnect the LISTEN session: after an
# outage, the worker is back within about this long of the server.
_RECONNECT_MAX = 1.0
_CLAIM_ERROR_BACKOFF = 1.0
# A query on the LISTEN session (ticker election, ticker) that takes longer
# than this is abandoned with its connection: a frozen or half-open session
# must not stall the dispatcher, hence the claims.
_LISTEN_QUERY_TIMEOUT = 5.0
# TCP keepalives on the LISTEN session: a peer that vanished without a reset
# is noticed in about 11 s instead of the kernel's two hours; unacknowledged
# data is given up after 10 s. Conninfo parameters of the same name win.
_LISTEN_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}
# The dispatcher waits at most this long for a pool connection: while the
# server is away it goes on noticing notifications, ticks and the stop flag.
_POOL_WAIT = 2.0
# The worker's own pool gives up a failed connection attempt after this long
# (psycopg_pool backs off exponentially from 1 s until then); a waiting claim
# starts a new attempt at once, so reconnection does not slow down with the
# outage's length.
_POOL_RECONNECT_TIMEOUT = 2.0


class Worker:
    """Run handlers for the tasks of one queue.

    ``concurrency``: handlers running at once (threads). ``claim_timeout``
    (s): lease of a claimed run; heartbeats extend it every
    ``heartbeat_interval`` (s, default a third of the lease; must be shorter
    than it) while the handler runs. ``poll_interval`` (s):
    longest wait between claims when no notification comes. ``batch_size``:
    most runs claimed per round trip (default: ``concurrency``).
    ``worker_id``: recorded on leases (default ``host:pid:random``).
    ``pool``: connections for claims and handlers; by default the worker
    opens its own, sized ``concurrency + 3``, from the client's conninfo.
    ``unknown_task_delay`` (s): how long a run of a task with no handler here
    is handed back for before another worker may claim it;
    ``max_hand_backs``: the hand-back that fails such a task instead, with a
    ``NoHandler`` reason naming the task (None: hand it back forever).

    A handler still running ``claim_timeout`` seconds after its task was
    cancelled (``max_duration`` included) or its lease lost is *hung*: it
    holds a slot for nothing. Each is logged once as a warning and counted by
    `hung_handlers`. With ``recycle_when_stuck``, a worker whose every slot
    is held by a hung handler stops claiming and asks to be recycled
    (`recycle_requested`; `run` returns, ``teguh worker`` exits with status
    75 for its process manager to start a fresh one).

    Register handlers with `task`, `handle` or `include`; then `start` (in
    background threads) or `run` (blocks). `stop` shuts down gracefully.
    """

    def __init__(
        self,
        client: Client,
        queue: str,
        *,
        concurrency: int = 10,
        claim_timeout: C.Duration = 30,
        poll_interval: C.Duration = 30,
        heartbeat_interval: C.Duration | None = None,
        batch_size: int | None = None,
        worker_id: str | None = None,
        pool: ConnectionPool[Any] | None = None,
        ticker_interval: C.Duration = 5,
        unknown_task_delay: C.Duration = 5,
        max_hand_backs: int | None = 100,
        recycle_when_stuck: bool = False,
        shutdown_timeout: C.Duration = 30,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.client = client
        self.queue = queue
        self.concurrency = concurrency
        self.claim_timeout = max(1, C.whole_seconds(claim_timeout, "claim_timeout"))
        self.poll_interval = C.seconds(poll_interval, "poll_interval")
        # A lease must outlive several heartbeats: a third of it by default.
        self.heartbeat_interval = (
            self.claim_timeout / 3
            if heartbeat_interval is None
            else C.seconds(heartbeat_interval, "heartbeat_interval")
        )
        if not 0 < self.heartbeat_interval < self.claim_timeout:
            raise ValueError(
                f"heartbeat_interval must be > 0 and shorter than claim_timeout "
                f"({self.claim_timeout}s), got {self.heartbeat_interval}s: leases would expire "
                "under running handlers"
            )
        self.batch_size = min(batch_size or concurrency, concurrency)
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.ticker_interval = C.seconds(ticker_interval, "ticker_interval")
        self.unknown_task_delay = C.seconds(unknown_task_delay, "unknown_task_delay")
        if max_hand_backs is not None and max_hand_backs < 1:
            raise ValueError(f"max_hand_backs must be None or >= 1, got {max_hand_backs}")
        self.max_hand_backs = max_hand_backs
        self.recycle_when_stuck = recycle_when_stuck
        self._recycle = False
        self.shutdown_timeout = C.seconds(shutdown_timeout, "shutdown_timeout")
        self._pool_arg = pool
        self._pool: ConnectionPool[Any] | None = None
        self._handlers: dict[str, Handler] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        # one entry per execution: a resumed run comes back with the same run id
        # while its previous execution may still be unwinding
        self._inflight: set[RunState] = set()
        self._stopping = threading.Event()
        self._hb_stop = threading.Event()
        self._signalled = False
        self._running = False
        self._stop_deadline: float | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._dispatcher: threading.Thread | None = None
        self._heartbeat: threading.Thread | None = None
        self._recorder: Recorder | None = None
        # socketpair written by finishing handlers, select()ed by the dispatcher
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._min_batch = max(1, self.batch_size // 2)
        # Free slots at which a finishing handler wakes the dispatcher (0: never).
        self._poke_at = 0
        self._is_leader = False

    def __repr__(self) -> str:
        return f"<teguh.Worker queue={self.queue!r} id={self.worker_id!r}>"

    # -- registration ---------------------------------------------------------------

    def task(self, name: str) -> Callable[[H], H]:
        """Register the decorated function as the handler of ``name`` (``"*"``: any)."""

        def register(fn: H) -> H:
            self.handle(name, fn)
            return fn

        return register

    def handle(self, name: str, fn: Handler) -> None:
        """Register ``fn`` as the handler of task ``name`` (``"*"``: the catch-all)."""
        if not callable(fn):
            raise TypeError(f"handler for {name!r} is not callable: {fn!r}")
        self._handlers[name] = fn

    def include(self, obj: Task[Any, Any] | types.ModuleType) -> None:
        """Register a `teguh.Task`, or every `Task` of this worker's queue in a module."""
        if isinstance(obj, Task):
            if obj.queue != self.queue:
                raise ValueError(
                    f"task {obj.name!r} belongs to queue {obj.queue!r}, not {self.queue!r}"
                )
            self.handle(obj.name, obj.handle)
        elif isinstance(obj, types.ModuleType):
            for value in vars(obj).values():
                if isinstance(value, Task) and value.queue == self.queue:
                    self.handle(value.name, value.handle)
        else:
            raise TypeError(f"include() takes a teguh.Task or a module, got {obj!r}")

    @property
    def handlers(self) -> dict[str, Handler]:
        """The registered handlers, by task name (a copy)."""
        return dict(self._handlers)

    @property
    def in_flight(self) -> int:
        """How many runs are executing now."""
        return len(self._inflight)

    @property
    def hung_handlers(self) -> int:
        """How many slots are held by handlers hung after a cancellation or a lost lease."""
        with self._lock:
            states = list(self._inflight)
        return sum(1 for s in states if s.abandoned_for() >= self.claim_timeout)

    @property
    def recycle_requested(self) -> bool:
        """Whether the worker stopped claiming to be recycled (see ``recycle_when_stuck``)."""
        return self._recycle

    @property
    def is_running(self) -> bool:
        """Whether the worker is started and not stopping."""
        return self._running

    @property
    def is_ticker(self) -> bool:
        """Whether this worker currently runs the queue's ticker."""
        return self._is_leader

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> Self:
        """Start the worker's threads and return (see `stop`). A stopped worker may restart."""
        if self._running:
            raise RuntimeError("this worker is already running")
        self.client.ensure_schema()
        self._running = True
        self._stopping = threading.Event()
        self._hb_stop = threading.Event()
        self._signalled = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        if self._pool_arg is not None:
            self._pool = self._pool_arg
        else:
            size = self.concurrency + 3
            self._pool = ConnectionPool(
                self.client.conninfo,
                min_size=size,
                max_size=size,
                kwargs=self._connect_kwargs("teguh-worker"),
                name=f"teguh-worker-{self.queue}",
                reconnect_timeout=_POOL_RECONNECT_TIMEOUT,
                open=True,
            )
            self._pool.wait(timeout=30.0)
        self._executor = ThreadPoolExecutor(
            max_workers=self.concurrency, thread_name_prefix=f"teguh-{self.queue}"
        )
        self._heartbeat = threading.Thread(
            target=self._heartbeat_loop, name=f"teguh-heartbeat-{self.queue}", daemon=True
        )
        self._dispatcher = threading.Thread(
            target=self._dispatch_loop, name=f"teguh-dispatch-{self.queue}", daemon=True
        )
        self._recorder = Recorder(self._pool, self.queue, self.worker_id, self.client.dumps)
        self._heartbeat.start()
        self._recorder.start()
        self._dispatcher.start()
        logger.info(
            "worker %s started on queue %s (concurrency %d)",
            self.worker_id,
            self.queue,
            self.concurrency,
            extra={"queue": self.queue, "worker_id": self.worker_id},
        )
        return self

    def run(self, *, handle_signals: bool = True) -> None:
        """Start, block until `stop` or SIGINT/SIGTERM, then stop gracefully.

        Signal handlers are installed only when called from the main thread;
        they only set a flag.
        """
        self.start()
        restore: dict[signal.Signals, Any] = {}
        if handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                restore[sig] = signal.signal(sig, self._on_signal)
        try:
            while not self._signalled and not self._stopping.is_set():
                self._stopping.wait(0.2)
        finally:
            for sig, handler in restore.items():
                signal.signal(sig, handler)
            self.stop(self.shutdown_timeout)

    def _on_signal(self, signum: int, frame: types.FrameType | None) -> None:
        self._signalled = True

    def stop(self, timeout: C.Duration | None = None) -> None:
        """Stop claiming, let in-flight handlers finish, then release the rest.

        Waits up to ``timeout`` seconds (default ``shutdown_timeout``) for
        running handlers. Runs still executing after that are handed back
        at once (no attempt consumed) so another worker can take them; their
        handlers' next teguh call raises `teguh.LeaseLost` and nothing they
        return is recorded. Idempotent. A call made while another stop is waiting (from a
        second signal's handler, say) only shortens that wait to its own
        ``timeout``: ``stop(0)`` hands the running runs back at once.
        """
        wait = self.shutdown_timeout if timeout is None else C.seconds(timeout, "timeout")
        if self._stop_deadline is not None:
            self._stop_deadline = min(self._stop_deadline, time.monotonic() + wait)
            return
        if not self._running:
            return
        self._stopping.set()  # before is_running turns false: no claim after that
        self._running = False
        self._stop_deadline = time.monotonic() + wait
        try:
            self._shut_down()
        finally:
            self._stop_deadline = None

    def _shut_down(self) -> None:
        self._poke()
        if self._dispatcher is not None:
            self._dispatcher.join(10.0)
            if self._dispatcher.is_alive():
                logger.error("dispatcher thread of %s did not stop", self.worker_id)
        with self._lock:
            # short waits: a later stop() may bring the deadline forward
            while self._inflight and (remaining := self._deadline() - time.monotonic()) > 0:
                self._idle.wait(min(remaining, 0.1))
            leftovers = list(self._inflight)
        recorder = self._recorder
        assert recorder is not None
        for state in leftovers:
            recorder.release(state)
        recorder.close(30.0)  # record the completions handlers left
        self._hb_stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(10.0)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._pool is not None and self._pool_arg is None:
            self._pool.close(timeout=5.0)
        if self._wake_r is not None and self._wake_w is not None:
            self._wake_r.close()
            self._wake_w.close()
        logger.info(
            "worker %s stopped (%d run(s) released)",
            self.worker_id,
            len(leftovers),
            extra={"queue": self.queue, "worker_id": self.worker_id},
        )

    def _deadline(self) -> float:
        deadline = self._stop_deadline
        return time.monotonic() if deadline is None else deadline

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.stop()

    # -- dispatcher -----------------------------------------------------------------

    def _poke(self) -> None:
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"\0")

    def _connect_kwargs(self, role: str) -> dict[str, Any]:
        kwargs = {**self.client.connect_kwargs, "autocommit": True}
        kwargs.setdefault("connect_timeout", 10)
        if "application_name" not in self.client.conninfo:
            # lets operators (and tests) tell teguh's sessions apart
            kwargs.setdefault("application_name", f"{role}:{self.queue}")
        return kwargs

    def _check_pool(self) -> None:
        if self._recorder is not None:
            self._recorder.check_pool()

    def _connect_listen(self) -> psycopg.Connection[Any]:
        kwargs = self._connect_kwargs("teguh-listen")
        kwargs["connect_timeout"] = min(int(kwargs["connect_timeout"]), 5)
        for key, value in _LISTEN_KEEPALIVES.items():
            if key not in self.client.conninfo:
                kwargs.setdefault(key, value)
        conn: psycopg.Connection[Any] = psycopg.Connection.connect(self.client.conninfo, **kwargs)
        try:
            with _abort_after(conn, _LISTEN_QUERY_TIMEOUT):
                conn.execute(Q.listen(self.queue))
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _drain(conn: psycopg.Connection[Any]) -> int:
        n = 0
        for _ in conn.notifies(timeout=0):
            n += 1
        return n

    def _dispatch_loop(self) -> None:
        wake_r = self._wake_r
        assert wake_r is not None
        listen: psycopg.Connection[Any] | None = None
        backoff = 0.1
        reconnect_at = 0.0
        pending = True  # a run may be ready: claim when a slot is free
        full = False  # the last claim was full: more runs are probably ready
        due_at: float | None = None  # monotonic time of the next known due run
        last_claim = 0.0
        claim_ok_at = 0.0
        batch_started: float | None = None
        next_tick = 0.0
        try:
            while not self._stopping.is_set():
                now = time.monotonic()
                if listen is None and now >= reconnect_at:
                    try:
                        listen = self._connect_listen()
                    except Exception as exc:
                        reconnect_at = now + backoff
                        logger.warning(
                            "cannot LISTEN on queue %s (retrying in %.1fs): %s",
                            self.queue,
                            backoff,
                            exc,
                        )
                        backoff = min(backoff * 2, _RECONNECT_MAX)
                    else:
                        if backoff > 0.1:
                            logger.info("LISTEN connection of queue %s is back", self.queue)
                        backoff = 0.1
                        pending = True  # notifications may have been missed
                        next_tick = now
                if listen is not None and now >= next_tick:
                    try:
                        with _abort_after(listen, _LISTEN_QUERY_TIMEOUT):
                            ticked = self._tick(listen)
                        if ticked:
                            pending = True
                    except psycopg.OperationalError as exc:
                        listen = self._lost_listen(listen, exc)
                        reconnect_at = now
                        continue
                    except psycopg.Error:
                        logger.exception("ticker failed on queue %s", self.queue)
                    next_tick = now + self.ticker_interval

                free = self.concurrency - len(self._inflight)
                wait_slots: float | None = None
                if pending and free > 0 and now >= claim_ok_at:
                    want = min(free, self.batch_size)
                    if full and want < self._min_batch:
                        batch_started = batch_started or now
                        wait_slots = batch_started + _BATCH_WINDOW - now
                    if wait_slots is None or wait_slots <= 0:
                        wait_slots = None
                        batch_started = None
                        try:
                            got, due_in = self._claim(want)
                        except psycopg.OperationalError as exc:
                            # Broken pool connections (server restart, killed
                            # backends): replace them all now, not one per claim.
                            logger.error("claiming runs on queue %s failed: %s", self.queue, exc)
                            self._check_pool()
                            claim_ok_at = now + 0.1
                            continue
                        except Exception:
                            logger.exception("claiming runs on queue %s failed", self.queue)
                            claim_ok_at = now + _CLAIM_ERROR_BACKOFF
                            continue
                        last_claim = now
                        full = got == want
                        if not full:
                            pending = False
                            # From after the claim: the due time was measured at its
                            # end. From `now` (before the round trip) the next claim
                            # comes early, finds nothing and pays the 50 ms floor,
                            # which is meant for overdue runs the claim cannot take
                            # (an expired lease awaiting the ticker).
                            after = time.monotonic()
                            due_at = None
                            if due_in is not None:
                                due_at = after + (due_in if due_in > 0 else 0.05)
                            if self._is_leader and due_at is not None:
                                next_tick = min(next_tick, due_at)
                        continue

                # Wait for a notification, a freed slot, or a timer.
                timeout = 5.0
                if pending:
                    # Ask finishing handlers to wake us; re-check after asking,
                    # as one may have finished just before.
                    self._poke_at = self._min_batch if full else 1
                    freed = self.concurrency - len(self._inflight)
                    if freed >= self._poke_at and now >= claim_ok_at:
                        timeout = 0.0
                else:
                    self._poke_at = 0
                if free > 0:
                    timeout = min(timeout, self.poll_interval - (now - last_claim))
                    if due_at is not None:
                        timeout = min(timeout, due_at - now)
                    if wait_slots is not None:
                        timeout = min(timeout, wait_slots)
                    if pending:
                        timeout = min(timeout, claim_ok_at - now)
                if listen is None:
                    timeout = min(timeout, reconnect_at - now, 1.0)
                else:
                    timeout = min(timeout, next_tick - now)
                fds: list[Any] = [wake_r]
                if listen is not None:
                    fds.append(listen.fileno())
                readable, _, _ = select.select(fds, [], [], max(timeout, 0.0))
                if wake_r in readable:
                    with contextlib.suppress(OSError):
                        wake_r.recv(4096)
                if listen is not None and len(readable) > (wake_r in readable):
                    try:
                        if self._drain(listen):
                            pending = True
                    except psycopg.OperationalError as exc:
                        listen = self._lost_listen(listen, exc)
                        reconnect_at = time.monotonic()
                now = time.monotonic()
                if now - last_claim >= self.poll_interval or listen is None:
                    pending = True
                if due_at is not None and now >= due_at:
                    pending = True
                    due_at = None
        except Exception:
            logger.exception("dispatcher of queue %s crashed", self.queue)
        finally:
            self._is_leader = False
            if listen is not None:
                listen.close()

    def _lost_listen(
        self, listen: psycopg.Connection[Any], exc: BaseException
    ) -> psycopg.Connection[Any] | None:
        logger.warning("lost the LISTEN connection of queue %s: %s", self.queue, exc)
        self._is_leader = False
        with contextlib.suppress(Exception):
            listen.close()
        return None

    def _tick(self, listen: psycopg.Connection[Any]) -> bool:
        """Try to become (or stay) the ticker; run the ticker if so. True if it changed tasks."""
        if not self._is_leader:
            row = listen.execute(Q.TRY_TICKER_LOCK, (self.queue,)).fetchone()
            self._is_leader = bool(row and row[0])
            if self._is_leader:
                logger.info("worker %s runs the ticker of queue %s", self.worker_id, self.queue)
        changed = 0
        if self._is_leader:
            row = listen.execute(Q.TICKER, (self.queue,)).fetchone()
            changed = int(row[0] or 0) if row else 0
        # Notifications that arrived during the queries are in psycopg's backlog.
        return self._drain(listen) > 0 or changed > 0

    def _claim(self, want: int) -> tuple[int, float | None]:
        """Claim up to ``want`` runs and submit them; return (claimed, seconds until due)."""
        assert self._pool is not None
        assert self._executor is not None
        due_in: float | None = None
        with self._pool.connection(timeout=_POOL_WAIT) as conn:
            sent_at = time.monotonic()
            rows = conn.execute(
                Q.WORKER_CLAIM_TASK,
                (self.queue, self.worker_id, self.claim_timeout, want),
                prepare=True,
            ).fetchall()
            for row in rows:
                try:
                    run = self.client.make_run(row)
                except Exception as exc:  # e.g. a custom json_loads rejecting the params
                    self._fail_unreadable(conn, row[0], exc)
                    continue
                state = RunState(run, lease_until=sent_at + self.claim_timeout)
                with self._lock:
                    self._inflight.add(state)
                self._executor.submit(self._execute, state)
            if len(rows) < want:
                row = conn.execute(Q.NEXT_WAKE_IN, (self.queue,), prepare=True).fetchone()
                due_in = None if row is None else row[0]
        if rows and logger.isEnabledFor(logging.DEBUG):
            logger.debug("claimed %d run(s) on queue %s", len(rows), self.queue)
        return len(rows), due_in

    def _fail_unreadable(self, conn: psycopg.Connection[Any], run_id: UUID, exc: Exception) -> None:
        """Fail a claimed run whose row could not be decoded, so it is not stranded."""
        logger.error("cannot decode claimed run %s: %s", run_id, exc)
        reason = failure_reason(exc)
        reason["message"] = f"cannot decode the run: {reason['message']}"
        try:
            text = C.dump(C.default_dumps, reason, "reason")
            conn.execute(Q.FAIL_RUN, (self.queue, run_id, text, None))
        except psycopg.Error:
            logger.exception("could not fail the undecodable run %s", run_id)

    # -- execution ------------------------------------------------------------------

    def _execute(self, state: RunState) -> None:
        run = state.run
        recorder = self._recorder
        assert recorder is not None
        try:
            handler = self._handlers.get(run.task_name) or self._handlers.get(CATCH_ALL)
            if handler is None:
                recorder.hand_back(state, self.unknown_task_delay, self.max_hand_backs)
                return
            assert self._pool is not None
            ctx = TaskContext(
                self.client,
                self.queue,
                run,
                pool=self._pool,
                state=state,
                claim_timeout=self.claim_timeout,
                worker_id=self.worker_id,
            )
            token = bind(ctx)
            try:
                result = handler(ctx)
            except Suspend:
                return
            except TaskCancelled:
                state.mark(CANCELLED)
                logger.info(
                    "task %s was cancelled while running",
                    run.task_id,
                    extra=run_extra(self.queue, run),
                )
                return
            except LeaseLost:
                logger.warning(
                    "run %s lost its lease; not recording its outcome",
                    run.run_id,
                    extra=run_extra(self.queue, run),
                )
                return
            except BaseException as exc:  # the handler failed: record it, keep the thread
                recorder.fail(state, exc)
                return
            finally:
                unbind(token)
            recorder.complete(state, result)
        except Exception:
            logger.exception(
                "internal error running %s", run.run_id, extra=run_extra(self.queue, run)
            )
        finally:
            with self._lock:
                self._inflight.discard(state)
                free = self.concurrency - len(self._inflight)
                if not self._inflight:
                    self._idle.notify_all()
            # Wake the dispatcher only when it waits for this many free slots:
            # one wake-up per claim batch, not one per run.
            poke_at = self._poke_at
            if poke_at and free >= poke_at:
                self._poke_at = 0
                self._poke()

    # -- heartbeats -----------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        while not self._hb_stop.wait(self.heartbeat_interval):
            try:
                self.heartbeat()
            except psycopg.OperationalError as exc:  # the server is away: no traceback
                logger.warning("heartbeat failed on queue %s: %s", self.queue, exc)
            except Exception:
                logger.exception("heartbeat failed on queue %s", self.queue)
            self._check_hung()

    def _check_hung(self) -> None:
        """Report hung handlers once each; ask for recycling when they hold every slot."""
        with self._lock:
            states = list(self._inflight)
        hung = [s for s in states if s.abandoned_for() >= self.claim_timeout]
        for state in hung:
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
                extra=run_extra(self.queue, run),
            )
        if self.recycle_when_stuck and len(hung) >= self.concurrency and not self._recycle:
            self._recycle = True
            logger.error(
                "every slot of worker %s is held by a hung handler: it stops claiming and asks"
                " to be recycled",
                self.worker_id,
                extra={"queue": self.queue, "worker_id": self.worker_id},
            )
            self._stopping.set()
            self._poke()

    def heartbeat(self) -> int:
        """Extend every in-flight lease now; return how many runs were found gone.

        The heartbeat thread calls this every ``heartbeat_interval``.
        """
        with self._lock:
            states = [s for s in self._inflight if s.status is None]
        if not states or self._pool is None:
            return 0
        with self._pool.connection(timeout=_POOL_WAIT) as conn:
            sent_at = time.monotonic()
            rows = conn.execute(
                Q.EXTEND_CLAIMS,
                (self.queue, self.worker_id, [s.run.run_id for s in states], self.claim_timeout),
                prepare=True,
            ).fetchall()
        gone: dict[UUID, str] = dict(rows)
        for state in states:
            status = gone.get(state.run.run_id)
            if status is None:
                state.renewed(sent_at, self.claim_timeout)
                continue
            state.mark(CANCELLED if status == "cancelled" else LOST)
            logger.info(
                "run %s is %s; its handler will be stopped at its next teguh call",
                state.run.run_id,
                status,
                extra=run_extra(self.queue, state.run),
            )
        return len(rows)


@contextlib.contextmanager
def _abort_after(conn: psycopg.Connection[Any], timeout: float) -> Iterator[None]:
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


def _shut_socket(conn: psycopg.Connection[Any]) -> None:
    logger.warning("a query on the LISTEN session did not answer in time: dropping the session")
    with contextlib.suppress(OSError, psycopg.Error, ValueError):
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()
