"""``teguh worker``: a real worker process on tests/cli/worker_tasks.py."""

from __future__ import annotations

import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.cli.conftest import ROOT, Run, assert_user_error, command_env, teguh_argv
from tests.helpers import wait_for

Conn = psycopg.Connection[Any]
MODULE = "tests.cli.worker_tasks"


class WorkerProcess:
    """A ``teguh worker`` subprocess whose stderr goes to a file we can poll."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self._file = log.open("w")
        self.proc = subprocess.Popen(
            teguh_argv(*args),
            stdout=self._file,
            stderr=subprocess.STDOUT,
            env=command_env(),
            cwd=ROOT,
            text=True,
        )

    def output(self) -> str:
        return self.log.read_text()

    def wait_output(self, fragment: str, timeout: float = 20) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None and fragment not in self.output():
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.output()}")
            return fragment in self.output()

        wait_for(seen, timeout=timeout, message=f"{fragment!r} in worker output")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._file.close()


def handler_began(conn: Conn, task_id: uuid.UUID) -> bool:
    """The ``slow`` handler has started (its first step committed), not only been claimed."""
    row = conn.execute(
        "select teguh.get_task_checkpoint_state('q', %s, 'began')", (task_id,)
    ).fetchone()
    return row is not None and row[0] is True


@pytest.fixture
def start_worker(dsn: str, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    procs: list[WorkerProcess] = []

    def start(*extra: str, target: str = MODULE) -> WorkerProcess:
        args = ["--dsn", dsn, "worker", target, "--queue", "q", *extra]
        proc = WorkerProcess(args, tmp_path / f"worker{len(procs)}.log")
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.close()


def spawn(conn: Conn, name: str, params: str) -> uuid.UUID:
    row = conn.execute(
        "select task_id from teguh.spawn_task('q', %s, %s::jsonb)", (name, params)
    ).fetchone()
    assert row is not None
    task_id: uuid.UUID = row[0]
    return task_id


def result_of(conn: Conn, task_id: uuid.UUID) -> tuple[str, Any]:
    row = conn.execute(
        "select state, completed_payload from teguh.get_task_result('q', %s)", (task_id,)
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def test_worker_runs_tasks_and_stops_on_sigterm(
    start_worker: Callable[..., WorkerProcess], conn: Conn, queue: str
) -> None:
    worker = start_worker("--concurrency", "2")
    worker.wait_output("Ctrl-C or SIGTERM drains")
    assert "2 task(s) (add, slow)" in worker.output()  # not the task of queue "other"
    task_id = spawn(conn, "add", '{"a": 2, "b": 3}')
    wait_for(lambda: result_of(conn, task_id) == ("completed", 5), timeout=20)
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    out = worker.output()
    assert "stopping: no new claims" in out
    assert "stopped" in out
    assert "Traceback" not in out


def test_worker_first_signal_drains_running_handlers(
    start_worker: Callable[..., WorkerProcess], conn: Conn, queue: str
) -> None:
    worker = start_worker()
    worker.wait_output("Ctrl-C or SIGTERM drains")
    task_id = spawn(conn, "slow", '{"seconds": 1.5}')
    wait_for(lambda: handler_began(conn, task_id), timeout=20)
    worker.signal(signal.SIGINT)
    assert worker.wait(timeout=30) == 0
    # the handler was allowed to finish: its result is recorded
    assert result_of(conn, task_id) == ("completed", "slept 1.5")
    assert "waiting up to 30s for 1 running handler(s)" in worker.output()


def test_worker_second_signal_exits_at_once(
    start_worker: Callable[..., WorkerProcess], conn: Conn, queue: str
) -> None:
    worker = start_worker()
    worker.wait_output("Ctrl-C or SIGTERM drains")
    task_id = spawn(conn, "slow", '{"seconds": 60}')
    wait_for(lambda: handler_began(conn, task_id), timeout=20)
    worker.signal(signal.SIGTERM)
    worker.wait_output("stopping: no new claims")
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 128 + signal.SIGTERM
    assert "second SIGTERM: handing 1 running run(s) back and exiting" in worker.output()
    # handed back, not abandoned: claimable at once, still on its first attempt
    assert conn.execute(
        "select attempt from teguh.p_q where task_id = %s", (task_id,)
    ).fetchone() == (1,)


def test_worker_recycles_itself_when_hung_handlers_hold_every_slot(
    start_worker: Callable[..., WorkerProcess], conn: Conn, queue: str
) -> None:
    # A handler that ignores its task's cancellation (time.sleep makes no
    # teguh call) holds its slot for nothing: with --recycle-when-stuck the
    # worker exits 75 once such handlers hold every slot.
    worker = start_worker(
        "--concurrency", "1", "--claim-timeout", "1", "--shutdown-timeout", "1",
        "--recycle-when-stuck",
    )  # fmt: skip
    worker.wait_output("Ctrl-C or SIGTERM drains")
    task_id = spawn(conn, "slow", '{"seconds": 60}')
    wait_for(lambda: handler_began(conn, task_id), timeout=20)
    conn.execute("select teguh.cancel_task('q', %s)", (task_id,))
    assert worker.wait(timeout=30) == 75
    out = worker.output()
    assert "still runs" in out
    assert "asks to be recycled" in out


def test_worker_creates_queue_on_request(
    start_worker: Callable[..., WorkerProcess], conn: Conn
) -> None:
    worker = start_worker("--create-queue")
    worker.wait_output("Ctrl-C or SIGTERM drains")
    assert "created queue q" in worker.output()
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0


def test_worker_single_task_attribute(
    start_worker: Callable[..., WorkerProcess], teguh: Run, dsn: str, queue: str
) -> None:
    worker = start_worker(target=f"{MODULE}:add")
    worker.wait_output("Ctrl-C or SIGTERM drains")
    assert "1 task(s) (add)" in worker.output()
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    result = teguh("--dsn", dsn, "worker", f"{MODULE}:elsewhere", "-q", "q")
    assert_user_error(result, 1, "no task for queue(s) q", "other")


@pytest.mark.parametrize(
    ("target", "code", "fragments"),
    [
        ("no_such_module_xyz", 1, ["cannot import 'no_such_module_xyz'"]),
        (f"{MODULE}:missing", 1, ["has no attribute 'missing'"]),
        (f"{MODULE}:add.fn", 1, ["expected a teguh.App, a task"]),
        ("tests.helpers", 1, ["defines no teguh.App and no @teguh.task"]),
        (":add", 2, ["expected MODULE or MODULE:ATTR"]),
    ],
)
def test_worker_bad_target(
    teguh: Run, dsn: str, queue: str, target: str, code: int, fragments: list[str]
) -> None:
    assert_user_error(teguh("--dsn", dsn, "worker", target, "--queue", "q"), code, *fragments)


def test_worker_bad_options(teguh: Run, dsn: str, queue: str) -> None:
    assert_user_error(teguh("--dsn", dsn, "worker", MODULE, "-q", "Bad"), 2, "invalid queue name")
    assert_user_error(teguh("--dsn", dsn, "worker", MODULE, "-q", "q", "-c", "0"), 2, "at least 1")


def test_worker_unknown_queue(teguh: Run, dsn: str) -> None:
    result = teguh("--dsn", dsn, "worker", MODULE, "--queue", "q")
    assert_user_error(result, 1, '"q" does not exist', "--create-queue")


def test_worker_unreachable_database(teguh: Run) -> None:
    result = teguh("--dsn", "postgresql://x@127.0.0.1:1/x", "worker", MODULE, "--queue", "q")
    assert_user_error(result, 1, "cannot connect")


def test_worker_serves_several_queues(
    start_worker: Callable[..., WorkerProcess], conn: Conn, queue: str
) -> None:
    conn.execute("select teguh.create_queue('other')")
    for extra in (("-q", "other"), ("--queue", "q,other")):
        worker = start_worker(*extra)
        worker.wait_output("Ctrl-C or SIGTERM drains")
        assert "on queue(s) q, other: 3 task(s) (add, elsewhere, slow)" in worker.output()
        row = conn.execute(
            "select task_id from teguh.spawn_task('other', 'elsewhere', '{}')"
        ).fetchone()
        assert row is not None
        task_id = row[0]

        def done(task_id: uuid.UUID = task_id) -> bool:
            state = conn.execute(
                "select state from teguh.get_task_result('other', %s)", (task_id,)
            ).fetchone()
            return state == ("completed",)

        wait_for(done, timeout=20)
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == 0


def test_worker_exits_non_zero_when_its_dispatcher_dies(teguh: Run, dsn: str, queue: str) -> None:
    result = teguh("--dsn", dsn, "worker", "tests.cli.broken_dispatcher_tasks", "-q", "q")
    assert result.returncode == 1, result.stderr
    assert "its dispatcher died" in result.stderr
    assert "dispatcher bug" in result.stderr
