"""The plumbing every engine call shares: SQLSTATE translation, failure
reasons, and decoding rows into records by column name.

`EngineCore` runs a statement on the caller's connection; the calls
themselves live in `teguh._engine` (spawning), `teguh._engine_worker` (the
worker protocol) and `teguh._engine_admin` (queues, tasks, schedules).
"""

from __future__ import annotations

import dataclasses
import logging
import traceback
from collections.abc import Callable, Sequence
from typing import Any, LiteralString, TypeVar

import psycopg

from teguh._arguments import JsonDumps, JsonLoads, default_dumps, default_loads
from teguh.errors import (
    InvalidArgument,
    InvalidState,
    QueueNotFound,
    RunNotActive,
    SchemaMissing,
    TaskCancelled,
    TaskNotFound,
    TeguhError,
    TeguhSignal,
)
from teguh.records import (
    Run,
    ScheduleInfo,
    TaskInfo,
    TaskResult,
    TaskSummary,
    WaitResult,
)

Conn = psycopg.Connection[Any]
logger = logging.getLogger("teguh.client")
R = TypeVar("R")


# -- SQLSTATE -> exception: the one table ---------------------------------------

_SIMPLE: dict[str, type[TeguhError] | type[TeguhSignal]] = {
    "42704": QueueNotFound,
    "P0002": TaskNotFound,
    "AB001": TaskCancelled,
    "AB002": RunNotActive,
    "55000": InvalidState,
}


def translate(exc: psycopg.Error) -> TeguhError | TeguhSignal | None:
    """Return the teguh exception for a psycopg error, or None if it has none."""
    state = exc.sqlstate
    if state is None:
        return None
    message = exc.diag.message_primary or str(exc)
    if state == "22023":
        return InvalidArgument(message, argument=exc.diag.column_name)
    if state == "3F000" and "teguh" in message:
        return SchemaMissing(
            f"the teguh schema is not installed in this database ({message}): run `teguh install`"
        )
    cls = _SIMPLE.get(state)
    return None if cls is None else cls(message)


# -- failure reasons ---------------------------------------------------------------

MAX_TRACEBACK = 16 * 1024
"""Stored tracebacks are cut to this many characters (the end is kept)."""
_CUT = "... [traceback cut to the last 16 KiB] ...\n"


def failure_reason(exc: BaseException) -> dict[str, str]:
    """Describe ``exc`` as ``{"name", "message", "traceback"}``, whatever it holds.

    Never raises: an exception whose ``__str__`` raises is described by its
    class, characters PostgreSQL cannot store (NUL, lone surrogates) are
    escaped, and the traceback is cut to its last `MAX_TRACEBACK` characters,
    so that the failure itself is always recorded.
    """
    name = type(exc).__qualname__
    try:
        message = str(exc)
    except Exception as inner:  # a broken __str__ must not lose the failure
        message = f"<{name}.__str__ raised {type(inner).__qualname__}>"
    try:
        trace = "".join(traceback.format_exception(exc))
    except Exception:
        trace = ""
    if len(trace) > MAX_TRACEBACK:
        trace = _CUT + trace[-(MAX_TRACEBACK - len(_CUT)) :]
    return {"name": clean(name), "message": clean(message), "traceback": clean(trace)}


def clean(text: str) -> str:
    """Escape what a PostgreSQL text or jsonb value cannot hold (NUL, lone surrogates)."""
    return text.replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode("utf-8")


# -- row decoding by column name -------------------------------------------------

# The jsonb columns of each record, fetched as text and decoded with ``loads``.
_JSON_FIELDS: dict[type[Any], frozenset[str]] = {
    Run: frozenset({"params", "retry_strategy", "headers", "event_payload"}),
    TaskInfo: frozenset(
        {"params", "headers", "retry_strategy", "completed_payload", "last_failure"}
    ),
    TaskResult: frozenset({"completed_payload"}),
    WaitResult: frozenset({"payload"}),
    ScheduleInfo: frozenset({"params", "options"}),
    TaskSummary: frozenset({"params", "headers", "last_failure"}),
}
_Decoder = Callable[[Sequence[Any]], Any]
_decoders: dict[tuple[type[Any], tuple[str, ...]], tuple[int, ...]] = {}


