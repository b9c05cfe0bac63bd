"""Find a run's handler and execute it inside the app's middleware.

Routing (`Router`): the app's tasks by exact name, then the worker's own
``handle(pattern, fn)`` routes: an exact name, or a prefix ending in ``*``
(``"email.*"``; ``"*"`` alone matches everything); the most specific
(longest) prefix wins. A run with no handler follows the ``not_found``
policy: ``"hand_back"`` (default: another worker may have the handler),
``"fail"`` (fail it with a reason naming the missing handler) or a fallback
``fn(ctx)``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from psycopg_pool import ConnectionPool

from teguh.context import CANCELLED, RunState, TaskContext, bind, unbind
from teguh.errors import LeaseLost, Suspend, TaskCancelled
from teguh.tasks import _check_handler, not_retried
from teguh.worker.completions import Completions, run_extra

if TYPE_CHECKING:
    from teguh.app import App

__all__ = ["Executor", "Handler", "NotFound", "Router"]

logger = logging.getLogger("teguh.worker")

Handler = Callable[[TaskContext], Any]
NotFound = Literal["hand_back", "fail"] | Handler


class Router:
    """Map task names to handlers: the app's tasks, exact routes, prefix routes."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._exact: dict[str, Handler] = {}
        self._prefixes: list[tuple[str, Handler]] = []  # longest first
        self._lock = threading.Lock()

    def add(self, pattern: str, fn: Handler) -> None:
        """Route ``pattern`` (a name, or a prefix ending in ``*``) to ``fn(ctx)``."""
        if not isinstance(pattern, str) or not pattern:
            raise TypeError(f"a handler pattern must be a non-empty str, got {pattern!r}")
        _check_handler(fn, f"the handler of {pattern!r}")
        with self._lock:
            if pattern.endswith("*"):
                prefix = pattern[:-1]
                if any(p == prefix for p, _ in self._prefixes):
                    raise ValueError(f"a handler for {pattern!r} is already registered")
                self._prefixes.append((prefix, fn))
                self._prefixes.sort(key=lambda item: len(item[0]), reverse=True)
                return
            if pattern in self._exact or pattern in self._app.tasks:
                raise ValueError(f"a handler for task {pattern!r} is already registered")
            self._exact[pattern] = fn

    def find(self, task_name: str) -> Handler | None:
        """Return the handler of ``task_name``, or None."""
        declared = self._app._tasks.get(task_name)
        if declared is not None:
            return declared.handle
        fn = self._exact.get(task_name)
        if fn is not None:
            return fn
        for prefix, handler in self._prefixes:
            if task_name.startswith(prefix):
                return handler
        return None

    def routes(self) -> dict[str, Handler]:
        """The worker's own routes, by pattern."""
        out = dict(self._exact)
        out.update({prefix + "*": fn for prefix, fn in self._prefixes})
        return out


class Executor:
    """Run one claimed run: route, wrap in middleware, record the outcome."""

    def __init__(
        self,
        app: App,
        router: Router,
        completions: Completions,
        pool: ConnectionPool[Any],
        *,
        worker_id: str,
        claim_timeout: int,
        not_found: NotFound,
        unknown_task_delay: float,
        max_hand_backs: int | None = None,
    ) -> None:
        self.app = app
        self.router = router
        self.completions = completions
        self.pool = pool
        self.worker_id = worker_id
        self.claim_timeout = claim_timeout
        self.not_found = not_found
        self.unknown_task_delay = unknown_task_delay
        self.max_hand_backs = max_hand_backs

    def execute(self, state: RunState, queue: str) -> None:
        """Execute a run to its end and record it; never raises."""
        run = state.run
        done = self.completions
        try:
            handler = self.router.find(run.task_name)
            if handler is None:
                if callable(self.not_found):
                    handler = self.not_found
                elif self.not_found == "fail":
                    logger.error(
                        "no handler for task %r on worker %s: failing run %s",
                        run.task_name,
                        self.worker_id,
                        run.run_id,
                        extra=run_extra(queue, run),
                    )
                    reason = {
                        "name": "NoHandler",
                        "message": f"no handler for task {run.task_name!r} on worker "
                        f"{self.worker_id} (not_found='fail')",
                    }
                    done.fail_with(state, queue, reason)
                    return
                else:
                    logger.warning(
                        "no handler for task %r on worker %s: handing run %s back for %.1fs",
                        run.task_name,
                        self.worker_id,
                        run.run_id,
                        self.unknown_task_delay,
                        extra=run_extra(queue, run),
                    )
                    done.hand_back(state, queue, self.unknown_task_delay, self.max_hand_backs)
                    return
            ctx = TaskContext(
                self.app,
                queue,
                run,
                pool=self.pool,
                state=state,
                claim_timeout=self.claim_timeout,
                worker_id=self.worker_id,
            )
            call = _chain(handler, self.app.middleware)
            token = bind(ctx)
            try:
                result = call(ctx)
            except Suspend:
                return
            except TaskCancelled:
                state.mark(CANCELLED)
                logger.info(
                    "task %s was cancelled while running", run.task_id, extra=run_extra(queue, run)
                )
                return
            except LeaseLost:
                logger.warning(
                    "run %s lost its lease; not recording its outcome",
                    run.run_id,
                    extra=run_extra(queue, run),
                )
                return
            except BaseException as exc:  # the handler failed: record it, keep the thread
                declared = self.app._tasks.get(run.task_name)
                done.fail(state, queue, exc, not_retried=not_retried(exc, declared))
                return
            finally:
                unbind(token)
            done.complete(state, queue, result)
        except Exception:
            logger.exception("internal error running %s", run.run_id, extra=run_extra(queue, run))


def _chain(handler: Handler, middleware: list[Any]) -> Handler:
    """Compose middleware around ``handler``; the first registered is the outermost."""
    call = handler
    for mw in reversed(middleware):
        call = _wrap(mw, call)
    return call


def _wrap(mw: Any, call_next: Handler) -> Handler:
    def wrapped(ctx: TaskContext) -> Any:
        return mw(ctx, call_next)

    return wrapped
