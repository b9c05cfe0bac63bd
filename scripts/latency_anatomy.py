"""Where an idle worker's latency goes: spawn, NOTIFY, claim, hand-off.

    python scripts/latency_anatomy.py              # 500 jobs, a throwaway server
    python scripts/latency_anatomy.py --jobs 1000 --gap 0.02

Like the benchmark's latency workload: an idle worker (concurrency 10) in its
own process, and jobs spawned one at a time ``--gap`` seconds apart by this
process. The worker's dispatcher is wrapped (its code unchanged) to stamp
when a notification arrived and when each claim was sent and returned; the
handler stamps its start. Prints percentiles of each segment:

- spawn: the ``spawn_task`` call (its commit included), as the spawner sees it;
- commit->notify: from the spawn's return to the dispatcher seeing the
  NOTIFY (negative when the NOTIFY arrives before the spawner reads its reply);
- notify->claim: from the NOTIFY to sending the claim;
- claim: the claim's round trip (pool checkout, the claim, its commit);
- claim->start: from the claim's return to the handler's first line.

Then lists every claim over 5 ms with the backend it ran on, and whether it
was that backend's first claim.
"""

from __future__ import annotations

import argparse
import bisect
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import teguh
from teguh import _engine as E
from teguh.embedded import EmbeddedPostgres
from teguh.worker import dispatcher as D

QUEUE = "anatomy"


def worker_main(dsn: str, out: str, jobs: int) -> None:
    """The worker process: run ``jobs`` no-op jobs, then write the stamps to ``out``."""
    notified: list[float] = []
    claims: list[tuple[float, float, int]] = []  # sent, returned, backend pid
    real_notify = D.Dispatcher.on_notify
    real_claim = E.Engine.claim_next

    def on_notify(self: D.Dispatcher, queues: set[str]) -> None:
        if queues:
            notified.append(time.time())
        real_notify(self, queues)

    running = threading.Event()  # after start(): the warm-ups' claims are not counted

    def claim_next(self: E.Engine, conn: Any, *args: Any) -> Any:
        sent = time.time()
        result = real_claim(self, conn, *args)
        if result[0] and running.is_set():
            claims.append((sent, time.time(), conn.info.backend_pid))
        return result

    D.Dispatcher.on_notify = on_notify  # type: ignore[method-assign]
    E.Engine.claim_next = claim_next  # type: ignore[method-assign]
    starts: list[tuple[int, float, float]] = []
    finished = threading.Event()

    def noop(ctx: teguh.TaskContext) -> None:
        starts.append((ctx.params["i"], ctx.params["t"], time.time()))
        if len(starts) >= jobs:
            finished.set()

    with teguh.App(dsn) as app:
        worker = app.worker([QUEUE], concurrency=10)
        worker.handle("noop", noop)
        worker.start()
        running.set()
        print("ready", flush=True)
        finished.wait(jobs * 1.0 + 60)
        worker.stop(5)
    Path(out).write_text(json.dumps({"starts": starts, "notified": notified, "claims": claims}))


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _latest(stamps: list[float], low: float, high: float) -> float | None:
    """The latest stamp in [low, high], if any (stamps sorted)."""
    i = bisect.bisect_right(stamps, high) - 1
    return stamps[i] if i >= 0 and stamps[i] >= low else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--gap", type=float, default=0.02, help="seconds between spawns")
    parser.add_argument("--worker", nargs=2, metavar=("DSN", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker[0], args.worker[1], args.jobs)
        return

    out = Path("build") / "latency-anatomy.json"
    out.parent.mkdir(exist_ok=True)
    returned: dict[int, float] = {}
    with EmbeddedPostgres() as server:
        dsn = server.create_database("anatomy")
        with teguh.Client(dsn) as client:
            client.install()
            client.create_queue(QUEUE)
        child = subprocess.Popen(
            [sys.executable, __file__, "--jobs", str(args.jobs), "--worker", dsn, str(out)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        child.stdout.readline()  # "ready"
        with teguh.Client(dsn) as client:
            client.version()
            for i in range(args.jobs):
                client.spawn_task(QUEUE, "noop", {"i": i, "t": time.time()})
                returned[i] = time.time()
                time.sleep(args.gap)
        if child.wait(timeout=120) != 0:
            sys.exit("the worker process failed")

    data = json.loads(out.read_text())
    notified = sorted(data["notified"])
    claims = sorted(data["claims"])
    sent = [c[0] for c in claims]
    segments: dict[str, list[float]] = {
        "total": [],
        "spawn": [],
        "commit->notify": [],
        "notify->claim": [],
        "claim": [],
        "claim->start": [],
    }
    for i, spawned, started in sorted(data["starts"]):
        segments["total"].append((started - spawned) * 1e3)
        segments["spawn"].append((returned[i] - spawned) * 1e3)
        claim_sent = _latest(sent, spawned, started)
        if claim_sent is None:
            continue
        claim = claims[sent.index(claim_sent)]
        note = _latest(notified, spawned, claim_sent)
        if note is not None:
            segments["commit->notify"].append((note - returned[i]) * 1e3)
            segments["notify->claim"].append((claim_sent - note) * 1e3)
        segments["claim"].append((claim[1] - claim[0]) * 1e3)
        segments["claim->start"].append((started - claim[1]) * 1e3)
    print(f"{args.jobs} jobs, {args.gap * 1000:g} ms apart; ms:")
    for name, values in segments.items():
        if values:
            print(
                f"  {name:15s} p50 {_pct(values, 0.5):6.2f}  p95 {_pct(values, 0.95):6.2f}"
                f"  p99 {_pct(values, 0.99):6.2f}  max {max(values):6.2f}"
            )
    seen: set[int] = set()
    slow = []
    for claim_sent, claim_returned, pid in claims:
        first = pid not in seen
        seen.add(pid)
        if claim_returned - claim_sent > 0.005:
            slow.append(
                f"{(claim_returned - claim_sent) * 1e3:.1f} ms on {pid}{' (first)' * first}"
            )
    print(f"claims over 5 ms: {len(slow)} of {len(claims)}" + "".join(f"\n  {s}" for s in slow))


if __name__ == "__main__":
    main()