def _columns(cls: type[Any], names: tuple[str, ...]) -> tuple[int, ...]:
    """Return, for each field of ``cls`` in order, the index of its column."""
    key = (cls, names)
    found = _decoders.get(key)
    if found is None:
        index = {name: i for i, name in enumerate(names)}
        fields = [f.name for f in dataclasses.fields(cls)]
        missing = [f for f in fields if f not in index]
        if missing:
            raise TeguhError(
                f"the engine returned no column {missing} for {cls.__name__}: "
                "is the installed schema the library's version?"
            )
        found = _decoders[key] = tuple(index[f] for f in fields)
    return found


def _names(cursor: psycopg.Cursor[Any]) -> tuple[str, ...]:
    # from the result itself: cursor.description builds a Column per column
    result = cursor.pgresult
    if result is None:
        return ()
    return tuple((result.fname(i) or b"").decode() for i in range(result.nfields))


class EngineCore:
    """Run statements on a connection the caller provides.

    ``dumps``/``loads`` serialize params, results, checkpoints and payloads.
    Thread-safe: it holds no connection.
    """

    def __init__(self, dumps: JsonDumps | None = None, loads: JsonLoads | None = None) -> None:
        self.dumps: JsonDumps = dumps or default_dumps
        self.loads: JsonLoads = loads or default_loads
        self._decoders: dict[tuple[type[Any], tuple[str, ...]], _Decoder] = {}

    # -- plumbing -------------------------------------------------------------------

    def execute(
        self,
        conn: Conn,
        query: LiteralString,
        params: Sequence[Any],
        *,
        prepare: bool | None = None,
    ) -> psycopg.Cursor[Any]:
        """Run ``query``, mapping a database error to teguh's exception (``from`` it)."""
        try:
            return conn.execute(query, params, prepare=prepare)
        except psycopg.Error as exc:
            if (mapped := translate(exc)) is None:
                raise
            raise mapped from exc

    def value(self, conn: Conn, query: LiteralString, params: Sequence[Any] = ()) -> Any:
        """Return the first column of the first row (None without rows)."""
        row = self.execute(conn, query, params).fetchone()
        return None if row is None else row[0]

    def records(
        self,
        conn: Conn,
        cls: type[R],
        query: LiteralString,
        params: Sequence[Any],
        *,
        prepare: bool | None = None,
    ) -> list[R]:
        """Run ``query`` and decode every row into ``cls`` by column name."""
        cur = self.execute(conn, query, params, prepare=prepare)
        rows = cur.fetchall()
        if not rows:
            return []
        decode = self.decoder(cls, _names(cur))
        return [decode(row) for row in rows]

    def decoder(self, cls: type[R], names: tuple[str, ...]) -> Callable[[Sequence[Any]], R]:
        """Return a function turning a row with columns ``names`` into a ``cls``."""
        key = (cls, names)
        cached = self._decoders.get(key)
        if cached is None:
            cached = self._decoders[key] = self._make_decoder(cls, names)
        return cached

    def _make_decoder(self, cls: type[R], names: tuple[str, ...]) -> Callable[[Sequence[Any]], R]:
        index = _columns(cls, names)
        json_fields = _JSON_FIELDS.get(cls, frozenset())
        fields = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        loads = self.loads
        json_at = frozenset(i for i, f in zip(index, fields, strict=True) if f in json_fields)

        def decode(row: Sequence[Any]) -> R:
            return cls(
                *[
                    (None if row[i] is None else loads(row[i])) if i in json_at else row[i]
                    for i in index
                ]
            )

        return decode
