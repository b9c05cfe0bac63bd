"""Start benchmark children and read their results, every wait bounded."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.bench.common import READY_LINE, RESULT_PREFIX, BenchFailure

REPO = Path(__file__).resolve().parents[2]


def _cmd(tool: str, role: str, args: dict[str, Any]) -> list[str]:
    return [sys.executable, "-m", "tests.bench.child", tool, role, json.dumps(args)]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    # DBOS and others print banners or telemetry hints; keep children quiet and local.
    env.setdefault("DBOS__CLOUD", "false")
    return env


def _parse(tool: str, role: str, rc: int, out: str, err: str) -> dict[str, Any]:
    for line in reversed(out.splitlines()):
        if line.startswith(RESULT_PREFIX):
            if rc != 0:
                break
            result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            return result
    tail = "\n".join(err.strip().splitlines()[-25:])
    raise BenchFailure(f"{tool} {role} child failed (exit {rc}):\n{tail}")


def run_child(tool: str, role: str, args: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
    """Run a child to completion and return its result."""
    try:
        proc = subprocess.run(
            _cmd(tool, role, args),
            cwd=REPO,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchFailure(f"{tool} {role} child timed out after {timeout:.0f}s") from exc
    return _parse(tool, role, proc.returncode, proc.stdout, proc.stderr)


class Child:
    """A child running in the background (a worker), whose READY line can be awaited."""

    def __init__(self, tool: str, role: str, args: dict[str, Any]) -> None:
        self.tool, self.role = tool, role
        self._proc = subprocess.Popen(
            _cmd(tool, role, args),
            cwd=REPO,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._out: list[str] = []
        self._err: list[str] = []
        self._t_out = threading.Thread(
            target=self._pump, args=(self._proc.stdout, True), name=f"bench-{tool}-out", daemon=True
        )
        self._t_err = threading.Thread(
            target=self._pump,
            args=(self._proc.stderr, False),
            name=f"bench-{tool}-err",
            daemon=True,
        )
        self._t_out.start()
        self._t_err.start()

    def _pump(self, stream: Any, is_out: bool) -> None:
        for line in stream:
            if is_out:
                self._out.append(line)
                self._lines.put(line.rstrip("\n"))
            else:
                self._err.append(line)
        if is_out:
            self._lines.put(None)

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise BenchFailure(f"{self.tool} {self.role} child not ready after {timeout:.0f}s")
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self._proc.wait(timeout=30)
                self._t_err.join(timeout=5)
                _parse(self.tool, self.role, self._proc.returncode or 1, "", "".join(self._err))
            if line == READY_LINE:
                return

    def result(self, timeout: float = 600) -> dict[str, Any]:
        try:
            rc = self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            self.kill()
            raise BenchFailure(
                f"{self.tool} {self.role} child timed out after {timeout:.0f}s"
            ) from exc
        self._t_out.join(timeout=10)
        self._t_err.join(timeout=10)
        return _parse(self.tool, self.role, rc, "".join(self._out), "".join(self._err))

    def kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=10)
