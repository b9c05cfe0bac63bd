"""``python manage.py teguh_worker``: run the Django tasks of a teguh backend."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections
from django.tasks import task_backends

from teguh.client import Client
from teguh.contrib._workers import WorkerGroup
from teguh.contrib.django import _conf
from teguh.contrib.django.backend import TeguhBackend
from teguh.contrib.django.runner import DjangoRunner
from teguh.errors import SchemaError


class Command(BaseCommand):  # type: ignore[misc]  # Django is untyped
    help = (
        "Run a teguh worker for the Django tasks of a TASKS backend. SIGINT/SIGTERM: "
        "finish running tasks and exit."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--backend", default="default", help="alias in settings.TASKS (default: default)"
        )
        parser.add_argument(
            "-q",
            "--queue",
            action="append",
            default=[],
            help="queue to serve; repeat or separate with commas (default: the backend's QUEUES)",
        )
        parser.add_argument(
            "-c", "--concurrency", type=int, help="tasks run at once, per queue (default 10)"
        )
        parser.add_argument("--claim-timeout", type=float, help="lease of a claimed run, seconds")
        parser.add_argument(
            "--poll-interval", type=float, help="longest wait between claims, seconds"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        alias = options["backend"]
        try:
            backend = task_backends[alias]
        except Exception as exc:
            raise CommandError(f"no task backend {alias!r} in settings.TASKS") from exc
        if not isinstance(backend, TeguhBackend):
            raise CommandError(
                f"TASKS[{alias!r}] uses {type(backend).__module__}.{type(backend).__name__}, "
                "not teguh.contrib.django.TeguhBackend"
            )
        queues = [q.strip() for v in options["queue"] for q in v.split(",") if q.strip()]
        queues = queues or sorted(backend.queues)
        unknown = sorted(set(queues) - backend.queues)
        if unknown:
            raise CommandError(f"queue(s) {', '.join(unknown)} not in TASKS[{alias!r}]['QUEUES']")
        worker_options = dict(backend.worker_options)
        for key in ("concurrency", "claim_timeout", "poll_interval"):
            if options.get(key) is not None:
                worker_options[key] = options[key]
        concurrency = int(worker_options.pop("concurrency", 10))
        if concurrency < 1:
            raise CommandError(f"--concurrency must be >= 1, got {concurrency}")
        client = Client(_conf.conninfo(backend.database), min_size=1, max_size=2)
        try:
            try:
                client.check_schema()
            except SchemaError as exc:
                raise CommandError(f"{exc} (run `python manage.py migrate`)") from exc
            group = WorkerGroup(
                client, queues, DjangoRunner(backend), concurrency=concurrency, **worker_options
            )
            # The main thread's connection is not used while the worker runs.
            connections.close_all()
            self.stdout.write(
                f"teguh worker: queues {', '.join(queues)} of TASKS[{alias!r}], "
                f"concurrency {concurrency}"
            )
            self.stdout.flush()
            group.run()
        finally:
            client.close()
        self.stdout.write("teguh worker: stopped")
