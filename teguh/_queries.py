"""Every SQL statement the Python side sends, in one place.

jsonb arguments are sent as text already serialized by the caller (so
serialization errors happen before anything is sent, and the JSON codec is
pluggable); jsonb results are fetched as ``::text`` and deserialized by the
caller for the same reason. The only dynamic identifier, the LISTEN channel,
goes through `psycopg.sql`.
"""

from __future__ import annotations

from typing import LiteralString

from psycopg import sql

# -- schema ---------------------------------------------------------------------

VERSION: LiteralString = "select teguh.version()"
SCHEMA_EXISTS: LiteralString = "select to_regnamespace('teguh') is not null"
# Serializes concurrent installs/migrations of the same database.
INSTALL_LOCK: LiteralString = "select pg_advisory_xact_lock(hashtextextended('teguh.install', 0))"
# What schema teguh holds when teguh.version() is missing: (schema exists,
# teguh.queues exists, relations, functions, the set-aside name is taken).
INSPECT_FOREIGN_SCHEMA: LiteralString = (
    "select to_regnamespace('teguh') is not null, to_regclass('teguh.queues') is not null,"
    " (select count(*) from pg_class c where c.relnamespace = to_regnamespace('teguh')),"
    " (select count(*) from pg_proc p where p.pronamespace = to_regnamespace('teguh')),"
    " to_regnamespace('teguh_go_reference') is not null"
)
# The Go reference's schema is set aside, teguh.sql applied, then its data imported.
SET_ASIDE_GO_REFERENCE: LiteralString = "alter schema teguh rename to teguh_go_reference"
IMPORT_GO_REFERENCE: LiteralString = "select teguh._import_go_reference('teguh_go_reference')"

# -- queues ---------------------------------------------------------------------

CREATE_QUEUE: LiteralString = "select teguh.create_queue(%s)"
DROP_QUEUE: LiteralString = "select teguh.drop_queue(%s)"
LIST_QUEUES: LiteralString = "select queue_name from teguh.list_queues()"

# -- spawning -------------------------------------------------------------------

SPAWN_TASK: LiteralString = (
    "select task_id, run_id, attempt, created from teguh.spawn_task(%s, %s, %s::jsonb, %s::jsonb)"
)
SPAWN_TASKS: LiteralString = (
    "select task_id, run_id, attempt, created from teguh.spawn_tasks(%s, %s, %s::jsonb, %s::jsonb)"
)

# -- workers --------------------------------------------------------------------

# claim_runs is claim_task with the attempt number a resume keeps (claim_task
# reports the Go client's run sequence instead).
CLAIM_TASK: LiteralString = (
    "select run_id, task_id, attempt, task_name, params::text, retry_strategy::text,"
    " max_attempts, headers::text, wake_event, event_payload::text"
    " from teguh.claim_runs(%s, %s, %s, %s)"
)
# The worker's claims commit synchronously, like every other write. An
# asynchronous claim (synchronous_commit off) lost in a server crash left the
# task claimable again with the same run id while its handler already ran:
# two executions then passed every fence (checkpoints written twice). The
# chaos suite (tests/chaos) restarts the server right after claims to check.
WORKER_CLAIM_TASK: LiteralString = CLAIM_TASK
# The dispatcher's claim: claim_runs plus, after a short claim, one last row
# with a null run_id whose next_wake_in is the seconds until the queue's next
# due time (on the database clock), so a short claim needs no second round trip.
CLAIM_RUNS_NEXT: LiteralString = (
    "select run_id, task_id, attempt, task_name, params::text, retry_strategy::text,"
    " max_attempts, headers::text, wake_event, event_payload::text, next_wake_in"
    " from teguh.claim_runs_next(%s, %s, %s, %s)"
)
# The dispatcher's claim across several queues: claim_runs_next per queue, in
# one transaction (one commit), each row led by its queue's name.
CLAIM_QUEUES_NEXT: LiteralString = (
    "select queue_name, run_id, task_id, attempt, task_name, params::text, retry_strategy::text,"
    " max_attempts, headers::text, wake_event, event_payload::text, next_wake_in"
    " from teguh.claim_queues_next(%s::text[], %s, %s, %s::integer[], %s)"
)
COMPLETE_RUN: LiteralString = "select teguh.complete_run(%s, %s, %s::jsonb)"
# Many completions in one statement; returns the runs it could not complete.
COMPLETE_RUNS: LiteralString = (
    "select run_id, status from teguh.complete_runs(%s, %s::uuid[], %s::jsonb[])"
)
FAIL_RUN: LiteralString = "select teguh.fail_run(%s, %s, %s::jsonb, %s)"
SCHEDULE_RUN: LiteralString = "select teguh.schedule_run(%s, %s, %s)"
# Releases a run at once (pending again, no attempt consumed).
RELEASE_RUN: LiteralString = "select teguh.release_run(%s, %s)"
# Hands back a run with no handler here; fails its task after too many hand-backs.
HAND_BACK_RUN: LiteralString = "select teguh.hand_back_run(%s, %s, %s, %s, %s)"
EXTEND_CLAIM: LiteralString = "select teguh.extend_claim(%s, %s, %s)"
EXTEND_CLAIMS: LiteralString = (
    "select run_id, status from teguh.extend_claims(%s, %s, %s::uuid[], %s)"
)
NEXT_WAKE_AT: LiteralString = "select teguh.next_wake_at(%s)"

