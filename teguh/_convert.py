"""Conversions between Python values and what the stored functions take.

Durations: the API accepts seconds (int or float) or `timedelta`; the SQL side
takes whole seconds (``int``) in most places, so `whole_seconds` rounds *up*
(a 0.2 s lease is a 1 s lease, never a 0 s one). Sleeps keep fractions and are
computed in SQL with ``make_interval(secs => ...)``.

JSON: params, results, checkpoints and payloads are serialized here, in
Python, before anything is sent, so a value that cannot be serialized raises
`TypeError` before the database sees anything.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

Duration = float | int | timedelta
"""Seconds (int or float) or a `timedelta`."""

JsonDumps = Callable[[Any], str]
JsonLoads = Callable[[str | bytes], Any]


def seconds(value: Duration, what: str) -> float:
    """Return ``value`` as seconds (float); reject negatives and non-numbers."""
    if isinstance(value, timedelta):
        secs = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be seconds (int or float) or a timedelta, got {value!r}")
    else:
        secs = float(value)
    if math.isnan(secs) or secs < 0:
        raise ValueError(f"{what} must be >= 0, got {value!r}")
    return secs


def whole_seconds(value: Duration, what: str) -> int:
    """Return ``value`` as whole seconds, rounded up."""
    return math.ceil(seconds(value, what))


def aware(when: datetime, what: str) -> datetime:
    """Return ``when`` if it carries a timezone; naive datetimes are ambiguous."""
    if not isinstance(when, datetime):
        raise TypeError(f"{what} must be a datetime, got {when!r}")
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {when!r}")
    return when


def default_dumps(obj: Any) -> str:
    """Serialize with the stdlib, strictly (no NaN, which jsonb rejects)."""
    return json.dumps(obj, allow_nan=False, separators=(",", ":"))


def default_loads(data: str | bytes) -> Any:
    """Deserialize with the stdlib."""
    return json.loads(data)


def dump(dumps: JsonDumps, obj: Any, what: str) -> str:
    """Serialize ``obj``, raising `TypeError` that names ``what`` on failure."""
    try:
        return dumps(obj)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} is not JSON-serializable: {exc}") from exc


def load(loads: JsonLoads, data: str | bytes | None) -> Any:
    """Deserialize a jsonb column fetched as text; SQL null is None."""
    if data is None:
        return None
    return loads(data)
