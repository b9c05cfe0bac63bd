"""What a `Worker` is made of: its validated options and the parts a start assembles.

`WorkerSettings` checks the arguments of ``app.worker(...)`` once, at
construction; `Parts` is what a started worker opened (pool, LISTEN
connection, threads), built by `assemble` and closed in one place.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Unpack

from psycopg_pool import ConnectionPool

from teguh import _engine as E
from teguh.context import RunState
from teguh.records import WorkerOptions
from teguh.tasks import check_queue_name
from teguh.worker.completions import Completions
from teguh.worker.dispatcher import Dispatcher, QueueState, Slots
from teguh.worker.executor import Executor, NotFound, Router
from teguh.worker.heartbeat import Heartbeat
from teguh.worker.listener import Listener

if TYPE_CHECKING:
    from teguh.app import App

logger = logging.getLogger("teguh.worker")

_OPTIONS = frozenset(WorkerOptions.__annotations__)


class WorkerSettings:
    """The validated options of a `teguh.Worker` (see its docstring)."""

    def __init__(
        self,
        app: App,
        queues: Iterable[str] | Mapping[str, int] | None = None,
        *,
        concurrency: int = 10,
        not_found: NotFound = "hand_back",
        **options: Unpack[WorkerOptions],
    ) -> None:
        unknown = set(options) - _OPTIONS
        if unknown:
            raise TypeError(f"unknown worker option(s): {', '.join(sorted(unknown))}")
        self.app = app
        self.caps = _queues(app, queues)
        self.queues = list(self.caps)
        self.concurrency = E.integer(concurrency, "concurrency", 1, 10_000)
        if not (callable(not_found) or not_found in ("hand_back", "fail")):
            raise ValueError(
                f"not_found must be 'hand_back', 'fail' or a handler, got {not_found!r}"
            )
        self.not_found: NotFound = not_found
        lease = options.get("claim_timeout", 30)
        self.claim_timeout = max(1, E.whole_seconds(lease, "claim_timeout"))
        self.poll_interval = E.seconds(options.get("poll_interval", 30), "poll_interval")
        hb = options.get("heartbeat_interval")
        # A lease must outlive several heartbeats: a third of it by default.
        self.heartbeat_interval = (
            self.claim_timeout / 3 if hb is None else E.seconds(hb, "heartbeat_interval")
        )
        if not 0 < self.heartbeat_interval < self.claim_timeout:
            raise ValueError(
                f"heartbeat_interval must be > 0 and shorter than claim_timeout "
                f"({self.claim_timeout}s), got {self.heartbeat_interval}s: leases would expire "
                "under running handlers"
            )
        batch = options.get("batch_size")
        batch = self.concurrency if batch is None else E.integer(batch, "batch_size", 1)
        self.batch_size = min(batch, self.concurrency)
        self.worker_id: str = options.get("worker_id") or (
            f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        )
        self.ticker_interval = E.seconds(options.get("ticker_interval", 5), "ticker_interval")
        unknown_delay = options.get("unknown_task_delay", 5)
        self.unknown_task_delay = E.seconds(unknown_delay, "unknown_task_delay")
        max_hand_backs = options.get("max_hand_backs", 100)
        if max_hand_backs is not None:
            max_hand_backs = E.integer(max_hand_backs, "max_hand_backs", 1)
        self.max_hand_backs: int | None = max_hand_backs
        self.recycle_when_stuck = bool(options.get("recycle_when_stuck", False))
        self._recycle = False
        self.shutdown_timeout = E.seconds(options.get("shutdown_timeout", 30), "shutdown_timeout")
        self.connect_timeout = E.seconds(options.get("connect_timeout", 10), "connect_timeout")
        self._pool_arg: ConnectionPool[Any] | None = options.get("pool")
        self._router = Router(app)

    def _connect_kwargs(self, role: str) -> dict[str, Any]:
        kwargs = {**self.app.connect_kwargs, "autocommit": True}
        kwargs.setdefault("connect_timeout", max(1, round(self.connect_timeout)))
        if "application_name" not in self.app.conninfo:
            # lets operators (and tests) tell teguh's sessions apart
            kwargs.setdefault("application_name", f"{role}:{','.join(self.queues)}"[:63])
        return kwargs

    def executor(self, completions: Completions, pool: ConnectionPool[Any]) -> Executor:
        """The executor that runs this worker's handlers and records their outcomes."""
        return Executor(
            self.app,
            self._router,
            completions,
            pool,
            worker_id=self.worker_id,
            claim_timeout=self.claim_timeout,
            not_found=self.not_found,
            unknown_task_delay=self.unknown_task_delay,
            max_hand_backs=self.max_hand_backs,
        )


