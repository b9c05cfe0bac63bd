"""Which descriptors are readable, without select()'s limit of 1024.

``select.select`` raises ``ValueError`` for a descriptor at or past
FD_SETSIZE (1024), which a process with many files open (a web application
running a worker, a test suite) hands out; ``poll`` takes any descriptor.
Windows has no ``poll``, and its ``select`` has no such limit.
"""

from __future__ import annotations

import math
import select
from collections.abc import Sequence
from typing import Any

_EVENTS = (
    getattr(select, "POLLIN", 0) | getattr(select, "POLLERR", 0) | getattr(select, "POLLHUP", 0)
)


def readable(objects: Sequence[Any], timeout: float) -> list[Any]:
    """Wait up to ``timeout`` seconds (0: not at all); return the readable ``objects``.

    Each object is a descriptor or has ``fileno()``. Hang-ups and errors
    count as readable: reading is what reports them.
    """
    if not hasattr(select, "poll"):  # pragma: no cover - Windows
        ready, _, errored = select.select(objects, [], objects, timeout)
        return [o for o in objects if o in ready or o in errored]
    poller = select.poll()
    by_fd: dict[int, Any] = {}
    for obj in objects:
        fd = obj if isinstance(obj, int) else obj.fileno()
        by_fd[fd] = obj
        poller.register(fd, _EVENTS)
    events = poller.poll(math.ceil(max(timeout, 0.0) * 1000))
    return [by_fd[fd] for fd, _ in events]