# -- steps and events -----------------------------------------------------------

SET_CHECKPOINT: LiteralString = (
    "select teguh.set_task_checkpoint_state(%s, %s, %s, %s::jsonb, %s, %s)"
)
GET_CHECKPOINT: LiteralString = "select teguh.get_task_checkpoint_state(%s, %s, %s)::text"
GET_CHECKPOINTS: LiteralString = (
    "select checkpoint_name, state::text from teguh.get_task_checkpoint_states(%s, %s, %s)"
)
# A handler's checkpoints and the database's now, in one round trip that
# always returns one row.
LOAD_CHECKPOINTS: LiteralString = (
    "select teguh.current_time(),"
    " (select coalesce(jsonb_object_agg(checkpoint_name, state), '{}')"
    "  from teguh.get_task_checkpoint_states(%s, %s, %s))::text"
)
WAIT_EVENT: LiteralString = (
    "select should_suspend, payload::text, timed_out from teguh.wait_event(%s, %s, %s, %s, %s, %s)"
)
EMIT_EVENT: LiteralString = "select teguh.emit_event(%s, %s, %s::jsonb)"

# -- sleeping -------------------------------------------------------------------

SLEEP_WAKE_AT: LiteralString = "select teguh.current_time() + make_interval(secs => %s)"
IS_DUE: LiteralString = "select teguh.current_time() >= %s"

# -- tasks ----------------------------------------------------------------------

CANCEL_TASK: LiteralString = "select teguh.cancel_task(%s, %s)"
RETRY_TASK: LiteralString = (
    "select task_id, run_id, attempt, created from teguh.retry_task(%s, %s, %s::jsonb)"
)
GET_TASK_RESULT: LiteralString = (
    "select task_id, state, attempts, completed_payload::text, cancelled_at"
    " from teguh.get_task_result(%s, %s)"
)
GET_TASK: LiteralString = (
    "select task_id, task_name, state, attempts, max_attempts, priority, params::text,"
    " headers::text, retry_strategy::text, idempotency_key, created_at, first_started_at,"
    " finished_at, completed_payload::text, last_failure::text, cancelled_at, archived,"
    " next_attempt_at, wait_kind, wait_event, wait_timeout_at, hand_backs, queue_paused,"
    " worker_id, lease_expires_at, concurrency_key, concurrency_limit, concurrency_running"
    " from teguh.get_task(%s, %s)"
)

# -- time and maintenance -------------------------------------------------------

