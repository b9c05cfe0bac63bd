"""The ``teguh`` subcommands, run as a subprocess against a real database."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from typing import Any

import psycopg
import pytest

from teguh import schema
from tests.cli.conftest import ROOT, Run, assert_user_error, command_env, teguh_argv

Conn = psycopg.Connection[Any]


def spawn(conn: Conn, name: str = "t", params: str = "{}", options: str = "{}") -> uuid.UUID:
    row = conn.execute(
        "select task_id from teguh.spawn_task('q', %s, %s::jsonb, %s::jsonb)",
        (name, params, options),
    ).fetchone()
    assert row is not None
    task_id: uuid.UUID = row[0]
    return task_id


def failed_task(conn: Conn) -> uuid.UUID:
    """A task that failed its only attempt after checkpointing one step."""
    task_id = spawn(conn, "boom", '{"x": 1}', '{"max_attempts": 1}')
    row = conn.execute("select run_id from teguh.claim_task('q', 'w', 30, 1)").fetchone()
    assert row is not None
    run_id = row[0]
    conn.execute(
        "select teguh.set_task_checkpoint_state('q', %s, 'step-one', '{\"v\": 1}', %s)",
        (task_id, run_id),
    )
    reason = {
        "name": "ValueError",
        "message": "boom",
        "traceback": "Traceback ...\nValueError: boom",
    }
    conn.execute("select teguh.fail_run('q', %s, %s::jsonb)", (run_id, json.dumps(reason)))
    return task_id


def state_of(conn: Conn, task_id: uuid.UUID) -> str:
    row = conn.execute("select state from teguh.get_task_result('q', %s)", (task_id,)).fetchone()
    assert row is not None
    return str(row[0])


# -- help, version, usage -------------------------------------------------------------


def test_help_documents_the_environment_rule(teguh: Run) -> None:
    result = teguh("--help")
    assert result.returncode == 0
    assert "TEGUH_<OPTION>" in result.stdout
    assert "TEGUH_DSN" in result.stdout
    for command in ("install", "queue", "spawn", "task", "emit", "tick", "stats", "worker"):
        assert command in result.stdout


def test_every_subcommand_has_help(teguh: Run) -> None:
    for args in (
        ["install"],
        ["queue", "create"],
        ["queue", "drop"],
        ["queue", "list"],
        ["spawn"],
        ["task", "show"],
        ["task", "cancel"],
        ["task", "retry"],
        ["task", "list"],
        ["schedule", "list"],
        ["schedule", "add"],
        ["queue", "pause"],
        ["queue", "policy", "set"],
        ["workers"],
        ["emit"],
        ["tick"],
        ["stats"],
        ["worker"],
        ["demo"],
    ):
        result = teguh(*args, "--help")
        assert result.returncode == 0, (args, result.stderr)
        assert "usage: teguh " + " ".join(args) in result.stdout


def test_version(teguh: Run) -> None:
    result = teguh("--version")
    assert result.returncode == 0
    assert (
        result.stdout.startswith("teguh ")
        and f"schema version {schema.SCHEMA_VERSION}" in result.stdout
    )


def test_no_command_is_a_usage_error(teguh: Run) -> None:
    result = teguh()
    assert result.returncode == 2
    assert "usage: teguh" in result.stderr
    result = teguh("queue")
    assert result.returncode == 2
    assert "usage: teguh queue" in result.stderr


def test_unknown_option_is_one_line(teguh: Run) -> None:
    assert_user_error(teguh("stats", "--bogus"), 2, "unrecognized arguments: --bogus")


# -- connection -----------------------------------------------------------------------


def test_unreachable_server(teguh: Run) -> None:
    result = teguh("--dsn", "postgresql://postgres@127.0.0.1:1/nope", "queue", "list")
    assert_user_error(result, 1, "cannot connect to PostgreSQL")


def test_malformed_dsn(teguh: Run) -> None:
    result = teguh("queue", "list", "--dsn", "nosuchoption=1")
    assert_user_error(result, 1, "invalid DSN")


def test_no_dsn_mentions_libpq_defaults(teguh: Run) -> None:
    result = teguh("queue", "list", env={"PGHOST": "127.0.0.1", "PGPORT": "1"})
    assert_user_error(result, 1, "cannot connect", "PG* variables")


def test_dsn_from_environment_and_position_of_common_options(teguh: Run, dsn: str) -> None:
    assert teguh("queue", "create", "a", env={"TEGUH_DSN": dsn}).returncode == 0
    before = teguh("--dsn", dsn, "--json", "queue", "list")
    after = teguh("queue", "list", "--json", "--dsn", dsn)
    assert json.loads(before.stdout) == json.loads(after.stdout) == ["a"]


def test_command_line_beats_environment(teguh: Run, dsn: str) -> None:
    bad = "postgresql://postgres@127.0.0.1:1/nope"
    result = teguh("--dsn", dsn, "queue", "list", env={"TEGUH_DSN": bad})
    assert result.returncode == 0, result.stderr


def test_json_from_environment(teguh: Run, dsn: str, queue: str) -> None:
    result = teguh("--dsn", dsn, "stats", env={"TEGUH_JSON": "1"})
    assert result.returncode == 0
    assert json.loads(result.stdout)[0]["queue_name"] == "q"


def test_bad_environment_value_names_the_variable(teguh: Run, dsn: str) -> None:
    result = teguh("--dsn", dsn, "stats", env={"TEGUH_JSON": "maybe"})
    assert_user_error(result, 2, "TEGUH_JSON")
    result = teguh("--dsn", dsn, "stats", env={"TEGUH_CONCURRENCY": "many"})
    assert_user_error(result, 2, "TEGUH_CONCURRENCY", "many")


def test_schema_missing_hints_install(teguh: Run, empty_dsn: str) -> None:
    for args in (["queue", "list"], ["stats"], ["spawn", "q", "t"]):
        assert_user_error(teguh("--dsn", empty_dsn, *args), 1, "teguh install")


# -- install --------------------------------------------------------------------------


def test_install_fresh_then_again(teguh: Run, empty_dsn: str) -> None:
    result = teguh("--dsn", empty_dsn, "install")
    assert result.returncode == 0, result.stderr
    assert f"installed teguh schema version {schema.SCHEMA_VERSION}" in result.stdout
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("select teguh.version()").fetchone() == (schema.SCHEMA_VERSION,)
    again = teguh("--dsn", empty_dsn, "install", "--json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["version"] == schema.SCHEMA_VERSION
    assert report["previous_version"] == schema.SCHEMA_VERSION
    assert report["action"] == "reapplied"


def test_install_unreachable(teguh: Run) -> None:
    assert_user_error(teguh("--dsn", "postgresql://x@127.0.0.1:1/x", "install"), 1, "connect")


# -- queues ---------------------------------------------------------------------------


def test_queue_create_list_drop(teguh: Run, dsn: str, conn: Conn) -> None:
    result = teguh("--dsn", dsn, "queue", "create", "emails", "reports")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["created queue emails", "created queue reports"]
    again = teguh("--dsn", dsn, "queue", "create", "emails")
    assert again.stdout.strip() == "queue emails already exists"
    listed = teguh("--dsn", dsn, "queue", "list")
    assert listed.stdout.splitlines() == ["emails", "reports"]
    conn.execute("select teguh.spawn_task('emails', 'send', '{}')")
    dropped = teguh("--dsn", dsn, "queue", "drop", "emails")
    assert dropped.returncode == 0, dropped.stderr
    assert dropped.stdout.strip() == "dropped queue emails and its 1 task(s)"
    names = [r[0] for r in conn.execute("select queue_name from teguh.list_queues()")]
    assert names == ["reports"]


def test_queue_json(teguh: Run, dsn: str) -> None:
    created = teguh("--dsn", dsn, "--json", "queue", "create", "a")
    assert json.loads(created.stdout) == [{"queue": "a", "created": True}]
    assert json.loads(teguh("--dsn", dsn, "--json", "queue", "list").stdout) == ["a"]
    dropped = teguh("--dsn", dsn, "--json", "queue", "drop", "a")
    assert json.loads(dropped.stdout) == [{"queue": "a", "dropped": True, "tasks": 0}]


def test_queue_list_empty(teguh: Run, dsn: str) -> None:
    result = teguh("--dsn", dsn, "queue", "list")
    assert result.returncode == 0
    assert result.stdout == ""
    assert "no queues" in result.stderr


def test_queue_create_invalid_name(teguh: Run, dsn: str) -> None:
    assert_user_error(teguh("--dsn", dsn, "queue", "create", "Bad-Name"), 1, "queue")


def test_queue_drop_unknown(teguh: Run, dsn: str, queue: str) -> None:
    assert_user_error(teguh("--dsn", dsn, "queue", "drop", "nope", "q"), 1, '"nope" does not exist')
    # nothing was dropped: the check comes before any drop
    assert teguh("--dsn", dsn, "queue", "list").stdout.split() == ["q"]
    result = teguh("--dsn", dsn, "queue", "drop", "nope", "--if-exists")
    assert result.returncode == 0
    assert "does not exist" in result.stdout


# -- spawn ----------------------------------------------------------------------------


def test_spawn(teguh: Run, dsn: str, conn: Conn, queue: str) -> None:
    result = teguh(
        "--dsn",
        dsn,
        "spawn",
        "q",
        "send-email",
        "--params",
        '{"to": "a@example.com"}',
        "--max-attempts",
        "4",
        "--priority",
        "7",
        "--delay",
        "60",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("spawned task ")
    task_id = uuid.UUID(result.stdout.split()[2])
    row = conn.execute(
        "select task_name, params, max_attempts, priority, state from teguh.get_task('q', %s)",
        (task_id,),
    ).fetchone()
    assert row == ("send-email", {"to": "a@example.com"}, 4, 7, "pending")
    # --delay: not claimable now
    assert conn.execute("select * from teguh.claim_task('q', 'w')").fetchall() == []


def test_spawn_json_and_idempotency_key(teguh: Run, dsn: str, queue: str) -> None:
    args = ["--dsn", dsn, "spawn", "q", "t", "--idempotency-key", "order-1"]
    first = teguh(*args, "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["created"] is True and report["attempt"] == 1 and report["queue"] == "q"
    second = teguh(*args)
    assert second.returncode == 0
    assert f"task {report['task_id']} already exists" in second.stdout


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--params", "{not json"], ["--params", "malformed JSON"]),
        (["--max-attempts", "0"], ["--max-attempts", "at least 1"]),
        (["--delay", "soon"], ["--delay", "seconds"]),
        (["--priority", "high"], ["--priority", "whole number"]),
        (["--headers", "[1]"], ["--headers", "JSON object"]),
    ],
)
def test_spawn_bad_arguments(
    teguh: Run, dsn: str, queue: str, args: list[str], fragments: list[str]
) -> None:
    assert_user_error(teguh("--dsn", dsn, "spawn", "q", "t", *args), 2, *fragments)


def test_spawn_unknown_queue(teguh: Run, dsn: str) -> None:
    result = teguh("--dsn", dsn, "spawn", "nope", "t")
    # the suggestion is a command that works as printed
    assert_user_error(result, 1, '"nope" does not exist', "`teguh queue create nope`")


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--params", "[" * 30_000 + "]" * 30_000], 2),  # deeper than Python's JSON parser
        (["--params", "[" * 900 + "]" * 900], 1),  # parsed; stored or refused cleanly
        (["--delay", "1e13"], 1),
        (["--priority", str(2**40)], 1),
    ],
)
def test_spawn_extreme_values_are_one_line_errors(
    teguh: Run, dsn: str, queue: str, args: list[str], code: int
) -> None:
    result = teguh("--dsn", dsn, "spawn", "q", "t", *args)
    if result.returncode == 0:  # accepted by the engine: fine, as long as it is clean
        assert "Traceback" not in result.stderr
        return
    assert_user_error(result, code)


# -- task show / cancel / retry ---------------------------------------------------------


def test_task_show_failed_task(teguh: Run, dsn: str, conn: Conn, queue: str) -> None:
    task_id = failed_task(conn)
    result = teguh("--dsn", dsn, "task", "show", str(task_id), "--queue", "q")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "task:" in out and str(task_id) in out
    assert "state:" in out and "failed" in out
    assert "1 of 1" in out
    assert "last failure: ValueError: boom" in out
    assert "Traceback ..." in out  # a short traceback is shown whole
    assert "step-one" in out and '{"v": 1}' in out
    with_tb = teguh("--dsn", dsn, "task", "show", str(task_id), "-q", "q", "--traceback")
    assert "Traceback ..." in with_tb.stdout


def test_task_show_json(teguh: Run, dsn: str, conn: Conn, queue: str) -> None:
    task_id = failed_task(conn)
    result = teguh("--dsn", dsn, "--json", "task", "show", str(task_id), "--queue", "q")
    report = json.loads(result.stdout)
    assert report["task_id"] == str(task_id)
    assert report["state"] == "failed"
    assert report["attempts"] == 1
    assert report["params"] == {"x": 1}
    assert report["last_failure"]["message"] == "boom"
    assert report["checkpoints"] == {"step-one": {"v": 1}}


def test_task_show_completed_result(teguh: Run, dsn: str, conn: Conn, queue: str) -> None:
    task_id = spawn(conn)
    run_id = conn.execute("select run_id from teguh.claim_task('q', 'w')").fetchone()[0]  # type: ignore[index]
    conn.execute("select teguh.complete_run('q', %s, '{\"ok\": true}')", (run_id,))
    result = teguh("--dsn", dsn, "task", "show", str(task_id), "--queue", "q")
    assert "completed" in result.stdout
    assert 'result:       {"ok": true}' in result.stdout
    assert "checkpoints:  none" in result.stdout


def test_task_queue_from_environment(teguh: Run, dsn: str, conn: Conn, queue: str) -> None:
    task_id = spawn(conn)
    result = teguh("--dsn", dsn, "task", "show", str(task_id), env={"TEGUH_QUEUE": "q"})
    assert result.returncode == 0, result.stderr
    assert "pending" in result.stdout


@pytest.mark.parametrize("action", ["show", "cancel", "retry"])
def test_task_bad_input(teguh: Run, dsn: str, queue: str, action: str) -> None:
    unknown = "01926f3e-7a4b-7c3d-9e8f-0a1b2c3d4e5f"
    assert_user_error(
        teguh("--dsn", dsn, "task", action, "not-a-uuid", "--queue", "q"), 2, "not a task id"
    )
    if action == "show":  # found by id: ids are unique across queues
        assert_user_error(
            teguh("--dsn", dsn, "task", action, unknown), 1, "does not exist in any queue"
        )
    else:
        assert_user_error(teguh("--dsn", dsn, "task", action, unknown), 2, "--queue")
    assert_user_error(
        teguh("--dsn", dsn, "task", action, unknown, "--queue", "q"), 1, "does not exist"
    )
    assert_user_error(
        teguh("--dsn", dsn, "task", action, unknown, "--queue", "nope"), 1, '"nope" does not exist'
    )


def test_task_cancel(teguh: Run, dsn: str, conn: Conn, queue: str) -> None:
    task_id = spawn(conn)
    result = teguh("--dsn", dsn, "task", "cancel", str(task_id), "--queue", "q")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"cancelled task {task_id} (was pending)"
    assert state_of(conn, task_id) == "cancelled"
    again = teguh("--dsn", dsn, "--json", "task", "cancel", str(task_id), "--queue", "q")
    assert again.returncode == 0
    assert json.loads(again.stdout)["previous_state"] == "cancelled"
    # a cancelled task can still be inspected
    shown = teguh("--dsn", dsn, "task", "show", str(task_id), "--queue", "q")
    assert shown.returncode == 0, shown.stderr
    assert "cancelled:" in shown.stdout


def test_task_cancel_finished(teguh: Run, dsn: str, conn: Conn, queue: str) -> None:
    task_id = failed_task(conn)
    result = teguh("--dsn", dsn, "task", "cancel", str(task_id), "--queue", "q")
    assert_user_error(result, 1, "already finished (failed)")
    assert state_of(conn, task_id) == "failed"


def test_task_retry(teguh: Run, dsn: str, conn: Conn, queue: str) -> None:
    task_id = failed_task(conn)
    result = teguh("--dsn", dsn, "task", "retry", str(task_id), "--queue", "q")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"task {task_id} will run again as attempt 2"
    assert state_of(conn, task_id) == "pending"


def test_task_retry_not_failed_suggests_spawn_new(
    teguh: Run, dsn: str, conn: Conn, queue: str
) -> None:
    task_id = spawn(conn)
    result = teguh("--dsn", dsn, "task", "retry", str(task_id), "--queue", "q")
    assert_user_error(result, 1, "pending", "--spawn-new")
    copy = teguh("--dsn", dsn, "--json", "task", "retry", str(task_id), "-q", "q", "--spawn-new")
    assert copy.returncode == 0, copy.stderr
    new_id = uuid.UUID(json.loads(copy.stdout)["task_id"])
    assert new_id != task_id
    assert state_of(conn, new_id) == "pending"


# -- emit -----------------------------------------------------------------------------


def test_emit(teguh: Run, dsn: str, conn: Conn, queue: str) -> None:
    result = teguh("--dsn", dsn, "emit", "q", "paid:1", "--payload", '{"amount": 5}')
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "emitted event 'paid:1' on queue q"
    row = conn.execute("select payload from teguh.e_q where event_name = 'paid:1'").fetchone()
    assert row == ({"amount": 5},)
    plain = teguh("--dsn", dsn, "--json", "emit", "q", "bare")
    assert json.loads(plain.stdout) == {"queue": "q", "event": "bare", "payload": None}


def test_emit_bad_input(teguh: Run, dsn: str, queue: str) -> None:
    assert_user_error(teguh("--dsn", dsn, "emit", "q", "e", "--payload", "{"), 2, "malformed JSON")
    assert_user_error(teguh("--dsn", dsn, "emit", "nope", "e"), 1, '"nope" does not exist')
    assert_user_error(teguh("--dsn", dsn, "emit", "q"), 2, "EVENT")


# -- tick -----------------------------------------------------------------------------


def test_tick_once(teguh: Run, dsn: str, conn: Conn, queue: str) -> None:
    spawn(conn)
    # a lease that expired: the ticker recovers it
    conn.execute("select * from teguh.claim_task('q', 'w', 1, 1)")
    result = teguh("--dsn", dsn, "tick", "q", env={"PGOPTIONS": "-c teguh.fake_now=2999-01-01"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ticker: 1 task(s) recovered or cancelled"
    again = teguh("--dsn", dsn, "--json", "tick")
    assert json.loads(again.stdout) == {"queue": None, "changed": 0}


def test_tick_bad_input(teguh: Run, dsn: str, queue: str) -> None:
    assert_user_error(teguh("--dsn", dsn, "tick", "nope"), 1, '"nope" does not exist')
    assert_user_error(teguh("--dsn", dsn, "tick", "--every", "0"), 2, "--every")


def test_tick_every_stops_on_sigterm(dsn: str, queue: str) -> None:
    proc = subprocess.Popen(
        teguh_argv("--dsn", dsn, "tick", "--every", "0.2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=command_env(),
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "every 0.2s" in first
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.communicate()


# -- stats ----------------------------------------------------------------------------


def test_stats(teguh: Run, dsn: str, conn: Conn, queue: str) -> None:
    failed_task(conn)  # first: it claims the queue's first task
    spawn(conn)
    spawn(conn)
    conn.execute("select teguh.create_queue('other')")
    result = teguh("--dsn", dsn, "stats")
    assert result.returncode == 0, result.stderr
    header, rule, *rows = result.stdout.splitlines()
    assert header.split()[:3] == ["queue", "pending", "running"]
    assert set(rule) <= {"-", " "}
    assert rows[0].split()[:7] == ["other", "0", "0", "0", "0", "0", "0"]
    assert rows[1].split()[:7] == ["q", "2", "0", "0", "0", "1", "0"]
    one = teguh("--dsn", dsn, "--json", "stats", "q")
    [stats] = json.loads(one.stdout)
    assert stats["queue_name"] == "q" and stats["pending"] == 2 and stats["failed"] == 1
    assert stats["oldest_pending_seconds"] >= 0


def test_stats_bad_input(teguh: Run, dsn: str) -> None:
    assert_user_error(teguh("--dsn", dsn, "stats", "nope"), 1, '"nope" does not exist')
    empty = teguh("--dsn", dsn, "stats")
    assert empty.returncode == 0
    assert "no queues" in empty.stderr


def test_stats_loads_neither_the_demo_nor_the_embedded_server() -> None:
    # `teguh demo` and the embedded server need POSIX-only machinery (pwd,
    # signals, initdb): only `teguh demo` may import them.
    probe = (
        "import importlib, sys\n"
        "main = importlib.import_module('teguh.cli.main')\n"
        "main.main(['--dsn', 'host=127.0.0.1 port=1 dbname=x connect_timeout=2', 'stats'])\n"
        "print(sorted(n for n in sys.modules\n"
        "             if n.startswith(('teguh.embedded', 'teguh.cli.demo'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert "cannot connect to PostgreSQL" in done.stderr  # it did run the command
    assert done.stdout.strip() == "[]"
