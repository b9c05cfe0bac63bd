"""Check and encode the arguments of stored-function calls (used by `teguh._engine`).

Each function takes the value and the argument's name, and raises
`TypeError` for a wrong Python type or `teguh.InvalidArgument` (naming the
argument) for a value the engine cannot take, before anything is sent.

Durations: the API accepts seconds (int or float) or `timedelta`; the SQL side
takes whole seconds in most places, so `whole_seconds` rounds *up*. JSON:
params, results, checkpoints and payloads are serialized here, in Python.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict

from teguh.errors import InvalidArgument
from teguh.records import ScheduleOptions, SpawnOptions

Duration = float | int | timedelta
"""Seconds (int or float) or a `timedelta`."""

JsonDumps = Callable[[Any], str]
JsonLoads = Callable[[str | bytes], Any]

INT4_MAX = 2**31 - 1
# A NUL character, which PostgreSQL's text and jsonb cannot store, as JSON
# writes it: ``\u0000`` not preceded by an escaped backslash.
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def text(value: Any, name: str) -> str:
    """Return ``value`` if it is a str PostgreSQL can store."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__} {value!r}")
    if "\x00" in value:
        raise InvalidArgument(f"{name} must not contain a NUL character", argument=name)
    return value


def optional_text(value: Any, name: str) -> str | None:
    """Return ``value`` as `text` or None."""
    return None if value is None else text(value, name)


