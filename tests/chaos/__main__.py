"""Chaos run: ``python -m tests.chaos [--quick] [--seed N]`` (``nox -s chaos``).

Against a throwaway PostgreSQL server (fsync on), several ``teguh worker
tests.chaos.tasks`` processes, each serving two queues, run multi-step
workflows with durable sleeps and injected failures while faults are
injected at random:

- ``kill``: SIGKILL a worker process (a replacement is started);
- ``restart-fast`` / ``restart-immediate``: ``pg_ctl restart -m fast|immediate``;
- ``restart-after-claim``: spawn a burst and ``pg_ctl restart -m immediate``
  as soon as one of its runs is claimed (a claim that committed
  asynchronously would be lost, while its handler already runs);
- ``outage``: stop the server for a few seconds, then start it again;
- ``cut-listen``: ``pg_terminate_backend`` of every worker's LISTEN session;
- ``freeze-listen``: SIGSTOP every LISTEN session's backend; a probe must
  still complete before they thaw.

After each fault a probe task measures wake-up latency. At the end it checks
that every task completed, that no step body started after its checkpoint
committed, that no checkpoint was written twice, that each task's result
agrees with its checkpoints, that a step body ran twice only when the run
that ran it first was interrupted (then the retry has a new run id; two
bodies under one run id are two executions of one run), that every live
worker is listening again with no restart, and that wake-up latency is back
to normal. It prints the counts
(JSON on the last line) and exits 1 on any violation.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

import teguh
from teguh import schema
from teguh.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "chaos"  # the probe's
QUEUES = ("chaos", "chaosb")  # as tests/chaos/tasks.py
WORKFLOWS = {"chaos": "workflow", "chaosb": "workflow_b"}
FAULTS = (
    "kill",
    "restart-fast",
    "restart-immediate",
    "restart-after-claim",
    "outage",
    "cut-listen",
    "freeze-listen",
)
# Longest wake-up latency accepted right after a fault (seconds).
PROBE_LIMIT = 15.0
# LISTEN sessions stay frozen this long; a probe spawned FREEZE_PROBE_AFTER
# seconds in (after the workers' next ticker query on them) must complete
# before they thaw.
FREEZE = 25.0
FREEZE_PROBE_AFTER = 7.0
TABLES = """
create table chaos_effects (task_id uuid, step text, run_id uuid, attempt int, pid int, token text,
                            at timestamptz default clock_timestamp());
create table chaos_acks (task_id uuid, step text, run_id uuid, pid int, token text,
                         at timestamptz default clock_timestamp());
create table chaos_violations (task_id uuid, step text, run_id uuid, pid int,
                               at timestamptz default clock_timestamp());
-- both queues' tasks, leases and checkpoints (task ids are unique across them)
create view chaos_tasks as select * from teguh.t_chaos union all select * from teguh.t_chaosb;
create view chaos_leases as select * from teguh.r_chaos union all select * from teguh.r_chaosb;
create view chaos_checkpoints as
  select * from teguh.c_chaos union all select * from teguh.c_chaosb;
