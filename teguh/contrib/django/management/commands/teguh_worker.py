"""``python manage.py teguh_worker``: run the Django tasks of a teguh backend."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections
from django.tasks import task_backends

from teguh.contrib.django.backend import TeguhBackend
from teguh.contrib.django.worker import make_worker
from teguh.errors import QueueNotFound, SchemaError


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
            "-c",
            "--concurrency",
            type=int,
            help="tasks run at once, all queues together (default 10)",
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
        worker_options = {
            key: options[key]
            for key in ("concurrency", "claim_timeout", "poll_interval")
            if options.get(key) is not None
        }
        try:
            worker = make_worker(backend, queues or None, **worker_options)
        except (TypeError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        # The main thread's connection is not used while the worker runs.
        connections.close_all()
        self.stdout.write(f"teguh worker: queues {', '.join(worker.queues)} of TASKS[{alias!r}]")
        self.stdout.flush()
        try:
            code = worker.run()
        except (SchemaError, QueueNotFound) as exc:
            raise CommandError(f"{exc} (run `python manage.py migrate`)") from exc
        finally:
            worker.app.close()
        self.stdout.write("teguh worker: stopped")
        if code:
            raise SystemExit(code)  # a second signal handed running tasks back
