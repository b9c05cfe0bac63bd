"""Throwaway databases with teguh installed: one template per server, one clone per test."""

from __future__ import annotations

import itertools
import os
import secrets
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from teguh import schema

_counter = itertools.count(1)


class TestDatabases:
    """Create databases with teguh installed on the server at ``admin_dsn``, fast.

    `create_template` installs ``schema/teguh.sql`` once, in database
    ``<prefix>_template`` (fake time allowed: ``teguh.allow_fake_time``); then
    `create` clones it with ``CREATE DATABASE ... TEMPLATE`` (milliseconds, no
    SQL replayed) and `drop` removes a clone, ending what is still connected
    to it. ``admin_dsn`` needs the right to create databases. The prefix
    includes the process id, pytest-xdist's worker name and a random part, so
    runs sharing a server do not collide. A run killed with SIGKILL leaves
    its databases behind (``<prefix>_<pid>...``) on a server you provide.
    """

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, admin_dsn: str, prefix: str = "teguh_test") -> None:
        self.admin_dsn = admin_dsn
        worker = os.environ.get("PYTEST_XDIST_WORKER", "")
        # unique per instance: two sessions in one process (pytester) must not
        # drop each other's template
        self.prefix = f"{prefix}_{os.getpid()}{worker}_{secrets.token_hex(3)}"
        self.template = f"{self.prefix}_template"
        self._template_ready = False

    def dsn(self, dbname: str) -> str:
        """The connection string of database ``dbname`` on the same server."""
        return make_conninfo(self.admin_dsn, dbname=dbname)

    def _admin(self, statement: sql.Composed) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(statement)

    def create_template(self) -> str:
        """Create the template database with teguh installed (once); return its name."""
        if not self._template_ready:
            self._drop(self.template)
            self._admin(sql.SQL("create database {}").format(sql.Identifier(self.template)))
            with psycopg.connect(self.dsn(self.template), autocommit=True) as conn:
                schema.install(conn)
                conn.execute("select teguh.allow_fake_time(true)")
            self._template_ready = True
        return self.template

    def create(self) -> str:
        """Create a fresh database cloned from the template; return its connection string."""
        template = self.create_template()
        name = f"{self.prefix}_{next(_counter)}"
        self._admin(
            sql.SQL("create database {} template {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
        return self.dsn(name)

    def drop(self, dsn: str) -> None:
        """Drop the database of ``dsn`` (created by `create`), disconnecting its sessions."""
        params: dict[str, Any] = psycopg.conninfo.conninfo_to_dict(dsn)
        self._drop(str(params["dbname"]))

    def _drop(self, name: str) -> None:
        self._admin(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))

    def close(self) -> None:
        """Drop the template database."""
        if self._template_ready:
            self._drop(self.template)
            self._template_ready = False
