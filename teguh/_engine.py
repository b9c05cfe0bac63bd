"""The one place that calls teguh's stored functions.

`Engine` has one method per stored function the library uses. Each takes the
connection to run on first (the caller owns it: a pooled connection, a
worker's own, or an application's connection inside its transaction) and:

- encodes the arguments, checking their Python types first, so that a wrong
  type raises `TypeError` and a value the engine cannot store raises
  `teguh.InvalidArgument`, both naming the argument, before anything is sent;
- decodes rows by column name into the records of `teguh.records`
  (`_decoder`), jsonb columns with the engine's ``loads``;
- maps SQLSTATEs to teguh's exceptions in one table (`translate`).

`Client`, the worker, its completer and `TaskContext` all go through here.
The calls are grouped by concept: `teguh._engine_core` (plumbing, SQLSTATE
translation, row decoding), `teguh._engine_worker` (the worker protocol),
`teguh._engine_admin` (queues, tasks, schedules, policies); spawning, which
both sides use, is here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from teguh import _queries as Q
from teguh._arguments import (
    INT4_MAX,
    Duration,
    JsonDumps,
    JsonLoads,
    aware,
    conninfo,
    default_dumps,
    default_loads,
    dump,
    integer,
    load,
    optional_text,
    optional_uuid,
    schedule_options,
    seconds,
    spawn_options,
    text,
    unknown_options,
    uuid,
    whole_seconds,
)
from teguh._engine_admin import AdminCalls
from teguh._engine_core import MAX_TRACEBACK, Conn, clean, failure_reason, translate
from teguh._engine_worker import QueueClaim, WorkerCalls
from teguh.records import SpawnResult

__all__ = [
    "INT4_MAX",
    "MAX_TRACEBACK",
    "Duration",
    "Engine",
    "JsonDumps",
    "JsonLoads",
    "QueueClaim",
    "aware",
    "clean",
    "conninfo",
    "default_dumps",
    "default_loads",
    "dump",
    "failure_reason",
    "integer",
    "load",
    "optional_text",
    "optional_uuid",
    "schedule_options",
    "seconds",
    "spawn_options",
    "text",
    "translate",
    "unknown_options",
    "uuid",
    "whole_seconds",
]


class Engine(WorkerCalls, AdminCalls):
    """Call the stored functions on a connection the caller provides.

    ``dumps``/``loads`` serialize params, results, checkpoints and payloads.
    Thread-safe: it holds no connection.
    """

    # -- spawning -------------------------------------------------------------------

    def spawn_task(
        self, conn: Conn, queue: str, task_name: str, params: Any, options: Mapping[str, Any]
    ) -> SpawnResult:
        args = (
            text(queue, "queue"),
            text(task_name, "task_name"),
            dump(self.dumps, params, "params"),
            dump(self.dumps, spawn_options(options), "options"),
        )
        return self.records(conn, SpawnResult, Q.SPAWN_TASK, args)[0]

    def spawn_tasks(
        self,
        conn: Conn,
        queue: str,
        task_name: str,
        params: Sequence[Any],
        options: Mapping[str, Any],
    ) -> list[SpawnResult]:
        encoded = spawn_options(options, many=True)
        keys = options.get("idempotency_keys")
        if keys is not None:
            keys = [optional_text(k, "idempotency_keys") for k in keys]
            if len(keys) != len(params):
                raise ValueError(
                    f"idempotency_keys has {len(keys)} elements, params has {len(params)}"
                )
            encoded["idempotency_keys"] = keys
        if not params:
            return []
        args = (
            text(queue, "queue"),
            text(task_name, "task_name"),
            dump(self.dumps, list(params), "params"),
            dump(self.dumps, encoded, "options"),
        )
        return self.records(conn, SpawnResult, Q.SPAWN_TASKS, args)
