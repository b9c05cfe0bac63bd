"""Spawn tasks inside a SQLAlchemy transaction (psycopg 3 driver).

A task spawned through the session's own connection is written in the
session's transaction: it exists only if the session commits, and a rollback
removes it with the rest of the transaction's rows. The worker hears about it
on commit (``NOTIFY`` is delivered at commit).

    from teguh.contrib.sqlalchemy import spawn

    with Session(engine) as session, session.begin():
        session.add(Order(id=order_id))
        spawn(session, send_receipt, order_id=order_id)

The engine must use the psycopg 3 driver (``postgresql+psycopg://``);
`psycopg_connection` raises `UnsupportedDriver` otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ParamSpec

import psycopg

from teguh.app import App
from teguh.errors import TeguhError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session, scoped_session

    from teguh.client import Client
    from teguh.records import SpawnResult
    from teguh.tasks import Task

__all__ = ["UnsupportedDriver", "psycopg_connection", "spawn", "spawn_task"]

P = ParamSpec("P")


class UnsupportedDriver(TeguhError):
    """The SQLAlchemy engine does not use the synchronous psycopg 3 driver."""


def psycopg_connection(bind: Session | scoped_session[Any] | Connection) -> psycopg.Connection[Any]:
    """Return the psycopg 3 connection under ``bind``, inside its current transaction.

    ``bind`` is a `sqlalchemy.orm.Session` or ``scoped_session`` (such as
    Flask-SQLAlchemy's ``db.session``; its transaction begins if it has not
    yet, exactly as a query through the session would begin it) or a
    `sqlalchemy.engine.Connection`. Statements run on the returned connection
    commit or roll back with the session. Do not commit or close it yourself.
    """
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session, scoped_session

    if isinstance(bind, scoped_session):  # Flask-SQLAlchemy's db.session
        bind = bind()
    if isinstance(bind, Session):
        connection = bind.connection()
    elif isinstance(bind, Connection):
        connection = bind
    else:
        raise TypeError(
            f"bind must be a sqlalchemy Session or Connection, got {type(bind).__name__}"
        )
    dialect = connection.dialect
    if dialect.name != "postgresql" or dialect.driver != "psycopg":
        raise UnsupportedDriver(
            f"teguh spawns through the psycopg 3 driver; this engine uses "
            f"{dialect.name}+{dialect.driver}: use a 'postgresql+psycopg://' URL"
        )
    if not connection.in_transaction():
        connection.begin()  # a Connection in "commit as you go" mode: begin as a query would
    driver = connection.connection.driver_connection
    if not isinstance(driver, psycopg.Connection):  # pragma: no cover - the dialect says so
        raise UnsupportedDriver(f"expected a psycopg.Connection, got {type(driver).__name__}")
    return driver


def spawn(
    bind: Session | scoped_session[Any] | Connection,
    task: Task[P, Any],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> SpawnResult:
    """Spawn ``task`` with these params inside ``bind``'s transaction.

    Same as ``task.configure(conn=psycopg_connection(bind)).spawn(...)``; use
    that form for spawn options (``delay``, ``idempotency_key``, ...).
    """
    return task.configure(conn=psycopg_connection(bind)).spawn(*args, **kwargs)


def spawn_task(
    bind: Session | scoped_session[Any] | Connection,
    client: App | Client,
    queue: str,
    task_name: str,
    params: Any = None,
    **options: Any,
) -> SpawnResult:
    """Spawn a task by name inside ``bind``'s transaction (`Client.spawn_task` options).

    ``client`` is a `teguh.App` (its task defaults and ``before_spawn`` hooks
    apply) or a `teguh.Client`.
    """
    if isinstance(client, App):
        client = client.client
    return client.spawn_task(
        queue,
        task_name,
        {} if params is None else params,
        conn=psycopg_connection(bind),
        **options,
    )
