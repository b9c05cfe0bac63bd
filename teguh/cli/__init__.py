"""The ``teguh`` command (console script and ``python -m teguh``); see `teguh.cli.main`."""

from __future__ import annotations

from teguh.cli.common import CliError
from teguh.cli.main import build_parser, main

__all__ = ["CliError", "build_parser", "main"]