"""


@dataclass
class Counts:
    faults: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAULTS, 0))
    workers_started: int = 0
    tasks: int = 0
    completed: int = 0
    not_completed: int = 0
    step_bodies: int = 0
    duplicate_bodies_after_kill: int = 0
    duplicate_bodies_after_failure: int = 0
    duplicate_bodies_unexplained: int = 0
    bodies_after_checkpoint: int = 0
    checkpoints_written_twice: int = 0
    results_disagreeing: int = 0
    probe_latency_ms: dict[str, float] = field(default_factory=dict)
    final_latency_p50_ms: float = 0.0
    listening_workers: int = 0
    listen_recovery_s: float = 0.0
    live_workers: int = 0
    worker_startup_retries: int = 0
    problems: list[str] = field(default_factory=list)


class Cluster:
    """The server, the worker processes, and the faults."""

    def __init__(self, args: argparse.Namespace, logdir: Path) -> None:
        self.args = args
        self.logdir = logdir
        self.rng = random.Random(args.seed)
        self.server = EmbeddedPostgres(
            settings={"max_connections": "200", "log_min_messages": "fatal"}
        )
        self.dsn = ""
        self.workers: list[subprocess.Popen[bytes]] = []
        self.killed: set[int] = set()
        self.problems: list[str] = []
        self.frozen_probe_ms = 0.0
        self.startup_retries = 0

    # -- server -----------------------------------------------------------------

    def start(self) -> None:
        self.server.start()
        self.dsn = self.server.create_database("chaos")
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            schema.install(conn)
            for queue in QUEUES:
                conn.execute("select teguh.create_queue(%s)", (queue,))
            conn.execute(TABLES.encode())

    def pg_ctl(self, *args: str) -> None:
        server = self.server
        result = server._run(  # the embedded server runs pg_ctl as its own OS user
            [
                os.path.join(server.bindir, "pg_ctl"),
                "--pgdata",
                server.data_dir,
                "--log",
                server.log_file,
                "--wait",
                *args,
            ],
            timeout=120,
            start_new_session=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl {args} failed: {result.stdout}{result.stderr}")

    def restart(self, mode: str) -> None:
        self.pg_ctl("-m", mode, "restart")

    def outage(self, seconds: float) -> None:
        self.pg_ctl("-m", "fast", "stop")
        time.sleep(seconds)
        self.pg_ctl("start")

    def connect(self) -> psycopg.Connection[Any]:
        deadline = time.monotonic() + 60
        while True:
            try:
                return psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        for attempt in range(50):
            try:
                with self.connect() as conn:
                    return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]
            except psycopg.OperationalError:
                if attempt == 49:
                    raise
                time.sleep(0.2)
        raise AssertionError("unreachable")

    # -- workers ----------------------------------------------------------------

    def start_worker(self) -> None:
        n = len(self.workers)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "TEGUH_"))}
        env |= {
            "TEGUH_CHAOS_DSN": self.dsn,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
            "PYTHONUNBUFFERED": "1",
        }
        log = open(self.logdir / f"worker-{n}.log", "wb")  # noqa: SIM115 (kept by the child)
        argv = [
            sys.executable,
            "-m",
            "teguh",
            "worker",
            "tests.chaos.tasks",
            "--dsn",
            self.dsn,
            "--queue",
            ",".join(QUEUES),
            "--concurrency",
            "4",
            "--claim-timeout",
            "4",
            "--poll-interval",
            "30",
            "--worker-id",
            f"chaos-{n}",
        ]
        self.workers.append(
            subprocess.Popen(
                argv, env=env, cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL
            )
        )

    def live(self) -> list[subprocess.Popen[bytes]]:
        return [w for w in self.workers if w.poll() is None]

    def kill_worker(self) -> None:
        victim = self.rng.choice(self.live())
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        self.killed.add(victim.pid)
        self.start_worker()
        self.wait_workers_ready()

    def wait_workers_ready(self, timeout: float = 60.0) -> None:
        """Wait until every worker listens; restart those that exited, as a process manager would.

        `teguh worker` exits at once when the server is unreachable at startup
        (a replacement started just before a restart, say): that is not a
        running worker failing to recover.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, worker in enumerate(self.workers):
                if worker.poll() is not None and worker.pid not in self.killed:
                    log = (self.logdir / f"worker-{i}.log").read_text(errors="replace")
                    if "cannot connect to PostgreSQL" not in log:  # startup errors only
                        self.problems.append(f"worker {i} exited with {worker.returncode}")
                    self.killed.add(worker.pid)
                    self.startup_retries += 1
                    self.start_worker()
            if len(self.listen_backends()) >= len(self.live()):
                return
            time.sleep(0.2)
        self.problems.append(f"workers not listening {timeout:.0f}s after a replacement started")

    def listen_backends(self) -> list[int]:
        return [
            int(r[0])
            for r in self.query(
                "select pid from pg_stat_activity where application_name like 'teguh-listen%%'"
                " and datname = 'chaos'",
                (),
            )
        ]

    def stop_all(self) -> None:
        for w in self.live():
            w.send_signal(signal.SIGTERM)
        for w in self.workers:
            try:
                w.wait(20)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()
        self.server.stop()

    # -- tasks ------------------------------------------------------------------

    def spawn_workflows(self, n: int, slow: float = 0.0) -> list[Any]:
        with teguh.Client(self.dsn, max_size=2) as client:
            return [
                client.spawn_task(
                    queue,
                    WORKFLOWS[queue],
                    {
                        "sleep": self.rng.choice([0, 0, 0.5, 1.5]),
                        "fail": self.rng.random() < 0.3,
                        "slow": slow,
                    },
                    max_attempts=100,
                    retry_strategy={"kind": "fixed", "base_seconds": 0.2},
                ).task_id
                for queue in itertools.islice(itertools.cycle(QUEUES), n)
            ]

    def probe(self, timeout: float = 60.0) -> float:
        """Spawn a probe; return seconds from spawn to its handler starting."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with teguh.Client(self.dsn, max_size=1) as client:
                    spawned_at = time.time()
                    # ahead of the backlog: it measures wake-up, not queue depth
                    task_id = client.spawn_task(
                        QUEUE, "probe", {}, max_attempts=100, priority=100
                    ).task_id
                    while time.monotonic() < deadline:
                        result = client.get_task_result(QUEUE, task_id)
                        if result is not None and result.state == "completed":
                            return float(result.completed_payload) - spawned_at
                        time.sleep(0.02)
                    return float("inf")
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    return float("inf")
                time.sleep(0.2)

    # -- faults -----------------------------------------------------------------

    def inject(self, fault: str) -> None:
        if fault == "kill":
            self.kill_worker()
        elif fault == "restart-fast":
            self.restart("fast")
        elif fault == "restart-immediate":
            self.restart("immediate")
        elif fault == "restart-after-claim":
            burst = self.spawn_workflows(4, slow=0.5)
            ids = [str(t) for t in burst]
            deadline = time.monotonic() + 10
            with self.connect() as conn:
                while time.monotonic() < deadline:
                    row = conn.execute(
                        "select count(*) from chaos_leases where task_id = any(%s::uuid[])", (ids,)
                    ).fetchone()
                    if row and row[0]:
                        break
                    time.sleep(0.005)
            self.restart("immediate")
        elif fault == "outage":
            self.outage(self.rng.uniform(2, 5))
        elif fault == "cut-listen":
            self.query(
                "select pg_terminate_backend(pid) from pg_stat_activity"
                " where application_name like 'teguh-listen%%' and datname = 'chaos'",
                (),
            )
        elif fault == "freeze-listen":
            # Freeze every worker's LISTEN session (a half-open connection
            # looks the same): claims must go on while they hang.
            pids = self.listen_backends()
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            try:
                time.sleep(FREEZE_PROBE_AFTER)
                latency = self.probe(timeout=FREEZE - FREEZE_PROBE_AFTER)
                self.frozen_probe_ms = max(self.frozen_probe_ms, 1000 * latency)
                if latency == float("inf"):
                    self.problems.append(
                        f"no claim in {FREEZE - FREEZE_PROBE_AFTER:.0f}s while LISTEN sessions hung"
                    )
            finally:
                for pid in pids:
                    os.kill(pid, signal.SIGCONT)
        else:
            raise ValueError(fault)


def check(cluster: Cluster, task_ids: list[Any], counts: Counts) -> None:
    ids = [str(t) for t in task_ids]
    states = cluster.query(
        "select state, count(*) from chaos_tasks where task_id = any(%s::uuid[]) group by state",
        (ids,),
    )
    by_state = dict(states)
    counts.completed = int(by_state.get("completed", 0))
    counts.not_completed = len(ids) - counts.completed
    if counts.not_completed:
        counts.problems.append(f"{counts.not_completed} task(s) did not complete: {by_state}")

    violations = cluster.query("select count(*) from chaos_violations")
    counts.bodies_after_checkpoint = int(violations[0][0])
    if counts.bodies_after_checkpoint:
        counts.problems.append(
            f"{counts.bodies_after_checkpoint} step bodies started after their checkpoint committed"
        )
    counts.step_bodies = int(cluster.query("select count(*) from chaos_effects")[0][0])
    counts.checkpoints_written_twice = int(
        cluster.query(
            "select count(*) from (select 1 from chaos_acks group by task_id, step"
            " having count(*) > 1) d"
        )[0][0]
    )
    if counts.checkpoints_written_twice:
        counts.problems.append(f"{counts.checkpoints_written_twice} checkpoints written twice")
    counts.results_disagreeing = int(
        cluster.query(
            "select count(*) from chaos_tasks t where t.task_name like 'workflow%%'"
            " and t.state = 'completed' and t.completed_payload is distinct from ("
            "   select jsonb_agg(c.state order by c.checkpoint_name) from chaos_checkpoints c"
            "    where c.task_id = t.task_id and c.checkpoint_name like 's%%')",
            (),
        )[0][0]
    )
    if counts.results_disagreeing:
        counts.problems.append(f"{counts.results_disagreeing} results disagree with checkpoints")

    # A step body that ran twice is explained when the run that ran it first
    # was interrupted before its checkpoint committed: the run then ended (its
    # process was killed and its lease expired, the server went down and the
    # checkpoint write failed) and the task was retried under a NEW run id.
    # Two bodies under ONE run id mean two executions of one run: a claim was
    # lost, or a frozen execution went on after it was taken over.
    rows = cluster.query(
        "select task_id, step, run_id, pid from chaos_effects e"
        " where (task_id, step) in (select task_id, step from chaos_effects"
        "                           group by task_id, step having count(*) > 1)"
        " order by task_id, step, at"
    )
    groups: dict[tuple[Any, str], list[tuple[Any, int]]] = {}
    for task_id, step, run_id, pid in rows:
        groups.setdefault((task_id, step), []).append((run_id, int(pid)))
    for runs in groups.values():
        for (run_id, pid), (next_run_id, _next_pid) in itertools.pairwise(runs):
            if run_id == next_run_id:
                counts.duplicate_bodies_unexplained += 1
            elif pid in cluster.killed:
                counts.duplicate_bodies_after_kill += 1
            else:
                counts.duplicate_bodies_after_failure += 1
    if counts.duplicate_bodies_unexplained:
        counts.problems.append(
            f"{counts.duplicate_bodies_unexplained} step bodies ran twice under one run id"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a short run for CI (a few minutes)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--faults", type=int, default=None, help="number of faults (quick 10, else 60)")
    p.add_argument("--tasks", type=int, default=None, help="workflows (quick 120, else 600)")
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--only", default="", help="comma-separated fault kinds: " + ",".join(FAULTS))
    args = p.parse_args(argv)
    kinds = tuple(args.only.split(",")) if args.only else FAULTS
    if unknown := set(kinds) - set(FAULTS):
        p.error(f"unknown fault kind(s): {', '.join(sorted(unknown))}")
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    n_faults = args.faults or (10 if args.quick else 60)
    n_tasks = args.tasks or (120 if args.quick else 600)
    counts = Counts()
    logdir = Path(tempfile.mkdtemp(prefix="teguh-chaos-"))
    cluster = Cluster(args, logdir)
    print(f"chaos: seed {args.seed}, {n_faults} faults, {n_tasks} workflows, logs in {logdir}")
    started = time.monotonic()
    try:
        cluster.start()
        for _ in range(args.workers):
            cluster.start_worker()
        baseline = [cluster.probe() for _ in range(3)]
        counts.probe_latency_ms["baseline"] = 1000 * statistics.median(baseline)
        task_ids = cluster.spawn_workflows(n_tasks)
        # every fault kind at least once, then at random
        plan = list(kinds) + [cluster.rng.choice(kinds) for _ in range(n_faults - len(kinds))]
        cluster.rng.shuffle(plan)
        for i, fault in enumerate(plan):
            if i and i % 3 == 0:
                task_ids += cluster.spawn_workflows(n_tasks // n_faults)
            time.sleep(cluster.rng.uniform(0.2, 1.5))
            cluster.inject(fault)
            counts.faults[fault] += 1
            latency = cluster.probe()
            key = f"after {fault}"
            counts.probe_latency_ms[key] = max(counts.probe_latency_ms.get(key, 0), 1000 * latency)
            ms = latency * 1000
            print(f"  {i + 1:3d}/{len(plan)} {fault:20s} probe {ms:7.0f} ms", flush=True)
            if latency > PROBE_LIMIT:
                counts.problems.append(f"a probe took {latency:.1f}s after {fault}")
        deadline = time.monotonic() + (180 if args.quick else 600)
        ids = [str(t) for t in task_ids]
        while time.monotonic() < deadline:
            left = cluster.query(
                "select count(*) from chaos_tasks where task_id = any(%s::uuid[])"
                " and state <> 'completed'",
                (ids,),
            )[0][0]
            if not left:
                break
            time.sleep(0.5)
        # every live worker listens again, on its own (bounded wait)
        waited = time.monotonic()
        while True:
            counts.live_workers = len(cluster.live())
            counts.listening_workers = len(cluster.listen_backends())
            if counts.listening_workers == counts.live_workers:
                break
            if time.monotonic() - waited > 60:
                counts.problems.append(
                    f"{counts.live_workers} live workers but {counts.listening_workers}"
                    " LISTEN sessions after 60 s"
                )
                break
            time.sleep(0.2)
        counts.listen_recovery_s = round(time.monotonic() - waited, 1)
        final = [cluster.probe() for _ in range(5)]
        counts.final_latency_p50_ms = 1000 * statistics.median(final)
        limit = max(1.0, 5 * statistics.median(baseline))
        if statistics.median(final) > limit:
            counts.problems.append(
                f"wake-up latency not back to normal: p50 {statistics.median(final):.3f}s"
                f" > {limit:.3f}s"
            )
        if counts.live_workers != args.workers:
            counts.problems.append(f"{args.workers - counts.live_workers} worker(s) died")
        counts.tasks = len(task_ids)
        check(cluster, task_ids, counts)
        counts.problems += cluster.problems
        counts.worker_startup_retries = cluster.startup_retries
        if counts.faults["freeze-listen"]:
            counts.probe_latency_ms["during freeze-listen"] = cluster.frozen_probe_ms
    finally:
        counts.workers_started = len(cluster.workers)
        cluster.stop_all()
    elapsed = time.monotonic() - started
    for problem in counts.problems:
        print(f"PROBLEM: {problem}")
    if counts.problems:
        for log in sorted(logdir.glob("worker-*.log")):
            tail = log.read_text(errors="replace").splitlines()[-15:]
            print(f"--- {log.name} (last lines)\n" + "\n".join(tail))
    print(f"chaos: {'FAILED' if counts.problems else 'passed'} in {elapsed:.0f}s")
    print(json.dumps(counts.__dict__, sort_keys=True))
    return 1 if counts.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
