"""Races with real concurrent connections: who waits on whom is checked in pg_stat_activity."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from tests.helpers import wait_for

from .conftest import Engine


class Blocked:
    """Runs a call on its own connection in a thread; lets the test see it wait on a lock."""

    def __init__(self, observer: Engine, engine: Engine, fn: Callable[[Engine], Any]) -> None:
        self.observer = observer
        self.pid = engine.conn.info.backend_pid
        self.error: BaseException | None = None
        self.result: Any = None

        def run() -> None:
            try:
                self.result = fn(engine)
            except BaseException as exc:  # reported to the test
                self.error = exc

        self.thread = threading.Thread(target=run, name="blocked-call")
        self.thread.start()

    def wait_until_blocked(self) -> None:
        wait_for(
            lambda: self.observer.one(
                "select wait_event_type = 'Lock' from pg_stat_activity where pid = %s", self.pid
            ),
            message="the concurrent call to wait on a lock",
        )

    def join(self) -> Any:
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()
        return self.result


def test_concurrent_claims_are_disjoint(eng: Engine, make_engine: Any) -> None:
    eng.conn.execute("select * from teguh.spawn_tasks('q', 't', %s)", (Jsonb(list(range(300))),))
    engines = [make_engine() for _ in range(6)]
    barrier = threading.Barrier(len(engines))

    def drain(e: Engine) -> list[Any]:
        barrier.wait()
        got: list[Any] = []
        while runs := e.claim(qty=7, worker=f"w{id(e)}"):
            got.extend(r[1] for r in runs)
        return got

    with ThreadPoolExecutor(len(engines)) as pool:
        results = list(pool.map(drain, engines))
    claimed = [t for r in results for t in r]
    assert len(claimed) == 300 and len(set(claimed)) == 300
    assert eng.count("r") == 300 and eng.count("p") == 0


def test_cancel_waits_for_complete_then_is_a_noop(eng: Engine, make_engine: Any) -> None:
    task_id = eng.spawn()[0]
    [run] = eng.claim()
    worker = make_engine()
    worker.conn.autocommit = False
    worker.complete(run[0], "done")  # holds the task row until commit
    canceller = Blocked(
        eng,
        make_engine(),
        lambda e: e.conn.execute("select teguh.cancel_task('q', %s)", (task_id,)),
    )
    canceller.wait_until_blocked()
    worker.conn.commit()
    canceller.join()
    assert canceller.error is None
    assert eng.state(task_id) == "completed"


def test_complete_waits_for_cancel_then_raises_ab001(eng: Engine, make_engine: Any) -> None:
    task_id = eng.spawn()[0]
    [run] = eng.claim()
    admin = make_engine()
    admin.conn.autocommit = False
    admin.conn.execute("select teguh.cancel_task('q', %s)", (task_id,))
    worker = Blocked(eng, make_engine(), lambda e: e.complete(run[0], "done"))
    worker.wait_until_blocked()
    admin.conn.commit()
    worker.join()
    assert isinstance(worker.error, psycopg.Error) and worker.error.sqlstate == "AB001"
    assert eng.state(task_id) == "cancelled"


def test_claim_skips_a_task_being_cancelled(eng: Engine, make_engine: Any) -> None:
    task_id = eng.spawn()[0]
    admin = make_engine()
    admin.conn.autocommit = False
    admin.conn.execute("select teguh.cancel_task('q', %s)", (task_id,))
    assert make_engine().claim() == []  # SKIP LOCKED: no wait
    admin.conn.commit()
    assert eng.claim() == [] and eng.state(task_id) == "cancelled"


def test_cancel_after_a_concurrent_claim_cancels_the_run(eng: Engine, make_engine: Any) -> None:
    task_id = eng.spawn()[0]
    worker = make_engine()
    worker.conn.autocommit = False
    [run] = worker.claim()
    canceller = Blocked(
        eng,
        make_engine(),
        lambda e: e.conn.execute("select teguh.cancel_task('q', %s)", (task_id,)),
    )
    canceller.wait_until_blocked()
    worker.conn.commit()
    canceller.join()
    assert canceller.error is None and eng.state(task_id) == "cancelled"
    assert eng.claim() == []
    assert eng.rows("select * from teguh.extend_claims('q', 'w1', %s, 30)", [run[0]]) == [
        (run[0], "cancelled")
    ]


def test_emit_waits_for_cancel_and_wakes_nothing(eng: Engine, make_engine: Any) -> None:
    task_id = eng.spawn()[0]
    [run] = eng.claim()
    eng.one("select * from teguh.wait_event('q', %s, %s, 's', 'go')", task_id, run[0])
    admin = make_engine()
    admin.conn.autocommit = False
    admin.conn.execute("select teguh.cancel_task('q', %s)", (task_id,))
    emitter = Blocked(
        eng, make_engine(), lambda e: e.conn.execute("select teguh.emit_event('q', 'go', '1')")
    )
    emitter.wait_until_blocked()
    admin.conn.commit()
    emitter.join()
    assert emitter.error is None
    assert eng.state(task_id) == "cancelled" and eng.count("p") == 0 and eng.claim() == []


def test_cancel_waits_for_emit_and_removes_the_wake(eng: Engine, make_engine: Any) -> None:
    task_id = eng.spawn()[0]
    [run] = eng.claim()
    eng.one("select * from teguh.wait_event('q', %s, %s, 's', 'go')", task_id, run[0])
    emitter = make_engine()
    emitter.conn.autocommit = False
    emitter.conn.execute("select teguh.emit_event('q', 'go', '1')")
    canceller = Blocked(
        eng,
        make_engine(),
        lambda e: e.conn.execute("select teguh.cancel_task('q', %s)", (task_id,)),
    )
    canceller.wait_until_blocked()
    emitter.conn.commit()
    canceller.join()
    assert canceller.error is None
    assert eng.state(task_id) == "cancelled" and eng.count("p") == 0 and eng.claim() == []


def test_wait_and_emit_cannot_miss_each_other(eng: Engine, make_engine: Any) -> None:
    task_id = eng.spawn()[0]
    [run] = eng.claim()
    waiter = make_engine()
    waiter.conn.autocommit = False
    assert (
        waiter.one("select * from teguh.wait_event('q', %s, %s, 's', 'go')", task_id, run[0])[0]
        is True
    )
    emitter = Blocked(
        eng, make_engine(), lambda e: e.conn.execute("select teguh.emit_event('q', 'go', '42')")
    )
    emitter.wait_until_blocked()  # on the event lock, not after a stale read
    waiter.conn.commit()
    emitter.join()
    assert emitter.error is None
    [again] = eng.claim()
    assert again[1] == task_id and again[9] == 42
