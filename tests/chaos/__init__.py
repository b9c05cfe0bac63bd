"""Chaos tests: kill workers and the server under load (``nox -s chaos``; see __main__)."""
