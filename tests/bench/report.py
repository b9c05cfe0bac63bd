"""Turn measured figures into docs/benchmarks.md and the chart; nothing here is typed by hand."""

# ruff: noqa: RUF001 - the report uses typographic symbols on purpose

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bench import tools
from tests.bench.common import Agg
from tests.bench.workloads import Sizes


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_better: bool


def metrics(sizes: Sizes) -> list[Metric]:
    out = [
        Metric("enqueue_single", f"enqueue {sizes.enqueue:,}, one per call", "jobs/s", True),
        Metric(
            "enqueue_batch", f"enqueue {sizes.enqueue:,}, batches of {sizes.batch}", "jobs/s", True
        ),
        Metric("drain_c10", f"drain {sizes.drain:,}, concurrency 10", "jobs/s", True),
        Metric("drain_c1", f"drain {sizes.drain_c1:,}, concurrency 1", "jobs/s", True),
        Metric("latency_p50", "latency p50 (idle worker)", "ms", False),
        Metric("latency_p95", "latency p95", "ms", False),
        Metric("latency_p99", "latency p99", "ms", False),
        Metric(
            "workflow", f"durable workflow, {sizes.workflow:,} × 3 steps, c=10", "workflows/s", True
        ),
        Metric("sleep_p50", f"sleep 1 s × {sizes.sleep}: lateness p50", "ms", False),
        Metric("sleep_p99", "sleep lateness p99", "ms", False),
    ]
    for size in sizes.history:
        out.append(
            Metric(f"idle_{size}", f"empty claim, {size:,} finished tasks", "ms/call", False)
        )
    return out


@dataclass
class Context:
    quick: bool
    repeats: int
    sizes: Sizes
    tools: list[str]
    unavailable: dict[str, str]
    skipped: dict[str, list[str]]
    versions: dict[str, str]
    settings: dict[str, str]
    machine: dict[str, str]
    command: str
    elapsed: float
    values: dict[str, dict[str, list[float]]]
    health: dict[str, list[dict[str, Any]]]
    failures: list[str]
    png_name: str
    revision: str = ""


def save(ctx: Context, path: Path) -> None:
    """Save every measured figure, so the report can be rewritten without measuring again."""
    data = dataclasses.asdict(ctx)
    path.write_text(json.dumps(data, indent=1) + "\n")


def load(path: Path) -> Context:
    """Load what `save` wrote."""
    data = json.loads(path.read_text())
    data["sizes"] = Sizes(**{**data["sizes"], "history": tuple(data["sizes"]["history"])})
    ctx = Context(**data)
    if not ctx.revision:
        ctx.revision = os.environ.get("TEGUH_BENCH_REV", "")
    return ctx


def _agg(ctx: Context, tool: str, key: str) -> Agg | None:
    return Agg.of(ctx.values.get(tool, {}).get(key, []))


def best_peer(ctx: Context, m: Metric) -> tuple[str, Agg] | None:
    cands = [(t, a) for t in ctx.tools if t != "teguh" and (a := _agg(ctx, t, m.key)) is not None]
    if not cands:
        return None
    pick = max if m.higher_better else min
    return pick(cands, key=lambda ta: ta[1].median)


def ratio(m: Metric, value: float, best: float) -> float:
    """How many times better than the best peer (> 1 is better), whatever the metric's direction."""
    if not best or not value or math.isnan(value) or math.isnan(best):
        return math.nan
    return value / best if m.higher_better else best / value


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "n/a"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _cell(a: Agg | None) -> str:
    if a is None:
        return "—"
    if a.n == 1:
        return _fmt(a.median)
    return f"{_fmt(a.median)} ({_fmt(a.lo)}–{_fmt(a.hi)})"


