"""Settings of the teguh task backends, and Django's connections for them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool

from teguh.client import Client

BACKEND_PATH = "teguh.contrib.django.TeguhBackend"
DEFAULT_DATABASE = "default"

# Keys of Django's connection parameters that are not libpq settings.
_NOT_LIBPQ = frozenset({"cursor_factory", "context", "prepare_threshold", "pool"})


@dataclass(frozen=True)
class BackendSettings:
    """One ``settings.TASKS`` entry that uses `TeguhBackend`."""

    alias: str
    database: str
    queues: tuple[str, ...]


def teguh_backends() -> list[BackendSettings]:
    """Return every ``settings.TASKS`` entry whose backend is teguh's."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    from teguh.contrib.django.backend import TeguhBackend

    found: list[BackendSettings] = []
    for alias, params in getattr(settings, "TASKS", {}).items():
        path = params.get("BACKEND", "")
        try:
            cls = import_string(path)
        except ImportError:
            continue
        if isinstance(cls, type) and issubclass(cls, TeguhBackend):
            options = params.get("OPTIONS", {})
            found.append(
                BackendSettings(
                    alias=alias,
                    database=options.get("DATABASE", DEFAULT_DATABASE),
                    queues=tuple(params.get("QUEUES", ["default"])),
                )
            )
    return found


def raw_connection(alias: str) -> psycopg.Connection[Any]:
    """Return the psycopg 3 connection Django uses for database ``alias`` (connecting it).

    Statements on it share Django's transaction: inside ``atomic()`` they
    commit or roll back with it.
    """
    from django.db import connections

    wrapper = connections[alias]
    if wrapper.vendor != "postgresql":
        raise TypeError(
            f"teguh needs PostgreSQL; database {alias!r} uses the {wrapper.vendor} backend"
        )
    wrapper.ensure_connection()
    wrapper.validate_no_broken_transaction()
    raw = wrapper.connection
    if not isinstance(raw, psycopg.Connection):
        raise TypeError(
            f"teguh needs psycopg 3; database {alias!r} is connected with "
            f"{type(raw).__module__}: pip install 'psycopg[binary]' (Django prefers it)"
        )
    return raw


def conninfo(alias: str) -> str:
    """Return a libpq connection string for Django's database ``alias`` (for worker pools)."""
    from django.db import connections

    params = connections[alias].get_connection_params()
    return make_conninfo(
        "", **{k: v for k, v in params.items() if k not in _NOT_LIBPQ and v is not None}
    )


def unpooled_pool() -> ConnectionPool[Any]:
    """Return a pool that is never opened: for apps and clients used only with ``conn=``."""
    return ConnectionPool("", open=False, name="teguh-django-unused")


def connection_client(*, check_schema: bool = True) -> Client:
    """Return a `Client` for calls on a caller's connection: its pool never opens."""
    return Client(pool=unpooled_pool(), check_schema=check_schema)
