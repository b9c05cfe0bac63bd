"""``python -m tests.bench``: run the benchmark suite and write docs/benchmarks.md and the chart.

    python -m tests.bench                  # full run, 3 repeats (~30-40 min on 2 cores)
    python -m tests.bench --quick          # CI smoke: small sizes, 1 repeat, no 1M history
    python -m tests.bench --only teguh,procrastinate --workloads drain,latency
    python -m tests.bench --dsn postgresql://postgres@127.0.0.1:5432/postgres  # a running server

It starts its own throwaway PostgreSQL (`teguh.embedded.EmbeddedPostgres`,
durability settings left at their defaults) unless ``--dsn`` names a server
to use (a superuser DSN: databases are created and dropped there). Each
workload of each tool runs on a fresh database, in child processes; repeats are
interleaved across tools. The exit status is non-zero when any workload fails
its exactly-once check or errors.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import platform
import subprocess
import sys
import time
import traceback
from collections import defaultdict
from pathlib import Path
from typing import Any

import psycopg

from tests.bench import report, tools, workloads
from tests.bench.common import BenchFailure
from tests.bench.workloads import Server, Sizes

WORKLOADS = ["enqueue", "drain", "latency", "workflow", "sleep", "idle", "health", "pgbench"]
_BY_NUMBER = {str(i + 1): w for i, w in enumerate(WORKLOADS)}
SETTINGS_SHOWN = (
    "server_version",
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_level",
    "shared_buffers",
    "max_connections",
    "autovacuum",
    "max_wal_size",
)


def _parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__.split("\n")[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="small sizes, 1 repeat (CI smoke; no timing assertions)",
    )
    p.add_argument(
        "--repeat", type=int, default=None, help="repeats per workload (default 3, quick 1)"
    )
    p.add_argument(
        "--only",
        default="",
        help="comma-separated tools (default: all of " + ",".join(tools.ALL) + ")",
    )
    p.add_argument(
        "--workloads",
        default="",
        help="comma-separated workloads by name or number 1-8 (default all: "
        + ",".join(WORKLOADS)
        + ")",
    )
    p.add_argument(
        "--out",
        default=None,
        help="markdown report (default docs/benchmarks.md; quick: build/bench-quick.md)",
    )
    p.add_argument("--png", default=None, help="chart (default: the report's path with .png)")
    p.add_argument(
        "--render",
        metavar="JSON",
        default=None,
        help="measure nothing: rewrite the report and chart from a run's saved figures",
    )
    p.add_argument(
        "--dsn", default=None, help="superuser DSN of a server to use instead of a throwaway one"
    )
    return p.parse_args(argv)


def _available(tool: str) -> str | None:
    """Return why ``tool`` cannot run here, or None when it can."""
    mod = tools.load(tool)
    missing = getattr(mod, "unavailable", None)
    if missing is not None:
        why: str | None = missing()
        return why
    if importlib.util.find_spec(mod.DIST.replace("-", "_")) is None:
        return f"{mod.DIST} is not installed"
    return None


def _machine() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "unknown"
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpus": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def _settings(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        return {
            name: str(conn.execute("select current_setting(%s)", (name,)).fetchone()[0])  # type: ignore[index]
            for name in SETTINGS_SHOWN
        }


def _versions(names: list[str]) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        dist = tools.load(name).DIST
        try:
            out[name] = version(dist)
        except PackageNotFoundError:
            out[name] = "(source tree)" if name == "teguh" else "?"
    for extra in ("psycopg", "psycopg-pool", "absurdctl", "asyncpg", "SQLAlchemy"):
        with contextlib.suppress(PackageNotFoundError):
            out[extra] = version(extra)
    return out


class Runner:
    def __init__(self, server: Server, sizes: Sizes, chosen: list[str], bindir: str) -> None:
        self.server = server
        self.sizes = sizes
        self.chosen = chosen
        self.bindir = bindir
        self.values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        self.health: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.failures: list[str] = []
        self.skipped: dict[str, list[str]] = defaultdict(list)

    def _step(self, tool: str, what: str, fn: Any, *args: Any) -> dict[str, Any] | None:
        t0 = time.monotonic()
        print(f"  {tool:<14} {what:<12} ...", end="", flush=True)
        try:
            out: dict[str, Any] = fn(*args)
        except BenchFailure as exc:
            print(f" FAILED\n{exc}", flush=True)
            self.failures.append(f"{tool} {what}: {exc}")
            return None
        except Exception as exc:
            print(f" ERROR\n{traceback.format_exc()}", flush=True)
            self.failures.append(f"{tool} {what}: {type(exc).__name__}: {exc}")
            return None
        shown = ", ".join(f"{k}={v:,.1f}" for k, v in out.items() if isinstance(v, float))
        print(f" {time.monotonic() - t0:5.1f}s  {shown}", flush=True)
        return out

    def _record(self, tool: str, out: dict[str, Any] | None) -> None:
        if not out:
            return
        for key, val in out.items():
            if key == "health":
                self.health[tool].append(val)
            else:
                self.values[tool][key].append(float(val))

    def run(self, repeats: int, chosen_workloads: list[str]) -> None:
        s = self.sizes
        per_tool = [w for w in chosen_workloads if w not in ("idle", "pgbench")]
        if "health" in per_tool and "drain" not in per_tool:
            per_tool.append("drain")  # health is read from the drain database
        for rep in range(repeats):
            # Rotate the order so that no tool always runs first (warm caches) or last.
            order = self.chosen[rep % len(self.chosen) :] + self.chosen[: rep % len(self.chosen)]
            print(f"repeat {rep + 1}/{repeats}: {', '.join(order)}", flush=True)
            if "pgbench" in chosen_workloads:
                self._record(
                    "postgres",
                    self._step(
                        "pgbench",
                        "pgbench",
                        workloads.pgbench,
                        self.server,
                        self.bindir,
                        rep,
                        s.pgbench_seconds,
                    ),
                )
            for tool in order:
                mod = tools.load(tool)
                for w in per_tool:
                    if w == "enqueue":
                        self._record(
                            tool,
                            self._step(tool, w, workloads.w_enqueue, self.server, tool, rep, s),
                        )
                    elif w == "drain":
                        for c in (10, 1):
                            self._record(
                                tool,
                                self._step(
                                    tool,
                                    f"drain c={c}",
                                    workloads.w_drain,
                                    self.server,
                                    tool,
                                    rep,
                                    s,
                                    c,
                                ),
                            )
                    elif w == "latency":
                        self._record(
                            tool,
                            self._step(tool, w, workloads.w_latency, self.server, tool, rep, s),
                        )
                    elif w == "workflow":
                        if "workflow" not in mod.FEATURES:
                            self._skip(tool, w, rep)
                            continue
                        self._record(
                            tool,
                            self._step(tool, w, workloads.w_workflow, self.server, tool, rep, s),
                        )
                    elif w == "sleep":
                        if "sleep" not in mod.FEATURES:
                            self._skip(tool, w, rep)
                            continue
                        self._record(
                            tool, self._step(tool, w, workloads.w_sleep, self.server, tool, rep, s)
                        )
        if "idle" in chosen_workloads:
            self._idle(repeats)

    def _skip(self, tool: str, w: str, rep: int) -> None:
        if rep == 0:
            self.skipped[tool].append(w)

    def _idle(self, repeats: int) -> None:
        s = self.sizes
        idle_tools = [t for t in self.chosen if "idle" in tools.load(t).FEATURES]
        for t in self.chosen:
            if t not in idle_tools:
                self.skipped[t].append("idle")
        for size in s.history:
            print(f"idle claim with {size:,} finished tasks", flush=True)
            dsns: dict[str, str] = {}
            for tool in idle_tools:
                out = self._step(
                    tool,
                    f"fill {size:,}",
                    lambda t=tool, n=size: {"dsn": workloads.fill_history(self.server, t, n)},
                )
                if out:
                    dsns[tool] = out["dsn"]
            for _rep in range(repeats):
                for tool, dsn in dsns.items():
                    self._record(
                        tool,
                        self._step(
                            tool,
                            "idle claim",
                            lambda t=tool, d=dsn, n=size: {
                                f"idle_{n}": workloads.idle_claim(t, d, s.idle_calls)
                            },
                        ),
                    )
            for dsn in dsns.values():
                self.server.drop(str(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]))


def _revision() -> str:
    """Return the git commit of the tree measured (``TEGUH_BENCH_REV`` for an exported tree)."""
    rev = os.environ.get("TEGUH_BENCH_REV", "")
    if rev:
        return rev
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        proc = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if proc.returncode == 0:
            return proc.stdout.strip()
    return ""


def _write(ctx: report.Context, out: Path, png: Path) -> None:
    """Write the report, the chart and the raw figures (``.json``, for ``--render``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report.markdown(ctx))
    report.save(ctx, out.with_suffix(".json"))
    try:
        report.chart(ctx, png)
    except Exception as exc:  # the chart is a convenience; the table is the result
        print(f"chart not written: {exc}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    sizes = Sizes.quick() if args.quick else Sizes.full()
    repeats = args.repeat or (1 if args.quick else 3)
    wanted = [t.strip() for t in args.only.split(",") if t.strip()] or list(tools.ALL)
    chosen_workloads = [
        _BY_NUMBER.get(w.strip(), w.strip()) for w in args.workloads.split(",") if w.strip()
    ] or list(WORKLOADS)
    bad = [w for w in chosen_workloads if w not in WORKLOADS]
    if bad:
        print(f"unknown workloads: {', '.join(bad)}", file=sys.stderr)
        return 2
    out = Path(args.out or ("build/bench-quick.md" if args.quick else "docs/benchmarks.md"))
    png = Path(args.png) if args.png else out.with_suffix(".png")
    if args.render:
        ctx = report.load(Path(args.render))
        _write(ctx, out, png)
        return 0

    chosen, unavailable = [], {}
    for tool in wanted:
        why = _available(tool)
        if why is None:
            chosen.append(tool)
        else:
            unavailable[tool] = why
            print(f"skipping {tool}: {why}", flush=True)
    if not chosen:
        print("no tool can run", file=sys.stderr)
        return 1

    embedded = None
    if args.dsn:
        admin_dsn = args.dsn
        bindir = os.popen("pg_config --bindir").read().strip()
    else:
        from teguh.embedded import EmbeddedPostgres

        embedded = EmbeddedPostgres().start()
        admin_dsn, bindir = embedded.dsn(), embedded.bindir
    t_start = time.time()
    try:
        settings = _settings(admin_dsn)
        machine = _machine()
        print(
            "PostgreSQL settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()), flush=True
        )
        print("machine: " + ", ".join(f"{k}={v}" for k, v in machine.items()), flush=True)
        runner = Runner(Server(admin_dsn), sizes, chosen, bindir)
        runner.run(repeats, chosen_workloads)
    finally:
        if embedded is not None:
            embedded.stop()
    elapsed = time.time() - t_start

    ctx = report.Context(
        quick=args.quick,
        repeats=repeats,
        sizes=sizes,
        tools=chosen,
        unavailable=unavailable,
        skipped=dict(runner.skipped),
        versions=_versions(chosen),
        settings=settings,
        machine=machine,
        command="python -m tests.bench " + " ".join(sys.argv[1:] if argv is None else argv),
        elapsed=elapsed,
        values={t: dict(v) for t, v in runner.values.items()},
        health=dict(runner.health),
        failures=runner.failures,
        png_name=png.name,
        revision=_revision(),
    )
    _write(ctx, out, png)
    print(report.summary_table(ctx))
    print(f"wrote {out} and {png} in {elapsed / 60:.1f} min", flush=True)
    if runner.failures:
        print(f"{len(runner.failures)} FAILED:", file=sys.stderr)
        for f in runner.failures:
            print("  " + f.splitlines()[0], file=sys.stderr)
        return 1
    return 0
