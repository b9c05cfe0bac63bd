"""A task module whose import breaks the worker's dispatcher (for ``teguh worker`` tests)."""

from __future__ import annotations

import teguh
from teguh.worker.dispatcher import Dispatcher


def _broken(self: Dispatcher) -> None:
    raise RuntimeError("dispatcher bug")


Dispatcher.step = _broken  # type: ignore[method-assign]


@teguh.task(queue="q", name="never")
def never(ctx: teguh.TaskContext) -> None:
    return None
