"""Install or upgrade the schema and create the queues, through Django's connection."""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from teguh import schema as teguh_schema
from teguh.contrib.django._conf import connection_client, raw_connection, teguh_backends

logger = logging.getLogger("teguh.contrib.django")


def sync(database: str, conn: psycopg.Connection[Any] | None = None) -> bool:
    """Bring database ``database`` up to date for the teguh backends that use it.

    Installs the schema when it is missing, migrates it when it is older, and
    creates every queue named in those backends' ``QUEUES``. Does nothing (and
    returns False) when no teguh backend uses this database.
    """
    queues = sorted({q for b in teguh_backends() if b.database == database for q in b.queues})
    if not queues:
        return False
    conn = conn if conn is not None else raw_connection(database)
    version = teguh_schema.installed_version(conn)
    if version is None:
        teguh_schema.install(conn)
    elif version != teguh_schema.SCHEMA_VERSION:
        teguh_schema.migrate(conn)
    client = connection_client()
    existing = set(client.list_queues(conn=conn))
    for queue in queues:
        if queue not in existing:
            client.create_queue(queue, conn=conn)
            logger.info("created teguh queue %r in database %r", queue, database)
    return True