def assemble(
    settings: WorkerSettings,
    pool: ConnectionPool[Any],
    listener: Listener,
    slots: Slots,
    stopping: threading.Event,
    after_beat: Callable[[], None],
) -> Parts:
    """Build the parts of a started worker (nothing runs until `Parts.start`)."""
    engine = settings.app.engine
    completions = Completions(pool, engine, settings.worker_id)
    executor = settings.executor(completions, pool)
    threads = ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="teguh-run")

    def run_one(state: RunState, queue: str) -> None:
        started: float | None = None
        try:
            if stopping.is_set() or state.status is not None:
                # claimed ahead, and the worker began stopping before a thread was free
                completions.hand_back_unstarted(state, queue)
                return
            started = time.monotonic()
            executor.execute(state, queue)
        finally:
            slots.give_back(state, None if started is None else time.monotonic() - started)

    def submit(state: RunState, queue: str) -> None:
        threads.submit(run_one, state, queue)

    dispatcher = Dispatcher(
        queues=[QueueState(q, cap) for q, cap in settings.caps.items()],
        pool=pool,
        engine=engine,
        listener=listener,
        slots=slots,
        submit=submit,
        worker_id=settings.worker_id,
        claim_timeout=settings.claim_timeout,
        batch_size=settings.batch_size,
        poll_interval=settings.poll_interval,
        ticker_interval=settings.ticker_interval,
        stopping=stopping,
    )
    heartbeat = Heartbeat(
        pool,
        engine,
        slots,
        worker_id=settings.worker_id,
        interval=settings.heartbeat_interval,
        claim_timeout=settings.claim_timeout,
        after_beat=after_beat,
        queues=settings.queues,
    )
    return Parts(pool, listener, slots, completions, threads, dispatcher, heartbeat)


class Parts:
    """What a started worker opened, closed in one place."""

    def __init__(
        self,
        pool: ConnectionPool[Any],
        listener: Listener,
        slots: Slots,
        completions: Completions,
        threads: ThreadPoolExecutor,
        dispatcher: Dispatcher,
        heartbeat: Heartbeat,
    ) -> None:
        self.pool = pool
        self.listener = listener
        self.slots = slots
        self.completions = completions
        self.threads = threads
        self.dispatcher = dispatcher
        self.heartbeat = heartbeat
        self.thread: threading.Thread | None = None

    def start(self, target: Any) -> None:
        self.heartbeat.start()
        self.completions.start()
        self.thread = threading.Thread(target=target, name="teguh-dispatch", daemon=True)
        self.thread.start()

    def join_dispatcher(self, deadline: float) -> None:
        self.slots.poke()
        if self.thread is not None and self.thread.is_alive():
            self.thread.join(max(0.0, deadline - time.monotonic()))
            if self.thread.is_alive():
                logger.error("the dispatcher thread did not stop in time")

    def close(self, deadline: float, *, own_pool: bool) -> None:
        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        self.join_dispatcher(deadline)
        self.completions.close(deadline)
        self.heartbeat.stop(left())
        self.threads.shutdown(wait=False, cancel_futures=True)
        if own_pool:
            self.pool.close(timeout=left())
        self.slots.close()


def _queues(app: App, queues: Iterable[str] | Mapping[str, int] | None) -> dict[str, int | None]:
    """Return ``{queue: cap}`` from the ``queues`` argument (None: the app's task queues)."""
    if queues is None:
        names = sorted({t.queue for t in app.tasks.values()}) or ["default"]
        return dict.fromkeys(names)
    if isinstance(queues, str | bytes):
        raise TypeError(f"queues must be a list of queue names, got the string {queues!r}")
    out: dict[str, int | None] = {}
    if isinstance(queues, Mapping):
        for name, cap in queues.items():
            out[check_queue_name(name, "queues")] = E.integer(cap, f"queues[{name!r}]", 1)
    else:
        for name in queues:
            out[check_queue_name(name, "queues")] = None
    if not out:
        raise ValueError("a worker needs at least one queue")
    return out
