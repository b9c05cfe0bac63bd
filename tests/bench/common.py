"""Shared pieces of the benchmark: the recorder handlers count into, stats, the child protocol.

Every tool runs its enqueuers and its worker in child processes
(``python -m tests.bench.child``), so that one tool's imports, event loops and
threads never share an interpreter with another's, and the harness process
only orchestrates. A child prints one line ``RESULT <json>`` on stdout.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

RESULT_PREFIX = "RESULT "
READY_LINE = "READY"

# Every wait in a child has a ceiling, so a stuck tool fails the run instead of hanging it.
WORK_TIMEOUT = float(os.environ.get("TEGUH_BENCH_WORK_TIMEOUT", "300"))


class BenchFailure(RuntimeError):
    """Raise when a workload's outcome is wrong (lost or duplicated jobs, wrong state)."""


@dataclass
class WorkSpec:
    """What a worker child must run: ``kind`` is noop, latency, workflow or sleep."""

    kind: str
    expected: int
    concurrency: int
    sleep_seconds: float = 1.0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkSpec:
        return cls(**data)


@dataclass
class Recorder:
    """Count handler executions by job number; thread-safe, usable from asyncio handlers.

    ``hit(i)`` is called once per handler execution (for workflows: once per
    step body and once at the end). `done` is set when every expected job has
    been seen at least once.
    """

    expected: int
    counts: dict[int, int] = field(default_factory=dict)
    step_counts: dict[str, int] = field(default_factory=dict)
    first: float = 0.0
    last: float = 0.0
    values: list[float] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def hit(self, i: int, value: float | None = None) -> None:
        now = time.time()
        with self._lock:
            if not self.counts:
                self.first = now
            self.last = now
            self.counts[i] = self.counts.get(i, 0) + 1
            if value is not None:
                self.values.append(value)
            if len(self.counts) >= self.expected:
                self.done.set()

    def step(self, i: int, name: str) -> None:
        key = f"{i}:{name}"
        with self._lock:
            self.step_counts[key] = self.step_counts.get(key, 0) + 1

    def wait(self, timeout: float = WORK_TIMEOUT) -> bool:
        return self.done.wait(timeout)

    def summary(self) -> dict[str, Any]:
        with self._lock:
            dup = {i: c for i, c in self.counts.items() if c != 1}
            missing = [i for i in range(self.expected) if i not in self.counts]
            step_dup = {k: c for k, c in self.step_counts.items() if c != 1}
            return {
                "seen": len(self.counts),
                "executions": sum(self.counts.values()),
                "duplicates": dict(list(dup.items())[:20]),
                "n_duplicates": len(dup),
                "missing": missing[:20],
                "n_missing": len(missing),
                "step_executions": sum(self.step_counts.values()),
                "step_duplicates": dict(list(step_dup.items())[:20]),
                "n_step_duplicates": len(step_dup),
                "first": self.first,
                "last": self.last,
                "values": self.values,
            }


def check_exactly_once(tool: str, workload: str, summary: dict[str, Any], steps: int = 0) -> None:
    """Fail loudly unless every job ran exactly once (and every step once, when ``steps``)."""
    problems = []
    if summary["n_missing"]:
        problems.append(f"{summary['n_missing']} jobs never ran (e.g. {summary['missing'][:5]})")
    if summary["n_duplicates"]:
        problems.append(
            f"{summary['n_duplicates']} jobs ran more than once (e.g. {summary['duplicates']})"
        )
    if steps:
        want = summary["seen"] * steps
        if summary["n_step_duplicates"] or summary["step_executions"] != want:
            problems.append(
                f"step bodies ran {summary['step_executions']} times, want {want} "
                f"(duplicates e.g. {summary['step_duplicates']})"
            )
    if problems:
        raise BenchFailure(f"{tool}/{workload}: " + "; ".join(problems))


def emit_result(data: dict[str, Any]) -> None:
    sys.stdout.write(RESULT_PREFIX + json.dumps(data) + "\n")
    sys.stdout.flush()


def emit_ready() -> None:
    sys.stdout.write(READY_LINE + "\n")
    sys.stdout.flush()


def percentile(values: Sequence[float], p: float) -> float:
    """Return the ``p``-th percentile (0..100) by linear interpolation."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    if lo == hi:
        return ordered[lo]
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


@dataclass(frozen=True)
class Agg:
    """Median with min and max over repeats."""

    median: float
    lo: float
    hi: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Agg | None:
        vals = [v for v in values if v is not None and not math.isnan(v)]
        if not vals:
            return None
        return cls(statistics.median(vals), min(vals), max(vals), len(vals))


def chunks(seq: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
