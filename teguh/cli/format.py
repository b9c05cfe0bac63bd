"""Output helpers of the ``teguh`` command: plain tables, key/value blocks, JSON.

Human output is plain text that reads well in a terminal and in a log file
(no colours, no box drawing). ``--json`` output is one JSON document per
command on one line, with UUIDs and timestamps as strings, so scripts can pipe
it into ``jq``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, TextIO
from uuid import UUID

__all__ = [
    "dump_json",
    "format_age",
    "format_value",
    "jsonable",
    "print_json",
    "print_kv",
    "print_table",
]

_MAX_CELL = 200


def jsonable(value: Any) -> Any:
    """Return ``value`` with dataclasses, UUIDs, datetimes and tuples made JSON-friendly."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value


def dump_json(value: Any) -> str:
    """Serialize ``value`` (after `jsonable`) as compact one-line JSON."""
    return json.dumps(jsonable(value), ensure_ascii=False, default=str)


def print_json(value: Any, file: TextIO | None = None) -> None:
    """Print ``value`` as one line of JSON."""
    print(dump_json(value), file=file or sys.stdout, flush=True)


def format_value(value: Any, *, limit: int = _MAX_CELL) -> str:
    """Render one value for a human: JSON for structures, ISO-ish for times, '-' for None."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="milliseconds")
    if isinstance(value, str | int | float | UUID):
        text = str(value)
    else:
        text = json.dumps(jsonable(value), ensure_ascii=False, default=str)
    text = text.replace("\n", " ")
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def format_age(seconds: float | None) -> str:
    """Render an age in seconds as ``850ms``, ``12.3s``, ``4m05s`` or ``2h03m``."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def print_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    right: Iterable[int] = (),
    file: TextIO | None = None,
) -> None:
    """Print rows under ``headers``, columns aligned; ``right`` lists right-aligned columns."""
    out = file or sys.stdout
    cells = [[format_value(v) if not isinstance(v, str) else v for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    align_right = set(right)

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(widths[i]) if i in align_right else v.ljust(widths[i])
            for i, v in enumerate(values)
        ]
        return "  ".join(parts).rstrip()

    print(line(headers), file=out)
    print(line(["-" * w for w in widths]), file=out)
    for row in cells:
        print(line(row), file=out)
    out.flush()


def print_kv(pairs: Iterable[tuple[str, Any]], *, file: TextIO | None = None) -> None:
    """Print ``key: value`` lines with the values aligned."""
    out = file or sys.stdout
    items = [(k, v if isinstance(v, str) else format_value(v)) for k, v in pairs]
    width = max((len(k) for k, _ in items), default=0)
    for key, value in items:
        lines = value.splitlines() or [""]
        print(f"{key + ':':<{width + 1}} {lines[0]}".rstrip(), file=out)
        for extra in lines[1:]:
            print(f"{'':<{width + 1}} {extra}".rstrip(), file=out)
    out.flush()