TICKER: LiteralString = "select teguh.ticker(%s)"
CLEANUP_TASKS: LiteralString = "select teguh.cleanup_tasks(%s, %s, %s)"
CLEANUP_ALL_QUEUES: LiteralString = (
    "select coalesce(sum(tasks_deleted), 0)::integer from teguh.cleanup_all_queues(%s)"
)
QUEUE_STATS: LiteralString = (
    "select queue_name, pending, running, sleeping, completed, failed, cancelled,"
    " oldest_pending_seconds, in_flight, workers from teguh.queue_stats(%s)"
)
START_CRON: LiteralString = "select teguh.start(%s)"
STOP_CRON: LiteralString = "select teguh.stop()"
CURRENT_TIME: LiteralString = "select teguh.current_time()"

# -- worker coordination --------------------------------------------------------

# One worker per queue and database runs the ticker: the holder of this
# session-level lock, taken on the worker's LISTEN connection so it is
# released when that connection goes away.
TRY_TICKER_LOCK: LiteralString = (
    "select pg_try_advisory_lock(hashtextextended('teguh.ticker.' || %s, 0))"
)


def listen(queue: str) -> sql.Composed:
    """Return ``LISTEN teguh_<queue>`` with the channel quoted as an identifier."""
    return sql.SQL("listen {}").format(sql.Identifier(channel(queue)))


def channel(queue: str) -> str:
    """Return the NOTIFY channel of a queue."""
    return f"teguh_{queue}"


# -- schedules, queue policies, finding tasks ------------------------------------

CREATE_SCHEDULE: LiteralString = (
    "select teguh.create_schedule(%s, %s, %s, %s, %s::jsonb, %s::jsonb)"
)
DROP_SCHEDULE: LiteralString = "select teguh.drop_schedule(%s, %s)"
LIST_SCHEDULES: LiteralString = (
    "select queue_name, schedule_name, spec, timezone, task_name, params::text, options::text,"
    " catch_up, paused, next_run_at, last_slot, last_run_at, last_task_id, last_error,"
    " created_at, updated_at from teguh.list_schedules(%s)"
)
PAUSE_SCHEDULE: LiteralString = "select teguh.pause_schedule(%s, %s)"
RESUME_SCHEDULE: LiteralString = "select teguh.resume_schedule(%s, %s)"
SET_QUEUE_POLICY: LiteralString = "select teguh.set_queue_policy(%s, %s::jsonb)::text"
GET_QUEUE_POLICY: LiteralString = "select teguh.get_queue_policy(%s)::text"
LIST_TASKS: LiteralString = (
    "select task_id, task_name, state, attempts, max_attempts, priority, params::text,"
    " headers::text, idempotency_key, created_at, first_started_at, finished_at,"
    " last_failure::text, cancelled_at from teguh.list_tasks(%s, %s::jsonb, %s, %s)"
)
RELEASE_RUN_AT: LiteralString = "select teguh.release_run(%s, %s, %s, %s::jsonb)"
REGISTER_WORKER: LiteralString = "select teguh.register_worker(%s, %s, %s, %s, %s)"
WORKER_HEARTBEAT: LiteralString = "select teguh.worker_heartbeat(%s, %s, %s)"
UNREGISTER_WORKER: LiteralString = "select teguh.unregister_worker(%s)"
LIST_WORKERS: LiteralString = (
    "select worker_id, queues, host, pid, started_at, last_seen_at, expires_at, hung_handlers"
    " from teguh.list_workers(%s)"
)
QUEUE_WORKERS: LiteralString = "select queue_name, workers from teguh.queue_workers(%s)"
LOCATE_TASK: LiteralString = "select teguh.locate_task(%s)"
SET_CONCURRENCY_LIMIT: LiteralString = "select teguh.set_concurrency_limit(%s, %s, %s)"
DROP_CONCURRENCY_LIMIT: LiteralString = "select teguh.drop_concurrency_limit(%s, %s)"
LIST_CONCURRENCY_LIMITS: LiteralString = (
    "select queue_name, key, is_prefix, max_running, running, updated_at"
    " from teguh.list_concurrency_limits(%s)"
)
