"""teguh test suites (a package so that `python -m tests.bench` always finds this one)."""
