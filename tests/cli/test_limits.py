"""``teguh queue limit | unlimit | limits`` and ``teguh spawn --concurrency-key``."""

from __future__ import annotations

import argparse
import json
from typing import Any

import psycopg
import pytest

from teguh.cli.limits import limit_arg

Conn = psycopg.Connection[Any]


def claimed(conn: Conn, queue: str) -> int:
    return len(conn.execute("select * from teguh.claim_task(%s, 'w', 30, 10)", (queue,)).fetchall())


def test_limit_list_and_unlimit(cli: Any, queue: str, conn: Conn) -> None:
    for _ in range(3):
        assert cli("spawn", queue, "t", "--concurrency-key", "tenant:1")[0] == 0
    status, out, _ = cli("queue", "limit", queue, "tenant:*", "2")
    assert status == 0 and "each key with that prefix" in out
    assert claimed(conn, queue) == 2
    status, out, _ = cli("queue", "limits")
    assert status == 0 and "tenant:*" in out and "each key with this prefix" in out
    status, out, _ = cli("--json", "queue", "limits", queue)
    (row,) = json.loads(out)
    assert (row["key"], row["max_running"], row["running"], row["is_prefix"]) == (
        "tenant:*",
        2,
        2,
        True,
    )
    assert cli("queue", "unlimit", queue, "tenant:*")[0] == 0
    assert claimed(conn, queue) == 1
    status, _, err = cli("queue", "unlimit", queue, "tenant:*")
    assert status == 1 and "no concurrency limit on key 'tenant:*'" in err
    assert json.loads(cli("--json", "queue", "limits")[1]) == []
    status, _, err = cli("queue", "limits")
    assert status == 0 and "no concurrency limits" in err


def test_bad_arguments_are_one_line_errors(cli: Any, queue: str) -> None:
    for bad in ["two", "-1", "²", "٣", " 3"]:  # only ASCII digits: "٣" is not silently 3
        with pytest.raises(SystemExit) as exited:
            cli("queue", "limit", queue, "k", bad)
        assert exited.value.code == 2
    with pytest.raises(argparse.ArgumentTypeError, match="whole number"):
        limit_arg("²")  # str.isdigit() says yes, int() says no
    status, _, err = cli("queue", "limit", queue, "x" * 256, "1")
    assert status == 1 and "key" in err and "Traceback" not in err
    status, _, err = cli("queue", "limit", "nope", "k", "1")
    assert status == 1 and "nope" in err
    status, _, err = cli("spawn", queue, "t", "--concurrency-key", "")
    assert status == 1 and "concurrency_key" in err and "Traceback" not in err
    status, out, _ = cli("queue", "limit", queue, "k", "0")
    assert status == 0 and "held" in out
