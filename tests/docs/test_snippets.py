"""Execute the code samples of README.md and docs/*.md so they cannot rot.

Convention for documentation writers:

- A fenced block whose info string is ``python`` or ``sql`` is executed; add
  ``skip`` to the info string (```` ```python skip ````) for one that cannot run
  here (it needs Flask, systemd, a Go toolchain, ...). A block whose info
  string names a file (```` ```python file=conftest.py ````) is a file the
  reader saves, not code they run: a test of its own runs it (e.g.
  tests/testing runs docs/testing-your-tasks.md's files under pytest). Other languages
  (``sh``, ``go``, ``ini``) are never run.
- A file's blocks run in order against one fresh database that has teguh
  installed, exactly as a reader would run them: Python blocks share one
  namespace in which nothing is predefined; SQL blocks run in autocommit on
  their own connection (as in psql). The one thing a reader is told to set up
  is the environment variable ``TEGUH_DSN`` (docs/quickstart.md: ``export
  TEGUH_DSN=postgresql://...``), which the runner points at the fresh
  database; a page that needs a connection string in Python says so in its
  code (``dsn = os.environ["TEGUH_DSN"]``).
- Blocks must finish on their own: stop any worker they start.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("**/*.md")])
_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def blocks(path: Path) -> list[tuple[str, str, int]]:
    """The runnable (language, code, line) blocks of a Markdown file, in order."""
    text = path.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        words = match.group(1).split()
        if not words or words[0] not in ("python", "sql"):
            continue
        if "skip" in words[1:] or any(w.startswith("file=") for w in words[1:]):
            continue
        found.append((words[0], match.group(2), text.count("\n", 0, match.start()) + 1))
    return found


RUNNABLE = [p for p in DOCS if blocks(p)]


def test_some_documentation_is_executed() -> None:
    assert RUNNABLE, "no runnable code blocks found in README.md or docs/"


@pytest.mark.parametrize("path", RUNNABLE, ids=[str(p.relative_to(ROOT)) for p in RUNNABLE])
def test_code_blocks_run(path: Path, dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEGUH_DSN", dsn)
    namespace: dict[str, Any] = {"__name__": f"docs_{path.stem}"}
    for language, code, line in blocks(path):
        where = f"{path.relative_to(ROOT)}:{line}"
        try:
            if language == "python":
                exec(compile(code, where, "exec"), namespace)  # noqa: S102 - our own docs
            else:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute(code.encode())
        except Exception as exc:
            raise AssertionError(f"{language} block at {where} failed: {exc!r}") from exc
