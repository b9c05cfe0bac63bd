"""One adapter module per tool, all with the same small interface.

Each module defines ``NAME``, ``DIST`` (the PyPI distribution whose version is
reported), ``USAGE`` (one line for the report: how the tool is driven),
``FEATURES`` (which optional workloads it supports), ``TABLES`` (a SQL
predicate on ``pg_stat_user_tables`` selecting its tables) and the functions
``setup``, ``enqueue``, ``prefill``, ``latency_enqueue``, ``work`` and
``count_done``; optionally ``fill_history`` and ``idle_claim``. They run in
child processes (see `tests.bench.child`).
"""

from __future__ import annotations

import importlib
from types import ModuleType

ALL = ["teguh", "procrastinate", "pgqueuer", "absurd", "dbos"]
PEERS = [t for t in ALL if t != "teguh"]


def load(name: str) -> ModuleType:
    if name not in ALL:
        raise ValueError(f"unknown tool {name!r}; choose from {', '.join(ALL)}")
    return importlib.import_module(f"tests.bench.tools.{name}_tool")
