"""teguh.contrib.sqlalchemy: spawns commit and roll back with the SQLAlchemy transaction."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

sqlalchemy = pytest.importorskip("sqlalchemy")

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

import teguh  # noqa: E402
from teguh.contrib.sqlalchemy import (  # noqa: E402
    UnsupportedDriver,
    psycopg_connection,
    spawn,
    spawn_task,
)


def deliver(ctx: teguh.TaskContext, order_id: int) -> int:
    return order_id


@pytest.fixture
def engine(dsn: str, queue: str) -> Iterator[Engine]:
    eng = create_engine(dsn.replace("postgresql://", "postgresql+psycopg://", 1))
    with eng.begin() as c:
        c.execute(text("create table orders (id int primary key)"))
    yield eng
    eng.dispose()


@pytest.fixture
def client(dsn: str) -> Iterator[teguh.Client]:
    with teguh.Client(dsn, max_size=2) as c:
        yield c


def _tasks(client: teguh.Client) -> list[Any]:
    with client.pool.connection() as c:
        return c.execute("select task_name, params from teguh.t_q").fetchall()


def test_session_commit_keeps_the_task(engine: Engine, client: teguh.Client, dsn: str) -> None:
    teguh_app = teguh.App(dsn)
    with Session(engine) as session, session.begin():
        session.execute(text("insert into orders values (1)"))
        task = teguh_app.task(queue="q", max_attempts=2)(deliver)
        result = spawn(session, task, order_id=1)
        assert result.created
        assert _tasks(client) == []  # not visible outside the transaction yet
    assert _tasks(client) == [(task.name, {"order_id": 1})]
    info = client.get_task("q", result.task_id)
    assert info is not None and info.max_attempts == 2
    teguh_app.close()


def test_spawn_task_through_an_app_applies_its_hooks(
    engine: Engine, client: teguh.Client, dsn: str
) -> None:
    teguh_app = teguh.App(dsn)
    teguh_app.before_spawn(lambda name, params, options: {**options, "headers": {"by": "hook"}})
    with Session(engine) as session, session.begin():
        spawned = spawn_task(session, teguh_app, "q", "by.app", {"n": 1})
    info = client.get_task("q", spawned.task_id)
    assert info is not None and info.headers == {"by": "hook"}
    teguh_app.close()


def test_session_rollback_drops_the_task(engine: Engine, client: teguh.Client) -> None:
    with Session(engine) as session:
        session.execute(text("insert into orders values (2)"))
        spawn_task(session, client, "q", "by.name", {"x": 1})
        session.rollback()
    assert _tasks(client) == []
    with engine.connect() as c:
        assert c.execute(text("select count(*) from orders")).scalar() == 0


def test_error_in_the_block_rolls_the_task_back(engine: Engine, client: teguh.Client) -> None:
    def failing_block() -> None:
        with Session(engine) as session, session.begin():
            spawn_task(session, client, "q", "by.name")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        failing_block()
    assert _tasks(client) == []


def test_connection_commit_as_you_go(engine: Engine, client: teguh.Client) -> None:
    with engine.connect() as c:
        spawn_task(c, client, "q", "by.name", {"n": 1}, delay=60)
        c.rollback()
        spawn_task(c, client, "q", "by.name", {"n": 2})
        c.commit()
    assert _tasks(client) == [("by.name", {"n": 2})]


def test_scoped_session(engine: Engine, client: teguh.Client) -> None:
    from sqlalchemy.orm import scoped_session, sessionmaker

    scoped = scoped_session(sessionmaker(engine))
    spawn_task(scoped, client, "q", "by.scoped")
    scoped.commit()
    scoped.remove()
    assert _tasks(client) == [("by.scoped", {})]


def test_driver_connection_is_the_sessions(engine: Engine) -> None:
    with Session(engine) as session:
        session.execute(text("set local application_name = 'mine'"))
        raw = psycopg_connection(session)
        assert raw.execute("show application_name").fetchone() == ("mine",)
        session.rollback()


def test_other_drivers_are_refused(client: teguh.Client) -> None:
    eng = create_engine("sqlite://")
    with Session(eng) as session, pytest.raises(UnsupportedDriver, match=r"postgresql\+psycopg"):
        spawn_task(session, client, "q", "by.name")
    eng.dispose()


def test_bind_must_be_a_session_or_connection() -> None:
    with pytest.raises(TypeError, match="bind must be"):
        psycopg_connection("postgresql://")  # type: ignore[arg-type]