def integer(value: Any, name: str, low: int = -INT4_MAX - 1, high: int = INT4_MAX) -> int:
    """Return ``value`` if it is an int (not a bool) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if not low <= value <= high:
        raise InvalidArgument(
            f"{name} must be between {low} and {high}, got {value}", argument=name
        )
    return value


def uuid(value: Any, name: str) -> UUID:
    """Return ``value`` as a UUID (a `UUID` or its string form)."""
    if isinstance(value, UUID):
        return value
    if isinstance(value, str):
        try:
            return UUID(value)
        except ValueError:
            raise InvalidArgument(f"{name} is not a UUID: {value!r}", argument=name) from None
    raise TypeError(f"{name} must be a UUID, got {type(value).__name__} {value!r}")


def optional_uuid(value: Any, name: str) -> UUID | None:
    """Return ``value`` as `uuid` or None."""
    return None if value is None else uuid(value, name)


def seconds(value: Duration, name: str) -> float:
    """Return ``value`` as seconds (float); reject negatives and non-numbers."""
    if isinstance(value, timedelta):
        secs = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be seconds (int or float) or a timedelta, got {value!r}")
    else:
        secs = float(value)
    if math.isnan(secs) or secs < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    if math.isinf(secs):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return secs


def whole_seconds(value: Duration, name: str) -> int:
    """Return ``value`` as whole seconds, rounded up (a 0.2 s lease is 1 s, never 0)."""
    secs = math.ceil(seconds(value, name))
    if secs > INT4_MAX:
        raise InvalidArgument(f"{name} must be at most {INT4_MAX} seconds", argument=name)
    return secs


def aware(when: Any, name: str) -> datetime:
    """Return ``when`` if it is a datetime carrying a timezone (naive ones are ambiguous)."""
    if not isinstance(when, datetime):
        raise TypeError(f"{name} must be a datetime, got {when!r}")
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {when!r}")
    return when


def default_dumps(obj: Any) -> str:
    """Serialize with the stdlib, strictly (no NaN, which jsonb rejects)."""
    return json.dumps(obj, allow_nan=False, separators=(",", ":"))


def default_loads(data: str | bytes) -> Any:
    """Deserialize with the stdlib."""
    return json.loads(data)


def dump(dumps: JsonDumps, obj: Any, name: str) -> str:
    """Serialize ``obj`` for a jsonb argument named ``name``.

    Raises `TypeError` when it is not JSON-serializable and `InvalidArgument`
    when it holds a NUL character (jsonb cannot store one).
    """
    try:
        out: Any = dumps(obj)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise TypeError(f"{name} is not JSON-serializable: {exc}") from exc
    if not isinstance(out, str):  # a custom dumps returning bytes (orjson)
        out = bytes(out).decode()
    if "\x00" in out or ("\\u0000" in out and _JSON_NUL.search(out)):
        raise InvalidArgument(
            f"{name} contains a NUL character (\\u0000), which PostgreSQL cannot store",
            argument=name,
        )
    return str(out)


def load(loads: JsonLoads, data: str | bytes | None) -> Any:
    """Deserialize a jsonb column fetched as text; SQL null is None."""
    return None if data is None else loads(data)


_SPAWN_KEYS = frozenset(SpawnOptions.__annotations__)
_SCHEDULE_KEYS = frozenset(ScheduleOptions.__annotations__)


def unknown_options(options: Mapping[str, Any], known: frozenset[str], what: str) -> None:
    """Raise `TypeError` listing the keys of ``options`` that are not ``known`` ``what`` options."""
    unknown = set(options) - known
    if unknown:
        raise TypeError(
            f"unknown {what} option(s): {', '.join(sorted(unknown))} "
            f"(expected: {', '.join(sorted(known))})"
        )


def spawn_options(options: Mapping[str, Any], *, many: bool = False) -> dict[str, Any]:
    """Return the engine's ``options`` jsonb for `SpawnOptions` (only the keys given).

    The engine owns the defaults, so absent and None options are left out.
    """
    unknown_options(options, _SPAWN_KEYS | ({"idempotency_keys"} if many else set()), "spawn")
    out: dict[str, Any] = {}
    get = options.get
    if (headers := get("headers")) is not None:
        if not isinstance(headers, Mapping):
            raise TypeError(f"headers must be a mapping, got {headers!r}")
        out["headers"] = dict(headers)
    if (retry := get("retry_strategy")) is not None:
        if not isinstance(retry, Mapping):
            raise TypeError(f"retry_strategy must be a mapping, got {retry!r}")
        out["retry_strategy"] = dict(retry)
    if (max_attempts := get("max_attempts")) is not None:
        out["max_attempts"] = integer(max_attempts, "max_attempts")
    if (cancellation := get("cancellation")) is not None:
        if not isinstance(cancellation, Mapping):
            raise TypeError(f"cancellation must be a mapping, got {cancellation!r}")
        out["cancellation"] = {
            key: whole_seconds(value, f"cancellation[{key!r}]")
            for key, value in cancellation.items()
        }
    if (key := get("idempotency_key")) is not None:
        if many:
            raise TypeError(
                "spawn_tasks takes idempotency_keys (one per task), not idempotency_key"
            )
        out["idempotency_key"] = text(key, "idempotency_key")
    available_at, delay = get("available_at"), get("delay")
    if available_at is not None and delay is not None:
        raise ValueError("pass available_at or delay, not both")
    if available_at is not None:
        out["available_at"] = aware(available_at, "available_at").isoformat()
    if delay is not None:
        secs = seconds(delay, "delay")
        out["delay_seconds"] = int(secs) if secs.is_integer() else secs
    if (priority := get("priority")) is not None:
        out["priority"] = integer(priority, "priority")
    if (ckey := get("concurrency_key")) is not None:
        out["concurrency_key"] = concurrency_key(ckey, "concurrency_key")
    return out


def concurrency_key(value: Any, name: str, *, pattern: bool = False) -> str:
    """Return ``value`` if it is a concurrency key the engine takes.

    A non-empty str of at most 255 UTF-8 bytes; with ``pattern`` (a limit's
    key) a single ``*`` may end it (a prefix).
    """
    key = text(value, name)
    if not key:
        raise InvalidArgument(f"{name} must be a non-empty string", argument=name)
    if len(key.encode()) > 255:
        raise InvalidArgument(
            f"{name} must be at most 255 bytes, got {len(key.encode())}", argument=name
        )
    if pattern and "*" in key[:-1]:
        raise InvalidArgument(
            f'{name}: "*" may only end a key (a prefix), got {key!r}', argument=name
        )
    return key


def schedule_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Return the engine's schedule ``options`` jsonb for `ScheduleOptions` (only the keys given).

    Unknown keys raise `TypeError` here; the engine checks the values
    (`teguh.InvalidArgument` naming the option) and owns the defaults, so
    None options are left out.
    """
    unknown_options(options, _SCHEDULE_KEYS, "schedule")
    return {
        key: dict(value) if isinstance(value, Mapping) else value
        for key, value in options.items()
        if value is not None
    }


def conninfo(value: Any) -> str:
    """Return a connection string if libpq can parse it (`InvalidArgument` with its error)."""
    if not isinstance(value, str):
        raise TypeError(f"conninfo must be a str, got {type(value).__name__} {value!r}")
    try:
        conninfo_to_dict(value)
    except ProgrammingError as exc:
        raise InvalidArgument(f"invalid conninfo: {exc}", argument="conninfo") from exc
    return value
