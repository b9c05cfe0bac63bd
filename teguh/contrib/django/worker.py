"""Workers for Django tasks: `make_worker`, and the optional in-process worker.

``OPTIONS["WORKER_IN_PROCESS"] = True`` starts a worker on threads of each
process that serves requests, on its first request (Django's
``request_started``), and stops it at exit. Starting on a request rather than
at start-up keeps it out of processes that serve none: ``runserver``'s
autoreloader watcher, a pre-forking server's master, management commands.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

from teguh.app import App
from teguh.contrib.django import _conf
from teguh.contrib.django.backend import TeguhBackend
from teguh.contrib.django.runner import DjangoRunner, django_connections
from teguh.worker import Worker

__all__ = ["make_worker"]

logger = logging.getLogger("teguh.contrib.django")


def make_worker(
    backend: str | TeguhBackend = "default",
    queues: Sequence[str] | None = None,
    **options: Any,
) -> Worker:
    """Return a (not started) `teguh.Worker` running the Django tasks of a teguh backend.

    ``backend``: an alias of ``settings.TASKS`` or the backend itself;
    ``queues``: default, the backend's ``QUEUES``; ``options``: `teguh.Worker`
    keywords over ``OPTIONS["WORKER"]`` (``concurrency``, ``claim_timeout``...).
    ``start()`` and ``stop(timeout)`` it, or ``run()`` it (blocks, handles
    signals). It connects to the backend's database with Django's settings of
    the moment (the test database under ``manage.py test``); its app opens no
    pool of its own unless you call ``worker.drain()`` (then ``worker.app.close()``).
    """
    from django.tasks import task_backends

    found = task_backends[backend] if isinstance(backend, str) else backend
    if not isinstance(found, TeguhBackend):
        raise TypeError(f"{backend!r} is not a teguh.contrib.django.TeguhBackend")
    names = list(queues or sorted(found.queues))
    unknown = sorted(set(names) - found.queues)
    if unknown:
        raise ValueError(f"queue(s) {', '.join(unknown)} not in TASKS[{found.alias!r}]['QUEUES']")
    app = App(_conf.conninfo(found.database), min_size=1, max_size=2)
    app.use(django_connections)
    for middleware in found.app.middleware:
        app.use(middleware)
    merged = {**found.worker_options, **options}
    worker = app.worker(names, **merged)
    worker.handle("*", DjangoRunner(found))
    return worker


class _InProcess:
    """The in-process worker of one backend: started once per process, stopped at exit."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.lock = threading.Lock()
        self.worker: Worker | None = None
        self.pid: int | None = None
        atexit.register(self.stop)

    def on_request(self, **kwargs: Any) -> None:
        if self.worker is not None and self.pid == os.getpid():
            return
        with self.lock:  # concurrent first requests start one worker
            if self.worker is not None and self.pid == os.getpid():
                return
            worker = make_worker(self.alias)
            worker.start()
            self.worker, self.pid = worker, os.getpid()
        logger.info("teguh in-process worker started in pid %d", os.getpid())

    def stop(self) -> None:
        with self.lock:
            worker, self.worker = self.worker, None
            mine = self.pid == os.getpid()
        if worker is not None and mine:
            worker.stop(10)
            worker.app.close()


_in_process: dict[str, _InProcess] = {}


def arm_in_process_workers() -> None:
    """Connect ``request_started`` for every backend with ``WORKER_IN_PROCESS``."""
    from django.conf import settings
    from django.core.signals import request_started

    for alias, params in getattr(settings, "TASKS", {}).items():
        if params.get("BACKEND") != _conf.BACKEND_PATH:
            continue
        if not params.get("OPTIONS", {}).get("WORKER_IN_PROCESS"):
            continue
        if alias not in _in_process:
            _in_process[alias] = _InProcess(alias)
            request_started.connect(
                _in_process[alias].on_request,
                weak=False,
                dispatch_uid=f"teguh-in-process-{alias}",
            )
