"""Developer and CI sessions: ``nox`` runs tests, lint and typecheck.

``nox -s tests -- -k claim`` passes everything after ``--`` to pytest;
``nox -s bench -- --quick`` to the benchmark runner.
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["tests", "tests_django", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

ROOT = Path(__file__).parent
LINT_PATHS = ["teguh", "tests", "scripts", "noxfile.py"]


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite against a throwaway PostgreSQL (see docs/testing.md)."""
    session.install("-e", ".[dev,flask,sqlalchemy]")
    session.run("pytest", *session.posargs)


@nox.session(python="3.12")
def tests_django(session: nox.Session) -> None:
    """Run the Django integration tests (Django 6.1 needs Python 3.12+)."""
    session.install("-e", ".[dev,django]")
    session.run("pytest", "tests/contrib/django", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and formatting with ruff."""
    session.install(_dev_requirement("ruff"))
    session.run("ruff", "check", *LINT_PATHS)
    session.run("ruff", "format", "--check", *LINT_PATHS)


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check the library with mypy --strict (configured in pyproject.toml)."""
    session.install("-e", ".[dev,flask,sqlalchemy]")
    session.run("mypy", "teguh")


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks against teguh and its peers (``-- --quick`` for a short run)."""
    session.install("-e", ".[dev,bench]")
    session.run("python", "-m", "tests.bench", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Execute the code samples in docs/ (tests/docs)."""
    if not (ROOT / "tests" / "docs").is_dir():
        session.log("tests/docs does not exist yet: no documentation snippets to run")
        return
    session.install("-e", ".[dev,flask,sqlalchemy]")  # docs/flask.md runs its example
    session.run("pytest", "tests/docs", *session.posargs)


def _dev_requirement(name: str) -> str:
    """The pinned requirement of ``name`` in the ``dev`` extra (one source of truth)."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for requirement in extras["dev"]:
        if requirement.split("=")[0].split("[")[0].strip() == name:
            return str(requirement.split("#")[0].strip())
    raise LookupError(f"{name} is not in the dev extra of pyproject.toml")
