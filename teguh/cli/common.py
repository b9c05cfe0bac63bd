"""Shared plumbing of the ``teguh`` command: errors, argument types, environment, session.

Used by `teguh.cli` (the parser and the simple subcommands), `teguh._cli_worker`
and `teguh.demo`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from typing import Any, NoReturn
from uuid import UUID

import psycopg
from psycopg_pool import ConnectionPool

from teguh.client import Client

__all__ = [
    "ENV_PREFIX",
    "CliError",
    "Parser",
    "Session",
    "apply_env",
    "connect",
    "env_name",
    "int_arg",
    "json_arg",
    "json_object_arg",
    "one_line",
    "positive_int",
    "positive_seconds",
    "seconds_arg",
    "uuid_arg",
]

ENV_PREFIX = "TEGUH_"
_CONNECT_TIMEOUT = 10
_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}


class CliError(Exception):
    """A user-facing error: `main` prints it as one line and exits with ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    """An `ArgumentParser` whose usage errors are one line on stderr (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


# -- argument types ---------------------------------------------------------------


def json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"malformed JSON {one_line(exc)}") from None
    except RecursionError:
        raise argparse.ArgumentTypeError("JSON nested too deeply") from None


def json_object_arg(text: str) -> dict[str, Any]:
    value = json_arg(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def uuid_arg(text: str) -> UUID:
    try:
        return UUID(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a task id (a UUID like 01926f3e-7a4b-7c3d-9e8f-0a1b2c3d4e5f)"
        ) from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def int_arg(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds (e.g. 2.5), got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, got {text!r}")
    return value


def positive_seconds(text: str) -> float:
    value = seconds_arg(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text!r}")
    return value


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Return ``parser`` and all its subcommand parsers."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for child in action.choices.values():
                if id(child) not in seen:
                    seen.add(id(child))
                    found += _parsers(child)
    return found


def env_name(action: argparse.Action) -> str | None:
    """Return the ``TEGUH_*`` variable of an option (None for positionals and --help)."""
    longs = [s for s in action.option_strings if s.startswith("--")]
    if not longs or action.dest in ("help", "version"):
        return None
    return ENV_PREFIX + longs[0][2:].upper().replace("-", "_")


def apply_env(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """Use ``TEGUH_<OPTION>`` variables as the defaults of the matching options."""
    for p in _parsers(parser):
        for action in p._actions:
            name = env_name(action)
            if name is None or name not in environ or action.default is argparse.SUPPRESS:
                continue
            raw = environ[name]
            value: Any
            if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
                if raw.strip().lower() not in _TRUE | _FALSE:
                    raise CliError(f"{name}={raw!r}: expected 1/0, true/false, yes/no", 2)
                value = (raw.strip().lower() in _TRUE) == isinstance(
                    action, argparse._StoreTrueAction
                )
            elif isinstance(action, argparse._CountAction):
                if raw.strip().lower() in _TRUE - {"1"}:
                    value = 1
                else:
                    try:
                        value = int(raw or 0)
                    except ValueError:
                        raise CliError(f"{name}={raw!r}: expected a number", 2) from None
            else:
                convert: Callable[[str], Any] = action.type or str  # type: ignore[assignment]
                try:
                    value = convert(raw)
                except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
                    raise CliError(f"{name}={raw!r}: {exc}", 2) from None
                if action.choices is not None and value not in action.choices:
                    raise CliError(f"{name}={raw!r}: expected one of {list(action.choices)}", 2)
            action.default = value
            action.required = False


# -- the session --------------------------------------------------------------------


class Session:
    """The database side of one command: a connection opened on first use.

    The CLI opens one plain connection itself (no pool), so that a bad DSN or a
    server that is down fails at once with libpq's message.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.dsn: str = args.dsn or ""
        self._conn: psycopg.Connection[Any] | None = None
        self._client: Client | None = None

    def connect(self) -> psycopg.Connection[Any]:
        """Return the session's autocommit connection, opening it if needed."""
        if self._conn is None:
            self._conn = connect(self.dsn)
        return self._conn

    def client(self) -> Client:
        """Return a `Client` whose every call runs on `connect`'s connection."""
        if self._client is None:
            self.connect()
            # Never opened: every call passes conn=; the pool only carries the DSN.
            pool: ConnectionPool[Any] = ConnectionPool(self.dsn, open=False, min_size=1)
            self._client = Client(pool)
        return self._client

    def checked(self) -> tuple[Client, psycopg.Connection[Any]]:
        """Return the client and connection after checking the schema version."""
        client, conn = self.client(), self.connect()
        client.check_schema(conn=conn)
        return client, conn

    def close(self) -> None:
        """Close the connection if it was opened."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def connect(dsn: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """Open an autocommit connection, turning failures into a one-line `CliError`."""
    kwargs.setdefault("connect_timeout", _CONNECT_TIMEOUT)
    kwargs.setdefault("application_name", "teguh-cli")
    try:
        return psycopg.connect(dsn, autocommit=True, **kwargs)
    except psycopg.ProgrammingError as exc:  # a malformed conninfo string
        raise CliError(f"invalid DSN: {one_line(exc)}") from None
    except psycopg.OperationalError as exc:
        hint = ""
        if not dsn:
            hint = " (no --dsn and no TEGUH_DSN: libpq's defaults and PG* variables were used)"
        raise CliError(f"cannot connect to PostgreSQL: {one_line(exc)}{hint}") from None


def one_line(exc: BaseException) -> str:
    """Return an exception's message on one line."""
    text = str(exc).strip() or type(exc).__name__
    return " ".join(part.strip() for part in text.splitlines() if part.strip())
