"""Schedules declared in code (``@app.periodic``) and their sync to the engine.

The engine stores and fires schedules (``teguh.create_schedule``, fired by
``teguh.ticker()``, docs/schedules.md); this module only declares them next
to the task they spawn::

    @app.periodic("*/5 * * * *", name="reports.refresh", timezone="Europe/Paris")
    @app.task(queue="reports")
    def refresh(ctx, full=False): ...

A worker's `start()` writes the app's declarations for the queues it serves
to the database (`sync_schedules`): new ones are created, changed ones
updated (an unchanged spec and time zone keep their next slot). A schedule
removed from the code is dropped only when the app owns its name's prefix
(``app.own_schedules("reports.")``); otherwise it is left firing and logged,
never dropped silently (another app, a deploy still rolling out, or an
operator may have made it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg

from teguh import _engine as E
from teguh.errors import InvalidArgument
from teguh.tasks import Task

if TYPE_CHECKING:
    from teguh.app import App
    from teguh.records import ScheduleOptions

__all__ = ["Periodic", "ScheduleRegistry", "SyncReport", "sync_schedules"]

logger = logging.getLogger("teguh.schedules")

Conn = psycopg.Connection[Any]


@dataclass(frozen=True, slots=True)
class Periodic:
    """One schedule declared with ``@app.periodic``: what `sync_schedules` writes."""

    name: str
    spec: str
    queue: str
    task_name: str
    params: dict[str, Any]
    options: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What `sync_schedules` did, by schedule name (``queue`` and name)."""

    created: list[tuple[str, str]] = field(default_factory=list)
    updated: list[tuple[str, str]] = field(default_factory=list)
    unchanged: list[tuple[str, str]] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    left: list[tuple[str, str]] = field(default_factory=list)


class ScheduleRegistry:
    """An app's declared schedules and the name prefixes it owns (``app.schedules``)."""

    def __init__(self) -> None:
        self.declared: dict[str, Periodic] = {}
        self.owned_prefixes: list[str] = []

    def declare(
        self,
        task: Task[Any, Any],
        spec: str,
        *,
        name: str | None,
        params: Mapping[str, Any] | None,
        options: ScheduleOptions,
    ) -> Periodic:
        """Record a schedule of ``task``; raise `ValueError` for a name declared twice.

        The task's declared spawn defaults apply where ``options`` gives none.
        """
        E.text(spec, "spec")
        schedule_name = E.text(name if name is not None else task.name, "name")
        if not schedule_name:
            raise InvalidArgument("a schedule name must not be empty", argument="name")
        if params is not None and not isinstance(params, Mapping):
            raise TypeError(f"params must be a mapping of keyword arguments, got {params!r}")
        call_params = dict(params or {})
        task.check_params(call_params)  # a mismatch fails here, not at every slot
        merged = dict(task.defaults)  # the spawn options a schedule passes on
        merged.update(E.schedule_options(options))
        declared = Periodic(schedule_name, spec, task.queue, task.name, call_params, merged)
        if schedule_name in self.declared:
            raise ValueError(f"two schedules named {schedule_name!r}: pass a distinct name=")
        self.declared[schedule_name] = declared
        return declared

    def own(self, prefix: str) -> None:
        """Own schedule names starting with ``prefix``: a sync drops those not declared."""
        E.text(prefix, "prefix")
        if not prefix:
            raise InvalidArgument(
                "an empty prefix would own every schedule of the queue", argument="prefix"
            )
        if prefix not in self.owned_prefixes:
            self.owned_prefixes.append(prefix)

    def owns(self, name: str) -> bool:
        """Whether ``name`` starts with a prefix the app owns."""
        return any(name.startswith(p) for p in self.owned_prefixes)


def periodic_decorator(
    app: App,
    spec: str,
    name: str | None,
    params: Mapping[str, Any] | None,
    options: ScheduleOptions,
) -> Any:
    """Return the decorator behind ``app.periodic`` (see `App.periodic`)."""
    E.schedule_options(options)  # an unknown option fails at the decorator, not below it

    def wrap(task: Task[Any, Any]) -> Task[Any, Any]:
        if not isinstance(task, Task):
            raise TypeError(
                f"@app.periodic decorates a task: stack it above @app.task, got {task!r}"
            )
        if task.app is not app:
            raise ValueError(f"task {task.name!r} belongs to another app (or to none)")
        app.schedules.declare(task, spec, name=name, params=params, options=options)
        return task

    return wrap


def sync_schedules(app: App, conn: Conn, queues: Iterable[str] | None = None) -> SyncReport:
    """Write the app's declared schedules (of ``queues``, default all) in one transaction.

    Creates new ones, updates changed ones, drops the undeclared ones whose
    names the app owns (`ScheduleRegistry.own`) and logs the other undeclared
    ones it leaves. Raises `teguh.InvalidArgument` naming a bad spec, time
    zone or option (nothing is then changed).
    """
    registry = app.schedules
    wanted = None if queues is None else set(queues)
    declared = [p for p in registry.declared.values() if wanted is None or p.queue in wanted]
    report = SyncReport()
    scope = sorted({p.queue for p in declared} | (wanted or set()))
    if not declared and not registry.owned_prefixes:
        return report
    engine = app.engine
    with conn.transaction():
        existing = {
            (s.queue_name, s.schedule_name): s
            for queue in scope
            for s in engine.list_schedules(conn, queue)
        }
        for p in declared:
            key = (p.queue, p.name)
            before = existing.pop(key, None)
            if before is not None and _same(before, p):
                report.unchanged.append(key)
                continue
            engine.create_schedule(conn, p.queue, p.name, p.spec, p.task_name, p.params, p.options)
            (report.created if before is None else report.updated).append(key)
        for key in sorted(existing):
            if registry.owns(key[1]):
                engine.drop_schedule(conn, *key)
                report.dropped.append(key)
            else:
                report.left.append(key)
    for key in report.dropped:
        logger.info("dropped schedule %s/%s: no longer declared", *key)
    for key in report.created + report.updated:
        logger.info("synced schedule %s/%s", *key)
    for key in report.left:
        logger.info(
            "schedule %s/%s is not declared by this app and keeps firing: drop it with "
            "`teguh schedule remove`, or let the app own its prefix (app.own_schedules)",
            *key,
        )
    return report


def _same(stored: Any, p: Periodic) -> bool:
    """Whether the stored schedule already says what the declaration says."""
    options = dict(stored.options or {})
    wanted = dict(p.options)
    timezone = wanted.pop("timezone", "UTC")
    catch_up = wanted.pop("catch_up", "latest")
    options.pop("timezone", None)
    options.pop("catch_up", None)
    return (
        stored.spec == p.spec
        and stored.task_name == p.task_name
        and stored.timezone == timezone
        and stored.catch_up == catch_up
        and (stored.params or {}) == p.params
        and options == wanted
    )