def summary_table(ctx: Context) -> str:
    """Return the main table: a row per metric, a column per tool, ratio to the best peer."""
    head = ["workload", "unit", *ctx.tools, "best peer", "teguh ÷ best peer"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in metrics(ctx.sizes):
        aggs = {t: _agg(ctx, t, m.key) for t in ctx.tools}
        if all(a is None for a in aggs.values()):
            continue
        bp = best_peer(ctx, m)
        t = aggs.get("teguh")
        r = ratio(m, t.median, bp[1].median) if (t and bp) else math.nan
        row = [
            m.label,
            m.unit + (" ↑" if m.higher_better else " ↓"),
            *(_cell(aggs[tool]) for tool in ctx.tools),
            bp[0] if bp else "—",
            "n/a" if math.isnan(r) else f"**{r:.2f}×**",
        ]
        lines.append("| " + " | ".join(row) + " |")
    pg = ctx.values.get("postgres", {})
    for key, label in (
        ("pg_insert", "pgbench: one-row insert, 10 clients"),
        ("pg_dequeue", "pgbench: SKIP LOCKED dequeue+delete, 10 clients"),
    ):
        a = Agg.of(pg.get(key, []))
        if a is not None:
            row = [label, "TPS ↑", *("" for _ in ctx.tools), "", ""]
            row[2] = _cell(a)
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _health_table(ctx: Context) -> str:
    head = [
        "tool",
        "rows inserted",
        "updated",
        "HOT updated",
        "deleted",
        "dead tuples",
        "live tuples",
        "total size",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for tool in ctx.tools:
        runs = ctx.health.get(tool)
        if not runs:
            continue
        med = {
            k: Agg.of(r["total"][k] for r in runs)
            for k in ("ins", "upd", "hot_upd", "del", "dead", "live", "bytes")
        }
        row = [tool] + [
            f"{med[k].median:,.0f}" if med[k] else "—"
            for k in ("ins", "upd", "hot_upd", "del", "dead", "live")
        ]
        row.append(f"{med['bytes'].median / 1024 / 1024:.1f} MiB" if med["bytes"] else "—")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _health_detail(ctx: Context) -> str:
    out = []
    for tool in ctx.tools:
        runs = ctx.health.get(tool)
        if not runs:
            continue
        tables = [t for t in runs[-1]["tables"] if t["ins"] or t["upd"] or t["del"] or t["dead"]]
        if not tables:
            continue
        out.append(f"**{tool}** (last repeat)\n")
        out.append(
            "| table | ins | upd | hot upd | del | dead | size |\n|---|---|---|---|---|---|---|"
        )
        for t in tables:
            nums = " | ".join(f"{t[k]:,}" for k in ("ins", "upd", "hot_upd", "del", "dead"))
            out.append(f"| `{t['table']}` | {nums} | {t['bytes'] / 1024:,.0f} KiB |")
        out.append("")
    return "\n".join(out)


_ANATOMY = (
    ("rt_select1", "a round trip: `select 1`"),
    ("rt_insert_commit", "a one-row insert into a plain table, committed"),
    ("rt_spawn_in_tx", "`teguh.spawn_task` inside an open transaction (the function's own work)"),
    ("rt_spawn_commit", "`teguh.spawn_task` committed on its own (work + commit + NOTIFY)"),
)


def _anatomy(ctx: Context) -> str:
    vals = ctx.values.get("teguh", {})
    if not any(key in vals for key, _ in _ANATOMY):
        return ""
    lines = [
        "### What a single enqueue costs\n",
        "Measured in the same run, one connection, ms per call (median of repeats):\n",
        "| call | ms |",
        "|---|---|",
    ]
    for key, label in _ANATOMY:
        a = Agg.of(vals.get(key, []))
        lines.append(f"| {label} | {_cell(a)} |")
    return "\n".join(lines) + "\n"


def _targets(ctx: Context) -> list[str]:
    return _check_targets(ctx)[0]


def _check_targets(ctx: Context) -> tuple[list[str], set[str]]:
    """Check teguh against the issue's targets; return the lines and the missed targets' keys."""
    if "teguh" not in ctx.tools:
        return ["teguh was not measured in this run."], set()
    ms = {m.key: m for m in metrics(ctx.sizes)}
    lines = []
    missed: set[str] = set()

    def vs_peer(key: str, want: float, what: str) -> None:
        m = ms[key]
        t, bp = _agg(ctx, "teguh", key), best_peer(ctx, m)
        if t is None or bp is None:
            lines.append(f"- {what}: not measured")
            return
        r = ratio(m, t.median, bp[1].median)
        ok = "met" if r >= want else "**missed**"
        if r < want:
            missed.add(key)
        lines.append(f"- {what} ≥ {want}× the best peer ({bp[0]}): {r:.2f}× — {ok}")

    def absolute(key: str, limit: float, what: str) -> None:
        t = _agg(ctx, "teguh", key)
        if t is None:
            lines.append(f"- {what}: not measured")
            return
        ok = "met" if t.median < limit else "**missed**"
        if t.median >= limit:
            missed.add(key)
        lines.append(f"- {what} < {limit:g} ms: {t.median:.1f} ms — {ok}")

    vs_peer("drain_c10", 2.0, "drain at concurrency 10")
    vs_peer("enqueue_single", 1.2, "single enqueue")
    vs_peer("enqueue_batch", 1.0, "batched enqueue")
    absolute("latency_p99", 10, "latency p99 on an idle worker")
    vs_peer("workflow", 2.0, "durable workflow")
    absolute("sleep_p99", 150, "sleep lateness p99 without pg_cron")
    lo, hi = (
        _agg(ctx, "teguh", f"idle_{ctx.sizes.history[0]}"),
        _agg(ctx, "teguh", f"idle_{ctx.sizes.history[-1]}"),
    )
    if lo and hi:
        r = hi.median / lo.median
        ok = "met" if r <= 1.5 else "**missed**"
        if r > 1.5:
            missed.add("idle")
        first, last = ctx.sizes.history[0], ctx.sizes.history[-1]
        lines.append(
            f"- idle claim at {last:,} finished tasks within 1.5× of the cost at {first:,}: "
            f"{r:.2f}× — {ok}"
        )
    else:
        lines.append("- idle claim cost vs history: not measured")
    runs = ctx.health.get("teguh")
    if runs:
        upd = [
            t["upd"]
            for r in runs
            for t in r["tables"]
            if t["table"].split(".")[-1].startswith("p_")
        ]
        ok = "met" if upd and max(upd) == 0 else "**missed**"
        if not upd or max(upd):
            missed.add("dispatch_update")
        most = max(upd) if upd else "n/a"
        lines.append(f"- no UPDATE on the dispatch table (`p_<q>`): {most} updates — {ok}")
    return lines, missed


# Why teguh falls short where it does: the mechanisms, from reading the code
# of every tool and profiling teguh (py-spy on the worker; the anatomy table).
# No figure is typed here; the figures are in the tables above.
_LIMITS = {
    "drain_c10": """\
**Drain.** Per job, teguh's engine deletes the run from `p_<q>`, updates the
task in `t_<q>` twice (running, then completed) and inserts and deletes its
lease in `r_<q>`: five row writes and their index entries in three tables,
in two transactions (a claim and a `complete_runs` call, each batched over
the free slots; both commit durably, each waiting for a WAL flush: an
asynchronous claim lost in a crash let two executions share a run id).
A py-spy profile of the worker shows its threads mostly waiting on the
database, so on two shared cores the limit is the server's CPU per job.
pgqueuer's dequeue updates one row of one table and its completions are
buffered and written in batches (a delete plus a log insert); its no-op
handlers are coroutines on one event loop, not threads. The lease
table is what makes teguh's claims crash-safe and auditable (a lease is a
row that can expire and be recovered); folding the lease into `t_<q>` would
save two writes per job at the cost of an update on the task table per
claim.
""",
    "enqueue_single": """\
**Single enqueue.** One call per job is one durable commit per job: the
anatomy table shows the commit is most of `spawn_task`'s cost, and the
function's own work is writing two tables (`t_<q>`, `p_<q>`) and sending a
NOTIFY. A peer that writes one row to one table per job commits less WAL per
call. Batches (`spawn_tasks`) or spawning inside the application's own
transaction (`conn=`) remove the per-job commit.
""",
    "enqueue_batch": """\
**Batched enqueue.** `spawn_tasks` writes two rows per job (`t_<q>` and
`p_<q>`) where a single-table queue writes one.
""",
    "latency_p99": """\
**Latency.** An idle worker's latency is two durable commits in a row, the
spawn's and the claim's (a WAL flush each, about 2 ms each on this machine
when idle), plus about 0.2 ms for the NOTIFY and the hand-off to a handler
thread; `python scripts/latency_anatomy.py` measures each segment. What
remains in the tail is those flushes and waiting for a CPU on two shared
cores; compare the peers' p99 and the ranges in the same run.
""",
    "workflow": """\
**Durable workflow.** Each step is a checkpoint write and a round trip.
""",
    "sleep_p99": """\
**Sleep.** A sleeping run is due in `p_<q>`; the worker's dispatcher times
its next claim to the next due run, so lateness is that timer plus a claim.
""",
    "idle": """\
**Idle claim.** `claim_task` looks at `p_<q>` and `r_<q>` only (two index
probes); a growing cost with history means one of them is not index-driven.
""",
}


def _limits(ctx: Context) -> str:
    missed = _check_targets(ctx)[1]
    texts = [_LIMITS[key] for key in _LIMITS if key in missed]
    if not texts:
        return ""
    return "### What limits teguh where it misses\n\n" + "\n".join(texts)


_INTRO = """\
# Benchmarks

<!-- Generated by `nox -s bench` (python -m tests.bench); do not edit by hand. -->

teguh side by side with the PostgreSQL-backed tools a Python user would
otherwise pick, on one throwaway PostgreSQL server, in one run. Every figure
below comes from the run described here; nothing is typed in by hand. Rerun
with `nox -s bench` (full) or `nox -s bench -- --quick` (smoke).
"""

_RESULTS = """\
## Results

Median of {repeats} (min–max in brackets). ↑ higher is better, ↓ lower is
better. The last column is teguh's figure divided by the best peer's in the
same run, turned so that **> 1 means teguh is better** (for ms: best peer ÷
teguh). — means no figure for that tool (see the notes).

The ranges are wide because this host's two cores are shared with other
machines' work, whether or not anything else of ours runs. Ratios between tools
in the same repeat are steadier than the absolute figures; the order of the
tools rotates each repeat so that none always runs first or last.
"""

_HEALTH = """\
## Table health after the concurrency-10 drain

From `pg_stat_user_tables` for each tool's own tables, right after the worker
process exited (median over repeats): the rows updated and left dead are what
autovacuum has to clean up after {drain:,} jobs.
"""

_WORKLOADS = """\
## Workloads

1. **enqueue**: {enqueue:,} no-op jobs from a fresh process, one call (one
   transaction) per job; then {enqueue:,} more in batches of {batch} where the
   tool has a batch API. Timed around the loop only.
2. **drain**: {drain:,} jobs enqueued beforehand; one worker process at
   concurrency 10; then {drain_c1:,} jobs at concurrency 1 (fewer, because the
   polled peers manage a few dozen a second there). Rate = jobs between the
   first and the last handler start ÷ that time (the worker's start-up is
   excluded).
3. **latency**: an idle worker (concurrency 10); {latency} jobs enqueued one at
   a time {gap_ms:.0f} ms apart by another process; handler start minus the
   time just before the enqueue call (both `time.time()` on this machine).
4. **durable workflow**: {workflow:,} workflows of 3 checkpointed no-op steps,
   concurrency 10; rate as for drain, counted at workflow end.
5. **sleep precision**: {sleep} tasks each checkpoint their start time, sleep
   1 s durably, and report how late they resumed. No pg_cron.
6. **idle cost vs history**: a queue holding {history} finished tasks
   (inserted directly in the state the tool leaves a finished task in, then
   `VACUUM ANALYZE`); {idle_calls} empty claims through the tool's own claim
   function on one connection, in 5 batches, ms per call (median batch).
7. **table health**: see above.
8. **physical limit**: pgbench custom scripts, 10 clients, {pgbench_seconds} s
   each: a one-row insert, and a `SKIP LOCKED` dequeue-and-delete of one row:
   what this server commits per second, to read every figure as a fraction of.

Every workload verifies its outcome: each handler counts executions per job
number, and the run fails unless every job ran exactly once (for workflows and
sleeps: every step body exactly once too) and the tool's own tables show every
job finished. Each workload runs on a fresh database, with the tool's enqueuer
and its worker in separate child processes; repeats are interleaved across
tools (the order rotates each repeat).
"""

_ENVIRONMENT = """\
## Environment

- Command: `{command}` ({minutes:.1f} min), teguh at {revision}
- Machine: {cpus} CPUs ({cpu}), {memory} memory, {os}, Python {python}
- PostgreSQL: {settings}: a throwaway server from `teguh.embedded` with the
  defaults left as they are (durable commits: `fsync` and
  `synchronous_commit` on).
- Libraries: {libraries}
- Everything (server, workers, enqueuers, harness) shares the same cores, as
  an application and its database would on a small host.
"""


def markdown(ctx: Context) -> str:
    s = ctx.sizes
    parts = [_INTRO]
    if ctx.quick:
        parts.append(
            "> **Quick mode**: reduced sizes, one repeat. These figures are a smoke\n"
            "> test, not a benchmark.\n"
        )
    if ctx.failures:
        parts.append("## Failures in this run\n")
        parts.append("\n".join(f"- {f.splitlines()[0]}" for f in ctx.failures) + "\n")
    repeats = f"{ctx.repeats} repeat" + ("s" if ctx.repeats > 1 else "")
    parts += [
        _RESULTS.format(repeats=repeats),
        summary_table(ctx) + "\n",
        f"![each tool's figure as a multiple of the best peer's]({ctx.png_name})\n",
        "## Targets (issue 5)\n",
        "\n".join(_targets(ctx)) + "\n",
        _anatomy(ctx),
        _limits(ctx),
        _HEALTH.format(drain=s.drain),
        _health_table(ctx) + "\n",
        _health_detail(ctx),
        _WORKLOADS.format(
            enqueue=s.enqueue,
            batch=s.batch,
            drain=s.drain,
            drain_c1=s.drain_c1,
            latency=s.latency,
            gap_ms=s.latency_gap * 1000,
            workflow=s.workflow,
            sleep=s.sleep,
            history=", ".join(f"{h:,}" for h in s.history),
            idle_calls=s.idle_calls,
            pgbench_seconds=s.pgbench_seconds,
        ),
        "## How each tool is used\n",
        "| tool | version | how |\n|---|---|---|",
    ]
    for tool in ctx.tools:
        mod = tools.load(tool)
        parts.append(f"| {tool} | {ctx.versions.get(tool, '?')} | {mod.USAGE} |")
    parts.append("")
    notes = []
    for tool in ctx.tools:
        doc = (tools.load(tool).__doc__ or "").strip()
        if doc:
            notes.append(f"- **{tool}**: " + " ".join(doc.split()))
    for tool, why in ctx.unavailable.items():
        notes.append(f"- **{tool}** was not measured: {why}.")
    for tool, ws in ctx.skipped.items():
        notes.append(f"- {tool}: no {', '.join(ws)} figures (see its note above).")
    parts += ["Notes:\n", "\n".join(notes) + "\n"]
    parts.append(
        _ENVIRONMENT.format(
            command=ctx.command.strip(),
            revision=f"commit `{ctx.revision}`" if ctx.revision else "an unrecorded revision",
            minutes=ctx.elapsed / 60,
            settings=", ".join(f"`{k}={v}`" for k, v in ctx.settings.items()),
            libraries=", ".join(f"{k} {v}" for k, v in ctx.versions.items() if k not in ctx.tools),
            **ctx.machine,
        )
    )
    return "\n".join(parts)


def chart(ctx: Context, path: Path) -> None:
    """Draw each tool's figure as a multiple of the best peer's, per metric (> 1 is better)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    rows = []
    for m in metrics(ctx.sizes):
        bp = best_peer(ctx, m)
        if bp is None:
            continue
        vals = {}
        for t in ctx.tools:
            a = _agg(ctx, t, m.key)
            if a is not None:
                vals[t] = ratio(m, a.median, bp[1].median)
        rows.append((m.label, vals))
    if not rows:
        return
    # A dot plot: one row per metric, one marker per tool at its ratio to the best peer
    # (the best peer sits on the 1x line); teguh's marker is the large one.
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(rows) + 1.6))
    all_x: list[float] = []
    colors = {
        "teguh": "#d1495b",
        "procrastinate": "#00798c",
        "pgqueuer": "#edae49",
        "absurd": "#66a182",
        "dbos": "#2e4057",
    }
    for i in range(len(rows)):
        ax.axhline(i, color="#dddddd", linewidth=0.6, zorder=0)
    for tool in ctx.tools:
        ys, xs = [], []
        for i, (_label, vals) in enumerate(rows):
            if tool in vals and not math.isnan(vals[tool]):
                ys.append(i)
                xs.append(vals[tool])
        big = tool == "teguh"
        ax.scatter(
            xs,
            ys,
            s=110 if big else 45,
            marker="D" if big else "o",
            color=colors.get(tool),
            label=tool,
            zorder=3 if big else 2,
            edgecolors="white",
            linewidths=0.6,
        )
        all_x.extend(xs)
    ax.axvline(1.0, color="black", linewidth=0.8)
    lo, hi = min([*all_x, 1.0]), max([*all_x, 1.0])
    ax.set_xlim(lo / 1.5, hi * 1.5)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([label for label, _ in rows], fontsize=8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: f"{v:g}×"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("× the best peer (log scale; > 1 is better)")
    title = "teguh vs peers: figure ÷ best peer's" + (" (quick smoke run)" if ctx.quick else "")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
