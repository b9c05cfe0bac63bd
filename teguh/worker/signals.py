"""The one signal policy: drain, then hand back, then exit.

`SignalPolicy` is used by `Worker.run` (and by the ``teguh`` commands that
run until interrupted). Its handlers only count signals; the thread that
owns the policy polls `SignalPolicy.count` and acts: the first SIGINT or
SIGTERM drains (no new claims; running handlers finish), the second hands
the runs still executing back at once, the third exits the process.
Library code never installs a process-wide handler anywhere else, and this
one only in the main thread, for the duration of a ``with`` block.
"""

from __future__ import annotations

import signal
import threading
import types
from typing import Any, Self

__all__ = ["SignalPolicy"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SignalPolicy:
    """Count SIGINT/SIGTERM while active (see the module docstring)."""

    def __init__(self, *, install: bool = True) -> None:
        self.count = 0
        self.last: int | None = None
        self.event = threading.Event()
        self._install = install
        self._previous: dict[signal.Signals, Any] = {}

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        self.count += 1
        self.last = signum
        self.event.set()

    @property
    def exit_code(self) -> int:
        """128 + the last signal's number (0 without a signal)."""
        return 0 if self.last is None else 128 + self.last

    def __enter__(self) -> Self:
        if self._install and threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
