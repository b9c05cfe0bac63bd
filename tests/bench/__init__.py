"""The benchmark suite: teguh side by side with its peers.

Run it with ``nox -s bench`` or ``python -m tests.bench`` (see `tests.bench.harness`).
"""
