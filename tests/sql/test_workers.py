"""Worker presence: register, heartbeat, lapse, unregister, counts per queue."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest

from .conftest import Engine, raises_sqlstate


def present(eng: Engine, queue: str | None = None) -> list[Any]:
    return [r[0] for r in eng.rows("select worker_id from teguh.list_workers(%s)", queue)]


def test_register_heartbeat_lapse_and_unregister(eng: Engine) -> None:
    eng.conn.execute("select teguh.create_queue('other')")
    eng.conn.execute("select teguh.register_worker('w1', '{q,other}', 'host-a', 123, 30)")
    eng.advance(5)
    eng.conn.execute("select teguh.register_worker('w2', '{other}', 'host-b', 456)")
    assert present(eng) == ["w1", "w2"]
    assert present(eng, "q") == ["w1"]
    assert eng.rows("select * from teguh.queue_workers()") == [("other", 2), ("q", 1)]
    [row] = eng.rows("select host, pid, queues, started_at from teguh.list_workers('q')")
    assert row == (
        "host-a",
        123,
        ["other", "q"],
        eng.now - timedelta(seconds=5),
    )

    eng.advance(26)  # w1's 30 s lapsed, w2's 60 s did not
    assert present(eng) == ["w2"]
    assert eng.one("select teguh.worker_heartbeat('w1', 30)") is True  # not purged yet: back
    assert present(eng) == ["w1", "w2"]
    assert eng.one("select teguh.unregister_worker('w2')") is True
    assert eng.one("select teguh.unregister_worker('w2')") is False
    assert eng.one("select teguh.worker_heartbeat('w2')") is False
    assert eng.rows("select * from teguh.queue_workers('other')") == [("other", 1)]

    eng.advance(2 * 3600)  # long gone: purged by the next registration
    eng.conn.execute("select teguh.register_worker('w3', '{q}')")
    assert eng.rows("select worker_id from teguh.workers") == [("w3",)]


@pytest.mark.parametrize(
    ("sql", "argument"),
    [
        ("select teguh.register_worker('', '{q}')", "worker_id"),
        ("select teguh.register_worker('w', '{}')", "queues"),
        ("select teguh.register_worker('w', '{q}', null, null, 0)", "ttl_seconds"),
        ("select teguh.worker_heartbeat('w', -1)", "ttl_seconds"),
    ],
)
def test_bad_arguments(eng: Engine, sql: str, argument: str) -> None:
    with pytest.raises(psycopg.Error) as info:
        eng.conn.execute(sql)
    assert info.value.sqlstate == "22023" and info.value.diag.column_name == argument
    with raises_sqlstate("42704"):
        eng.conn.execute("select teguh.register_worker('w', '{q,nope}')")
    assert present(eng) == []
