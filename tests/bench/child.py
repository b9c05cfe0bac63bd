"""Run one role of one tool in this process: ``python -m tests.bench.child TOOL ROLE JSON``.

Roles: ``setup``, ``enqueue``, ``prefill``, ``latency_enqueue``, ``work``,
``count_done``, ``fill_history``, ``idle_claim``. The result is printed as one
``RESULT <json>`` line; a ``work`` child prints ``READY`` first, when its
worker is about to start.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from tests.bench import tools
from tests.bench.common import WorkSpec, emit_result


def run(tool: str, role: str, args: dict[str, Any]) -> dict[str, Any]:
    mod = tools.load(tool)
    dsn = args["dsn"]
    if role == "setup":
        mod.setup(dsn)
        return {}
    if role == "enqueue":
        return {"seconds": mod.enqueue(dsn, args["start"], args["n"], args.get("batch"))}
    if role == "prefill":
        mod.prefill(dsn, args["kind"], args["n"])
        return {}
    if role == "latency_enqueue":
        mod.latency_enqueue(dsn, args["n"], args["gap"])
        return {}
    if role == "work":
        spec = WorkSpec.from_json(args["spec"])
        rec = mod.work(dsn, spec)
        return rec.summary()
    if role == "count_done":
        return {"done": mod.count_done(dsn, args["kind"])}
    if role == "fill_history":
        mod.fill_history(dsn, args["n"])
        return {}
    if role == "anatomy":
        return dict(mod.anatomy(dsn, args["calls"]))
    if role == "idle_claim":
        return {"ms": mod.idle_claim(dsn, args["calls"])}
    raise SystemExit(f"unknown role {role!r}")


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    tool, role, raw = argv
    emit_result(run(tool, role, json.loads(raw)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
