"""The workload of ``teguh demo``: an order workflow, a no-op task, and the demo's output.

`OrderWorkflow` is the demo's task handler: three steps (the third crashing
on its first attempt, so that the retry replays the committed steps from
their checkpoints), a durable sleep, an event it waits for, and a last step.
It counts what it saw in `Stats` for the summary. `Out` prints timestamped
lines from any thread and a progress line rewritten in place only on a
terminal. Imported only by `teguh.cli.demo`.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO, TypeVar

from teguh.cli import format as F
from teguh.context import TaskContext
from teguh.errors import Suspend

__all__ = ["OrderWorkflow", "Out", "Stats", "noop"]

T = TypeVar("T")


# -- output ---------------------------------------------------------------------------


class Out:
    """Timestamped lines from any thread, and a progress line that is TTY-aware."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.t0 = time.monotonic()
        self._lock = threading.Lock()
        self._width = 0

    def line(self, text: str = "") -> None:
        with self._lock:
            print(text, file=self.stream, flush=True)

    def at(self, text: str) -> None:
        """Print ``text`` with the seconds elapsed since the workflow started."""
        self.line(f"  [{time.monotonic() - self.t0:6.2f}s] {text}")

    def title(self, text: str) -> None:
        self.line()
        self.line(text)
        self.line("-" * len(text))

    def progress(self, text: str, *, final: bool = False) -> None:
        with self._lock:
            if self.tty:
                # Pad over the previous text instead of an erase escape: any terminal.
                padded = text.ljust(self._width)
                self._width = len(text)
                self.stream.write("\r" + padded + ("\n" if final else ""))
            else:
                self.stream.write(text + "\n")
            self.stream.flush()


# -- the workflow ---------------------------------------------------------------------


@dataclass
class Stats:
    """What the workflow's handler observed, shared with the main thread."""

    runs: int = 0
    attempts_seen: list[int] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    executed: Counter[str] = field(default_factory=Counter)
    replayed: Counter[str] = field(default_factory=Counter)
    crashes: int = 0
    charged: int = 0
    waiting_since: float | None = None
    emitted_at: float | None = None
    event_latency: float | None = None
    waiting: threading.Event = field(default_factory=threading.Event)


class OrderWorkflow:
    """The demo's task handler: reserve, charge, book a courier, sleep, await delivery."""

    STEPS = ("reserve-stock", "charge-card", "book-courier", "send-receipt")

    def __init__(self, out: Out, order_id: int, sleep: float) -> None:
        self.out = out
        self.order_id = order_id
        self.sleep = sleep
        self.event = f"delivered:{order_id}"
        self.stats = Stats()
        self._lock = threading.Lock()
        self._last_end = "resumed"

    # The side effects: each one counts how often it really ran.

    def reserve_stock(self, items: list[str]) -> dict[str, Any]:
        return {"reserved": items, "warehouse": "SUB-2"}

    def charge_card(self, amount: float) -> dict[str, Any]:
        with self._lock:
            self.stats.charged += 1
        return {"charged": amount, "payment_id": f"pay_{secrets.token_hex(4)}"}

    def book_courier(self, city: str) -> dict[str, Any]:
        if self.stats.calls["book-courier"] == 1:
            raise ConnectionError("courier API timed out")
        return {"courier": "kilat", "tracking": f"KLT{secrets.randbelow(10**8):08d}", "to": city}

    def send_receipt(self, email: str) -> str:
        return f"receipt sent to {email}"

    # The handler.

    def _step(self, ctx: TaskContext, name: str, fn: Callable[..., T], *args: Any) -> T:
        ran = False

        def body() -> T:
            nonlocal ran
            ran = True
            with self._lock:
                self.stats.calls[name] += 1
            return fn(*args)

        try:
            value = ctx.step(name, body)
        except Exception as exc:
            with self._lock:
                self.stats.crashes += 1
            self.out.at(
                f"  {name:<14} CRASHED ({type(exc).__name__}: {exc}): "
                f"attempt {ctx.attempt} fails, teguh schedules a retry"
            )
            self._last_end = "the retry after the crash"
            raise
        with self._lock:
            (self.stats.executed if ran else self.stats.replayed)[name] += 1
        if ran:
            self.out.at(f"  {name:<14} executed -> {F.format_value(value, limit=70)}")
        else:
            self.out.at(f"  {name:<14} replayed from its checkpoint (not run again)")
        return value

    def __call__(self, ctx: TaskContext) -> dict[str, Any]:
        # On the database clock, like the sleep's wake-up time it is compared with.
        entered = ctx.client.current_time()
        with self._lock:
            self.stats.runs += 1
            run_no = self.stats.runs
            self.stats.attempts_seen.append(ctx.attempt)
        why = "first run"
        if ctx.wake_event:
            why = f"woken by event {ctx.wake_event!r}"
        elif run_no > 1:
            why = self._last_end
        self.out.at(f"run {run_no} (attempt {ctx.attempt}, {why})")
        params = ctx.params
        self._step(ctx, "reserve-stock", self.reserve_stock, params["items"])
        payment = self._step(ctx, "charge-card", self.charge_card, params["amount"])
        shipment = self._step(ctx, "book-courier", self.book_courier, params["city"])
        try:
            ctx.sleep_for(self.sleep, name="wait-for-pickup")
        except Suspend:
            self.out.at(
                f"  durable sleep {self.sleep:g}s: the run is suspended and its worker "
                "thread is free; the wake-up time is in the database"
            )
            self._last_end = "woken by its sleep's timer"
            raise
        # Executed once, on the run right after the sleep: when that run started.
        ctx.step("woke-up", entered.isoformat)
        try:
            delivery = ctx.await_event(self.event, timeout=60)
        except Suspend:
            with self._lock:
                self.stats.waiting_since = time.monotonic()
            self.stats.waiting.set()
            self.out.at(f"  waiting for event {self.event!r}: the run is suspended, nothing polls")
            raise
        with self._lock:
            if self.stats.emitted_at is not None and self.stats.event_latency is None:
                self.stats.event_latency = time.monotonic() - self.stats.emitted_at
        self.out.at(f"  event {self.event!r} received: {F.format_value(delivery)}")
        receipt = self._step(ctx, "send-receipt", self.send_receipt, params["email"])
        return {
            "order": self.order_id,
            "payment": payment["payment_id"],
            "tracking": shipment["tracking"],
            "receipt": receipt,
        }


def noop(ctx: TaskContext) -> None:
    return None
