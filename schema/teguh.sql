-- teguh: a durable execution engine and job queue inside PostgreSQL.
--
-- Install or upgrade by running this whole file (psql -f, or teguh.install()):
-- it is idempotent, needs PostgreSQL 14+ and no extension.
--
-- Per queue <q> (name ^[a-z][a-z0-9_]*$, at most 55 bytes), in schema teguh:
--   t_<q>  every task, durable across attempts   insert on spawn, HOT update on state change
--   p_<q>  runs ready or due (available_at)      insert on spawn/retry/wake, delete on claim, never update
--   r_<q>  leases, one row per in-flight run     insert on claim, delete on complete/fail/suspend
--   c_<q>  step checkpoints (task_id, name)      upsert
--   e_<q>  emitted events, first write wins      insert
--   w_<q>  tasks waiting for an event            insert on await, delete on wake/timeout
--   a_<q>  archived tasks with their checkpoints   created by the first archive (queue policy)
--   ae_<q> archived events
-- plus teguh.queues, one row per queue; teguh.queues_ticks, when the ticker
-- last looked at each queue (for its NOTIFY of work that fell due);
-- teguh.queue_policies (retention, pause, defaults); teguh.schedules, one row
-- per cron schedule (fired by the ticker); teguh.concurrency_limits (per-key
-- concurrency limits, counted by the claims); and teguh.workers (worker presence).
--
-- Names of generated objects: every per-queue object is named <kind>_<queue>,
-- where <kind> is a fixed word of at most 7 lowercase letters with no
-- underscore (tables t p r c e w; indexes and keys tpk tikey tcncl ppk porder
-- pkey pdue rpk rexp rkey cpk epk eat wpk wevent; the identity sequence pseq). A queue
-- name starts with a letter, so the first underscore splits kind from queue:
-- no two queues can ever generate the same name, and every name fits in 63
-- bytes (7 + 1 + 55). Per-queue functions are _<kind>_<queue> (_spawn_,
-- _claim_, _done_, _step_, _wake_). Objects that are not per queue must not look like
-- either form (no global name may start with a per-queue kind and "_").
--
-- Per-queue generated function or format()? A per-queue function (rendered
-- from a template by teguh._render, one per queue, regenerated on every
-- install) is for a hot path that runs for every task (spawn, claim,
-- complete, checkpoint, the next due time after a short claim): its static SQL gets cached plans, which the dynamic
-- equivalent would re-plan on every call. Everything else (per-task calls off
-- the hot path, sweeps, maintenance, admin) uses execute format('%I', ...):
-- one definition for every queue, no regeneration, and planning cost that
-- does not matter there.
--
-- Ranges: every number and timestamp is checked where it enters (22023, with
-- the argument in COLUMN). Durations are at most 315360000 seconds (3650
-- days); timestamps must be finite and within 3650 days of
-- teguh.current_time(); docs/sql-reference.md lists every bound. Values
-- already stored (by an older version, or written directly) are read
-- defensively, and functions that sweep many tasks or queues isolate a row
-- or queue that fails: a WARNING names it and the sweep goes on.
--
-- Lock order in every function touching several tables of a queue:
--   event advisory lock -> t_ -> p_ -> r_ -> w_ -> c_ -> e_
-- claim_task and lease recovery lock with SKIP LOCKED and never wait; a
-- claim of tasks with a concurrency key first try-locks (advisory, never
-- waiting) each key it takes from, then counts the key's leases.
--
-- Functions (docs/sql-reference.md has the full contract):
--   queues:   create_queue, drop_queue, list_queues, queue_stats
--   spawn:    spawn_task, spawn_tasks
--   workers:  claim_task, claim_runs, complete_run, complete_runs, fail_run, schedule_run,
--             release_run, extend_claim, extend_claims, hand_back_run
--   steps:    set_task_checkpoint_state, get_task_checkpoint_state, get_task_checkpoint_states
--   events:   await_event, wait_event, emit_event
--   tasks:    cancel_task, retry_task, get_task_result, get_task, list_tasks, locate_task
--   time:     ticker, next_wake_at, cleanup_tasks, cleanup_all_queues, start, stop
--   policies: set_queue_policy, get_queue_policy
--   limits:   set_concurrency_limit, drop_concurrency_limit, list_concurrency_limits
--   workers:  register_worker, worker_heartbeat, unregister_worker, list_workers, queue_workers
--   schedules: create_schedule, drop_schedule, list_schedules, pause_schedule, resume_schedule
--   misc:     version, portable_uuidv7, current_time
--   security: grant_role, grant_producer, grant_worker, grant_monitor, grant_admin, revoke_role,
--             allow_fake_time (schema owner only, like start and stop)
--
-- Security (last section, docs/security.md): the owner of schema teguh owns
-- every object in it; application roles only EXECUTE the public functions of
-- their kind, which run as the owner (security definer); every function pins
-- search_path = pg_catalog, pg_temp (but the two per-task uuid functions,
-- schema-qualified throughout). Tables: teguh.settings, teguh.role_grants.
--
-- Errors: 22023 invalid argument (COLUMN names it), 42704 unknown queue,
-- P0002 unknown task, AB001 task cancelled, AB002 run not active,
-- 55000 task in the wrong state, 42501 insufficient privilege (a function
-- of another kind of role, or teguh.fake_now set where fake time is not allowed).

create schema if not exists teguh;

create table if not exists teguh.queues (
  queue_name          text        primary key,
  created_at          timestamptz not null default now(),
  cleanup_ttl_seconds integer     not null default 2592000
);

-- ---------------------------------------------------------------------------
-- Time, identifiers, version
-- ---------------------------------------------------------------------------

-- The schema version of this teguh.sql ('3'); teguh.schema checks it. No errors.
create or replace function teguh.version() returns text
language sql immutable as $$ select '3'::text $$;

-- The engine's clock: the statement's start time (stable, so it can drive
-- index conditions), or the teguh.fake_now setting when the schema owner has
-- allowed fake time in this database (teguh.allow_fake_time(), test
-- databases). Raises 42501 when teguh.fake_now is set but fake time is not
-- allowed, 22023 (COLUMN teguh.fake_now) when it does not parse: a session
-- that believes its clock is fake never silently runs on real time.
create or replace function teguh.current_time() returns timestamptz
language plpgsql stable as $$
declare
  v_fake text := current_setting('teguh.fake_now', true);
begin
  if v_fake is null or v_fake = '' then
    return statement_timestamp();
  end if;
  return teguh._fake_now(v_fake);
end
$$;

-- teguh.fake_now as a timestamp, if the schema owner allowed fake time.
create or replace function teguh._fake_now(p_value text) returns timestamptz
language plpgsql stable as $$
declare
  v_at timestamptz;
begin
  if not exists (select 1 from teguh.settings s where s.name = 'allow_fake_time' and s.value = 'on') then
    raise exception 'teguh.fake_now is set (%) but fake time is not allowed in database %',
                    quote_literal(p_value), current_database()
      using errcode = '42501',
            hint = 'Reset teguh.fake_now, or have the owner of schema teguh run select teguh.allow_fake_time(true) (test databases only).';
  end if;
  begin
    v_at := p_value::timestamptz;
  exception when data_exception then
    v_at := null;
  end;
  if v_at is null or not isfinite(v_at) then
    raise exception 'invalid teguh.fake_now: expected a finite timestamp with time zone, got %', quote_literal(p_value)
      using errcode = '22023', column = 'teguh.fake_now';
  end if;
  return v_at;
end
$$;

-- A version 7 UUID for the given instant: 48 bits of Unix milliseconds, then
-- random bits from gen_random_uuid() (core since PostgreSQL 13, drawn from the
-- same strong random source as pgcrypto's gen_random_bytes).
--
-- This function and portable_uuidv7() run once per spawned task, so unlike
-- every other function they do not pin search_path (a SET clause costs a few
-- microseconds per call): every name in them is schema-qualified instead,
-- operators included, so no search_path can redirect them.
create or replace function teguh._uuidv7_at(p_at timestamptz) returns uuid
language plpgsql volatile as $$
declare
  v_bytes pg_catalog.bytea := pg_catalog.uuid_send(pg_catalog.gen_random_uuid());
  v_ms    bigint           := pg_catalog.floor(extract(epoch from p_at) operator(pg_catalog.*) 1000)::bigint;
begin
  v_bytes := overlay(v_bytes placing substring(pg_catalog.int8send(v_ms) from 3) from 1 for 6);
  v_bytes := pg_catalog.set_byte(v_bytes, 6,
                                 (pg_catalog.get_byte(v_bytes, 6) operator(pg_catalog.&) 15) operator(pg_catalog.|) 112);
  return pg_catalog.encode(v_bytes, 'hex')::pg_catalog.uuid;
end
$$;

-- The smallest v7 UUID of an instant: task ids below it were created before it.
create or replace function teguh._uuidv7_floor(p_at timestamptz) returns uuid
language sql immutable as $$
  select encode(substring(int8send(floor(extract(epoch from p_at) * 1000)::bigint) from 3)
                || '\x70000000000000000000'::bytea, 'hex')::uuid
$$;

-- A version 7 UUID (portable_uuidv7): ids follow teguh.current_time() so that
-- fake time and id order agree; the native uuidv7() is used where the server
-- has one and time is real. Schema-qualified throughout instead of a pinned
-- search_path (see above). Errors: those of teguh.current_time().
do $$
begin
  if to_regprocedure('pg_catalog.uuidv7()') is not null then
    execute $f$
      create or replace function teguh.portable_uuidv7() returns uuid
      language plpgsql volatile as $b$
      begin
        if pg_catalog.current_setting('teguh.fake_now', true) operator(pg_catalog.<>) '' then
          return teguh._uuidv7_at(teguh.current_time());
        end if;
        return pg_catalog.uuidv7();
      end
      $b$
    $f$;
  else
    execute $f$
      create or replace function teguh.portable_uuidv7() returns uuid
      language plpgsql volatile as $b$
      begin
        if pg_catalog.current_setting('teguh.fake_now', true) operator(pg_catalog.<>) '' then
          return teguh._uuidv7_at(teguh.current_time());
        end if;
        return teguh._uuidv7_at(pg_catalog.clock_timestamp());
      end
      $b$
    $f$;
  end if;
end
$$;

-- ---------------------------------------------------------------------------
-- Input checks: every bad argument is 22023 with the argument in COLUMN
-- ---------------------------------------------------------------------------

create or replace function teguh._invalid(p_argument text, p_message text) returns void
language plpgsql as $$
begin
  raise exception 'invalid %: %', p_argument, p_message
    using errcode = '22023', column = p_argument;
end
$$;

create or replace function teguh._check_queue_name(p_queue_name text) returns void
language plpgsql as $$
begin
  if p_queue_name is null or p_queue_name !~ '^[a-z][a-z0-9_]*$' or octet_length(p_queue_name) > 55 then
    perform teguh._invalid('queue', format('expected a name matching ^[a-z][a-z0-9_]*$ of at most 55 bytes, got %s',
                                           coalesce(quote_literal(p_queue_name), 'null')));
  end if;
end
$$;

create or replace function teguh._assert_queue(p_queue_name text) returns void
language plpgsql as $$
begin
  if not exists (select 1 from teguh.queues q where q.queue_name = p_queue_name) then
    perform teguh._check_queue_name(p_queue_name);
    raise exception 'queue "%" does not exist', p_queue_name
      using errcode = '42704', hint = 'Create it with teguh.create_queue().';
  end if;
end
$$;

-- Wakes the queue's listeners (channel teguh_<q>): something may be due.
create or replace function teguh._notify(p_queue_name text) returns void
language sql as $$
  select pg_notify('teguh_' || p_queue_name, '')
$$;

-- AB001: the task was cancelled (raised to a worker touching its run).
create or replace function teguh._raise_cancelled(p_queue_name text, p_task_id uuid) returns void
language plpgsql as $$
begin
  raise exception 'task % in queue "%" was cancelled', p_task_id, p_queue_name using errcode = 'AB001';
end
$$;

create or replace function teguh._check_name(p_argument text, p_value text) returns void
language plpgsql as $$
begin
  if p_value is null or p_value = '' then
    perform teguh._invalid(p_argument, 'expected a non-empty string');
  end if;
end
$$;

create or replace function teguh._check_positive(p_argument text, p_value numeric) returns void
language plpgsql as $$
begin
  if p_value is null or p_value <= 0 then
    perform teguh._invalid(p_argument, format('expected a positive number, got %s', coalesce(p_value::text, 'null')));
  end if;
end
$$;

-- Seconds within [p_min, p_max]; p_max defaults to the engine's longest
-- duration, 315360000 s (3650 days), so that no timestamp + duration overflows.
create or replace function teguh._check_seconds(
  p_argument text,
  p_value    numeric,
  p_min      numeric,
  p_max      numeric default 315360000
) returns void
language plpgsql as $$
begin
  if p_value is null or p_value < p_min or p_value > p_max then
    perform teguh._invalid(p_argument, format('expected seconds between %s and %s, got %s',
                                              p_min, p_max, coalesce(p_value::text, 'null')));
  end if;
end
$$;

-- A timestamp that is finite and within 3650 days of the engine clock: far
-- enough for any schedule, near enough that arithmetic on it cannot overflow.
create or replace function teguh._check_instant(p_argument text, p_value timestamptz, p_now timestamptz)
returns void
language plpgsql as $$
begin
  if p_value is null or not isfinite(p_value)
     or p_value < p_now - interval '3650 days' or p_value > p_now + interval '3650 days' then
    perform teguh._invalid(p_argument, format('expected a finite timestamp within 3650 days of %s, got %s',
                                              p_now, coalesce(p_value::text, 'null')));
  end if;
end
$$;

-- A JSON number within [p_min, p_max] (p_min excluded when p_strict).
create or replace function teguh._json_range(
  p_argument text,
  p_value    jsonb,
  p_min      numeric,
  p_max      numeric,
  p_strict   boolean default false
) returns double precision
language plpgsql as $$
begin
  if jsonb_typeof(p_value) is distinct from 'number' then
    perform teguh._invalid(p_argument, format('expected a number, got %s', coalesce(p_value::text, 'null')));
  end if;
  if p_value::numeric < p_min or (p_strict and p_value::numeric = p_min) or p_value::numeric > p_max then
    perform teguh._invalid(p_argument, format('expected a number %s %s and <= %s, got %s',
                                              case when p_strict then '>' else '>=' end, p_min, p_max, p_value));
  end if;
  -- nanoseconds at most: 1e-400 would underflow double precision
  return round(p_value::numeric, 9)::double precision;
end
$$;

-- A JSON integer within [p_min, p_max].
create or replace function teguh._json_int(p_argument text, p_value jsonb, p_min bigint, p_max bigint)
returns integer
language plpgsql as $$
begin
  if jsonb_typeof(p_value) is distinct from 'number' or p_value::numeric <> trunc(p_value::numeric) then
    perform teguh._invalid(p_argument, format('expected an integer, got %s', coalesce(p_value::text, 'null')));
  end if;
  if p_value::numeric < p_min or p_value::numeric > p_max then
    perform teguh._invalid(p_argument, format('expected an integer between %s and %s, got %s', p_min, p_max, p_value));
  end if;
  return p_value::numeric::integer;
end
$$;

-- A JSON number >= p_min (strictly greater when p_strict).
create or replace function teguh._json_num(p_argument text, p_value jsonb, p_min numeric, p_strict boolean default false)
returns double precision
language plpgsql as $$
begin
  if jsonb_typeof(p_value) is distinct from 'number' then
    perform teguh._invalid(p_argument, format('expected a number, got %s', coalesce(p_value::text, 'null')));
  end if;
  if p_value::numeric < p_min or (p_strict and p_value::numeric = p_min) then
    perform teguh._invalid(p_argument, format('expected a number %s %s, got %s',
                                              case when p_strict then '>' else '>=' end, p_min, p_value));
  end if;
  return p_value::numeric::double precision;
end
$$;

-- Rejects keys of an options object that are not in p_allowed.
create or replace function teguh._check_keys(p_argument text, p_object jsonb, p_allowed text[]) returns void
language plpgsql as $$
declare
  v_unknown text;
begin
  select string_agg(k, ', ' order by k) into v_unknown
    from jsonb_object_keys(p_object) k where k <> all (p_allowed);
  if v_unknown is not null then
    perform teguh._invalid(p_argument, format('unknown key(s) %s; expected some of %s',
                                              v_unknown, array_to_string(p_allowed, ', ')));
  end if;
end
$$;

create or replace function teguh._normalize_retry_strategy(p_value jsonb) returns jsonb
language plpgsql as $$
declare
  v_kind   text;
  v_base   double precision := 1;
  v_factor double precision := 2;
  v_max    double precision := 300;
begin
  if p_value is null or p_value = 'null'::jsonb then
    return jsonb_build_object('kind', 'exponential', 'base_seconds', v_base, 'factor', v_factor, 'max_seconds', v_max);
  end if;
  if jsonb_typeof(p_value) <> 'object' then
    perform teguh._invalid('retry_strategy', format('expected a JSON object, got %s', jsonb_typeof(p_value)));
  end if;
  perform teguh._check_keys('retry_strategy', p_value, array['kind', 'base_seconds', 'factor', 'max_seconds']);
  v_kind := coalesce(p_value->>'kind', 'exponential');
  if jsonb_typeof(p_value->'kind') not in ('string', 'null') or v_kind not in ('none', 'fixed', 'exponential') then
    perform teguh._invalid('retry_strategy.kind', format('expected "none", "fixed" or "exponential", got %s', p_value->'kind'));
  end if;
  if p_value ? 'base_seconds' then
    v_base := teguh._json_range('retry_strategy.base_seconds', p_value->'base_seconds', 0, 315360000);
  end if;
  if p_value ? 'factor' then
    v_factor := teguh._json_range('retry_strategy.factor', p_value->'factor', 1, 1000);
  end if;
  if p_value ? 'max_seconds' then
    v_max := teguh._json_range('retry_strategy.max_seconds', p_value->'max_seconds', 0, 315360000);
  end if;
  if v_kind = 'none' then
    return jsonb_build_object('kind', 'none');
  elsif v_kind = 'fixed' then
    return jsonb_build_object('kind', 'fixed', 'base_seconds', v_base);
  end if;
  return jsonb_build_object('kind', 'exponential', 'base_seconds', v_base, 'factor', v_factor, 'max_seconds', v_max);
end
$$;

-- A stored number of seconds, read defensively: clamped to [0, 315360000],
-- p_default when it is not a JSON number.
create or replace function teguh._stored_seconds(p_value jsonb, p_default double precision)
returns double precision
language sql immutable as $$
  select case when jsonb_typeof(p_value) = 'number'
              then round(least(greatest(p_value::numeric, 0), 315360000), 9)::double precision
              else p_default end
$$;

-- Seconds to wait before the attempt after p_attempt failed. Reads the
-- stored strategy defensively (a strategy stored by an older version or
-- written directly may hold anything): each field is clamped to its range,
-- a field that is not a number takes its default, and the exponential delay
-- is capped before it is computed, so that neither a huge attempt number nor
-- a huge factor can overflow.
create or replace function teguh._retry_delay(p_strategy jsonb, p_attempt integer) returns double precision
language plpgsql immutable as $$
declare
  v_kind   text := coalesce(p_strategy->>'kind', 'exponential');
  v_base   double precision := teguh._stored_seconds(p_strategy->'base_seconds', 1);
  v_factor double precision := least(greatest(case when jsonb_typeof(p_strategy->'factor') = 'number'
                                                   then (p_strategy->'factor')::numeric else 2 end, 1), 1000);
  v_max    double precision := teguh._stored_seconds(p_strategy->'max_seconds', 300);
  v_n      integer := greatest(coalesce(p_attempt, 1) - 1, 0);
begin
  if v_kind = 'fixed' then
    return v_base;
  elsif v_kind is distinct from 'exponential' then
    return 0;
  elsif v_base = 0 or v_max = 0 then
    return 0;
  elsif v_max <= v_base or (v_factor > 1 and v_n >= ln(v_max / v_base) / ln(v_factor)) then
    -- base * factor^n would reach the cap: never compute it
    return v_max;
  end if;
  return least(v_base * power(v_factor, v_n), v_max);
end
$$;

-- Validates spawn options; returns them normalized. p_batch selects
-- idempotency_keys (spawn_tasks) instead of idempotency_key (spawn_task).
create or replace function teguh._parse_spawn_options(
  p_options              jsonb,
  p_batch                boolean,
  out o_headers          jsonb,
  out o_retry_strategy   jsonb,
  out o_max_attempts     integer,
  out o_priority         integer,
  out o_cancellation     jsonb,
  out o_idempotency_key  text,
  out o_idempotency_keys jsonb,
  out o_available_at     timestamptz,
  out o_concurrency_key  text
)
language plpgsql as $$
declare
  v_value jsonb;
  v_at    timestamptz;
begin
  -- the defaults
  o_headers := '{}'::jsonb;
  o_retry_strategy := teguh._normalize_retry_strategy(null);
  o_max_attempts := 5;
  o_priority := 0;
  o_available_at := teguh.current_time();
  if p_options is null or p_options = '{}'::jsonb then
    return;  -- the common case, kept cheap
  end if;
  if jsonb_typeof(p_options) <> 'object' then
    perform teguh._invalid('options', format('expected a JSON object, got %s', jsonb_typeof(p_options)));
  end if;
  -- a key given as JSON null means "use the default"
  p_options := jsonb_strip_nulls(p_options);
  perform teguh._check_keys('options', p_options,
    array['headers', 'retry_strategy', 'max_attempts', 'cancellation', 'available_at', 'delay_seconds', 'priority',
          'concurrency_key', case when p_batch then 'idempotency_keys' else 'idempotency_key' end]);

  o_headers := coalesce(p_options->'headers', o_headers);
  if jsonb_typeof(o_headers) <> 'object' then
    perform teguh._invalid('headers', format('expected a JSON object, got %s', jsonb_typeof(o_headers)));
  end if;

  o_retry_strategy := teguh._normalize_retry_strategy(p_options->'retry_strategy');

  if p_options ? 'max_attempts' then
    o_max_attempts := teguh._json_int('max_attempts', p_options->'max_attempts', 1, 2147483647);
  end if;

  if p_options ? 'priority' then
    o_priority := teguh._json_int('priority', p_options->'priority', -2147483648, 2147483647);
  end if;

  v_value := p_options->'cancellation';
  if v_value is not null then
    if jsonb_typeof(v_value) <> 'object' then
      perform teguh._invalid('cancellation', format('expected a JSON object, got %s', jsonb_typeof(v_value)));
    end if;
    perform teguh._check_keys('cancellation', v_value, array['max_delay', 'max_duration']);
    v_value := jsonb_strip_nulls(v_value);
    -- stored as checked (rounded to nanoseconds), so later arithmetic cannot fail
    if v_value ? 'max_delay' then
      v_value := jsonb_set(v_value, '{max_delay}', to_jsonb(
        teguh._json_range('cancellation.max_delay', v_value->'max_delay', 0, 315360000, true)));
    end if;
    if v_value ? 'max_duration' then
      v_value := jsonb_set(v_value, '{max_duration}', to_jsonb(
        teguh._json_range('cancellation.max_duration', v_value->'max_duration', 0, 315360000, true)));
    end if;
    o_cancellation := nullif(v_value, '{}'::jsonb);
  end if;

  if p_options ? 'idempotency_key' then
    if jsonb_typeof(p_options->'idempotency_key') <> 'string' or p_options->>'idempotency_key' = '' then
      perform teguh._invalid('idempotency_key', format('expected a non-empty string, got %s', p_options->'idempotency_key'));
    end if;
    o_idempotency_key := p_options->>'idempotency_key';
  end if;

  if p_options ? 'concurrency_key' then
    if jsonb_typeof(p_options->'concurrency_key') <> 'string' then
      perform teguh._invalid('concurrency_key', format('expected a string, got %s', p_options->'concurrency_key'));
    end if;
    o_concurrency_key := p_options->>'concurrency_key';
    perform teguh._check_concurrency_key('concurrency_key', o_concurrency_key, false);
  end if;

  if p_options ? 'idempotency_keys' then
    o_idempotency_keys := p_options->'idempotency_keys';
    if jsonb_typeof(o_idempotency_keys) <> 'array' then
      perform teguh._invalid('idempotency_keys', format('expected a JSON array, got %s', jsonb_typeof(o_idempotency_keys)));
    end if;
    if exists (select 1 from jsonb_array_elements(o_idempotency_keys) k
                where jsonb_typeof(k) not in ('string', 'null') or k = '""'::jsonb) then
      perform teguh._invalid('idempotency_keys', 'expected an array of non-empty strings or nulls');
    end if;
  end if;

  if p_options ? 'available_at' and p_options ? 'delay_seconds' then
    perform teguh._invalid('available_at', 'give either available_at or delay_seconds, not both');
  end if;
  if p_options ? 'available_at' then
    if jsonb_typeof(p_options->'available_at') <> 'string' then
      perform teguh._invalid('available_at', format('expected a timestamp string, got %s', p_options->'available_at'));
    end if;
    begin
      v_at := (p_options->>'available_at')::timestamptz;
    exception when others then
      perform teguh._invalid('available_at', format('expected an ISO 8601 timestamp, got %s', p_options->'available_at'));
    end;
    perform teguh._check_instant('available_at', v_at, o_available_at);
    o_available_at := v_at;
  elsif p_options ? 'delay_seconds' then
    o_available_at := o_available_at
      + make_interval(secs => teguh._json_range('delay_seconds', p_options->'delay_seconds', 0, 315360000));
  end if;
end
$$;

-- ---------------------------------------------------------------------------
-- Per-queue hot paths
-- ---------------------------------------------------------------------------

-- Renders a per-queue template: every {token} (lowercase letters and
-- underscores in braces) is replaced by its value in p_tokens, which the
-- caller has already quoted (quote_ident, quote_literal). Raises on a token
-- the template uses but p_tokens lacks, and on a {token} left in the result,
-- so that a typo in a template fails at install, not at the first call.
create or replace function teguh._render(p_template text, p_tokens jsonb) returns text
language plpgsql immutable as $$
declare
  v_token  text;
  v_result text := p_template;
begin
  for v_token in select distinct m[1] from regexp_matches(p_template, '\{([a-z_]+)\}', 'g') m loop
    if not p_tokens ? v_token then
      raise exception 'template token {%} has no value', v_token
        using errcode = '22023', hint = format('known tokens: %s', (select string_agg(k, ', ' order by k)
                                                                     from jsonb_object_keys(p_tokens) k));
    end if;
  end loop;
  for v_token in select k from jsonb_object_keys(p_tokens) k loop
    v_result := replace(v_result, '{' || v_token || '}', p_tokens->>v_token);
  end loop;
  v_token := substring(v_result from '\{[a-z_]+\}');
  if v_token is not null then
    raise exception 'template token % left after rendering', v_token using errcode = '22023';
  end if;
  return v_result;
end
$$;

-- The hot paths (spawn, claim, complete, checkpoint) of each queue are
-- plpgsql functions with static SQL on that queue's tables, generated from
-- the templates below when the queue is created and whenever this file is
-- applied again. Static SQL lets PostgreSQL cache the plans per session:
-- planning the dynamic equivalent cost as much as running it. The generic
-- functions (teguh.claim_task, ...) validate their input and call these.
create or replace function teguh._create_queue_functions(p_queue_name text) returns void
language plpgsql as $$
declare
  v_template text;
begin
  perform teguh._check_queue_name(p_queue_name);
  foreach v_template in array array[
$tmpl$
create or replace function teguh.{spawn}(
  p_task_name    text,
  p_params       jsonb,
  p_headers      jsonb,
  p_retry        jsonb,
  p_max_attempts integer,
  p_priority     integer,
  p_cancellation jsonb,
  p_ikey         text,
  p_now          timestamptz,
  p_available_at timestamptz,
  p_ckey         text
) returns table (task_id uuid, run_id uuid, attempt integer, created boolean)
language plpgsql as $fn$
#variable_conflict use_column
declare
  v_task_id uuid := teguh.portable_uuidv7();
  v_run_id  uuid := teguh.portable_uuidv7();
  v_created uuid;
begin
  insert into teguh.{t} as t (task_id, task_name, params, headers, retry_strategy, max_attempts, priority,
                              cancellation, idempotency_key, state, current_run_id, created_at, available_at,
                              cancel_at, concurrency_key)
  values (v_task_id, p_task_name, p_params, p_headers, p_retry, p_max_attempts, p_priority, p_cancellation, p_ikey,
          'pending', v_run_id, p_now, p_available_at,
          p_available_at + make_interval(secs => (p_cancellation->>'max_delay')::double precision), p_ckey)
  on conflict (idempotency_key) where idempotency_key is not null do nothing
  returning t.task_id into v_created;
  if v_created is null then
    -- the idempotency key names an existing task: hand that one back
    return query select t.task_id, t.current_run_id, greatest(t.attempts, 1), false
                   from teguh.{t} t where t.idempotency_key = p_ikey;
    return;
  end if;
  insert into teguh.{p} (task_id, run_id, attempt, priority, available_at, concurrency_key)
  values (v_task_id, v_run_id, 1, p_priority, p_available_at, p_ckey);
  return query select v_task_id, v_run_id, 1, true;
end
$fn$
$tmpl$,
$tmpl$
create or replace function teguh.{claim}(
  p_worker_id     text,
  p_claim_timeout integer,
  p_qty           integer,
  p_now           timestamptz,
  p_run_seq       boolean
) returns table (run_id uuid, task_id uuid, attempt integer, task_name text, params jsonb, retry_strategy jsonb,
               max_attempts integer, headers jsonb, wake_event text, event_payload jsonb)
-- The plans must not follow the statistics: a queue filled faster than
-- autovacuum analyzes it looks empty (and porder's "concurrency_key is null"
-- 0.5% selective), which made a bitmap scan that sorts every ready task the
-- cheapest plan, for each claim of the backlog (ten times the cost); a table
-- of finished tasks, whose states the planner sees as never 'pending', must
-- not tempt it into a sequential scan; and a backlog of a few thousand tasks
-- whose time-ordered ids follow the tables' physical order made hashing a
-- full index scan of p_ and of t_ look cheaper than probing them for the few
-- runs claimed (every claim read the backlog twice). So: index scans and
-- nested loops only (a claim joins a handful of runs to large tables), one
-- generic plan (a custom one was planned again on every call, as long as
-- running it), and no JIT (a plan with a disabled node is costed past its
-- threshold).
language plpgsql set enable_seqscan = off set enable_bitmapscan = off set enable_hashjoin = off
set enable_mergejoin = off set plan_cache_mode = force_generic_plan set jit = off as $fn$
#variable_conflict use_column
declare
  v_next_due      timestamptz;
  v_next_expiry   timestamptz;
  v_next_deadline timestamptz;
  v_keyed         boolean;
  v_key           text;
  v_limit         integer;
  v_free          integer;
  v_ids           uuid[] := '{}';
  v_pri           integer[] := '{}';
  v_at            timestamptz[] := '{}';
  v_seq           bigint[] := '{}';
  v_keys          text[];
  v_plens         integer[];
  v_limits        integer[];
  v_hpri          integer[];
  v_hat           timestamptz[];
  v_hseq          bigint[];
  v_wpri          integer;
  v_wat           timestamptz;
  v_wseq          bigint;
  v_i             integer;
begin
  if exists (select 1 from teguh.queue_policies qp where qp.queue_name = {queue} and qp.policy @> '{"paused": true}') then
    return;  -- a paused queue hands out nothing (teguh.set_queue_policy)
  end if;
  -- four index probes tell whether there is anything to do at all, and
  -- whether any ready task carries a concurrency key
  select (select min(p.available_at) from teguh.{p} p), (select min(r.expires_at) from teguh.{r} r),
         (select min(t.cancel_at) from teguh.{t} t),
         exists (select 1 from teguh.{p} p where p.concurrency_key is not null)
    into v_next_due, v_next_expiry, v_next_deadline, v_keyed;
  if v_next_expiry < p_now then
    perform teguh._recover_expired({queue}, p_now, p_qty);
    v_next_due := p_now;
  end if;
  if v_next_deadline <= p_now then
    -- a task past its max_delay/max_duration is cancelled, never started or resumed
    perform teguh._enforce_deadlines({queue}, p_now, greatest(p_qty, 100));
  end if;
  if v_next_due is null or v_next_due > p_now then
    return;
  end if;
  if v_keyed then
    -- Some ready task carries a concurrency key. The head (best ready task)
    -- of every key, by a skip scan of pkey: one probe per distinct key, so
    -- a capped key costs one probe however many tasks it has waiting.
    v_plens := teguh._concurrency_prefix_lengths({queue});
    select coalesce(array_agg(k.key order by h.priority desc, h.available_at, h.seq), '{}'),
           coalesce(array_agg(l.max_running order by h.priority desc, h.available_at, h.seq), '{}'),
           coalesce(array_agg(h.priority order by h.priority desc, h.available_at, h.seq), '{}'),
           coalesce(array_agg(h.available_at order by h.priority desc, h.available_at, h.seq), '{}'),
           coalesce(array_agg(h.seq order by h.priority desc, h.available_at, h.seq), '{}')
      into v_keys, v_limits, v_hpri, v_hat, v_hseq
      from (
        with recursive k(key) as (
          select min(p.concurrency_key) from teguh.{p} p where p.concurrency_key is not null
          union all
          select (select min(p.concurrency_key) from teguh.{p} p where p.concurrency_key > k.key)
            from k where k.key is not null
        )
        select k.key from k where k.key is not null
      ) k
      cross join lateral (
        select p.priority, p.available_at, p.seq from teguh.{p} p
         where p.concurrency_key = k.key and p.available_at <= p_now
         order by p.priority desc, p.available_at, p.seq
         limit 1
      ) h
      left join lateral (
        -- the exact key's limit, else the longest matching prefix's: one
        -- primary-key probe per candidate pattern (the key, and each of its
        -- prefixes followed by "*"), whatever the number of limits
        select m.max_running from (
          select c.pattern, (select l.max_running from teguh.concurrency_limits l
                              where l.queue_name = {queue} and l.key_pattern = c.pattern) as max_running
            from unnest(teguh._concurrency_patterns(k.key, v_plens)) as c(pattern)
          offset 0
        ) m
         where m.max_running is not null
         order by m.pattern = k.key and right(k.key, 1) <> '*' desc, length(m.pattern) desc
         limit 1
      ) l on true
     where l.max_running is distinct from 0;  -- 0 holds the key
    -- the unkeyed head
    select coalesce(array_agg(h.task_id), '{}'), coalesce(array_agg(h.priority), '{}'),
           coalesce(array_agg(h.available_at), '{}'), coalesce(array_agg(h.seq), '{}')
      into v_ids, v_pri, v_at, v_seq
      from (select p.task_id, p.priority, p.available_at, p.seq from teguh.{p} p
             where p.available_at <= p_now and p.concurrency_key is null
             order by p.priority desc, p.available_at, p.seq
             limit p_qty
               for update skip locked) h;
    -- Keys in the order of their heads; stop once p_qty candidates are
    -- better than the next head (no task of a later key can beat it), so a
    -- claim locks and counts only the keys it may take from.
    for v_i in 1 .. cardinality(v_keys) loop
      if cardinality(v_ids) >= p_qty then
        select u.priority, u.available_at, u.seq into v_wpri, v_wat, v_wseq
          from unnest(v_pri, v_at, v_seq) as u(priority, available_at, seq)
         order by u.priority desc, u.available_at, u.seq
         offset p_qty - 1 limit 1;
        exit when v_hpri[v_i] < v_wpri
               or (v_hpri[v_i] = v_wpri and (v_hat[v_i], v_hseq[v_i]) > (v_wat, v_wseq));
      end if;
      v_key := v_keys[v_i];
      v_limit := v_limits[v_i];
      if v_limit is null then
        v_free := p_qty;
      else
        -- only counting needs READ COMMITTED (a snapshot per statement):
        -- unkeyed and unlimited tasks are claimed under any level, as before
        perform teguh._require_read_committed('claiming tasks whose concurrency key has a limit');
        if not pg_try_advisory_xact_lock(hashtext('teguh.concurrency.' || {queue}), hashtext(v_key)) then
          continue;  -- another claim is counting this key right now: it takes the free slots
        end if;
        -- a later statement than the lock: its snapshot sees every claim of
        -- this key that committed before the lock was granted
        select v_limit - count(*) into v_free
          from teguh.{r} r join teguh.{t} t on t.task_id = r.task_id
         where r.concurrency_key = v_key and t.state = 'running' and t.current_run_id = r.run_id;
        v_free := least(v_free, p_qty);
      end if;
      if v_free > 0 then
        select v_ids || coalesce(array_agg(h.task_id), '{}'), v_pri || coalesce(array_agg(h.priority), '{}'),
               v_at || coalesce(array_agg(h.available_at), '{}'), v_seq || coalesce(array_agg(h.seq), '{}')
          into v_ids, v_pri, v_at, v_seq
          from (select p.task_id, p.priority, p.available_at, p.seq from teguh.{p} p
                 where p.concurrency_key = v_key and p.available_at <= p_now
                 order by p.priority desc, p.available_at, p.seq
                 limit v_free
                   for update skip locked) h;
      end if;
    end loop;
    -- the best p_qty (the others stay locked until this transaction ends;
    -- other claims skip them meanwhile)
    select coalesce(array_agg(u.task_id order by u.priority desc, u.available_at, u.seq), '{}') into v_ids
      from (select * from unnest(v_ids, v_pri, v_at, v_seq) as u(task_id, priority, available_at, seq)
             order by 2 desc, 3, 4 limit p_qty) u;
    if cardinality(v_ids) = 0 then
      return;
    end if;
  end if;
  return query
    with cand as (
      select p.task_id from teguh.{p} p
       where not v_keyed and p.available_at <= p_now and p.concurrency_key is null
       order by p.priority desc, p.available_at, p.seq
       limit p_qty
         for update skip locked
    ), cand_keyed as (
      select u.task_id from unnest(v_ids) as u(task_id) where v_keyed
    ), locked as (
      -- one primary-key probe per candidate, whatever the planner thinks of t_
      select t.task_id from (select task_id from cand union all select task_id from cand_keyed) c
       cross join lateral (
        select t.task_id from teguh.{t} t
         where t.task_id = c.task_id and t.state in ('pending', 'sleeping')
           for update skip locked
      ) t
    ), ready as (
      delete from teguh.{p} p using locked where p.task_id = locked.task_id
      returning p.task_id, p.run_id, p.attempt, p.priority, p.available_at, p.seq, p.wake_event, p.event_payload,
                p.timeout_step, p.concurrency_key
    ), started as (
      update teguh.{t} t
         set state = 'running', attempts = ready.attempt, current_run_id = ready.run_id,
             claims = greatest(t.claims + 1, ready.attempt),
             first_started_at = coalesce(t.first_started_at, p_now),
             cancel_at = case when t.first_started_at is not null then t.cancel_at
                              -- clamped: a value stored by an older version may be huge
                              else p_now + make_interval(secs => case when t.cancellation ? 'max_duration' then
                                                           least((t.cancellation->>'max_duration')::numeric, 315360000)
                                                         end::double precision)
                         end
        from ready where t.task_id = ready.task_id
      returning t.task_id, t.task_name, t.params, t.retry_strategy, t.max_attempts, t.headers, t.claims
    ), leased as (
      -- a claim_timeout of 0 is a lease that never expires
      insert into teguh.{r} (run_id, task_id, attempt, worker_id, claimed_at, expires_at, concurrency_key)
      select ready.run_id, ready.task_id, ready.attempt, p_worker_id, p_now,
             case when p_claim_timeout = 0 then 'infinity'::timestamptz
                  else p_now + make_interval(secs => p_claim_timeout) end,
             ready.concurrency_key
        from ready
    ), timed_out as (
      -- runs resumed by an event-wait timeout: drop the wait, checkpoint the timeout
      delete from teguh.{w} w using ready where w.task_id = ready.task_id and ready.timeout_step is not null
      returning w.task_id, w.run_id, w.step_name
    ), timeout_checkpoint as (
      insert into teguh.{c} (task_id, checkpoint_name, state, timed_out, owner_run, updated_at)
      select timed_out.task_id, timed_out.step_name, null, true, timed_out.run_id, p_now from timed_out
      on conflict (task_id, checkpoint_name) do nothing
    )
    select ready.run_id, ready.task_id, case when p_run_seq then started.claims else ready.attempt end,
           started.task_name, started.params, started.retry_strategy,
           started.max_attempts, started.headers, ready.wake_event, ready.event_payload
      from ready join started on started.task_id = ready.task_id
     order by ready.priority desc, ready.available_at, ready.seq;
end
$fn$
$tmpl$,
$tmpl$
create or replace function teguh.{complete}(p_run_ids uuid[], p_states jsonb[], p_now timestamptz)
returns table (run_id uuid, status text)
-- as the claim: index scans and nested loops, one generic plan, no JIT
language plpgsql set enable_seqscan = off set enable_hashjoin = off set enable_mergejoin = off
set plan_cache_mode = force_generic_plan set jit = off as $fn$
#variable_conflict use_column
declare
  v_done uuid[] := '{}';
  v_key  text;
begin
  -- t_ first (the update locks it), then r_
  if cardinality(p_run_ids) = 1 then
    -- one run (complete_run): a plan with no join to estimate
    update teguh.{t} t
       set state = 'completed', completed_payload = p_states[1], finished_at = p_now, cancel_at = null
     where t.task_id = (select r.task_id from teguh.{r} r where r.run_id = p_run_ids[1])
       and t.current_run_id = p_run_ids[1] and t.state = 'running';
    if found then
      delete from teguh.{r} r where r.run_id = p_run_ids[1] returning r.concurrency_key into v_key;
      if v_key is not null then
        perform teguh._notify({queue});  -- a concurrency slot is free (teguh.next_wake_at)
      end if;
      return;
    end if;
  else
    with input as (
      select u.run_id, u.state from unnest(p_run_ids, p_states) as u(run_id, state)
    ), done as (
      update teguh.{t} t
         set state = 'completed', completed_payload = input.state, finished_at = p_now, cancel_at = null
        from input join teguh.{r} r on r.run_id = input.run_id
       where t.task_id = r.task_id and t.current_run_id = input.run_id and t.state = 'running'
      returning input.run_id
    )
    select coalesce(array_agg(done.run_id), '{}') into v_done from done;
    -- a later statement: its snapshot sees the leases as they are now
    with gone as (delete from teguh.{r} r where r.run_id = any (v_done) returning r.concurrency_key)
    select max(gone.concurrency_key) into v_key from gone;
    if v_key is not null then
      perform teguh._notify({queue});  -- a concurrency slot is free (teguh.next_wake_at)
    end if;
  end if;
  -- the runs that are not (or no longer) active
  return query
    select u.run_id,
           case when exists (select 1 from teguh.{r} r join teguh.{t} t on t.task_id = r.task_id
                              where r.run_id = u.run_id and t.state = 'cancelled')
                then 'cancelled' else 'lost' end
      from unnest(p_run_ids) as u(run_id)
     where u.run_id <> all (v_done);
end
$fn$
$tmpl$,
$tmpl$
create or replace function teguh.{checkpoint}(
  p_task_id   uuid,
  p_step_name text,
  p_state     jsonb,
  p_owner_run uuid,
  p_extend_by integer,
  p_now       timestamptz
) returns text
language plpgsql as $fn$
#variable_conflict use_column
declare
  v_state text;
  v_run   uuid;
begin
  -- 'ok' when written; else the task's state, for the caller to raise on
  select t.state, t.current_run_id into v_state, v_run from teguh.{t} t where t.task_id = p_task_id for update;
  if v_state is distinct from 'running' or v_run is distinct from p_owner_run then
    return coalesce(v_state, 'missing');
  end if;
  if p_extend_by is not null then
    -- a lease that never expires (claim_timeout 0) stays so
    update teguh.{r} r set expires_at = p_now + make_interval(secs => p_extend_by)
     where r.run_id = p_owner_run and r.expires_at < 'infinity';
  end if;
  insert into teguh.{c} as c (task_id, checkpoint_name, state, timed_out, owner_run, updated_at)
  values (p_task_id, p_step_name, p_state, false, p_owner_run, p_now)
  on conflict (task_id, checkpoint_name)
  do update set state = excluded.state, timed_out = false, owner_run = excluded.owner_run,
                updated_at = excluded.updated_at;
  return 'ok';
end
$fn$
$tmpl$,
$tmpl$
create or replace function teguh.{wake}(p_now timestamptz) returns timestamptz
-- teguh.next_wake_at's queries, static so that their plans are cached: it
-- runs after every claim that comes back short (teguh.claim_runs_next)
language plpgsql set enable_seqscan = off set jit = off as $fn$
declare
  v_ready timestamptz;
  v_at    timestamptz;
begin
  select (select min(p.available_at) from teguh.{p} p),
         least((select min(r.expires_at) from teguh.{r} r where r.expires_at < 'infinity'),
               (select min(t.cancel_at) from teguh.{t} t),
               (select min(s.next_run_at) from teguh.schedules s where s.queue_name = {queue} and not s.paused))
    into v_ready, v_at;
  if v_ready <= p_now and not teguh._claimable_now({queue}, p_now) then
    -- everything ready now waits for a concurrency slot: the next run that falls due later
    select min(p.available_at) into v_ready from teguh.{p} p where p.available_at > p_now;
  end if;
  return least(v_ready, v_at);
end
$fn$
$tmpl$
  ] loop
    execute teguh._render(v_template, jsonb_build_object(
      'spawn', quote_ident('_spawn_' || p_queue_name),
      'claim', quote_ident('_claim_' || p_queue_name),
      'complete', quote_ident('_done_' || p_queue_name),
      'checkpoint', quote_ident('_step_' || p_queue_name),
      'wake', quote_ident('_wake_' || p_queue_name),
      't', quote_ident('t_' || p_queue_name),
      'p', quote_ident('p_' || p_queue_name),
      'r', quote_ident('r_' || p_queue_name),
      'c', quote_ident('c_' || p_queue_name),
      'w', quote_ident('w_' || p_queue_name),
      'queue', quote_literal(p_queue_name)));
  end loop;
end
$$;

-- ---------------------------------------------------------------------------
-- Queues
-- ---------------------------------------------------------------------------

-- Creates the queue's tables and indexes where missing (idempotent: every
-- install runs it for every queue, so an index a version-1 name collision
-- kept from being created appears). Names follow <kind>_<queue> (header).
create or replace function teguh._create_queue_tables(p_queue_name text) returns void
language plpgsql as $$
begin
  perform teguh._check_queue_name(p_queue_name);
  execute format($t$
    create table if not exists teguh.%I (
      task_id          uuid        not null,
      task_name        text        not null,
      params           jsonb       not null,
      headers          jsonb       not null,
      retry_strategy   jsonb       not null,
      max_attempts     integer     not null,
      priority         integer     not null,
      cancellation     jsonb,
      idempotency_key  text,
      state            text        not null,
      attempts         integer     not null default 0,
      current_run_id   uuid        not null,
      created_at       timestamptz not null,
      available_at     timestamptz not null,
      first_started_at timestamptz,
      finished_at      timestamptz,
      cancel_at        timestamptz,
      completed_payload jsonb,
      last_failure     jsonb,
      cancelled_at     timestamptz,
      -- claims so far, resumes included: the run sequence claim_task reports
      claims           integer     not null default 0,
      -- the spawn option concurrency_key (teguh.set_concurrency_limit)
      concurrency_key  text,
      constraint %I primary key (task_id)
    ) with (fillfactor = 50)$t$, 't_' || p_queue_name, 'tpk_' || p_queue_name);
  -- Only columns that never change after insert (or change only for tasks
  -- with a cancellation policy) are indexed, and pages are half filled on
  -- insert: a claimed batch's two updates per task then stay HOT (measured:
  -- ~100% at fillfactor 50 against ~64% at 80 for batches of 200).
  execute format('create unique index if not exists %I on teguh.%I (idempotency_key) where idempotency_key is not null',
                 'tikey_' || p_queue_name, 't_' || p_queue_name);
  execute format('create index if not exists %I on teguh.%I (cancel_at) where cancel_at is not null',
                 'tcncl_' || p_queue_name, 't_' || p_queue_name);

  execute format($t$
    create table if not exists teguh.%I (
      task_id       uuid        not null,
      run_id        uuid        not null,
      attempt       integer     not null,
      priority      integer     not null,
      available_at  timestamptz not null,
      seq           bigint      generated always as identity (sequence name teguh.%I),
      wake_event    text,
      event_payload jsonb,
      timeout_step  text,
      concurrency_key text,
      constraint %I primary key (task_id)
    ) with (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 200)$t$,
    'p_' || p_queue_name, 'pseq_' || p_queue_name, 'ppk_' || p_queue_name);
  -- Claim order: tasks without a concurrency key in porder, keyed ones in
  -- pkey, grouped by key, so that a claim passes over a capped key's
  -- pending tasks without reading them (teguh.set_concurrency_limit).
  execute format('create index if not exists %I on teguh.%I (priority desc, available_at, seq) where concurrency_key is null',
                 'porder_' || p_queue_name, 'p_' || p_queue_name);
  execute format($i$create index if not exists %I on teguh.%I (concurrency_key, priority desc, available_at, seq)
                    where concurrency_key is not null$i$, 'pkey_' || p_queue_name, 'p_' || p_queue_name);
  execute format('create index if not exists %I on teguh.%I (available_at)',
                 'pdue_' || p_queue_name, 'p_' || p_queue_name);

  execute format($t$
    create table if not exists teguh.%I (
      run_id     uuid        not null,
      task_id    uuid        not null,
      attempt    integer     not null,
      worker_id  text        not null,
      claimed_at timestamptz not null,
      expires_at timestamptz not null,
      concurrency_key text,
      constraint %I primary key (run_id)
    ) with (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 200)$t$,
    'r_' || p_queue_name, 'rpk_' || p_queue_name);
  execute format('create index if not exists %I on teguh.%I (expires_at)',
                 'rexp_' || p_queue_name, 'r_' || p_queue_name);
  execute format('create index if not exists %I on teguh.%I (concurrency_key) where concurrency_key is not null',
                 'rkey_' || p_queue_name, 'r_' || p_queue_name);

  execute format($t$
    create table if not exists teguh.%I (
      task_id         uuid        not null,
      checkpoint_name text        not null,
      state           jsonb,
      timed_out       boolean     not null default false,
      owner_run       uuid,
      updated_at      timestamptz not null,
      constraint %I primary key (task_id, checkpoint_name)
    )$t$, 'c_' || p_queue_name, 'cpk_' || p_queue_name);

  execute format($t$
    create table if not exists teguh.%I (
      event_name text        not null,
      payload    jsonb,
      emitted_at timestamptz not null,
      constraint %I primary key (event_name)
    )$t$, 'e_' || p_queue_name, 'epk_' || p_queue_name);
  execute format('create index if not exists %I on teguh.%I (emitted_at)',
                 'eat_' || p_queue_name, 'e_' || p_queue_name);

  execute format($t$
    create table if not exists teguh.%I (
      task_id    uuid        not null,
      run_id     uuid        not null,
      attempt    integer     not null,
      step_name  text        not null,
      event_name text        not null,
      timeout_at timestamptz,
      created_at timestamptz not null,
      constraint %I primary key (task_id)
    )$t$, 'w_' || p_queue_name, 'wpk_' || p_queue_name);
  execute format('create index if not exists %I on teguh.%I (event_name)',
                 'wevent_' || p_queue_name, 'w_' || p_queue_name);
end
$$;

-- Creates queue p_queue_name (its six tables and hot-path functions);
-- idempotent. Errors: 22023 an invalid name.
create or replace function teguh.create_queue(p_queue_name text) returns void
language plpgsql as $$
begin
  perform teguh._check_queue_name(p_queue_name);
  -- concurrent create_queue calls of one name would race on the catalog
  perform pg_advisory_xact_lock(hashtext('teguh.create_queue'), hashtext(p_queue_name));
  perform teguh._create_queue_tables(p_queue_name);
  perform teguh._create_queue_functions(p_queue_name);
  insert into teguh.queues (queue_name) values (p_queue_name) on conflict do nothing;
  perform teguh._secure_functions();  -- the queue's new functions
end
$$;

-- Drops a queue with all its tasks, runs, checkpoints and events; a
-- missing queue is a no-op. Errors: 22023 an invalid name.
create or replace function teguh.drop_queue(p_queue_name text) returns void
language plpgsql as $$
declare
  v_prefix   text;
  v_function regprocedure;
begin
  perform teguh._check_queue_name(p_queue_name);
  perform pg_advisory_xact_lock(hashtext('teguh.create_queue'), hashtext(p_queue_name));
  foreach v_prefix in array array['ae_', 'a_', 'w_', 'e_', 'c_', 'r_', 'p_', 't_'] loop
    execute format('drop table if exists teguh.%I', v_prefix || p_queue_name);
  end loop;
  for v_function in
    select p.oid::regprocedure from pg_proc p
     where p.pronamespace = 'teguh'::regnamespace
       and p.proname in ('_spawn_' || p_queue_name, '_claim_' || p_queue_name, '_done_' || p_queue_name,
                         '_step_' || p_queue_name, '_wake_' || p_queue_name)
  loop
    execute format('drop function %s', v_function);
  end loop;
  delete from teguh.queues where queue_name = p_queue_name;
end
$$;

-- Every queue with its creation time, in name order. No errors.
create or replace function teguh.list_queues() returns table (queue_name text, created_at timestamptz)
language sql stable as $$
  select q.queue_name, q.created_at from teguh.queues q order by q.queue_name
$$;

-- ---------------------------------------------------------------------------
-- Spawning
-- ---------------------------------------------------------------------------

-- Creates a task and its first run, ready at once or at available_at /
-- after delay_seconds; an idempotency_key already used returns that task
-- with created = false. Errors: 22023 (task_name, options: headers,
-- retry_strategy, max_attempts, priority, cancellation, idempotency_key,
-- available_at, delay_seconds), 42704 unknown queue.
create or replace function teguh.spawn_task(
  p_queue_name     text,
  p_task_name text,
  p_params    jsonb,
  p_options   jsonb default '{}'
) returns table (task_id uuid, run_id uuid, attempt integer, created boolean)
language plpgsql as $$
declare
  o     record;
  v_now timestamptz := teguh.current_time();
begin
  perform teguh._assert_queue(p_queue_name);
  perform teguh._check_name('task_name', p_task_name);
  o := teguh._parse_spawn_options(teguh._with_queue_defaults(p_queue_name, p_options), false);
  return query execute format('select * from teguh.%I($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)', '_spawn_' || p_queue_name)
    using p_task_name, coalesce(p_params, 'null'::jsonb), o.o_headers, o.o_retry_strategy, o.o_max_attempts,
          o.o_priority, o.o_cancellation, o.o_idempotency_key, v_now, o.o_available_at, o.o_concurrency_key;
  perform teguh._notify(p_queue_name);
end
$$;

-- Spawns one task per element of the JSON array p_params with the same
-- options, atomically, in order; idempotency_keys gives one key per task.
-- Errors: 22023 (task_name, params, options, idempotency_keys), 42704.
create or replace function teguh.spawn_tasks(
  p_queue_name     text,
  p_task_name text,
  p_params    jsonb,
  p_options   jsonb default '{}'
) returns table (task_id uuid, run_id uuid, attempt integer, created boolean)
language plpgsql as $$
#variable_conflict use_column
declare
  o          record;
  v_now      timestamptz := teguh.current_time();
  v_count    integer;
  v_ids      uuid[];
  v_runs     uuid[];
  v_attempts integer[];
  v_created  boolean[];
  v_keys     text[];
begin
  perform teguh._assert_queue(p_queue_name);
  perform teguh._check_name('task_name', p_task_name);
  if jsonb_typeof(p_params) is distinct from 'array' then
    perform teguh._invalid('params', format('expected a JSON array with one element per task, got %s',
                                            coalesce(jsonb_typeof(p_params), 'null')));
  end if;
  o := teguh._parse_spawn_options(teguh._with_queue_defaults(p_queue_name, p_options), true);
  v_count := jsonb_array_length(p_params);
  if o.o_idempotency_keys is not null and jsonb_array_length(o.o_idempotency_keys) <> v_count then
    perform teguh._invalid('idempotency_keys', format('expected %s keys, one per task, got %s',
                                                      v_count, jsonb_array_length(o.o_idempotency_keys)));
  end if;
  if v_count = 0 then
    return;
  end if;

  execute format($q$
    with input as materialized (
      select x.ord, x.params, $3->>(x.ord::integer - 1) as ikey,
             teguh.portable_uuidv7() as task_id, teguh.portable_uuidv7() as run_id
        from jsonb_array_elements($2) with ordinality as x(params, ord)
    ), ins as (
      insert into teguh.%1$I (task_id, task_name, params, headers, retry_strategy, max_attempts, priority,
                              cancellation, idempotency_key, state, current_run_id, created_at, available_at,
                              cancel_at, concurrency_key)
      select i.task_id, $1, i.params, $4, $5, $6, $7, $8, i.ikey, 'pending', i.run_id, $9, $10,
             $10 + make_interval(secs => ($8->>'max_delay')::double precision), $11
        from input i order by i.ord
      on conflict (idempotency_key) where idempotency_key is not null do nothing
      returning task_id, idempotency_key
    ), ready as (
      insert into teguh.%2$I (task_id, run_id, attempt, priority, available_at, concurrency_key)
      select i.task_id, i.run_id, 1, $7, $10, $11
        from input i join ins using (task_id) order by i.ord
    ), result as (
      select i.ord, i.ikey,
             coalesce(ins.task_id, dup.task_id, old.task_id) as task_id,
             coalesce(case when ins.task_id is not null then i.run_id end, dup.run_id, old.current_run_id) as run_id,
             case when ins.task_id is null and dup.task_id is null then greatest(old.attempts, 1) else 1 end
               as attempt,
             ins.task_id is not null as created
        from input i
        left join ins on ins.task_id = i.task_id
        -- a key repeated within the batch resolves to the task its first use created
        left join lateral (
          select i2.task_id, i2.run_id from ins i1 join input i2 on i2.task_id = i1.task_id
           where ins.task_id is null and i1.idempotency_key = i.ikey
        ) dup on true
        left join teguh.%1$I old on ins.task_id is null and dup.task_id is null and old.idempotency_key = i.ikey
    )
    select array_agg(task_id order by ord), array_agg(run_id order by ord), array_agg(attempt order by ord),
           array_agg(created order by ord), array_agg(ikey order by ord)
      from result$q$, 't_' || p_queue_name, 'p_' || p_queue_name)
    into v_ids, v_runs, v_attempts, v_created, v_keys
    using p_task_name, p_params, o.o_idempotency_keys, o.o_headers, o.o_retry_strategy, o.o_max_attempts,
          o.o_priority, o.o_cancellation, v_now, o.o_available_at, o.o_concurrency_key;
  if array_position(v_ids, null) is not null then
    -- A concurrent spawn committed one of the keys while this insert waited
    -- on it: this statement's snapshot predates that task, a new one sees it.
    execute format($q$
      select array_agg(coalesce(u.task_id, t.task_id) order by u.ord),
             array_agg(coalesce(u.run_id, t.current_run_id) order by u.ord),
             array_agg(case when u.task_id is null then greatest(t.attempts, 1) else u.attempt end order by u.ord)
        from unnest($1::uuid[], $2::uuid[], $3::integer[], $4::text[]) with ordinality
             as u(task_id, run_id, attempt, ikey, ord)
        left join teguh.%I t on u.task_id is null and t.idempotency_key = u.ikey$q$, 't_' || p_queue_name)
      into v_ids, v_runs, v_attempts
      using v_ids, v_runs, v_attempts, v_keys;
  end if;
  perform teguh._notify(p_queue_name);
  return query select u.task_id, u.run_id, u.attempt, u.created
                 from unnest(v_ids, v_runs, v_attempts, v_created) with ordinality
                      as u(task_id, run_id, attempt, created, ord)
                order by u.ord;
end
$$;

-- ---------------------------------------------------------------------------
-- Claiming and finishing runs
-- ---------------------------------------------------------------------------

-- Raises the right error for a run that is not the task's active run.
create or replace function teguh._raise_inactive(p_queue_name text, p_run_id uuid, p_task_id uuid default null)
returns void
language plpgsql as $$
declare
  v_state text;
begin
  if p_task_id is null then
    execute format('select task_id from teguh.%I where run_id = $1', 'r_' || p_queue_name) into p_task_id using p_run_id;
  end if;
  if p_task_id is not null then
    execute format('select state from teguh.%I where task_id = $1', 't_' || p_queue_name) into v_state using p_task_id;
  end if;
  if v_state = 'cancelled' then
    perform teguh._raise_cancelled(p_queue_name, p_task_id);
  end if;
  raise exception 'run % is not active in queue "%"', p_run_id, p_queue_name
    using errcode = 'AB002', hint = 'Its lease expired and another worker took the task over, or the run id is unknown.';
end
$$;

-- Ends a failed attempt of a task whose t_ row the caller has locked:
-- schedules the next attempt or fails the task. p_retry_at overrides the
-- strategy's backoff.
create or replace function teguh._fail_attempt(
  p_queue_name    text,
  p_task_id  uuid,
  p_run_id   uuid,
  p_reason   jsonb,
  p_retry_at timestamptz,
  p_now      timestamptz
) returns void
language plpgsql as $$
declare
  v_task record;
  v_run  uuid;
begin
  execute format('select attempts, max_attempts, retry_strategy, priority, concurrency_key from teguh.%I where task_id = $1',
                 't_' || p_queue_name) into v_task using p_task_id;
  execute format('delete from teguh.%I where run_id = $1', 'r_' || p_queue_name) using p_run_id;
  -- a reason {"retryable": false, ...} fails the task now, attempts left or not
  if v_task.attempts < v_task.max_attempts and p_reason->'retryable' is distinct from 'false'::jsonb then
    v_run := teguh.portable_uuidv7();
    execute format($q$update teguh.%I set state = 'pending', current_run_id = $2, last_failure = $3
                      where task_id = $1$q$, 't_' || p_queue_name)
      using p_task_id, v_run, p_reason;
    execute format($q$insert into teguh.%I (task_id, run_id, attempt, priority, available_at, concurrency_key)
                      values ($1, $2, $3, $4, $5, $6)$q$, 'p_' || p_queue_name)
      using p_task_id, v_run, v_task.attempts + 1, v_task.priority,
            coalesce(p_retry_at, p_now + make_interval(secs => teguh._retry_delay(v_task.retry_strategy, v_task.attempts))),
            v_task.concurrency_key;
    perform teguh._notify(p_queue_name);
  else
    execute format($q$update teguh.%I set state = 'failed', last_failure = $2, finished_at = $3, cancel_at = null
                      where task_id = $1$q$, 't_' || p_queue_name)
      using p_task_id, p_reason, p_now;
    if v_task.concurrency_key is not null then
      perform teguh._notify(p_queue_name);  -- a concurrency slot is free (teguh.next_wake_at)
    end if;
  end if;
end
$$;

-- Recovers up to p_limit runs whose lease expired: each counts as a failed
-- attempt. Never waits: rows others hold are left for the next sweep. A
-- lease whose recovery fails is isolated (teguh._isolate_lease) so that it
-- can neither stop the sweep nor come back first in every later one.
create or replace function teguh._recover_expired(p_queue_name text, p_now timestamptz, p_limit integer)
returns integer
language plpgsql as $$
declare
  v_lease  record;
  v_task   record;
  v_exists boolean;
  v_count  integer := 0;
  v_error  text;
begin
  for v_lease in execute format(
    'select run_id, task_id, attempt, worker_id, expires_at from teguh.%I where expires_at < $1
      order by expires_at limit $2 for update skip locked', 'r_' || p_queue_name)
    using p_now, p_limit
  loop
    begin
      v_task := null;
      execute format('select state, current_run_id, true as locked from teguh.%I where task_id = $1 for update skip locked',
                     't_' || p_queue_name)
        into v_task using v_lease.task_id;
      if v_task.locked is null then
        -- someone else holds the task (they will settle it), or it was deleted
        execute format('select exists (select 1 from teguh.%I where task_id = $1)', 't_' || p_queue_name)
          into v_exists using v_lease.task_id;
        if not v_exists then
          execute format('delete from teguh.%I where run_id = $1', 'r_' || p_queue_name) using v_lease.run_id;
        end if;
      elsif v_task.state = 'running' and v_task.current_run_id = v_lease.run_id then
        perform teguh._fail_attempt(p_queue_name, v_lease.task_id, v_lease.run_id,
          jsonb_build_object('name', 'LeaseExpired',
                             'message', format('worker %s did not finish attempt %s before its lease expired at %s',
                                               v_lease.worker_id, v_lease.attempt, v_lease.expires_at)),
          null, p_now);
        v_count := v_count + 1;
      else
        -- the task was cancelled or has moved on: the lease is stale
        execute format('delete from teguh.%I where run_id = $1', 'r_' || p_queue_name) using v_lease.run_id;
      end if;
    exception when others then
      get stacked diagnostics v_error = message_text;
      perform teguh._isolate_lease(p_queue_name, v_lease.task_id, v_lease.run_id, v_error, p_now);
    end;
  end loop;
  return v_count;
end
$$;

-- Settles an expired lease whose recovery raised p_error: fails its task
-- with a RecoveryError reason naming the error; if even that fails, moves
-- the lease's expiry an hour on so that the next sweeps reach the others.
-- Either way a WARNING names the queue and the task.
create or replace function teguh._isolate_lease(
  p_queue_name text,
  p_task_id    uuid,
  p_run_id     uuid,
  p_error      text,
  p_now        timestamptz
) returns void
language plpgsql as $$
declare
  v_failed integer;
begin
  raise warning 'teguh: recovering the expired lease of task % in queue "%" failed: %', p_task_id, p_queue_name, p_error;
  begin
    -- never waits: a task someone else holds keeps its lease for a later sweep
    execute format($q$
      with locked as (
        select t.task_id from teguh.%I t
         where t.task_id = $1 and t.current_run_id = $4 and t.state = 'running'
           for update skip locked
      )
      update teguh.%1$I t set state = 'failed', finished_at = $2, cancel_at = null,
             last_failure = jsonb_build_object('name', 'RecoveryError', 'message', $3::text)
        from locked where t.task_id = locked.task_id$q$, 't_' || p_queue_name)
      using p_task_id, p_now, 'the engine could not recover this run''s expired lease: ' || p_error, p_run_id;
    get diagnostics v_failed = row_count;
    if v_failed > 0 then
      execute format('delete from teguh.%I where run_id = $1', 'r_' || p_queue_name) using p_run_id;
    else
      execute format('update teguh.%I set expires_at = $2 where run_id = $1', 'r_' || p_queue_name)
        using p_run_id, p_now + interval '1 hour';
    end if;
  exception when others then
    execute format('update teguh.%I set expires_at = $2 where run_id = $1', 'r_' || p_queue_name)
      using p_run_id, p_now + interval '1 hour';
    raise warning 'teguh: task % in queue "%" could not be failed either (%); its lease is retried in an hour',
                  p_task_id, p_queue_name, sqlerrm;
  end;
end
$$;

-- Validates a claim's arguments and runs the queue's claim function.
-- p_run_seq selects what the attempt column reports (see claim_task).
create or replace function teguh._claim(
  p_queue_name    text,
  p_worker_id     text,
  p_claim_timeout integer,
  p_qty           integer,
  p_run_seq       boolean
) returns table (run_id uuid, task_id uuid, attempt integer, task_name text, params jsonb, retry_strategy jsonb,
                 max_attempts integer, headers jsonb, wake_event text, event_payload jsonb)
language plpgsql as $$
begin
  perform teguh._assert_queue(p_queue_name);
  perform teguh._check_name('worker_id', p_worker_id);
  -- null: the queue policy's lease_timeout; 0: a lease that never expires
  p_claim_timeout := coalesce(p_claim_timeout, teguh._queue_lease_timeout(p_queue_name));
  perform teguh._check_seconds('claim_timeout', p_claim_timeout, 0);
  if p_qty is null or p_qty < 1 or p_qty > 10000 then
    perform teguh._invalid('qty', format('expected an integer between 1 and 10000, got %s', coalesce(p_qty::text, 'null')));
  end if;
  return query execute format('select * from teguh.%I($1, $2, $3, $4, $5)', '_claim_' || p_queue_name)
    using p_worker_id, p_claim_timeout, p_qty, teguh.current_time(), p_run_seq;
end
$$;

-- Leases up to p_qty ready runs for p_claim_timeout seconds (0: a lease that
-- never expires), recovering expired leases and enforcing cancellation
-- deadlines first. The attempt column is the run sequence the Go client
-- expects: 1 on the first claim, one more on every later claim, a resume
-- after a sleep or an event included; max_attempts and backoff still count
-- failures only (teguh.claim_runs reports that attempt number).
-- Errors: 22023 (worker_id, claim_timeout, qty), 42704 unknown queue.
create or replace function teguh.claim_task(
  p_queue_name    text,
  p_worker_id     text,
  p_claim_timeout integer default 30,
  p_qty           integer default 1
) returns table (run_id uuid, task_id uuid, attempt integer, task_name text, params jsonb, retry_strategy jsonb,
                 max_attempts integer, headers jsonb, wake_event text, event_payload jsonb)
language sql as $$
  select * from teguh._claim(p_queue_name, p_worker_id, p_claim_timeout, p_qty, true)
$$;

-- claim_task with attempt = the attempt number (failures so far + 1), which
-- a resume after a sleep or an event keeps: the Python worker's claim.
-- Errors: as claim_task.
create or replace function teguh.claim_runs(
  p_queue_name    text,
  p_worker_id     text,
  p_claim_timeout integer default 30,
  p_qty           integer default 1
) returns table (run_id uuid, task_id uuid, attempt integer, task_name text, params jsonb, retry_strategy jsonb,
                 max_attempts integer, headers jsonb, wake_event text, event_payload jsonb)
language sql as $$
  select * from teguh._claim(p_queue_name, p_worker_id, p_claim_timeout, p_qty, false)
$$;

-- claim_runs that also says when the queue's next run falls due, so that a
-- worker whose claim came back short needs no second round trip
-- (next_wake_at) to know how long it may sleep. The claimed runs come first,
-- with null next_wake_at/next_wake_in; when fewer than p_qty runs were
-- claimed, one last row with a null run_id carries next_wake_at (as
-- teguh.next_wake_at, measured after the claim) and next_wake_in, the
-- seconds from teguh.current_time() to it (<= 0: due now; both null:
-- nothing pending). A wrapper of the same claim as claim_runs.
-- Errors: as claim_task.
create or replace function teguh.claim_runs_next(
  p_queue_name    text,
  p_worker_id     text,
  p_claim_timeout integer default 30,
  p_qty           integer default 1
) returns table (run_id uuid, task_id uuid, attempt integer, task_name text, params jsonb, retry_strategy jsonb,
                 max_attempts integer, headers jsonb, wake_event text, event_payload jsonb,
                 next_wake_at timestamptz, next_wake_in double precision)
language plpgsql as $$
declare
  v_claimed integer;
  v_at      timestamptz;
begin
  -- _claim validates every argument before it claims anything
  return query
    select c.*, null::timestamptz, null::double precision
      from teguh._claim(p_queue_name, p_worker_id, p_claim_timeout, p_qty, false) c;
  get diagnostics v_claimed = row_count;
  if v_claimed < p_qty then
    v_at := teguh.next_wake_at(p_queue_name);
    return query
      select null::uuid, null::uuid, null::integer, null::text, null::jsonb, null::jsonb, null::integer,
             null::jsonb, null::text, null::jsonb, v_at,
             extract(epoch from v_at - teguh.current_time())::double precision;
  end if;
end
$$;

-- claim_runs_next for several queues in one transaction: one round trip and
-- one commit (one WAL flush) for the whole claim of a worker that serves
-- several queues, where a claim per queue paid one of each per queue.
-- p_queue_names[i] takes at most p_qtys[i] runs and all the queues together
-- at most p_total. The queues claim in the order given, each up to its fair
-- share of what is left (ceil(left / queues still to claim)), so a queue
-- with fewer ready runs leaves the rest to the queues after it; a caller
-- rotates the order for fairness. The rows are claim_runs_next's with the
-- queue's name first, queue by queue: the claimed runs, then, for a queue
-- that claimed fewer runs than its share, its next-due row (null run_id).
-- Queues whose turn comes when nothing is left return no row. Every
-- argument and queue is checked before anything is claimed.
-- Errors: 22023 (queue_names, qtys, total, worker_id, claim_timeout),
-- 42704 unknown queue.
create or replace function teguh.claim_queues_next(
  p_queue_names   text[],
  p_worker_id     text,
  p_claim_timeout integer,
  p_qtys          integer[],
  p_total         integer
) returns table (queue_name text, run_id uuid, task_id uuid, attempt integer, task_name text, params jsonb,
                 retry_strategy jsonb, max_attempts integer, headers jsonb, wake_event text, event_payload jsonb,
                 next_wake_at timestamptz, next_wake_in double precision)
language plpgsql as $$
declare
  v_count  integer := coalesce(cardinality(p_queue_names), 0);
  v_left   integer := p_total;
  v_queue  text;
  v_want   integer;
  v_got    integer;
  v_at     timestamptz;
begin
  if v_count < 1 or v_count > 100 or array_ndims(p_queue_names) <> 1 then
    perform teguh._invalid('queue_names', format('expected a one-dimensional array of 1 to 100 queue names, got %s',
                                                 coalesce(p_queue_names::text, 'null')));
  end if;
  if array_position(p_queue_names, null) is not null then
    perform teguh._invalid('queue_names', 'expected no null element');
  end if;
  if (select count(distinct q.name) from unnest(p_queue_names) as q(name)) <> v_count then
    perform teguh._invalid('queue_names', 'expected each queue once');
  end if;
  if p_qtys is null or cardinality(p_qtys) <> v_count or array_ndims(p_qtys) <> 1 then
    perform teguh._invalid('qtys', format('expected %s integers, one per queue, got %s',
                                          v_count, coalesce(p_qtys::text, 'null')));
  end if;
  if exists (select 1 from unnest(p_qtys) as x(qty) where x.qty is null or x.qty < 1 or x.qty > 10000) then
    perform teguh._invalid('qtys', format('expected integers between 1 and 10000, got %s', p_qtys));
  end if;
  if p_total is null or p_total < 1 or p_total > 10000 then
    perform teguh._invalid('total', format('expected an integer between 1 and 10000, got %s',
                                           coalesce(p_total::text, 'null')));
  end if;
  foreach v_queue in array p_queue_names loop
    perform teguh._assert_queue(v_queue);
  end loop;
  perform teguh._check_name('worker_id', p_worker_id);
  if p_claim_timeout is not null then  -- null: each queue's lease_timeout policy
    perform teguh._check_seconds('claim_timeout', p_claim_timeout, 0);
  end if;

  for v_i in 1 .. v_count loop
    exit when v_left <= 0;
    v_queue := p_queue_names[v_i];
    v_want := least(p_qtys[v_i], ceil(v_left::numeric / (v_count - v_i + 1))::integer);
    return query
      select v_queue, c.*, null::timestamptz, null::double precision
        from teguh._claim(v_queue, p_worker_id, p_claim_timeout, v_want, false) c;
    get diagnostics v_got = row_count;
    v_left := v_left - v_got;
    if v_got < v_want then
      v_at := teguh.next_wake_at(v_queue);
      return query
        select v_queue, null::uuid, null::uuid, null::integer, null::text, null::jsonb, null::jsonb, null::integer,
               null::jsonb, null::text, null::jsonb, v_at,
               extract(epoch from v_at - teguh.current_time())::double precision;
    end if;
  end loop;
end
$$;

-- Completes many runs of one queue in one statement (a worker's batched
-- completions). Returns the runs that were not completed: 'cancelled' or
-- 'lost' (not the task's active run any more); the others are completed.
-- Errors: 22023 (run_ids, states), 42704 unknown queue.
create or replace function teguh.complete_runs(p_queue_name text, p_run_ids uuid[], p_states jsonb[] default null)
returns table (run_id uuid, status text)
language plpgsql as $$
begin
  perform teguh._assert_queue(p_queue_name);
  if p_run_ids is null then
    perform teguh._invalid('run_ids', 'expected an array of run ids, got null');
  end if;
  if p_states is not null and cardinality(p_states) <> cardinality(p_run_ids) then
    perform teguh._invalid('states', format('expected %s results, one per run, got %s',
                                            cardinality(p_run_ids), cardinality(p_states)));
  end if;
  return query execute format('select * from teguh.%I($1, $2, $3)', '_done_' || p_queue_name)
    using p_run_ids, coalesce(p_states, array_fill(null::jsonb, array[cardinality(p_run_ids)])),
          teguh.current_time();
end
$$;

-- Completes the task of an active run with result p_state.
-- Errors: 42704 unknown queue, AB001 task cancelled, AB002 run not active.
create or replace function teguh.complete_run(p_queue_name text, p_run_id uuid, p_state jsonb default null)
returns void
language plpgsql as $$
declare
  v_status text;
begin
  perform teguh._assert_queue(p_queue_name);
  execute format('select status from teguh.%I($1, $2, $3)', '_done_' || p_queue_name)
    into v_status using array[p_run_id], array[p_state], teguh.current_time();
  if v_status is not null then
    perform teguh._raise_inactive(p_queue_name, p_run_id);
  end if;
end
$$;

-- Locks the task whose active run is p_run_id (t_ first, as everywhere) and
-- returns its id and priority; raises AB001/AB002 when the run is not active.
create or replace function teguh._lock_run(p_queue_name text, p_run_id uuid, out o_task_id uuid, out o_priority integer)
language plpgsql as $$
begin
  execute format($q$
    select t.task_id, t.priority from teguh.%1$I t
     where t.task_id = (select r.task_id from teguh.%2$I r where r.run_id = $1)
       and t.current_run_id = $1 and t.state = 'running'
       for update$q$, 't_' || p_queue_name, 'r_' || p_queue_name)
    into o_task_id, o_priority using p_run_id;
  if o_task_id is null then
    perform teguh._raise_inactive(p_queue_name, p_run_id);
  end if;
end
$$;

-- Ends an active run as failed with p_reason: the next attempt is queued
-- after the retry strategy's backoff (or at p_retry_at) while attempts
-- remain, else the task fails. A reason object with "retryable": false fails
-- the task now whatever attempts are left; the stored reason (last_failure)
-- keeps that flag. Errors: 22023 (reason, reason.retryable, retry_at), 42704,
-- AB001, AB002.
create or replace function teguh.fail_run(p_queue_name text, p_run_id uuid, p_reason jsonb, p_retry_at timestamptz default null)
returns void
language plpgsql as $$
declare
  v_task_id uuid;
  v_now     timestamptz := teguh.current_time();
begin
  perform teguh._assert_queue(p_queue_name);
  if p_reason is null then
    perform teguh._invalid('reason', 'expected a JSON value describing the failure, got null');
  end if;
  if jsonb_typeof(p_reason) = 'object' and p_reason ? 'retryable'
     and jsonb_typeof(p_reason->'retryable') is distinct from 'boolean' then
    perform teguh._invalid('reason.retryable', format('expected true or false, got %s', p_reason->'retryable'));
  end if;
  if p_retry_at is not null then
    perform teguh._check_instant('retry_at', p_retry_at, v_now);
  end if;
  v_task_id := (teguh._lock_run(p_queue_name, p_run_id)).o_task_id;
  perform teguh._fail_attempt(p_queue_name, v_task_id, p_run_id, p_reason, p_retry_at, v_now);
end
$$;

-- A durable sleep: the run leaves its lease and is claimable again at
-- p_wake_at, with the same run id and attempt.
-- Errors: 22023 (wake_at), 42704, AB001 task cancelled, AB002 run not active.
create or replace function teguh.schedule_run(p_queue_name text, p_run_id uuid, p_wake_at timestamptz)
returns void
language plpgsql as $$
declare
  v_task record;
begin
  perform teguh._assert_queue(p_queue_name);
  perform teguh._check_instant('wake_at', p_wake_at, teguh.current_time());
  -- Lock first, then act in later statements: their fresh snapshots see the
  -- lease that a concurrent resume of this same run id may have created.
  v_task := teguh._lock_run(p_queue_name, p_run_id);
  execute format($q$update teguh.%I set state = 'sleeping' where task_id = $1$q$, 't_' || p_queue_name)
    using v_task.o_task_id;
  execute format($q$
    with released as (delete from teguh.%1$I r where r.run_id = $1
                      returning r.task_id, r.run_id, r.attempt, r.concurrency_key)
    insert into teguh.%2$I (task_id, run_id, attempt, priority, available_at, concurrency_key)
    select released.task_id, released.run_id, released.attempt, $2, $3, released.concurrency_key from released$q$,
    'r_' || p_queue_name, 'p_' || p_queue_name)
    using p_run_id, v_task.o_priority, p_wake_at;
  perform teguh._notify(p_queue_name);
end
$$;

-- Hands a run back without using an attempt (a worker with no handler for
-- the task, or one shutting down): the task is pending again, unlike a
-- durable sleep, with the same run id and attempt, claimable from
-- p_available_at (default now). p_reason, when given, becomes the task's
-- last_failure so that the task says why it waits. Raises AB001/AB002 when
-- the run is not active, 22023 for a bad p_available_at.
create or replace function teguh.release_run(
  p_queue_name   text,
  p_run_id       uuid,
  p_available_at timestamptz default null,
  p_reason       jsonb       default null
) returns void
language plpgsql as $$
declare
  v_now  timestamptz := teguh.current_time();
  v_task record;
begin
  perform teguh._assert_queue(p_queue_name);
  if p_available_at is not null then
    perform teguh._check_instant('available_at', p_available_at, v_now);
  end if;
  v_task := teguh._lock_run(p_queue_name, p_run_id);
  execute format($q$update teguh.%I set state = 'pending', last_failure = coalesce($2, last_failure)
                    where task_id = $1$q$, 't_' || p_queue_name)
    using v_task.o_task_id, p_reason;
  execute format($q$
    with released as (delete from teguh.%1$I r where r.run_id = $1
                      returning r.task_id, r.run_id, r.attempt, r.concurrency_key)
    insert into teguh.%2$I (task_id, run_id, attempt, priority, available_at, concurrency_key)
    select released.task_id, released.run_id, released.attempt, $2, $3, released.concurrency_key from released$q$,
    'r_' || p_queue_name, 'p_' || p_queue_name)
    using p_run_id, v_task.o_priority, coalesce(p_available_at, v_now);
  perform teguh._notify(p_queue_name);
end
$$;

-- Heartbeat: the run's lease becomes now + p_extend_by (a lease that never
-- expires stays so). Errors: 22023 (extend_by), 42704, AB001, AB002.
create or replace function teguh.extend_claim(p_queue_name text, p_run_id uuid, p_extend_by integer)
returns void
language plpgsql as $$
declare
  v_done integer;
begin
  perform teguh._assert_queue(p_queue_name);
  perform teguh._check_seconds('extend_by', p_extend_by, 1);
  -- the lease becomes now + extend_by: heartbeats do not accumulate
  execute format($q$
    with extended as (
      update teguh.%1$I r set expires_at = case when r.expires_at = 'infinity' then r.expires_at else $2 end
        from teguh.%2$I t
       where r.run_id = $1 and t.task_id = r.task_id and t.current_run_id = $1 and t.state = 'running'
      returning 1
    ) select count(*) from extended$q$, 'r_' || p_queue_name, 't_' || p_queue_name)
    into v_done using p_run_id, teguh.current_time() + make_interval(secs => p_extend_by);
  if v_done = 0 then
    perform teguh._raise_inactive(p_queue_name, p_run_id);
  end if;
end
$$;

-- The batched heartbeat of one worker. Returns only the runs that were not
-- extended: 'cancelled' (their lease is released here) or 'lost'.
-- Errors: 22023 (worker_id, run_ids, extend_by), 42704 unknown queue.
create or replace function teguh.extend_claims(p_queue_name text, p_worker_id text, p_run_ids uuid[], p_extend_by integer)
returns table (run_id uuid, status text)
language plpgsql as $$
begin
  perform teguh._assert_queue(p_queue_name);
  perform teguh._check_name('worker_id', p_worker_id);
  perform teguh._check_seconds('extend_by', p_extend_by, 1);
  if p_run_ids is null then
    perform teguh._invalid('run_ids', 'expected an array of run ids, got null');
  end if;
  return query execute format($q$
    with ids as (
      select distinct u.run_id from unnest($1::uuid[]) as u(run_id)
    ), mine as (
      -- a lease another call is settling (the same worker completing it) is
      -- skipped, neither extended nor reported: waiting could deadlock
      select r.run_id from teguh.%1$I r
       where r.run_id in (select ids.run_id from ids) and r.worker_id = $2
       order by r.run_id
         for no key update skip locked
    ), extended as (
      update teguh.%1$I r set expires_at = case when r.expires_at = 'infinity' then r.expires_at else $3 end
        from mine, teguh.%2$I t
       where r.run_id = mine.run_id
         and t.task_id = r.task_id and t.current_run_id = r.run_id and t.state = 'running'
      returning r.run_id
    ), cancelled as (
      delete from teguh.%1$I r using mine, teguh.%2$I t
       where r.run_id = mine.run_id and t.task_id = r.task_id and t.state = 'cancelled'
      returning r.run_id
    )
    select ids.run_id, case when cancelled.run_id is not null then 'cancelled' else 'lost' end
      from ids
      left join extended on extended.run_id = ids.run_id
      left join cancelled on cancelled.run_id = ids.run_id
     where extended.run_id is null
       and (ids.run_id in (select mine.run_id from mine)
            or not exists (select 1 from teguh.%1$I r where r.run_id = ids.run_id and r.worker_id = $2))$q$,
    'r_' || p_queue_name, 't_' || p_queue_name)
    using p_run_ids, p_worker_id, teguh.current_time() + make_interval(secs => p_extend_by);
end
$$;

-- ---------------------------------------------------------------------------
-- Steps
-- ---------------------------------------------------------------------------

-- Locks the task of an active run; raises AB001/AB002 otherwise.
create or replace function teguh._lock_active_task(p_queue_name text, p_task_id uuid, p_run_id uuid) returns void
language plpgsql as $$
declare
  v_state text;
  v_run   uuid;
begin
  execute format('select state, current_run_id from teguh.%I where task_id = $1 for update', 't_' || p_queue_name)
    into v_state, v_run using p_task_id;
  if v_state = 'cancelled' then
    perform teguh._raise_cancelled(p_queue_name, p_task_id);
  end if;
  if v_state is distinct from 'running' or v_run is distinct from p_run_id then
    perform teguh._raise_inactive(p_queue_name, p_run_id, p_task_id);
  end if;
end
$$;

-- Records step p_step_name's result for an active run (upsert), and
-- extends its lease by p_extend_claim_by when given.
-- Errors: 22023 (step_name, extend_claim_by), 42704, AB001, AB002.
create or replace function teguh.set_task_checkpoint_state(
  p_queue_name           text,
  p_task_id         uuid,
  p_step_name       text,
  p_state           jsonb,
  p_owner_run       uuid,
  p_extend_claim_by integer default null
) returns void
language plpgsql as $$
declare
  v_task_state text;
begin
  perform teguh._assert_queue(p_queue_name);
  perform teguh._check_name('step_name', p_step_name);
  if p_extend_claim_by is not null then
    perform teguh._check_seconds('extend_claim_by', p_extend_claim_by, 1);
  end if;
  execute format('select teguh.%I($1, $2, $3, $4, $5, $6)', '_step_' || p_queue_name)
    into v_task_state using p_task_id, p_step_name, p_state, p_owner_run, p_extend_claim_by, teguh.current_time();
  if v_task_state = 'cancelled' then
    perform teguh._raise_cancelled(p_queue_name, p_task_id);
  elsif v_task_state is distinct from 'ok' then
    perform teguh._raise_inactive(p_queue_name, p_owner_run, p_task_id);
  end if;
end
$$;

-- One checkpoint's state, null when there is none.
-- Errors: 42704 unknown queue.
create or replace function teguh.get_task_checkpoint_state(p_queue_name text, p_task_id uuid, p_checkpoint_name text)
returns jsonb
language plpgsql as $$
declare
  v_state jsonb;
begin
  perform teguh._assert_queue(p_queue_name);
  execute format('select state from teguh.%I where task_id = $1 and checkpoint_name = $2', 'c_' || p_queue_name)
    into v_state using p_task_id, p_checkpoint_name;
  return v_state;
end
$$;

-- Every checkpoint of a task, in name order.
-- Errors: 42704, AB001 when p_run_id is given and the task was cancelled.
create or replace function teguh.get_task_checkpoint_states(p_queue_name text, p_task_id uuid, p_run_id uuid)
returns table (checkpoint_name text, state jsonb)
language plpgsql as $$
declare
  v_state text;
begin
  perform teguh._assert_queue(p_queue_name);
  execute format('select state from teguh.%I where task_id = $1', 't_' || p_queue_name) into v_state using p_task_id;
  if v_state = 'cancelled' and p_run_id is not null then
    perform teguh._raise_cancelled(p_queue_name, p_task_id);
  end if;
  return query execute format('select checkpoint_name, state from teguh.%I where task_id = $1 order by checkpoint_name',
                              'c_' || p_queue_name) using p_task_id;
end
$$;

-- ---------------------------------------------------------------------------
-- Events
-- ---------------------------------------------------------------------------

-- Events rely on each statement seeing what committed before it: under
-- REPEATABLE READ a wait and an emit could each miss the other's commit.
create or replace function teguh._require_read_committed(p_function text) returns void
language plpgsql as $$
begin
  if current_setting('transaction_isolation') <> 'read committed' then
    raise exception '% needs the READ COMMITTED isolation level, not %', p_function,
                    upper(current_setting('transaction_isolation'))
      using errcode = '0A000', hint = 'Call it outside this transaction, or in a READ COMMITTED one.';
  end if;
end
$$;

-- Serializes waiting for and emitting one event name, so that a wait and an
-- emit that overlap can never miss each other.
create or replace function teguh._lock_event(p_queue_name text, p_event_name text) returns void
language sql as $$
  select pg_advisory_xact_lock(hashtext('teguh.event.' || p_queue_name), hashtext(p_event_name))
$$;

-- Returns event p_event_name's payload to an active run (recording it as
-- checkpoint p_step_name), or suspends the run until it is emitted or
-- p_timeout seconds pass; timed_out tells a timeout from a null payload.
-- Errors: 22023 (step_name, event_name, timeout), 42704, AB001, AB002,
-- 0A000 outside READ COMMITTED.
create or replace function teguh.wait_event(
  p_queue_name      text,
  p_task_id    uuid,
  p_run_id     uuid,
  p_step_name  text,
  p_event_name text,
  p_timeout    integer default null
) returns table (should_suspend boolean, payload jsonb, timed_out boolean)
language plpgsql as $$
declare
  v_now     timestamptz := teguh.current_time();
  v_state   jsonb;
  v_timeout boolean;
  v_found   boolean;
  v_lease   record;
begin
  perform teguh._assert_queue(p_queue_name);
  perform teguh._check_name('step_name', p_step_name);
  perform teguh._check_name('event_name', p_event_name);
  if p_timeout is not null then
    perform teguh._check_seconds('timeout', p_timeout, 0);
  end if;
  perform teguh._require_read_committed('teguh.wait_event');
  perform teguh._lock_event(p_queue_name, p_event_name);
  perform teguh._lock_active_task(p_queue_name, p_task_id, p_run_id);

  -- replay: the outcome was checkpointed when the task was woken
  execute format('select state, timed_out, true from teguh.%I where task_id = $1 and checkpoint_name = $2',
                 'c_' || p_queue_name)
    into v_state, v_timeout, v_found using p_task_id, p_step_name;
  if v_found then
    return query select false, v_state, v_timeout;
    return;
  end if;

  execute format('select payload, true from teguh.%I where event_name = $1', 'e_' || p_queue_name)
    into v_state, v_found using p_event_name;
  if v_found then
    execute format($q$insert into teguh.%I (task_id, checkpoint_name, state, timed_out, owner_run, updated_at)
                      values ($1, $2, $3, false, $4, $5)$q$, 'c_' || p_queue_name)
      using p_task_id, p_step_name, v_state, p_run_id, v_now;
    return query select false, v_state, false;
    return;
  end if;

  -- suspend: release the lease, register the wait, and queue the timeout
  execute format($q$update teguh.%I set state = 'sleeping' where task_id = $1 returning priority$q$, 't_' || p_queue_name)
    into v_lease using p_task_id;
  if p_timeout is not null then
    execute format($q$insert into teguh.%I (task_id, run_id, attempt, priority, available_at, wake_event, timeout_step,
                                            concurrency_key)
                      select $1, r.run_id, r.attempt, $3, $4, $5, $6, r.concurrency_key
                        from teguh.%I r where r.run_id = $2$q$,
                   'p_' || p_queue_name, 'r_' || p_queue_name)
      using p_task_id, p_run_id, v_lease.priority, v_now + make_interval(secs => p_timeout), p_event_name, p_step_name;
  end if;
  execute format($q$
    with released as (delete from teguh.%I where run_id = $2 returning attempt)
    insert into teguh.%I (task_id, run_id, attempt, step_name, event_name, timeout_at, created_at)
    select $1, $2, released.attempt, $3, $4, $5, $6 from released$q$, 'r_' || p_queue_name, 'w_' || p_queue_name)
    using p_task_id, p_run_id, p_step_name, p_event_name,
          v_now + make_interval(secs => p_timeout), v_now;
  perform teguh._notify(p_queue_name);
  return query select true, null::jsonb, false;
end
$$;

-- wait_event without timed_out (the Go reference's columns).
-- Errors: as wait_event.
create or replace function teguh.await_event(
  p_queue_name      text,
  p_task_id    uuid,
  p_run_id     uuid,
  p_step_name  text,
  p_event_name text,
  p_timeout    integer default null
) returns table (should_suspend boolean, payload jsonb)
language sql as $$
  select w.should_suspend, w.payload
    from teguh.wait_event(p_queue_name, p_task_id, p_run_id, p_step_name, p_event_name, p_timeout) w
$$;

-- Records event p_event_name (first write wins) and wakes the tasks
-- waiting for it. Errors: 22023 (event_name), 42704, 0A000 outside READ
-- COMMITTED.
create or replace function teguh.emit_event(p_queue_name text, p_event_name text, p_payload jsonb default null)
returns void
language plpgsql as $$
declare
  v_now timestamptz := teguh.current_time();
  v_emitted boolean;
begin
  perform teguh._assert_queue(p_queue_name);
  perform teguh._check_name('event_name', p_event_name);
  perform teguh._require_read_committed('teguh.emit_event');
  perform teguh._lock_event(p_queue_name, p_event_name);
  execute format('select exists (select 1 from teguh.%I where event_name = $1)', 'e_' || p_queue_name)
    into v_emitted using p_event_name;
  if v_emitted then
    return;  -- first write wins
  end if;

  -- lock the waiting tasks, then drop their timeout rows (a wake replaces them)
  execute format($q$
    with waiting as (
      select t.task_id from teguh.%1$I t join teguh.%3$I w using (task_id)
       where w.event_name = $1 and t.state = 'sleeping'
       order by t.task_id
         for update of t
    )
    delete from teguh.%2$I p using waiting where p.task_id = waiting.task_id$q$,
    't_' || p_queue_name, 'p_' || p_queue_name, 'w_' || p_queue_name)
    using p_event_name;
  execute format($q$
    with woken as (
      delete from teguh.%4$I w using teguh.%1$I t
       where w.event_name = $1 and t.task_id = w.task_id and t.state = 'sleeping'
      returning w.task_id, w.run_id, w.attempt, w.step_name, t.priority, t.concurrency_key
    ), due as (
      insert into teguh.%2$I (task_id, run_id, attempt, priority, available_at, wake_event, event_payload,
                              concurrency_key)
      select woken.task_id, woken.run_id, woken.attempt, woken.priority, $3, $1, $2, woken.concurrency_key from woken
    )
    insert into teguh.%3$I (task_id, checkpoint_name, state, timed_out, owner_run, updated_at)
    select woken.task_id, woken.step_name, $2, false, woken.run_id, $3 from woken
    on conflict (task_id, checkpoint_name)
    do update set state = excluded.state, timed_out = false, owner_run = excluded.owner_run,
                  updated_at = excluded.updated_at$q$,
    't_' || p_queue_name, 'p_' || p_queue_name, 'c_' || p_queue_name, 'w_' || p_queue_name)
    using p_event_name, p_payload, v_now;

  execute format('insert into teguh.%I (event_name, payload, emitted_at) values ($1, $2, $3)', 'e_' || p_queue_name)
    using p_event_name, p_payload, v_now;
  perform teguh._notify(p_queue_name);
end
$$;

-- ---------------------------------------------------------------------------
-- Tasks
-- ---------------------------------------------------------------------------

-- Cancels a task whose t_ row the caller has locked. The lease (if any) is
-- kept so that the running worker's next call raises AB001; lease recovery
-- or the worker's heartbeat removes it.
create or replace function teguh._cancel_locked(p_queue_name text, p_task_id uuid, p_now timestamptz) returns void
language plpgsql as $$
declare
  v_freed boolean;
begin
  execute format($q$select state = 'running' and concurrency_key is not null from teguh.%I where task_id = $1$q$,
                 't_' || p_queue_name) into v_freed using p_task_id;
  execute format($q$update teguh.%I set state = 'cancelled', cancelled_at = $2, finished_at = $2, cancel_at = null
                    where task_id = $1$q$, 't_' || p_queue_name) using p_task_id, p_now;
  if v_freed then
    perform teguh._notify(p_queue_name);  -- a concurrency slot is free (teguh.next_wake_at)
  end if;
  execute format('delete from teguh.%I where task_id = $1', 'p_' || p_queue_name) using p_task_id;
  execute format('delete from teguh.%I where task_id = $1', 'w_' || p_queue_name) using p_task_id;
end
$$;

-- Cancels a task that has not finished (a finished one is left as is): it
-- is never claimed again, its worker's next call raises AB001.
-- Errors: 42704 unknown queue, P0002 unknown task.
create or replace function teguh.cancel_task(p_queue_name text, p_task_id uuid) returns void
language plpgsql as $$
declare
  v_state text;
begin
  perform teguh._assert_queue(p_queue_name);
  execute format('select state from teguh.%I where task_id = $1 for update', 't_' || p_queue_name)
    into v_state using p_task_id;
  if v_state is null then
    raise exception 'task % does not exist in queue "%"', p_task_id, p_queue_name using errcode = 'P0002';
  end if;
  if v_state in ('completed', 'failed', 'cancelled') then
    return;
  end if;
  perform teguh._cancel_locked(p_queue_name, p_task_id, teguh.current_time());
end
$$;

-- Runs a failed task again in place (a new run and attempt, created =
-- true), or, with {"spawn_new": true}, any task as a new task.
-- Errors: 22023 (options, spawn_new, max_attempts), 42704, P0002,
-- 55000 in place on a task that is not failed.
create or replace function teguh.retry_task(p_queue_name text, p_task_id uuid, p_options jsonb default '{}')
returns table (task_id uuid, run_id uuid, attempt integer, created boolean)
language plpgsql as $$
#variable_conflict use_column
declare
  v_task         record;
  v_run          uuid;
  v_spawn_new    boolean := false;
  v_max_attempts integer;
  v_options      jsonb;
begin
  perform teguh._assert_queue(p_queue_name);
  p_options := jsonb_strip_nulls(coalesce(p_options, '{}'::jsonb));
  if jsonb_typeof(p_options) <> 'object' then
    perform teguh._invalid('options', format('expected a JSON object, got %s', jsonb_typeof(p_options)));
  end if;
  perform teguh._check_keys('options', p_options, array['spawn_new', 'max_attempts']);
  if p_options ? 'spawn_new' then
    if jsonb_typeof(p_options->'spawn_new') <> 'boolean' then
      perform teguh._invalid('spawn_new', format('expected true or false, got %s', p_options->'spawn_new'));
    end if;
    v_spawn_new := (p_options->>'spawn_new')::boolean;
  end if;
  if p_options ? 'max_attempts' then
    v_max_attempts := teguh._json_int('max_attempts', p_options->'max_attempts', 1, 2147483647);
  end if;

  execute format('select * from teguh.%I where task_id = $1 for update', 't_' || p_queue_name)
    into v_task using p_task_id;
  if v_task.task_id is null then
    raise exception 'task % does not exist in queue "%"', p_task_id, p_queue_name using errcode = 'P0002';
  end if;

  if v_spawn_new then
    v_options := jsonb_build_object('headers', v_task.headers, 'retry_strategy', v_task.retry_strategy,
                                    'max_attempts', coalesce(v_max_attempts, v_task.max_attempts),
                                    'priority', v_task.priority, 'cancellation', v_task.cancellation,
                                    'concurrency_key', v_task.concurrency_key);
    return query select * from teguh.spawn_task(p_queue_name, v_task.task_name, v_task.params, v_options);
    return;
  end if;

  if v_task.state <> 'failed' then
    raise exception 'task % in queue "%" is %, only a failed task can be retried in place', p_task_id, p_queue_name, v_task.state
      using errcode = '55000', hint = 'Pass {"spawn_new": true} to run it again as a new task.';
  end if;
  v_run := teguh.portable_uuidv7();
  -- a manual retry starts afresh: the cancellation deadlines count again
  execute format($q$update teguh.%I set state = 'pending', current_run_id = $2, finished_at = null,
                           max_attempts = greatest(coalesce($3, max_attempts), attempts + 1),
                           first_started_at = null,
                           cancel_at = $4 + make_interval(secs => case when cancellation ? 'max_delay' then
                                                              least((cancellation->>'max_delay')::numeric, 315360000)
                                                            end::double precision)
                     where task_id = $1$q$, 't_' || p_queue_name)
    using p_task_id, v_run, v_max_attempts, teguh.current_time();
  execute format($q$insert into teguh.%I (task_id, run_id, attempt, priority, available_at, concurrency_key)
                    values ($1, $2, $3, $4, $5, $6)$q$, 'p_' || p_queue_name)
    using p_task_id, v_run, v_task.attempts + 1, v_task.priority, teguh.current_time(), v_task.concurrency_key;
  perform teguh._notify(p_queue_name);
  -- created: a new run was created (the Go reference's convention)
  return query select p_task_id, v_run, v_task.attempts + 1, true;
end
$$;

-- A task's state, attempts, result and cancellation time; no row for an
-- unknown task. Errors: 42704 unknown queue.
create or replace function teguh.get_task_result(p_queue_name text, p_task_id uuid)
returns table (task_id uuid, state text, attempts integer, completed_payload jsonb, cancelled_at timestamptz)
language plpgsql as $$
begin
  perform teguh._assert_queue(p_queue_name);
  return query execute format(
    'select task_id, state, attempts, completed_payload, cancelled_at from teguh.%I where task_id = $1',
    't_' || p_queue_name) using p_task_id;
end
$$;

-- get_task's result columns grew (archived, then what a task waits for):
-- create or replace cannot change a result type, so a get_task without the
-- newest column goes first (schema 2 databases: schema/migrations/2-3.sql).
do $$
begin
  if exists (select 1 from pg_proc p where p.oid = to_regprocedure('teguh.get_task(text, uuid)')
                and not ('concurrency_running' = any (p.proargnames))) then
    drop function teguh.get_task(text, uuid);
  end if;
end
$$;

-- Everything about one task; no row for an unknown task. archived is true
-- for a task found in the queue's archive (see teguh.set_queue_policy).
-- What an unfinished task waits for (null for a finished, running or
-- archived one), with next_attempt_at, when it can be claimed next:
--   start        its first attempt, due at next_attempt_at (a delayed spawn)
--   retry        its next attempt after a failure (last_failure), at next_attempt_at
--   sleep        a durable sleep, until next_attempt_at
--   event        event wait_event; next_attempt_at = wait_timeout_at, when
--                the wait times out (both null: it waits for ever)
--   resume       its event came (wait_event): due at next_attempt_at
--   handed_back  handed back without using an attempt (no handler on a
--                worker: hand_backs counts them, or a worker stopping)
-- hand_backs: how many times an unfinished task was handed back by workers
-- with no handler for it. queue_paused: the queue's policy pauses claims,
-- so nothing is claimed until it is resumed, due or not. worker_id and
-- lease_expires_at: the lease of a running task (lease_expires_at null: a
-- lease that never expires). An unfinished task with a concurrency_key
-- also gets its key's limit (teguh.set_concurrency_limit; null: none) and
-- concurrency_running, the runs of that key in flight: a due task whose key
-- is at its limit waits for one of them to end. Errors: 42704 unknown queue.
create or replace function teguh.get_task(p_queue_name text, p_task_id uuid)
returns table (task_id uuid, task_name text, state text, attempts integer, max_attempts integer, priority integer,
               params jsonb, headers jsonb, retry_strategy jsonb, idempotency_key text, created_at timestamptz,
               first_started_at timestamptz, finished_at timestamptz, completed_payload jsonb, last_failure jsonb,
               cancelled_at timestamptz, archived boolean, next_attempt_at timestamptz, wait_kind text,
               wait_event text, wait_timeout_at timestamptz, hand_backs integer, queue_paused boolean,
               worker_id text, lease_expires_at timestamptz, concurrency_key text, concurrency_limit integer,
               concurrency_running integer)
language plpgsql as $$
declare
  v_run       uuid;
  v_due       boolean := false;
  v_available timestamptz;
  v_attempt   integer;
  v_wake      text;
  v_waits     boolean := false;
  v_count     jsonb;
begin
  perform teguh._assert_queue(p_queue_name);
  queue_paused := exists (select 1 from teguh.queue_policies qp
                           where qp.queue_name = p_queue_name and qp.policy @> '{"paused": true}');
  hand_backs := 0;
  -- One primary-key probe per table, each planned on its own (a join of the
  -- five would cost more to plan, on every call, than the probes to run).
  execute format(
    'select task_id, task_name, state, attempts, max_attempts, priority, params, headers, retry_strategy,
            idempotency_key, created_at, first_started_at, finished_at, completed_payload, last_failure, cancelled_at,
            current_run_id, concurrency_key
       from teguh.%I where task_id = $1', 't_' || p_queue_name)
    into task_id, task_name, state, attempts, max_attempts, priority, params, headers, retry_strategy,
         idempotency_key, created_at, first_started_at, finished_at, completed_payload, last_failure, cancelled_at,
         v_run, concurrency_key
    using p_task_id;
  if task_id is null then
    if to_regclass(format('teguh.%I', 'a_' || p_queue_name)) is not null then
      return query execute format(
        'select t.task_id, t.task_name, t.state, t.attempts, t.max_attempts, t.priority, t.params, t.headers,
                t.retry_strategy, t.idempotency_key, t.created_at, t.first_started_at, t.finished_at,
                t.completed_payload, t.last_failure, t.cancelled_at, true, null::timestamptz, null::text, null::text,
                null::timestamptz, 0, $2, null::text, null::timestamptz, t.concurrency_key, null::integer,
                null::integer
           from teguh.%I a cross join lateral jsonb_populate_record(null::teguh.%I, a.task) t
          where a.task_id = $1', 'a_' || p_queue_name, 't_' || p_queue_name) using p_task_id, queue_paused;
    end if;
    return;
  end if;
  archived := false;
  if state = 'running' then
    -- isfinite: a lease that never expires has no expiry to show
    execute format('select worker_id, case when isfinite(expires_at) then expires_at end from teguh.%I where run_id = $1',
                   'r_' || p_queue_name)
      into worker_id, lease_expires_at using v_run;
  elsif state in ('pending', 'sleeping') then
    -- only the probes this task's state needs: an event wait is a sleeping
    -- task's, a hand-back count a handed-back task's
    execute format('select available_at, attempt, wake_event, true from teguh.%I where task_id = $1', 'p_' || p_queue_name)
      into v_available, v_attempt, v_wake, v_due using p_task_id;
    v_due := coalesce(v_due, false);
    if state = 'sleeping' then
      execute format('select event_name, timeout_at, true from teguh.%I where task_id = $1', 'w_' || p_queue_name)
        into wait_event, wait_timeout_at, v_waits using p_task_id;
      v_waits := coalesce(v_waits, false);
    end if;
    -- a value stored before inputs were range-checked has no instant
    if isfinite(v_available) then
      next_attempt_at := v_available;
    end if;
    if not isfinite(wait_timeout_at) then
      wait_timeout_at := null;
    end if;
    wait_kind := case when v_waits then 'event'
                      when not v_due then null
                      when v_wake is not null then 'resume'
                      when state = 'sleeping' then 'sleep'
                      when v_attempt > attempts then case when v_attempt = 1 then 'start' else 'retry' end
                      else 'handed_back'
                 end;
    if wait_kind = 'resume' then
      wait_event := v_wake;
    elsif wait_kind = 'handed_back' then
      execute format($q$select c.state->'count' from teguh.%I c
                         where c.task_id = $1 and c.checkpoint_name = '$teguh:unhandled'$q$, 'c_' || p_queue_name)
        into v_count using p_task_id;
      if jsonb_typeof(v_count) = 'number' then
        hand_backs := greatest(least((v_count #>> '{}')::numeric, 2147483647), 0)::integer;
      end if;
    end if;
  end if;
  if concurrency_key is not null and state in ('pending', 'sleeping', 'running') then
    concurrency_limit := teguh._concurrency_limit(p_queue_name, concurrency_key);
    if concurrency_limit is not null then
      -- counted as claims count them (a cancelled task's lingering lease does not)
      execute format($q$select count(*) from teguh.%I r join teguh.%I t on t.task_id = r.task_id
                         where r.concurrency_key = $1 and t.state = 'running' and t.current_run_id = r.run_id$q$,
                     'r_' || p_queue_name, 't_' || p_queue_name)
        into concurrency_running using concurrency_key;
    end if;
  end if;
  return next;
end
$$;

-- ---------------------------------------------------------------------------
-- Time-driven maintenance
-- ---------------------------------------------------------------------------

-- Cancels up to p_limit tasks whose cancellation deadline (max_delay,
-- max_duration) has passed; returns how many. Never waits: rows others hold
-- are left for the next call.
create or replace function teguh._enforce_deadlines(p_queue_name text, p_now timestamptz, p_limit integer)
returns integer
language plpgsql as $$
declare
  v_task  record;
  v_count integer := 0;
begin
  for v_task in execute format(
    'select task_id, state from teguh.%I where cancel_at <= $1 order by cancel_at limit $2 for update skip locked',
    't_' || p_queue_name) using p_now, p_limit
  loop
    begin
      if v_task.state in ('completed', 'failed', 'cancelled') then
        execute format('update teguh.%I set cancel_at = null where task_id = $1', 't_' || p_queue_name)
          using v_task.task_id;
      else
        perform teguh._cancel_locked(p_queue_name, v_task.task_id, p_now);
        v_count := v_count + 1;
      end if;
    exception when others then
      raise warning 'teguh: enforcing the cancellation deadline of task % in queue "%" failed: %',
                    v_task.task_id, p_queue_name, sqlerrm;
    end;
  end loop;
  return v_count;
end
$$;

-- When each queue was last ticked: the ticker NOTIFYs work that fell due since.
create table if not exists teguh.queues_ticks (
  queue_name text        primary key references teguh.queues (queue_name) on delete cascade,
  ticked_at  timestamptz not null
);

-- Sends one NOTIFY on the queue's channel when a run fell due since the
-- queue's last tick (a sleep, a delayed retry or spawn, an event timeout), so
-- that a worker that only polls now and then (the Go client every 30 s) is
-- woken; returns whether it notified. Never waits: when another ticker holds
-- the queue's tick row, that one notifies.
create or replace function teguh._notify_due(p_queue_name text, p_now timestamptz) returns boolean
language plpgsql as $$
declare
  v_last timestamptz;
  v_due  boolean;
begin
  insert into teguh.queues_ticks (queue_name, ticked_at) values (p_queue_name, '-infinity')
  on conflict (queue_name) do nothing;
  select t.ticked_at into v_last from teguh.queues_ticks t where t.queue_name = p_queue_name for update skip locked;
  if not found then
    return false;
  end if;
  update teguh.queues_ticks t set ticked_at = p_now where t.queue_name = p_queue_name;
  -- one probe of the due index
  execute format('select exists (select 1 from teguh.%I where available_at > $1 and available_at <= $2)',
                 'p_' || p_queue_name)
    into v_due using v_last, p_now;
  if v_due then
    perform teguh._notify(p_queue_name);
  end if;
  return v_due;
end
$$;

-- Recovers expired leases and enforces cancellation deadlines, for one queue
-- or all, and NOTIFYs each queue whose work fell due since its last tick;
-- returns how many tasks it moved. Sleeps, delayed spawns and event timeouts
-- need no ticker to be claimable. Each queue's maintenance runs in its own
-- exception block: a queue that fails is named in a WARNING and rolled back
-- alone, and the other queues are ticked all the same.
-- Errors: 22023 an invalid queue name, 42704 unknown queue.
create or replace function teguh.ticker(p_queue_name text default null) returns integer
language plpgsql as $$
declare
  v_now   timestamptz := teguh.current_time();
  v_queue text;
  v_count integer := 0;
begin
  if p_queue_name is not null then
    perform teguh._assert_queue(p_queue_name);
  end if;
  for v_queue in select q.queue_name from teguh.queues q where p_queue_name is null or q.queue_name = p_queue_name
                  order by q.queue_name loop
    begin
      -- one line per maintenance step of a queue
      v_count := v_count + teguh._recover_expired(v_queue, v_now, 1000);
      v_count := v_count + teguh._enforce_deadlines(v_queue, v_now, 1000);
      perform teguh._fire_schedules(v_queue, v_now, 1000);
      perform teguh._apply_retention(v_queue, v_now, 1000);
      perform teguh._notify_due(v_queue, v_now);
    exception when others then
      raise warning 'teguh.ticker: queue "%" failed and was skipped: % (SQLSTATE %)', v_queue, sqlerrm, sqlstate;
    end;
  end loop;
  return v_count;
end
$$;

-- The earliest time something on the queue falls due: a delayed, retrying or
-- sleeping run, an event timeout, a lease expiry, a cancellation deadline or
-- the next slot of an active schedule. May lie in the past (something is due now); null when nothing is pending.
-- Ready tasks that a claim cannot take because their concurrency key is at
-- its limit do not count as due: the end of a lease that frees a slot
-- notifies the queue instead (so a worker does not poll a capped key).
-- Errors: 42704 unknown queue.
create or replace function teguh.next_wake_at(p_queue_name text) returns timestamptz
language plpgsql as $$
declare
  v_at  timestamptz;
  v_now timestamptz;
begin
  perform teguh._assert_queue(p_queue_name);
  v_now := teguh.current_time();
  execute format('select teguh.%I($1)', '_wake_' || p_queue_name) into v_at using v_now;
  -- rows stored before inputs were range-checked may hold infinities:
  -- -infinity is due now, infinity never
  if v_at = '-infinity' then
    return v_now;
  elsif v_at = 'infinity' then
    return null;
  end if;
  return v_at;
end
$$;

-- Whether a claim could take a task ready at p_now: one without a
-- concurrency key, or one whose key is below its limit. Only tasks with a key
-- cost more than an index probe (one probe per distinct key, as in claims).
create or replace function teguh._claimable_now(p_queue_name text, p_now timestamptz) returns boolean
language plpgsql as $$
declare
  v_found boolean;
  v_key   text;
  v_limit integer;
  v_count integer;
begin
  execute format('select exists (select 1 from teguh.%I where concurrency_key is not null)', 'p_' || p_queue_name)
    into v_found;
  if not v_found then
    return true;  -- no keyed task waits: what is ready is claimable
  end if;
  execute format('select exists (select 1 from teguh.%I where concurrency_key is null and available_at <= $1)',
                 'p_' || p_queue_name)
    into v_found using p_now;
  if v_found then
    return true;
  end if;
  for v_key in execute format($q$
    with recursive k(key) as (
      select min(p.concurrency_key) from teguh.%1$I p where p.concurrency_key is not null
      union all
      select (select min(p.concurrency_key) from teguh.%1$I p where p.concurrency_key > k.key)
        from k where k.key is not null
    )
    select k.key from k
     where k.key is not null
       and exists (select 1 from teguh.%1$I p where p.concurrency_key = k.key and p.available_at <= $1)$q$,
    'p_' || p_queue_name) using p_now
  loop
    v_limit := teguh._concurrency_limit(p_queue_name, v_key);
    if v_limit is null then
      return true;
    elsif v_limit > 0 then
      execute format($q$select count(*) from teguh.%I r join teguh.%I t on t.task_id = r.task_id
                         where r.concurrency_key = $1 and t.state = 'running' and t.current_run_id = r.run_id$q$,
                     'r_' || p_queue_name, 't_' || p_queue_name)
        into v_count using v_key;
      if v_count < v_limit then
        return true;
      end if;
    end if;
  end loop;
  return false;
end
$$;

-- cleanup_tasks gained p_strategy: drop the three-argument version an earlier
-- schema 2 install created (a positional call would be ambiguous).
drop function if exists teguh.cleanup_tasks(text, integer, integer);

-- Deletes up to p_limit terminal tasks that finished more than p_ttl_seconds
-- ago. Task ids are time-ordered (v7), so the primary key bounds the scan to
-- tasks created before the cut-off; finished_at decides.
-- p_strategy "archive" moves them to the queue's archive instead (see
-- teguh.set_queue_policy); null follows the queue's cleanup policy.
-- Errors: 22023 (ttl_seconds, limit, strategy), 42704 unknown queue.
create or replace function teguh.cleanup_tasks(p_queue_name text, p_ttl_seconds integer, p_limit integer default 1000,
                                               p_strategy text default null)
returns integer
language plpgsql as $$
declare
  v_cutoff timestamptz;
  v_count  integer;
begin
  perform teguh._assert_queue(p_queue_name);
  -- any integer ttl keeps now - ttl finite (2147483647 s is 68 years)
  perform teguh._check_seconds('ttl_seconds', p_ttl_seconds, 0, 2147483647);
  perform teguh._check_positive('limit', p_limit);
  if p_strategy not in ('delete', 'archive') then
    perform teguh._invalid('strategy', format('expected "delete", "archive" or null (the queue''s policy), got %s',
                                              quote_literal(p_strategy)));
  end if;
  v_cutoff := teguh.current_time() - make_interval(secs => p_ttl_seconds);
  if coalesce(p_strategy, teguh._queue_policy(p_queue_name)->>'cleanup') = 'archive' then
    return teguh._archive_tasks(p_queue_name, v_cutoff, p_limit);
  end if;
  execute format($q$
    with doomed as (
      select t.task_id from teguh.%1$I t
       where t.task_id < $1 and t.finished_at < $2 and t.state in ('completed', 'failed', 'cancelled')
       order by t.task_id
       limit $3
         for update skip locked
    ), checkpoints as (
      delete from teguh.%2$I c using doomed where c.task_id = doomed.task_id
    ), deleted as (
      delete from teguh.%1$I t using doomed where t.task_id = doomed.task_id returning 1
    )
    select count(*) from deleted$q$, 't_' || p_queue_name, 'c_' || p_queue_name)
    into v_count using teguh._uuidv7_floor(v_cutoff + interval '1 millisecond'), v_cutoff, p_limit;
  return v_count;
end
$$;

-- Runs each queue's retention (teguh.queues.cleanup_ttl_seconds; up to 10000
-- tasks and 10000 events a call), or one queue's; one row per queue. A
-- queue that fails is rolled back alone: its row has error set (and a
-- WARNING names it) and the other queues are cleaned all the same.
-- Errors: 22023 an invalid queue name, 42704 unknown queue.
create or replace function teguh.cleanup_all_queues(p_queue_name text default null)
returns table (queue_name text, tasks_deleted integer, events_deleted integer, error text)
language plpgsql as $$
#variable_conflict use_column
declare
  v_queue  record;
  v_tasks  integer;
  v_events integer;
begin
  if p_queue_name is not null then
    perform teguh._assert_queue(p_queue_name);
  end if;
  for v_queue in select q.queue_name, q.cleanup_ttl_seconds from teguh.queues q
                  where p_queue_name is null or q.queue_name = p_queue_name order by q.queue_name loop
    begin
      v_tasks := teguh.cleanup_tasks(v_queue.queue_name, v_queue.cleanup_ttl_seconds, 10000);
      execute format($q$
        with gone as (
          delete from teguh.%1$I where event_name in (
            select event_name from teguh.%1$I where emitted_at < $1 order by emitted_at limit 10000)
          returning 1
        ) select count(*) from gone$q$, 'e_' || v_queue.queue_name)
        into v_events using teguh.current_time() - make_interval(secs => v_queue.cleanup_ttl_seconds);
      return query select v_queue.queue_name::text, v_tasks, v_events, null::text;
    exception when others then
      raise warning 'teguh.cleanup_all_queues: queue "%" failed and was skipped: % (SQLSTATE %)',
                    v_queue.queue_name, sqlerrm, sqlstate;
      return query select v_queue.queue_name::text, 0, 0, format('%s (SQLSTATE %s)', sqlerrm, sqlstate);
    end;
  end loop;
end
$$;

-- Task counts by state, the oldest due run's wait, the leases in flight and
-- the workers present that serve the queue (teguh.register_worker; a lapsed
-- heartbeat does not count), per queue or for one. A queue whose counts
-- cannot be read gets a row with null counts and error set (and a WARNING);
-- the other queues are counted all the same. Errors: 22023 an invalid queue
-- name, 42704 unknown queue.
create or replace function teguh.queue_stats(p_queue_name text default null)
returns table (queue_name text, pending bigint, running bigint, sleeping bigint, completed bigint, failed bigint,
               cancelled bigint, oldest_pending_seconds double precision, in_flight bigint, error text,
               workers bigint)
language plpgsql as $$
declare
  v_queue   text;
  v_now     timestamptz := teguh.current_time();
  v_workers bigint;
begin
  if p_queue_name is not null then
    perform teguh._assert_queue(p_queue_name);
  end if;
  for v_queue in select q.queue_name from teguh.queues q where p_queue_name is null or q.queue_name = p_queue_name
                  order by q.queue_name loop
    select count(*) into v_workers from teguh.workers w where v_queue = any (w.queues) and w.expires_at >= v_now;
    begin
      -- isfinite: a -infinity stored before inputs were range-checked has no age
      return query execute format($q$
        select $1::text,
               count(*) filter (where state = 'pending'), count(*) filter (where state = 'running'),
               count(*) filter (where state = 'sleeping'), count(*) filter (where state = 'completed'),
               count(*) filter (where state = 'failed'), count(*) filter (where state = 'cancelled'),
               (select extract(epoch from $2 - min(available_at))::double precision
                  from teguh.%2$I where available_at <= $2 and isfinite(available_at)),
               (select count(*) from teguh.%3$I),
               null::text, $3
          from teguh.%1$I$q$, 't_' || v_queue, 'p_' || v_queue, 'r_' || v_queue)
        using v_queue, v_now, v_workers;
    exception when others then
      raise warning 'teguh.queue_stats: queue "%" failed: % (SQLSTATE %)', v_queue, sqlerrm, sqlstate;
      return query select v_queue, null::bigint, null::bigint, null::bigint, null::bigint, null::bigint,
                          null::bigint, null::double precision, null::bigint,
                          format('%s (SQLSTATE %s)', sqlerrm, sqlstate), v_workers;
    end;
  end loop;
end
$$;

-- ---------------------------------------------------------------------------
-- Finding tasks
-- ---------------------------------------------------------------------------

-- A filter's timestamp, or null when absent; 22023 naming it when bad.
create or replace function teguh._json_timestamp(p_argument text, p_value jsonb) returns timestamptz
language plpgsql stable as $$
begin
  if p_value is null or p_value = 'null'::jsonb then
    return null;
  end if;
  if jsonb_typeof(p_value) <> 'string' then
    perform teguh._invalid(p_argument, format('expected an ISO 8601 timestamp string, got %s', p_value));
  end if;
  begin
    return (p_value #>> '{}')::timestamptz;
  exception when others then
    perform teguh._invalid(p_argument, format('expected an ISO 8601 timestamp, got %s', p_value));
  end;
  return null;
end
$$;

-- Lists a queue's tasks, newest first, up to p_limit (1-1000) per page; pass
-- the last task_id of a page as p_after for the next one (keyset pagination:
-- tasks spawned meanwhile never shift a page). Filters (all optional):
-- state (a state or an array of states), task_name, created_after,
-- created_before, finished_after, finished_before (ISO 8601 timestamps;
-- "after" is inclusive, "before" exclusive). The walk follows the primary
-- key (task ids are time-ordered), bounded by the time window: no sequential
-- scan of t_. Archived tasks are not listed (teguh.get_task finds them).
-- Raises 22023 naming a bad filter, 42704 for an unknown queue.
create or replace function teguh.list_tasks(
  p_queue_name text,
  p_filters    jsonb   default '{}',
  p_after      uuid    default null,
  p_limit      integer default 100
) returns table (task_id uuid, task_name text, state text, attempts integer, max_attempts integer, priority integer,
                 params jsonb, headers jsonb, idempotency_key text, created_at timestamptz,
                 first_started_at timestamptz, finished_at timestamptz, last_failure jsonb, cancelled_at timestamptz)
language plpgsql stable set enable_seqscan = off as $$
declare
  v_states          text[];
  v_name            text;
  v_created_after   timestamptz;
  v_created_before  timestamptz;
  v_finished_after  timestamptz;
  v_finished_before timestamptz;
  v_upper           timestamptz;
begin
  perform teguh._assert_queue(p_queue_name);
  p_filters := coalesce(p_filters, '{}'::jsonb);
  if jsonb_typeof(p_filters) <> 'object' then
    perform teguh._invalid('filters', format('expected a JSON object, got %s', jsonb_typeof(p_filters)));
  end if;
  p_filters := jsonb_strip_nulls(p_filters);
  perform teguh._check_keys('filters', p_filters, array['state', 'task_name', 'created_after', 'created_before',
                                                         'finished_after', 'finished_before']);
  if p_limit is null or p_limit < 1 or p_limit > 1000 then
    perform teguh._invalid('limit', format('expected an integer between 1 and 1000, got %s', coalesce(p_limit::text, 'null')));
  end if;
  if p_filters ? 'state' then
    v_states := case jsonb_typeof(p_filters->'state')
                  when 'string' then array[p_filters->>'state']
                  when 'array' then array(select jsonb_array_elements_text(p_filters->'state'))
                end;
    if v_states is null or cardinality(v_states) = 0
       or not v_states <@ array['pending', 'running', 'sleeping', 'completed', 'failed', 'cancelled'] then
      perform teguh._invalid('state', format('expected a task state or an array of them (pending, running, sleeping, completed, failed, cancelled), got %s',
                                             p_filters->'state'));
    end if;
  end if;
  if p_filters ? 'task_name' then
    if jsonb_typeof(p_filters->'task_name') <> 'string' then
      perform teguh._invalid('task_name', format('expected a string, got %s', p_filters->'task_name'));
    end if;
    v_name := p_filters->>'task_name';
  end if;
  v_created_after := teguh._json_timestamp('created_after', p_filters->'created_after');
  v_created_before := teguh._json_timestamp('created_before', p_filters->'created_before');
  v_finished_after := teguh._json_timestamp('finished_after', p_filters->'finished_after');
  v_finished_before := teguh._json_timestamp('finished_before', p_filters->'finished_before');
  -- A task finishes after it is created, and its v7 id is drawn during the
  -- spawning statement, at most a little after its created_at: a minute of
  -- slack keeps the bound on the id safe.
  v_upper := least(v_created_before, v_finished_before) + interval '1 minute';
  return query execute format($q$
    select t.task_id, t.task_name, t.state, t.attempts, t.max_attempts, t.priority, t.params, t.headers,
           t.idempotency_key, t.created_at, t.first_started_at, t.finished_at, t.last_failure, t.cancelled_at
      from teguh.%I t
     where ($1::uuid is null or t.task_id < $1)
       and ($2::uuid is null or t.task_id < $2)
       and ($3::uuid is null or t.task_id >= $3)
       and ($4::text[] is null or t.state = any ($4))
       and ($5::text is null or t.task_name = $5)
       and ($6::timestamptz is null or t.created_at >= $6)
       and ($7::timestamptz is null or t.created_at < $7)
       and ($8::timestamptz is null or t.finished_at >= $8)
       and ($9::timestamptz is null or t.finished_at < $9)
     order by t.task_id desc
     limit $10$q$, 't_' || p_queue_name)
    using p_after, teguh._uuidv7_floor(v_upper), teguh._uuidv7_floor(v_created_after), v_states, v_name,
          v_created_after, v_created_before, v_finished_after, v_finished_before, p_limit;
end
$$;

-- The queue that holds a task, live or archived (task ids are unique across
-- queues): one primary-key probe per queue. Null for an unknown task.
create or replace function teguh.locate_task(p_task_id uuid) returns text
language plpgsql stable as $$
declare
  v_queue text;
  v_found boolean;
begin
  for v_queue in select q.queue_name from teguh.queues q order by q.queue_name loop
    execute format('select exists (select 1 from teguh.%I where task_id = $1)', 't_' || v_queue)
      into v_found using p_task_id;
    if not v_found and to_regclass(format('teguh.%I', 'a_' || v_queue)) is not null then
      execute format('select exists (select 1 from teguh.%I where task_id = $1)', 'a_' || v_queue)
        into v_found using p_task_id;
    end if;
    if v_found then
      return v_queue;
    end if;
  end loop;
  return null;
end
$$;

-- ---------------------------------------------------------------------------
-- Queue policies: retention (delete or archive), pause, defaults, lease timeout
-- ---------------------------------------------------------------------------

-- One row per queue with a policy; the keys set (never null) are in policy,
-- teguh.get_queue_policy() fills in the defaults.
create table if not exists teguh.queue_policies (
  queue_name text        primary key references teguh.queues (queue_name) on delete cascade,
  policy     jsonb       not null,
  updated_at timestamptz not null
);

-- The policy of a queue with every default filled in.
create or replace function teguh._queue_policy(p_queue_name text) returns jsonb
language sql stable as $$
  select jsonb_build_object('retention', null, 'cleanup', 'delete', 'paused', false,
                            'default_max_attempts', 5,
                            'default_retry_strategy', teguh._normalize_retry_strategy(null),
                            'lease_timeout', 30)
         || coalesce((select qp.policy from teguh.queue_policies qp where qp.queue_name = p_queue_name), '{}'::jsonb)
$$;

-- Spawn options with the queue's default_max_attempts and
-- default_retry_strategy where the caller gave none (unchanged, and cheap,
-- for a queue without a policy).
create or replace function teguh._with_queue_defaults(p_queue_name text, p_options jsonb) returns jsonb
language plpgsql stable as $$
declare
  v_policy jsonb;
begin
  select qp.policy into v_policy from teguh.queue_policies qp where qp.queue_name = p_queue_name;
  if v_policy is null or not (v_policy ?| array['default_max_attempts', 'default_retry_strategy']) then
    return p_options;
  end if;
  p_options := coalesce(p_options, '{}'::jsonb);
  if jsonb_typeof(p_options) <> 'object' then
    return p_options;  -- the option parser raises
  end if;
  if v_policy ? 'default_max_attempts' and coalesce(p_options->'max_attempts', 'null') = 'null' then
    p_options := p_options || jsonb_build_object('max_attempts', v_policy->'default_max_attempts');
  end if;
  if v_policy ? 'default_retry_strategy' and coalesce(p_options->'retry_strategy', 'null') = 'null' then
    p_options := p_options || jsonb_build_object('retry_strategy', v_policy->'default_retry_strategy');
  end if;
  return p_options;
end
$$;

-- The lease, in seconds, of a run claimed without a claim_timeout.
create or replace function teguh._queue_lease_timeout(p_queue_name text) returns integer
language sql stable as $$
  select coalesce((select (qp.policy->>'lease_timeout')::integer from teguh.queue_policies qp
                    where qp.queue_name = p_queue_name), 30)
$$;

-- The archive of a queue, created when first needed: a_<q> holds finished
-- tasks (the whole t_ row as JSON, so that it survives changes to t_) with
-- their checkpoints, ae_<q> the events they left behind.
create or replace function teguh._create_archive(p_queue_name text) returns void
language plpgsql as $$
begin
  perform teguh._check_queue_name(p_queue_name);
  execute format($t$
    create table if not exists teguh.%I (
      task_id     uuid        not null,
      task_name   text        not null,
      state       text        not null,
      created_at  timestamptz not null,
      finished_at timestamptz,
      archived_at timestamptz not null,
      task        jsonb       not null,
      checkpoints jsonb       not null,
      constraint %I primary key (task_id)
    )$t$, 'a_' || p_queue_name, 'apk_' || p_queue_name);
  execute format($t$
    create table if not exists teguh.%I (
      event_name  text        not null,
      payload     jsonb,
      emitted_at  timestamptz not null,
      archived_at timestamptz not null,
      constraint %I primary key (event_name)
    )$t$, 'ae_' || p_queue_name, 'aepk_' || p_queue_name);
end
$$;

-- Sets a queue's policy, merging the keys given into the current policy (a
-- key given as null goes back to its default); returns the whole policy.
-- Keys: retention (seconds finished tasks are kept, null: forever),
-- cleanup ("delete" or "archive"), paused (claims return nothing),
-- default_max_attempts and default_retry_strategy (for spawns that give
-- none), lease_timeout (seconds, for runs claimed without a claim_timeout).
-- Raises 22023 naming a bad key, 42704 for an unknown queue.
create or replace function teguh.set_queue_policy(p_queue_name text, p_policy jsonb) returns jsonb
language plpgsql as $$
declare
  v_policy jsonb;
  v_key    text;
  v_value  jsonb;
begin
  perform teguh._assert_queue(p_queue_name);
  if jsonb_typeof(p_policy) is distinct from 'object' then
    perform teguh._invalid('policy', format('expected a JSON object, got %s', coalesce(jsonb_typeof(p_policy), 'null')));
  end if;
  perform teguh._check_keys('policy', p_policy, array['retention', 'cleanup', 'paused', 'default_max_attempts',
                                                       'default_retry_strategy', 'lease_timeout']);
  select qp.policy into v_policy from teguh.queue_policies qp where qp.queue_name = p_queue_name for update;
  v_policy := coalesce(v_policy, '{}'::jsonb);
  for v_key, v_value in select e.key, e.value from jsonb_each(p_policy) e loop
    if v_value = 'null'::jsonb then
      v_policy := v_policy - v_key;
      continue;
    end if;
    case v_key
      when 'retention' then
        perform teguh._json_int('retention', v_value, 0, 2147483647);
      when 'lease_timeout' then
        perform teguh._json_int('lease_timeout', v_value, 1, 2147483647);
      when 'default_max_attempts' then
        perform teguh._json_int('default_max_attempts', v_value, 1, 2147483647);
      when 'default_retry_strategy' then
        v_value := teguh._normalize_retry_strategy(v_value);
      when 'cleanup' then
        if v_value not in ('"delete"', '"archive"') then
          perform teguh._invalid('cleanup', format('expected "delete" or "archive", got %s', v_value));
        end if;
      when 'paused' then
        if jsonb_typeof(v_value) <> 'boolean' then
          perform teguh._invalid('paused', format('expected true or false, got %s', v_value));
        end if;
    end case;
    v_policy := v_policy || jsonb_build_object(v_key, v_value);
  end loop;
  if v_policy->>'cleanup' = 'archive' then
    perform teguh._create_archive(p_queue_name);
  end if;
  insert into teguh.queue_policies as qp (queue_name, policy, updated_at)
  values (p_queue_name, v_policy, teguh.current_time())
  on conflict (queue_name) do update set policy = excluded.policy, updated_at = excluded.updated_at;
  if not coalesce((v_policy->>'paused')::boolean, false) then
    perform pg_notify('teguh_' || p_queue_name, '');  -- a resumed queue may have work
  end if;
  return teguh._queue_policy(p_queue_name);
end
$$;

-- A queue's policy, defaults included. Raises 42704 for an unknown queue.
create or replace function teguh.get_queue_policy(p_queue_name text) returns jsonb
language plpgsql stable as $$
begin
  perform teguh._assert_queue(p_queue_name);
  return teguh._queue_policy(p_queue_name);
end
$$;

-- ---------------------------------------------------------------------------
-- Per-key concurrency limits
-- ---------------------------------------------------------------------------

-- One row per limit. key_pattern is a key, or a prefix followed by "*": the
-- limit then applies to every key with that prefix, to each key separately
-- (per tenant). A key's limit is its exact row, else its longest matching
-- prefix row; a key no row matches is unlimited. Claims count a key's runs
-- in flight from r_<q> (rkey_<q>), so every path that ends a run's lease
-- frees its slot with nothing else to maintain.
create table if not exists teguh.concurrency_limits (
  queue_name  text        not null references teguh.queues (queue_name) on delete cascade,
  key_pattern text        not null,
  max_running integer     not null,
  updated_at  timestamptz not null,
  primary key (queue_name, key_pattern)
);

-- Checks a concurrency key (p_pattern: a limit's key, where a trailing "*"
-- makes a prefix). Both accept every character: a "*" elsewhere is literal,
-- so every key a task can carry can also be limited exactly.
create or replace function teguh._check_concurrency_key(p_argument text, p_key text, p_pattern boolean)
returns void
language plpgsql immutable as $$
begin
  if p_key is null or p_key = '' then
    perform teguh._invalid(p_argument, 'expected a non-empty string');
  elsif octet_length(p_key) > 255 then
    perform teguh._invalid(p_argument, format('expected at most 255 bytes, got %s', octet_length(p_key)));
  end if;
end
$$;

-- The lengths (in characters, "*" included) of the prefix limits of a queue:
-- read once per claim, so that a key's limit costs a primary-key probe per
-- distinct prefix length (usually one or two), however many limits there are.
create or replace function teguh._concurrency_prefix_lengths(p_queue_name text) returns integer[]
language sql stable as $$
  select coalesce(array_agg(distinct length(l.key_pattern)), '{}') from teguh.concurrency_limits l
   where l.queue_name = p_queue_name and right(l.key_pattern, 1) = '*'
$$;

-- The limit patterns that can govern key p_key, given the queue's prefix
-- lengths (_concurrency_prefix_lengths): the key itself (exact, unless it
-- ends in "*": then it is one of its own prefix patterns), and its prefixes
-- of those lengths followed by "*". Looking each up by primary key keeps a
-- claim linear in its keys (a scan of the queue's limits per key made it
-- quadratic with per-tenant limits).
create or replace function teguh._concurrency_patterns(p_key text, p_prefix_lengths integer[]) returns text[]
language sql immutable parallel safe as $$
  select array[p_key] || array(select left(p_key, n - 1) || '*' from unnest(p_prefix_lengths) n
                                where n - 1 <= length(p_key))
$$;

-- The limit that governs key p_key in queue p_queue_name (null: none).
create or replace function teguh._concurrency_limit(p_queue_name text, p_key text) returns integer
language sql stable as $$
  select m.max_running from (
    select c.pattern, (select l.max_running from teguh.concurrency_limits l
                        where l.queue_name = p_queue_name and l.key_pattern = c.pattern) as max_running
      from unnest(teguh._concurrency_patterns(p_key, teguh._concurrency_prefix_lengths(p_queue_name))) as c(pattern)
    offset 0
  ) m
   where m.max_running is not null
   order by m.pattern = p_key and right(p_key, 1) <> '*' desc, length(m.pattern) desc
   limit 1
$$;

-- At most p_limit runs of tasks whose concurrency_key is p_key run at once
-- in queue p_queue_name, across all workers. A p_key ending in "*" limits
-- every key with that prefix, each key separately; an exact key's limit
-- wins over a prefix's, a longer prefix over a shorter one. p_limit 0 holds
-- the key's tasks; null removes the limit. Runs already in flight are not
-- interrupted when a limit is lowered. Errors: 22023 (key, limit), 42704.
create or replace function teguh.set_concurrency_limit(p_queue_name text, p_key text, p_limit integer)
returns void
language plpgsql as $$
begin
  perform teguh._assert_queue(p_queue_name);
  perform teguh._check_concurrency_key('key', p_key, true);
  if p_limit is null then
    perform teguh.drop_concurrency_limit(p_queue_name, p_key);
    return;
  end if;
  if p_limit < 0 then
    perform teguh._invalid('limit', format('expected an integer >= 0 (or null to remove the limit), got %s', p_limit));
  end if;
  insert into teguh.concurrency_limits (queue_name, key_pattern, max_running, updated_at)
  values (p_queue_name, p_key, p_limit, teguh.current_time())
  on conflict (queue_name, key_pattern)
  do update set max_running = excluded.max_running, updated_at = excluded.updated_at;
  perform teguh._notify(p_queue_name);  -- a raised limit may free work
end
$$;

-- Removes the limit on p_key (as given to set_concurrency_limit, "*"
-- included); true when there was one. Errors: 22023 (key), 42704.
create or replace function teguh.drop_concurrency_limit(p_queue_name text, p_key text) returns boolean
language plpgsql as $$
begin
  perform teguh._assert_queue(p_queue_name);
  perform teguh._check_concurrency_key('key', p_key, true);
  delete from teguh.concurrency_limits l where l.queue_name = p_queue_name and l.key_pattern = p_key;
  if found then
    perform teguh._notify(p_queue_name);
  end if;
  return found;
end
$$;

-- The concurrency limits of one queue (or all), with the runs in flight
-- right now under each: for an exact key its runs, for a prefix the runs
-- of every key the prefix governs (keys with a limit of their own, or a
-- longer prefix, excluded). Errors: 22023, 42704 (queue).
create or replace function teguh.list_concurrency_limits(p_queue_name text default null)
returns table (queue_name text, key text, is_prefix boolean, max_running integer, running integer,
               updated_at timestamptz)
language plpgsql stable as $$
declare
  v_limit record;
  v_running integer;
begin
  if p_queue_name is not null then
    perform teguh._assert_queue(p_queue_name);
  end if;
  for v_limit in
    select l.queue_name, l.key_pattern, l.max_running, l.updated_at from teguh.concurrency_limits l
     where p_queue_name is null or l.queue_name = p_queue_name
     order by l.queue_name, l.key_pattern
  loop
    if right(v_limit.key_pattern, 1) = '*' then
      execute format($q$
        select count(*) from teguh.%I r join teguh.%I t on t.task_id = r.task_id
         where r.concurrency_key >= $1 and starts_with(r.concurrency_key, $1)
           and t.state = 'running' and t.current_run_id = r.run_id
           and (select l.key_pattern from teguh.concurrency_limits l
                 where l.queue_name = $2
                   and (l.key_pattern = r.concurrency_key
                        or (right(l.key_pattern, 1) = '*' and starts_with(r.concurrency_key, left(l.key_pattern, -1))))
                 order by l.key_pattern = r.concurrency_key and right(r.concurrency_key, 1) <> '*' desc,
                          length(l.key_pattern) desc limit 1) = $3$q$,
        'r_' || v_limit.queue_name, 't_' || v_limit.queue_name)
        into v_running using left(v_limit.key_pattern, -1), v_limit.queue_name, v_limit.key_pattern;
    else
      execute format($q$
        select count(*) from teguh.%I r join teguh.%I t on t.task_id = r.task_id
         where r.concurrency_key = $1 and t.state = 'running' and t.current_run_id = r.run_id$q$,
        'r_' || v_limit.queue_name, 't_' || v_limit.queue_name)
        into v_running using v_limit.key_pattern;
    end if;
    queue_name := v_limit.queue_name;
    key := v_limit.key_pattern;
    is_prefix := right(v_limit.key_pattern, 1) = '*';
    max_running := v_limit.max_running;
    running := v_running;
    updated_at := v_limit.updated_at;
    return next;
  end loop;
end
$$;

-- Moves up to p_limit finished tasks that finished before p_cutoff, with
-- their checkpoints, to the queue's archive (a_<q>); returns how many. One
-- statement: a batch moves whole or not at all. Never waits: rows others
-- hold are left for the next batch.
create or replace function teguh._archive_tasks(p_queue_name text, p_cutoff timestamptz, p_limit integer)
returns integer
language plpgsql as $$
declare
  v_count integer;
begin
  perform teguh._create_archive(p_queue_name);
  execute format($q$
    with doomed as (
      select t.* from teguh.%1$I t
       where t.task_id < $1 and t.finished_at < $2 and t.state in ('completed', 'failed', 'cancelled')
       order by t.task_id
       limit $3
         for update skip locked
    ), checkpoints as (
      delete from teguh.%2$I c using doomed where c.task_id = doomed.task_id
      returning c.*
    ), archived as (
      insert into teguh.%3$I (task_id, task_name, state, created_at, finished_at, archived_at, task, checkpoints)
      select d.task_id, d.task_name, d.state, d.created_at, d.finished_at, $4, to_jsonb(d),
             coalesce((select jsonb_object_agg(c.checkpoint_name, to_jsonb(c) - 'task_id' - 'checkpoint_name')
                         from checkpoints c where c.task_id = d.task_id), '{}'::jsonb)
        from doomed d
      on conflict (task_id) do nothing
      returning 1
    ), deleted as (
      delete from teguh.%1$I t using doomed where t.task_id = doomed.task_id
    )
    select count(*) from archived$q$, 't_' || p_queue_name, 'c_' || p_queue_name, 'a_' || p_queue_name)
    into v_count
    using teguh._uuidv7_floor(p_cutoff + interval '1 millisecond'), p_cutoff, p_limit, teguh.current_time();
  return v_count;
end
$$;

-- Deletes, or moves to ae_<q> when p_archive, up to p_limit events emitted
-- before p_cutoff that no task still waits for; returns how many.
create or replace function teguh._expire_events(p_queue_name text, p_cutoff timestamptz, p_limit integer,
                                                p_archive boolean)
returns integer
language plpgsql as $$
declare
  v_count integer;
begin
  if p_archive then
    perform teguh._create_archive(p_queue_name);
  end if;
  if not coalesce(p_archive, false) then
    execute format($q$
      delete from teguh.%1$I e where e.event_name in (
        select e2.event_name from teguh.%1$I e2
         where e2.emitted_at < $1
           and not exists (select 1 from teguh.%2$I w where w.event_name = e2.event_name)
         order by e2.emitted_at
         limit $2
           for update skip locked)$q$, 'e_' || p_queue_name, 'w_' || p_queue_name)
      using p_cutoff, p_limit;
    get diagnostics v_count = row_count;
    return v_count;
  end if;
  execute format($q$
    with doomed as (
      select e.event_name from teguh.%1$I e
       where e.emitted_at < $1
         and not exists (select 1 from teguh.%2$I w where w.event_name = e.event_name)
       order by e.emitted_at
       limit $2
         for update skip locked
    ), gone as (
      delete from teguh.%1$I e using doomed where e.event_name = doomed.event_name
      returning e.*
    ), archived as (
      insert into teguh.%3$I (event_name, payload, emitted_at, archived_at)
      select g.event_name, g.payload, g.emitted_at, $3 from gone g
      on conflict (event_name) do nothing
    )
    select count(*) from gone$q$, 'e_' || p_queue_name, 'w_' || p_queue_name, 'ae_' || p_queue_name)
    into v_count using p_cutoff, p_limit, teguh.current_time();
  return v_count;
end
$$;

-- Applies a queue's retention policy, one bounded batch of tasks and one of
-- events (called by the ticker); returns the number of tasks removed.
create or replace function teguh._apply_retention(p_queue_name text, p_now timestamptz, p_limit integer)
returns integer
language plpgsql as $$
declare
  v_policy jsonb;
  v_cutoff timestamptz;
  v_count  integer;
begin
  select qp.policy into v_policy from teguh.queue_policies qp where qp.queue_name = p_queue_name;
  if v_policy is null or not (v_policy ? 'retention') then
    return 0;
  end if;
  v_cutoff := p_now - make_interval(secs => (v_policy->>'retention')::integer);
  if v_policy->>'cleanup' = 'archive' then
    v_count := teguh._archive_tasks(p_queue_name, v_cutoff, p_limit);
  else
    v_count := teguh.cleanup_tasks(p_queue_name, (v_policy->>'retention')::integer, p_limit, 'delete');
  end if;
  perform teguh._expire_events(p_queue_name, v_cutoff, p_limit, v_policy->>'cleanup' is not distinct from 'archive');
  return v_count;
end
$$;

-- ---------------------------------------------------------------------------
-- Worker presence
-- ---------------------------------------------------------------------------

-- Workers that registered themselves; a row whose expires_at has passed (its
-- heartbeat lapsed) no longer counts and is purged by later registrations.
create table if not exists teguh.workers (
  worker_id     text        primary key,
  queues        text[]      not null,
  host          text,
  pid           integer,
  started_at    timestamptz not null,
  last_seen_at  timestamptz not null,
  expires_at    timestamptz not null,
  -- handlers hung after a cancellation or a lost lease, as last reported
  hung_handlers integer     not null default 0
);
create index if not exists workers_expiry on teguh.workers (expires_at);

-- Registers a worker serving p_queues (or refreshes it: started_at is kept);
-- it counts as present for p_ttl_seconds, renewed by teguh.worker_heartbeat.
-- Raises 22023 for a bad argument, 42704 for an unknown queue.
create or replace function teguh.register_worker(
  p_worker_id   text,
  p_queues      text[],
  p_host        text    default null,
  p_pid         integer default null,
  p_ttl_seconds integer default 60
) returns void
language plpgsql as $$
declare
  v_now   timestamptz := teguh.current_time();
  v_queue text;
begin
  perform teguh._check_name('worker_id', p_worker_id);
  if p_queues is null or cardinality(p_queues) = 0 then
    perform teguh._invalid('queues', 'expected a non-empty array of queue names');
  end if;
  foreach v_queue in array p_queues loop
    perform teguh._assert_queue(v_queue);
  end loop;
  perform teguh._check_seconds('ttl_seconds', p_ttl_seconds, 1);
  -- the registrations of workers that vanished without unregistering
  delete from teguh.workers w
   where w.worker_id in (select w2.worker_id from teguh.workers w2 where w2.expires_at < v_now - interval '1 hour'
                          order by w2.expires_at limit 100 for update skip locked);
  insert into teguh.workers as w (worker_id, queues, host, pid, started_at, last_seen_at, expires_at)
  values (p_worker_id, array(select distinct q from unnest(p_queues) q order by q), p_host, p_pid, v_now, v_now,
          v_now + make_interval(secs => p_ttl_seconds))
  on conflict (worker_id) do update
     set queues = excluded.queues, host = excluded.host, pid = excluded.pid,
         last_seen_at = excluded.last_seen_at, expires_at = excluded.expires_at,
         started_at = case when w.expires_at < v_now then excluded.started_at else w.started_at end;
end
$$;

-- Renews a worker's presence for p_ttl_seconds; false when it is not
-- registered (or lapsed and was purged): the worker registers again.
-- p_hung_handlers, when given, records how many of its handlers hang after
-- a cancellation or a lost lease (teguh.list_workers shows it).
-- Errors: 22023 (ttl_seconds, hung_handlers).
create or replace function teguh.worker_heartbeat(
  p_worker_id     text,
  p_ttl_seconds   integer default 60,
  p_hung_handlers integer default null
) returns boolean
language plpgsql as $$
declare
  v_now timestamptz := teguh.current_time();
begin
  perform teguh._check_seconds('ttl_seconds', p_ttl_seconds, 1);
  if p_hung_handlers < 0 then
    perform teguh._invalid('hung_handlers', format('expected null or an integer >= 0, got %s', p_hung_handlers));
  end if;
  update teguh.workers w set last_seen_at = v_now, expires_at = v_now + make_interval(secs => p_ttl_seconds),
                             hung_handlers = coalesce(p_hung_handlers, w.hung_handlers)
   where w.worker_id = p_worker_id;
  return found;
end
$$;

-- Removes a worker's registration (it stops); true when it was registered.
create or replace function teguh.unregister_worker(p_worker_id text) returns boolean
language plpgsql as $$
begin
  delete from teguh.workers w where w.worker_id = p_worker_id;
  return found;
end
$$;

-- The workers present (heartbeat not lapsed), all or those serving a queue,
-- with the hung handlers each last reported (teguh.worker_heartbeat).
-- Errors: 42704 unknown queue.
create or replace function teguh.list_workers(p_queue_name text default null)
returns table (worker_id text, queues text[], host text, pid integer, started_at timestamptz,
               last_seen_at timestamptz, expires_at timestamptz, hung_handlers integer)
language plpgsql stable as $$
begin
  if p_queue_name is not null then
    perform teguh._assert_queue(p_queue_name);
  end if;
  return query
    select w.worker_id, w.queues, w.host, w.pid, w.started_at, w.last_seen_at, w.expires_at, w.hung_handlers
      from teguh.workers w
     where w.expires_at >= teguh.current_time() and (p_queue_name is null or p_queue_name = any (w.queues))
     order by w.started_at, w.worker_id;
end
$$;

-- How many present workers serve each queue (every queue, or one): zero
-- answers "why does nothing run?".
create or replace function teguh.queue_workers(p_queue_name text default null)
returns table (queue_name text, workers bigint)
language plpgsql stable as $$
begin
  if p_queue_name is not null then
    perform teguh._assert_queue(p_queue_name);
  end if;
  return query
    select q.queue_name,
           (select count(*) from teguh.workers w
             where q.queue_name = any (w.queues) and w.expires_at >= teguh.current_time())
      from teguh.queues q
     where p_queue_name is null or q.queue_name = p_queue_name
     order by q.queue_name;
end
$$;

-- ---------------------------------------------------------------------------
-- Schedules: cron specs evaluated in the engine, fired by the ticker
-- ---------------------------------------------------------------------------

-- One row per schedule. next_run_at is the next slot to fire (null: the spec
-- never fires again); a paused schedule keeps its row and fires nothing.
create table if not exists teguh.schedules (
  queue_name    text        not null references teguh.queues (queue_name) on delete cascade,
  schedule_name text        not null,
  spec          text        not null,
  timezone      text        not null,
  task_name     text        not null,
  params        jsonb       not null,
  options       jsonb       not null,
  catch_up      text        not null,
  paused        boolean     not null default false,
  next_run_at   timestamptz,
  last_slot     timestamptz,
  last_run_at   timestamptz,
  last_task_id  uuid,
  last_error    text,
  created_at    timestamptz not null,
  updated_at    timestamptz not null,
  primary key (queue_name, schedule_name)
);
create index if not exists schedules_due on teguh.schedules (queue_name, next_run_at) where not paused;

-- One value of a cron field: a number within [p_min, p_max] or, where the
-- field has them, a name (p_names[1] is p_min).
create or replace function teguh._cron_value(p_field text, p_token text, p_min integer, p_max integer, p_names text[])
returns integer
language plpgsql immutable as $$
declare
  v_value integer;
begin
  if p_token ~ '^[0-9]{1,4}$' then
    v_value := p_token::integer;
  elsif p_names is not null and array_position(p_names, upper(p_token)) is not null then
    return p_min + array_position(p_names, upper(p_token)) - 1;
  else
    perform teguh._invalid('spec', format('bad %s value %s', p_field, quote_literal(p_token)));
  end if;
  if v_value < p_min or v_value > p_max then
    perform teguh._invalid('spec', format('%s value %s is outside %s-%s', p_field, v_value, p_min, p_max));
  end if;
  return v_value;
end
$$;

-- The sorted values one cron field selects: comma-separated terms, each *, a
-- value, a range a-b, optionally stepped (*/n, a-b/n, a/n = a to the maximum).
create or replace function teguh._cron_field(p_field text, p_text text, p_min integer, p_max integer, p_names text[])
returns integer[]
language plpgsql immutable as $$
declare
  v_term   text;
  v_base   text;
  v_step   integer;
  v_lo     integer;
  v_hi     integer;
  v_values integer[] := '{}';
begin
  foreach v_term in array string_to_array(p_text, ',') loop
    v_base := v_term;
    v_step := null;
    if v_term like '%/%' then
      v_base := split_part(v_term, '/', 1);
      if split_part(v_term, '/', 2) !~ '^[0-9]{1,4}$' or split_part(v_term, '/', 2)::integer = 0 then
        perform teguh._invalid('spec', format('bad step in %s field %s: expected a positive integer after /',
                                              p_field, quote_literal(v_term)));
      end if;
      v_step := split_part(v_term, '/', 2)::integer;
    end if;
    if v_base = '*' then
      v_lo := p_min;
      v_hi := p_max;
    elsif v_base ~ '^[^-]+-[^-]+$' then
      v_lo := teguh._cron_value(p_field, split_part(v_base, '-', 1), p_min, p_max, p_names);
      v_hi := teguh._cron_value(p_field, split_part(v_base, '-', 2), p_min, p_max, p_names);
      if v_hi < v_lo then
        perform teguh._invalid('spec', format('bad range in %s field %s: it ends before it starts',
                                              p_field, quote_literal(v_term)));
      end if;
    else
      v_lo := teguh._cron_value(p_field, v_base, p_min, p_max, p_names);
      v_hi := case when v_step is null then v_lo else p_max end;
    end if;
    v_values := v_values || array(select generate_series(v_lo, v_hi, coalesce(v_step, 1)));
  end loop;
  return array(select distinct v from unnest(v_values) v order by v);
end
$$;

-- Parses a schedule spec into JSON: {"every": seconds} for @every, else the
-- values of the five cron fields, "day_and" (Vixie cron: day of month and day
-- of week are OR-ed unless either field starts with *) and "wall" (minute and
-- hour are fixed: the spec follows the wall clock, see teguh._schedule_next).
-- Raises 22023 (COLUMN spec) for a spec it cannot parse or that never fires.
create or replace function teguh._cron_parse(p_spec text) returns jsonb
language plpgsql immutable as $$
declare
  v_spec    text := lower(btrim(regexp_replace(coalesce(p_spec, ''), '\s+', ' ', 'g')));
  v_fields  text[];
  v_seconds bigint := 0;
  v_part    text[];
  v_doms    integer[];
  v_months  integer[];
  v_and     boolean;
begin
  v_spec := case v_spec
              when '@yearly' then '0 0 1 1 *' when '@annually' then '0 0 1 1 *'
              when '@monthly' then '0 0 1 * *' when '@weekly' then '0 0 * * 0'
              when '@daily' then '0 0 * * *' when '@midnight' then '0 0 * * *'
              when '@hourly' then '0 * * * *'
              else v_spec end;
  if v_spec like '@every %' then
    v_spec := replace(substr(v_spec, 8), ' ', '');
    if v_spec !~ '^([0-9]{1,9}[dhms])+$' then
      perform teguh._invalid('spec', format('bad interval in %s: expected e.g. "@every 90s" or "@every 1h30m" (units d, h, m, s)',
                                            quote_literal(p_spec)));
    end if;
    for v_part in select regexp_matches(v_spec, '([0-9]+)([dhms])', 'g') loop
      v_seconds := v_seconds + v_part[1]::bigint * case v_part[2] when 'd' then 86400 when 'h' then 3600
                                                                  when 'm' then 60 else 1 end;
    end loop;
    if v_seconds <= 0 then
      perform teguh._invalid('spec', format('the interval of %s must be positive', quote_literal(p_spec)));
    end if;
    return jsonb_build_object('every', v_seconds);
  end if;
  if v_spec like '@%' then
    perform teguh._invalid('spec', format('unknown macro %s: expected @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly or @every <interval>',
                                          quote_literal(p_spec)));
  end if;
  v_fields := string_to_array(v_spec, ' ');
  if coalesce(array_length(v_fields, 1), 0) <> 5 then
    perform teguh._invalid('spec', format('expected 5 fields (minute hour day-of-month month day-of-week) or a macro, got %s',
                                          coalesce(quote_literal(p_spec), 'null')));
  end if;
  v_doms := teguh._cron_field('day-of-month', v_fields[3], 1, 31, null);
  v_months := teguh._cron_field('month', v_fields[4], 1, 12,
                                array['JAN', 'FEB', 'MAR', 'APR', 'MAY', 'JUN', 'JUL', 'AUG', 'SEP', 'OCT', 'NOV', 'DEC']);
  v_and := v_fields[3] like '*%' or v_fields[5] like '*%';
  if v_and and v_doms[1] > (select max((array[31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])[m]) from unnest(v_months) m) then
    perform teguh._invalid('spec', format('%s never fires: no month it names has day %s', quote_literal(p_spec), v_doms[1]));
  end if;
  return jsonb_build_object(
    'minute', teguh._cron_field('minute', v_fields[1], 0, 59, null),
    'hour', teguh._cron_field('hour', v_fields[2], 0, 23, null),
    'dom', v_doms,
    'month', v_months,
    'dow', array(select distinct d % 7 from unnest(teguh._cron_field('day-of-week', v_fields[5], 0, 7,
                   array['SUN', 'MON', 'TUE', 'WED', 'THU', 'FRI', 'SAT'])) d order by 1),
    'day_and', v_and,
    'wall', v_fields[1] not like '*%' and v_fields[2] not like '*%');
end
$$;

-- The first wall-clock minute strictly after p_after that a parsed cron spec
-- selects; null when there is none within 50 years (a leap day on a given
-- weekday can be 28 years away).
create or replace function teguh._cron_next_wall(p_cron jsonb, p_after timestamp) returns timestamp
language plpgsql immutable as $$
declare
  v_minutes integer[] := array(select jsonb_array_elements_text(p_cron->'minute')::integer);
  v_hours   integer[] := array(select jsonb_array_elements_text(p_cron->'hour')::integer);
  v_doms    integer[] := array(select jsonb_array_elements_text(p_cron->'dom')::integer);
  v_months  integer[] := array(select jsonb_array_elements_text(p_cron->'month')::integer);
  v_dows    integer[] := array(select jsonb_array_elements_text(p_cron->'dow')::integer);
  v_and     boolean := (p_cron->>'day_and')::boolean;
  v_start   timestamp := date_trunc('minute', p_after) + interval '1 minute';
  v_day     date := v_start::date;
  v_last    date := (v_start + interval '50 years')::date;
  v_dom_ok  boolean;
  v_dow_ok  boolean;
  v_from_h  integer;
  v_from_m  integer;
  v_hour    integer;
  v_minute  integer;
begin
  while v_day <= v_last loop
    if extract(month from v_day)::integer <> all (v_months) then
      v_day := (date_trunc('month', v_day) + interval '1 month')::date;
      continue;
    end if;
    v_dom_ok := extract(day from v_day)::integer = any (v_doms);
    v_dow_ok := extract(dow from v_day)::integer = any (v_dows);
    if (v_and and v_dom_ok and v_dow_ok) or (not v_and and (v_dom_ok or v_dow_ok)) then
      if v_day = v_start::date then
        v_from_h := extract(hour from v_start)::integer;
        v_from_m := extract(minute from v_start)::integer;
      else
        v_from_h := 0;
        v_from_m := 0;
      end if;
      select min(h) into v_hour from unnest(v_hours) h
       where h > v_from_h or (h = v_from_h and v_from_m <= v_minutes[array_upper(v_minutes, 1)]);
      if v_hour is not null then
        select min(m) into v_minute from unnest(v_minutes) m
         where v_hour > v_from_h or m >= v_from_m;
        return v_day + make_time(v_hour, v_minute, 0);
      end if;
    end if;
    v_day := v_day + 1;
  end loop;
  return null;
end
$$;

-- The UTC offset of p_timezone at an instant.
create or replace function teguh._utc_offset(p_at timestamptz, p_timezone text) returns interval
language sql stable as $$
  select (p_at at time zone p_timezone) - (p_at at time zone 'UTC')
$$;

-- The instant a wall-clock time of p_timezone names: the earlier one when
-- the wall time occurs twice (a DST overlap), the first minute after the gap
-- when it does not occur at all (a DST gap).
create or replace function teguh._wall_instant(p_wall timestamp, p_timezone text) returns timestamptz
language plpgsql stable as $$
declare
  v_at    timestamptz;
  v_other timestamptz;
  v_step  integer;
begin
  for v_step in 1..24 * 60 loop
    v_at := p_wall at time zone p_timezone;
    if (v_at at time zone p_timezone) = p_wall then
      foreach v_other in array array[v_at - interval '30 minutes', v_at - interval '1 hour',
                                     v_at - interval '90 minutes', v_at - interval '2 hours'] loop
        if (v_other at time zone p_timezone) = p_wall then
          v_at := v_other;
        end if;
      end loop;
      return v_at;
    end if;
    p_wall := p_wall + interval '1 minute';
  end loop;
  return null;
end
$$;

-- The first slot of a schedule strictly after p_after; null when it has none
-- within 50 years. Three rules, the ones of Debian's cron:
-- - @every <interval>: multiples of the interval since the Unix epoch.
-- - a spec whose minute and hour fields are fixed (neither starts with *, as
--   in "30 2 * * *") follows the wall clock of p_timezone: a slot in a DST
--   gap fires at the first minute after the gap, a slot in a DST overlap
--   fires once, at its first occurrence.
-- - any other spec ("*/15 * * * *", "0 * * * *") follows elapsed time: it
--   fires at every instant whose local time matches, so a slot in a gap
--   does not exist and a slot in an overlap fires twice.
create or replace function teguh._schedule_next(p_spec text, p_timezone text, p_after timestamptz)
returns timestamptz
language plpgsql stable as $$
declare
  v_cron    jsonb := teguh._cron_parse(p_spec);
  v_seconds bigint;
  v_wall    timestamp;
  v_at      timestamptz;
  v_from    timestamptz;
  v_off     interval;
  v_probe   timestamptz;
  v_lo      bigint;
  v_hi      bigint;
  v_mid     bigint;
  v_round   integer;
begin
  if p_after is null then
    return null;
  end if;
  if v_cron ? 'every' then
    v_seconds := (v_cron->>'every')::bigint;
    return to_timestamp((floor(extract(epoch from p_after) / v_seconds)::bigint + 1) * v_seconds);
  end if;
  if (v_cron->>'wall')::boolean then
    v_wall := p_after at time zone p_timezone;
    for v_round in 1..4 loop
      v_wall := teguh._cron_next_wall(v_cron, v_wall);
      if v_wall is null then
        return null;
      end if;
      v_at := teguh._wall_instant(v_wall, p_timezone);
      -- after an overlap's second occurrence, its first lies in the past
      if v_at > p_after then
        return v_at;
      end if;
    end loop;
    return null;
  end if;
  -- Elapsed time: find the next match under the offset in force, then make
  -- sure no offset change comes first; after one, go on from it.
  v_from := date_trunc('minute', p_after) + interval '1 minute';  -- the first candidate instant
  for v_round in 1..64 loop
    v_off := teguh._utc_offset(v_from, p_timezone);
    v_wall := teguh._cron_next_wall(v_cron, (v_from at time zone 'UTC') + v_off - interval '1 minute');
    if v_wall is null then
      return null;
    end if;
    v_at := (v_wall - v_off) at time zone 'UTC';
    -- the first day boundary (if any) by which the offset has changed
    v_probe := v_from;
    loop
      v_probe := least(v_probe + interval '1 day', v_at);
      exit when teguh._utc_offset(v_probe, p_timezone) <> v_off or v_probe >= v_at;
    end loop;
    if teguh._utc_offset(v_probe, p_timezone) = v_off then
      return v_at;
    end if;
    -- the offset changes in (v_probe - 1 day, v_probe]: find the minute
    v_lo := floor(extract(epoch from greatest(v_probe - interval '1 day', v_from)) / 60)::bigint;
    v_hi := floor(extract(epoch from v_probe) / 60)::bigint;
    while v_hi - v_lo > 1 loop
      v_mid := (v_lo + v_hi) / 2;
      if teguh._utc_offset(to_timestamp(v_mid * 60), p_timezone) = v_off then
        v_lo := v_mid;
      else
        v_hi := v_mid;
      end if;
    end loop;
    v_from := to_timestamp(v_hi * 60);
  end loop;
  return null;
end
$$;

-- Splits a schedule's options into its own (timezone, catch_up) and spawn
-- options, validating both; raises 22023 naming the bad key.
create or replace function teguh._schedule_options(
  p_options       jsonb,
  out o_timezone  text,
  out o_catch_up  text,
  out o_spawn     jsonb
)
language plpgsql stable as $$
begin
  p_options := jsonb_strip_nulls(coalesce(p_options, '{}'::jsonb));
  if jsonb_typeof(p_options) <> 'object' then
    perform teguh._invalid('options', format('expected a JSON object, got %s', jsonb_typeof(p_options)));
  end if;
  perform teguh._check_keys('options', p_options,
    array['timezone', 'catch_up', 'headers', 'retry_strategy', 'max_attempts', 'priority', 'cancellation',
          'concurrency_key']);
  o_timezone := coalesce(p_options->>'timezone', 'UTC');
  if jsonb_typeof(coalesce(p_options->'timezone', '"UTC"')) <> 'string'
     or not exists (select 1 from pg_timezone_names n where n.name = o_timezone) then
    perform teguh._invalid('timezone', format('expected an IANA time zone name such as "Europe/Paris", got %s',
                                              p_options->'timezone'));
  end if;
  o_catch_up := coalesce(p_options->>'catch_up', 'latest');
  if jsonb_typeof(coalesce(p_options->'catch_up', '"latest"')) <> 'string' or o_catch_up not in ('latest', 'none') then
    perform teguh._invalid('catch_up', format('expected "latest" or "none", got %s', p_options->'catch_up'));
  end if;
  o_spawn := p_options - 'timezone' - 'catch_up';
  perform teguh._parse_spawn_options(o_spawn, false);
  if o_spawn ? 'retry_strategy' then
    o_spawn := jsonb_set(o_spawn, '{retry_strategy}', teguh._normalize_retry_strategy(o_spawn->'retry_strategy'));
  end if;
end
$$;

-- Creates a schedule, or updates the one of that name (an upsert). The next
-- slot is kept when neither spec nor timezone changed, so that syncing
-- declared schedules at every worker start never skips a due slot; a paused
-- schedule stays paused. Options: timezone (IANA name, default UTC),
-- catch_up ("latest", the default, or "none") and spawn options (headers,
-- retry_strategy, max_attempts, priority, cancellation). Returns the next
-- slot. Raises 22023 for a bad spec, timezone or option, 42704 for an
-- unknown queue.
create or replace function teguh.create_schedule(
  p_queue_name    text,
  p_schedule_name text,
  p_spec          text,
  p_task_name     text,
  p_params        jsonb,
  p_options       jsonb default '{}'
) returns timestamptz
language plpgsql as $$
declare
  o     record;
  v_now timestamptz := teguh.current_time();
  v_at  timestamptz;
begin
  perform teguh._assert_queue(p_queue_name);
  perform teguh._check_name('schedule_name', p_schedule_name);
  perform teguh._check_name('task_name', p_task_name);
  perform teguh._check_name('spec', p_spec);
  o := teguh._schedule_options(p_options);
  v_at := teguh._schedule_next(p_spec, o.o_timezone, v_now);
  if v_at is null then
    perform teguh._invalid('spec', format('%s never fires', quote_literal(p_spec)));
  end if;
  insert into teguh.schedules as s (queue_name, schedule_name, spec, timezone, task_name, params, options, catch_up,
                                    next_run_at, created_at, updated_at)
  values (p_queue_name, p_schedule_name, p_spec, o.o_timezone, p_task_name, coalesce(p_params, 'null'::jsonb),
          o.o_spawn, o.o_catch_up, v_at, v_now, v_now)
  on conflict (queue_name, schedule_name) do update
     set spec = excluded.spec, timezone = excluded.timezone, task_name = excluded.task_name,
         params = excluded.params, options = excluded.options, catch_up = excluded.catch_up,
         updated_at = excluded.updated_at,
         next_run_at = case when s.spec = excluded.spec and s.timezone = excluded.timezone and s.next_run_at is not null
                            then s.next_run_at else excluded.next_run_at end
  returning s.next_run_at into v_at;
  return v_at;
end
$$;

-- Drops a schedule; true when it existed. Tasks it spawned are kept.
create or replace function teguh.drop_schedule(p_queue_name text, p_schedule_name text) returns boolean
language plpgsql as $$
begin
  perform teguh._assert_queue(p_queue_name);
  delete from teguh.schedules s where s.queue_name = p_queue_name and s.schedule_name = p_schedule_name;
  return found;
end
$$;

-- The schedules of one queue or of all, by queue and name.
create or replace function teguh.list_schedules(p_queue_name text default null)
returns table (queue_name text, schedule_name text, spec text, timezone text, task_name text, params jsonb,
               options jsonb, catch_up text, paused boolean, next_run_at timestamptz, last_slot timestamptz,
               last_run_at timestamptz, last_task_id uuid, last_error text, created_at timestamptz,
               updated_at timestamptz)
language plpgsql stable as $$
begin
  if p_queue_name is not null then
    perform teguh._assert_queue(p_queue_name);
  end if;
  return query
    select s.queue_name, s.schedule_name, s.spec, s.timezone, s.task_name, s.params, s.options, s.catch_up, s.paused,
           s.next_run_at, s.last_slot, s.last_run_at, s.last_task_id, s.last_error, s.created_at, s.updated_at
      from teguh.schedules s
     where p_queue_name is null or s.queue_name = p_queue_name
     order by s.queue_name, s.schedule_name;
end
$$;

-- Pauses a schedule: it fires nothing until resumed. Raises P0002 when the
-- schedule does not exist.
create or replace function teguh.pause_schedule(p_queue_name text, p_schedule_name text) returns void
language plpgsql as $$
begin
  perform teguh._assert_queue(p_queue_name);
  update teguh.schedules s set paused = true, updated_at = teguh.current_time()
   where s.queue_name = p_queue_name and s.schedule_name = p_schedule_name;
  if not found then
    raise exception 'schedule "%" does not exist in queue "%"', p_schedule_name, p_queue_name using errcode = 'P0002';
  end if;
end
$$;

-- Resumes a paused schedule from now on: the slots that passed while it was
-- paused are not fired. Raises P0002 when the schedule does not exist.
create or replace function teguh.resume_schedule(p_queue_name text, p_schedule_name text) returns void
language plpgsql as $$
declare
  v_now timestamptz := teguh.current_time();
begin
  perform teguh._assert_queue(p_queue_name);
  update teguh.schedules s
     set paused = false, updated_at = v_now,
         next_run_at = case when s.paused then teguh._schedule_next(s.spec, s.timezone, v_now) else s.next_run_at end
   where s.queue_name = p_queue_name and s.schedule_name = p_schedule_name;
  if not found then
    raise exception 'schedule "%" does not exist in queue "%"', p_schedule_name, p_queue_name using errcode = 'P0002';
  end if;
end
$$;

-- The latest slot of a schedule at or before p_now, given that p_due (a
-- slot) is at or before p_now: windows growing backwards from p_now bound the
-- walk forward, so a long outage costs a few steps, not one per missed slot.
create or replace function teguh._schedule_latest(p_spec text, p_timezone text, p_due timestamptz, p_now timestamptz)
returns timestamptz
language plpgsql stable as $$
declare
  v_window interval;
  v_slot   timestamptz;
  v_next   timestamptz;
begin
  foreach v_window in array array[interval '2 minutes', interval '1 hour', interval '1 day', interval '32 days',
                                  interval '367 days', interval '3300 days'] loop
    if p_now - v_window <= p_due then
      v_slot := p_due;
    else
      v_slot := teguh._schedule_next(p_spec, p_timezone, p_now - v_window);
      continue when v_slot is null or v_slot > p_now;
    end if;
    loop
      v_next := teguh._schedule_next(p_spec, p_timezone, v_slot);
      exit when v_next is null or v_next > p_now;
      v_slot := v_next;
    end loop;
    return v_slot;
  end loop;
  return p_due;
end
$$;

-- Fires up to p_limit due schedules of a queue (called by the ticker): each
-- spawns one task for one slot, with an idempotency key made of schedule and
-- slot, and moves next_run_at past p_now in the same transaction. Rows
-- another ticker holds are skipped: it fires them. A schedule whose spawn
-- fails records the error and moves on to its next slot. Returns the number
-- of tasks spawned.
create or replace function teguh._fire_schedules(p_queue_name text, p_now timestamptz, p_limit integer)
returns integer
language plpgsql as $$
declare
  v_schedule record;
  v_slot     timestamptz;
  v_task_id  uuid;
  v_options  jsonb;
  v_count    integer := 0;
begin
  for v_schedule in
    select s.* from teguh.schedules s
     where s.queue_name = p_queue_name and not s.paused and s.next_run_at <= p_now
     order by s.next_run_at
     limit p_limit
       for update skip locked
  loop
    v_slot := teguh._schedule_latest(v_schedule.spec, v_schedule.timezone, v_schedule.next_run_at, p_now);
    v_task_id := null;
    -- "none": a slot more than a minute late was missed, not delayed
    if v_schedule.catch_up = 'latest' or p_now - v_slot <= interval '1 minute' then
      v_options := v_schedule.options || jsonb_build_object(
        'idempotency_key', format('teguh.schedule:%s:%s', v_schedule.schedule_name,
                                  to_char(v_slot at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')),
        'headers', coalesce(v_schedule.options->'headers', '{}'::jsonb)
                   || jsonb_build_object('teguh.schedule', v_schedule.schedule_name,
                                         'teguh.slot', to_char(v_slot at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')));
      begin
        select s.task_id into v_task_id from teguh.spawn_task(p_queue_name, v_schedule.task_name, v_schedule.params, v_options) s;
      exception when others then
        update teguh.schedules s set last_error = sqlerrm, next_run_at = teguh._schedule_next(s.spec, s.timezone, p_now)
         where s.queue_name = p_queue_name and s.schedule_name = v_schedule.schedule_name;
        continue;
      end;
      v_count := v_count + 1;
    end if;
    update teguh.schedules s
       set next_run_at = teguh._schedule_next(s.spec, s.timezone, greatest(v_slot, p_now)),
           last_slot = case when v_task_id is null then s.last_slot else v_slot end,
           last_run_at = case when v_task_id is null then s.last_run_at else p_now end,
           last_task_id = coalesce(v_task_id, s.last_task_id),
           last_error = case when v_task_id is null then s.last_error end
     where s.queue_name = p_queue_name and s.schedule_name = v_schedule.schedule_name;
  end loop;
  return v_count;
end
$$;

-- ---------------------------------------------------------------------------
-- Switching from the Go reference's schema
-- ---------------------------------------------------------------------------

-- `teguh install` (teguh.schema.install) finds the Go reference's schema in
-- schema teguh (teguh.queues without teguh.version()), renames that schema,
-- applies this file and calls _import_go_reference, all in one transaction:
-- any error leaves the database as it was.

-- The reference's retry strategy with its defaults spelled out: none when
-- absent, fixed 60 s, exponential from 30 s by 2 up to a day.
create or replace function teguh._import_retry_strategy(p_value jsonb) returns jsonb
language plpgsql as $$
declare
  v_kind text;
begin
  if jsonb_typeof(p_value) is distinct from 'object' then
    return jsonb_build_object('kind', 'none');
  end if;
  p_value := jsonb_strip_nulls(p_value);
  v_kind := coalesce(p_value->>'kind', 'none');
  if v_kind = 'fixed' then
    return teguh._normalize_retry_strategy(jsonb_build_object(
      'kind', 'fixed', 'base_seconds', coalesce(p_value->'base_seconds', '60')));
  elsif v_kind = 'exponential' then
    return teguh._normalize_retry_strategy(jsonb_build_object(
      'kind', 'exponential', 'base_seconds', coalesce(p_value->'base_seconds', '30'),
      'factor', coalesce(p_value->'factor', '2'), 'max_seconds', coalesce(p_value->'max_seconds', '86400')));
  end if;
  return jsonb_build_object('kind', 'none');
end
$$;

-- The reference's cancellation policy, keeping the deadlines teguh accepts.
create or replace function teguh._import_cancellation(p_value jsonb) returns jsonb
language sql immutable as $$
  select nullif(jsonb_strip_nulls(jsonb_build_object(
           'max_delay', case when jsonb_typeof(p_value->'max_delay') = 'number'
                              and (p_value->>'max_delay')::numeric > 0 then p_value->'max_delay' end,
           'max_duration', case when jsonb_typeof(p_value->'max_duration') = 'number'
                                 and (p_value->>'max_duration')::numeric > 0 then p_value->'max_duration' end)),
         '{}'::jsonb)
  from (select case when jsonb_typeof(p_value) = 'object' then p_value end) v(p_value)
$$;

-- Carries the Go reference's queues, set aside in schema p_schema, over to
-- teguh: queues, tasks in every state, leases, sleeps, event waits, committed
-- checkpoints and emitted events; then drops p_schema. Returns the number of
-- queues. Attempts count failed runs (the reference also counted wakes); the
-- run sequence the Go client sees goes on from the reference's.
-- Errors: 55000 a queue or table it cannot carry over, 2BP01 an object of
-- the user's depends on the reference's schema.
create or replace function teguh._import_go_reference(p_schema text) returns integer
language plpgsql as $$
declare
  v_queue   record;
  v_missing text;
  v_count   integer := 0;
  v_now     timestamptz := teguh.current_time();
  v_detail  text;
  v_prefix  text;
  v_function regprocedure;
begin
  -- check everything first, so that a refusal names the first problem only
  for v_queue in execute format('select q.queue_name from %I.queues q order by q.queue_name', p_schema) loop
    if v_queue.queue_name !~ '^[a-z][a-z0-9_]*$' or octet_length(v_queue.queue_name) > 55 then
      raise exception 'cannot carry queue "%" of the Go reference''s schema over to teguh: teguh queue names match ^[a-z][a-z0-9_]*$ and have at most 55 bytes',
                      v_queue.queue_name
        using errcode = '55000', hint = 'Drain and drop that queue with the Go reference first. Nothing was changed.';
    end if;
    select string_agg(format('%s_%s.%s', r.prefix, v_queue.queue_name, r.col), ', ') into v_missing
      from (values ('t', 'task_id'), ('t', 'task_name'), ('t', 'params'), ('t', 'headers'), ('t', 'retry_strategy'),
                   ('t', 'max_attempts'), ('t', 'cancellation'), ('t', 'enqueue_at'), ('t', 'first_started_at'),
                   ('t', 'state'), ('t', 'last_attempt_run'), ('t', 'completed_payload'), ('t', 'cancelled_at'),
                   ('r', 'run_id'), ('r', 'task_id'), ('r', 'attempt'), ('r', 'state'), ('r', 'claimed_by'),
                   ('r', 'claim_expires_at'), ('r', 'available_at'), ('r', 'wake_event'), ('r', 'event_payload'),
                   ('r', 'started_at'), ('r', 'completed_at'), ('r', 'failed_at'), ('r', 'failure_reason'),
                   ('r', 'created_at'), ('c', 'task_id'), ('c', 'checkpoint_name'), ('c', 'state'),
                   ('c', 'updated_at'), ('e', 'event_name'), ('e', 'payload'), ('e', 'emitted_at'),
                   ('w', 'run_id'), ('w', 'step_name'), ('w', 'event_name'), ('w', 'timeout_at'),
                   ('w', 'created_at')) r(prefix, col)
     where not exists (
       select 1 from pg_attribute a
        where a.attrelid = to_regclass(format('%I.%I', p_schema, r.prefix || '_' || v_queue.queue_name))
          and a.attname = r.col and a.attnum > 0 and not a.attisdropped);
    if v_missing is not null then
      raise exception 'cannot carry queue "%" of the Go reference''s schema over to teguh: missing %', v_queue.queue_name, v_missing
        using errcode = '55000', hint = 'This is not a schema teguh knows how to migrate. Nothing was changed.';
    end if;
  end loop;

  -- nothing may commit into the reference's tables once they are copied
  execute format('lock table %I.queues in access exclusive mode', p_schema);
  for v_queue in execute format('select q.queue_name from %I.queues q order by q.queue_name', p_schema) loop
    execute format('lock table %1$I.%2$I, %1$I.%3$I, %1$I.%4$I, %1$I.%5$I, %1$I.%6$I in access exclusive mode',
                   p_schema, 't_' || v_queue.queue_name, 'r_' || v_queue.queue_name, 'w_' || v_queue.queue_name,
                   'c_' || v_queue.queue_name, 'e_' || v_queue.queue_name);
  end loop;

  for v_queue in execute format('select q.queue_name, to_jsonb(q) as q from %I.queues q order by q.queue_name', p_schema)
  loop
    perform teguh.create_queue(v_queue.queue_name);
    update teguh.queues
       set created_at = coalesce((v_queue.q->>'created_at')::timestamptz, created_at),
           cleanup_ttl_seconds = coalesce(extract(epoch from (v_queue.q->>'cleanup_ttl')::interval)::integer,
                                          cleanup_ttl_seconds)
     where queue_name = v_queue.queue_name;

    -- tasks: the current run is the task's last_attempt_run (else its latest)
    execute format($q$
      insert into teguh.%2$I (task_id, task_name, params, headers, retry_strategy, max_attempts, priority,
                              cancellation, idempotency_key, state, attempts, current_run_id, created_at,
                              available_at, first_started_at, finished_at, cancel_at, completed_payload,
                              last_failure, cancelled_at, claims)
      select t.task_id, t.task_name, coalesce(t.params, 'null'::jsonb),
             case when jsonb_typeof(t.headers) = 'object' then t.headers else '{}'::jsonb end,
             teguh._import_retry_strategy(t.retry_strategy),
             coalesce(greatest(t.max_attempts, 1), 2147483647),  -- none: unlimited, as on the reference
             0, x.cancellation, to_jsonb(t)->>'idempotency_key', s.state, s.attempts,
             coalesce(cur.run_id, teguh.portable_uuidv7()), t.enqueue_at, t.enqueue_at, t.first_started_at,
             case when s.state in ('completed', 'failed', 'cancelled')
                  then coalesce(cur.completed_at, cur.failed_at, t.cancelled_at, cur.created_at, t.enqueue_at) end,
             case when s.state not in ('completed', 'failed', 'cancelled') then
               case when t.first_started_at is null
                    then t.enqueue_at + make_interval(secs => (x.cancellation->>'max_delay')::double precision)
                    else t.first_started_at + make_interval(secs => (x.cancellation->>'max_duration')::double precision)
               end
             end,
             t.completed_payload, lf.failure_reason, t.cancelled_at,
             coalesce(cur.attempt, 1) - case when cur.started_at is null then 1 else 0 end
        from %1$I.%3$I t
        left join lateral (
          select r.* from %1$I.%4$I r where r.task_id = t.task_id
           order by r.run_id = t.last_attempt_run desc nulls last, r.attempt desc, r.created_at desc limit 1
        ) cur on true
        left join lateral (
          select count(*)::integer as n from %1$I.%4$I r where r.task_id = t.task_id and r.state = 'failed'
        ) f on true
        left join lateral (
          select r.failure_reason from %1$I.%4$I r where r.task_id = t.task_id and r.state = 'failed'
           order by r.attempt desc, r.failed_at desc limit 1
        ) lf on true
        cross join lateral (select teguh._import_cancellation(t.cancellation) as cancellation) x
        cross join lateral (
          select case when t.state in ('completed', 'failed', 'cancelled') then t.state
                      when cur.state = 'running' then 'running'
                      when cur.started_at is not null then 'sleeping'  -- a run that ran, then slept or waited
                      else 'pending' end as state,
                 f.n + case when cur.started_at is not null and cur.state <> 'failed' then 1 else 0 end as attempts
        ) s$q$,
      p_schema, 't_' || v_queue.queue_name, 't_' || v_queue.queue_name, 'r_' || v_queue.queue_name);

    -- runs waiting to be claimed: new attempts, sleeps, woken runs, event-wait timeouts
    execute format($q$
      insert into teguh.%2$I (task_id, run_id, attempt, priority, available_at, wake_event, event_payload, timeout_step)
      select t.task_id, t.current_run_id, t.attempts + case when t.state = 'pending' then 1 else 0 end, 0,
             r.available_at, r.wake_event, r.event_payload, w.step_name
        from teguh.%3$I t
        join %1$I.%4$I r on r.run_id = t.current_run_id
        left join lateral (
          select w.step_name from %1$I.%5$I w
           where r.state = 'sleeping' and w.run_id = r.run_id and w.event_name = r.wake_event
           order by w.created_at desc limit 1
        ) w on true
       where t.state in ('pending', 'sleeping') and r.state in ('pending', 'sleeping') and r.available_at < 'infinity'
       order by r.available_at$q$,
      p_schema, 'p_' || v_queue.queue_name, 't_' || v_queue.queue_name, 'r_' || v_queue.queue_name,
      'w_' || v_queue.queue_name);

    execute format($q$
      insert into teguh.%2$I (task_id, run_id, attempt, step_name, event_name, timeout_at, created_at)
      select distinct on (t.task_id) t.task_id, t.current_run_id, t.attempts, w.step_name, w.event_name,
             w.timeout_at, w.created_at
        from teguh.%3$I t
        join %1$I.%4$I r on r.run_id = t.current_run_id and r.state = 'sleeping'
        join %1$I.%5$I w on w.run_id = r.run_id and w.event_name = r.wake_event
       where t.state = 'sleeping'
       order by t.task_id, w.created_at desc$q$,
      p_schema, 'w_' || v_queue.queue_name, 't_' || v_queue.queue_name, 'r_' || v_queue.queue_name,
      'w_' || v_queue.queue_name);

    -- leases: a claim without expiry (claim_timeout 0) never expires here either
    execute format($q$
      insert into teguh.%2$I (run_id, task_id, attempt, worker_id, claimed_at, expires_at)
      select t.current_run_id, t.task_id, t.attempts, coalesce(nullif(r.claimed_by, ''), 'go-reference'),
             coalesce(r.started_at, $1), coalesce(r.claim_expires_at, 'infinity')
        from teguh.%3$I t join %1$I.%4$I r on r.run_id = t.current_run_id
       where t.state = 'running'$q$,
      p_schema, 'r_' || v_queue.queue_name, 't_' || v_queue.queue_name, 'r_' || v_queue.queue_name)
      using v_now;

    execute format($q$
      insert into teguh.%2$I (task_id, checkpoint_name, state, timed_out, owner_run, updated_at)
      select c.task_id, c.checkpoint_name, c.state, false, (to_jsonb(c)->>'owner_run_id')::uuid, c.updated_at
        from %1$I.%3$I c
       where coalesce(to_jsonb(c)->>'status', 'committed') = 'committed'
         and exists (select 1 from teguh.%4$I t where t.task_id = c.task_id)$q$,
      p_schema, 'c_' || v_queue.queue_name, 'c_' || v_queue.queue_name, 't_' || v_queue.queue_name);

    -- a null payload marks an event the reference has not seen emitted yet
    execute format('insert into teguh.%I (event_name, payload, emitted_at)
                    select e.event_name, e.payload, e.emitted_at from %I.%I e where e.payload is not null',
                   'e_' || v_queue.queue_name, p_schema, 'e_' || v_queue.queue_name);

    perform teguh._notify(v_queue.queue_name);
    v_count := v_count + 1;
  end loop;

  -- drop the reference's objects one by one, never cascading to the user's
  begin
    for v_queue in execute format('select q.queue_name from %I.queues q', p_schema) loop
      foreach v_prefix in array array['i_', 'w_', 'e_', 'c_', 'r_', 't_'] loop
        execute format('drop table if exists %I.%I', p_schema, v_prefix || v_queue.queue_name);
      end loop;
    end loop;
    execute format('drop table %I.queues', p_schema);
    for v_function in select p.oid::regprocedure from pg_proc p where p.pronamespace = p_schema::regnamespace loop
      execute format('drop function %s', v_function);
    end loop;
    execute format('drop schema %I', p_schema);
  exception when dependent_objects_still_exist then
    get stacked diagnostics v_detail = pg_exception_detail;
    raise exception 'cannot replace the Go reference''s schema: %', sqlerrm
      using errcode = '2BP01', detail = v_detail,
            hint = 'Drop or move what depends on it (or what else lives in schema teguh), then run teguh install again. Nothing was changed.';
  end;
  return v_count;
end
$$;

-- ---------------------------------------------------------------------------
-- pg_cron
-- ---------------------------------------------------------------------------

-- Schedules the ticker (every second on pg_cron 1.5+, every minute before)
-- and an hourly cleanup with pg_cron when it is installed here; replaces
-- teguh's jobs scheduled earlier, whoever they ran as. The jobs run as
-- p_run_as, by default the owner of schema teguh, which must not be a
-- superuser (42501) and must be able to log in (pg_cron connects as it);
-- the role is granted the 'maintenance' privileges. Not granted to
-- application roles: the schema owner or a superuser calls it.
-- Raises 22023 (COLUMN run_as) for an unknown role, 42501 for a superuser.
create or replace function teguh.start(p_run_as text default null) returns void
language plpgsql as $$
declare
  v_version text;
  v_role    text := p_run_as;
  v_super   boolean;
  v_jobs    text[][] := array[['teguh_ticker', null, 'select teguh.ticker()'],
                              ['teguh_cleanup', '17 * * * *', 'select teguh.cleanup_all_queues()']];
  v_job     text[];
begin
  select e.extversion into v_version from pg_catalog.pg_extension e where e.extname = 'pg_cron';
  if v_version is null then
    raise notice 'teguh.start(): pg_cron is not installed in this database, nothing scheduled; workers run the ticker themselves';
    return;
  end if;
  if v_role is null then
    select pg_catalog.pg_get_userbyid(n.nspowner) into v_role from pg_catalog.pg_namespace n where n.nspname = 'teguh';
  end if;
  select r.rolsuper into v_super from pg_catalog.pg_roles r where r.rolname = v_role;
  if v_super is null then
    perform teguh._invalid('run_as', format('no role named %s', quote_literal(v_role)));
  end if;
  if v_super then
    raise exception 'teguh.start(): the pg_cron jobs would run as %, a superuser', quote_ident(v_role)
      using errcode = '42501',
            hint = 'Pass a role that is not a superuser and can log in, e.g. create role teguh_cron login; '
                   'select teguh.start(''teguh_cron''); (docs/security.md)';
  end if;
  perform teguh._grant_kind(v_role, 'maintenance');
  perform teguh.stop();
  v_jobs[1][2] := case when string_to_array(split_part(v_version, '-', 1), '.')::int[] >= array[1, 5]
                       then '1 seconds' else '* * * * *' end;
  foreach v_job slice 1 in array v_jobs loop
    if v_role = current_user then
      -- pg_cron runs a job as the role that scheduled it
      perform cron.schedule(v_job[1], v_job[2], v_job[3]);
    else
      -- another role: pg_cron lets a superuser (or whom it grants) name it
      perform cron.schedule_in_database(v_job[1], v_job[2], v_job[3], current_database(), v_role);
    end if;
  end loop;
end
$$;

-- Unschedules the jobs teguh.start() scheduled, whoever they run as (a
-- notice without pg_cron). No errors.
create or replace function teguh.stop() returns void
language plpgsql as $$
begin
  if not exists (select 1 from pg_catalog.pg_extension e where e.extname = 'pg_cron') then
    raise notice 'teguh.stop(): pg_cron is not installed in this database, nothing to unschedule';
    return;
  end if;
  perform cron.unschedule(j.jobid) from cron.job j where j.jobname in ('teguh_ticker', 'teguh_cleanup');
end
$$;

-- ---------------------------------------------------------------------------
-- Workers: runs no handler here can execute
-- ---------------------------------------------------------------------------

-- Hands a run whose task name has no handler on the calling worker back to
-- the queue, claimable again after p_delay_seconds (no attempt consumed), and
-- counts the hand-backs in the task's '$teguh:unhandled' checkpoint. The
-- p_max_hand_backs-th hand-back fails the task instead (no retry: no handler
-- would run it), with a reason naming the missing handler, and clears the
-- count so that retry_task gives it a full allowance again. A null
-- p_max_hand_backs never fails it. Returns 'handed_back' or 'failed'.
-- Raises 22023 on a bad argument, AB001/AB002 when the run is not active.
create or replace function teguh.hand_back_run(
  p_queue_name      text,
  p_run_id          uuid,
  p_delay_seconds   double precision,
  p_max_hand_backs  integer default null,
  p_worker_id       text    default null
) returns text
language plpgsql as $$
declare
  v_task    record;
  v_now     timestamptz;
  v_count   integer;
  v_name    text;
begin
  perform teguh._assert_queue(p_queue_name);
  perform teguh._check_seconds('delay_seconds', p_delay_seconds::numeric, 0, 86400);
  if p_max_hand_backs is not null and p_max_hand_backs < 1 then
    perform teguh._invalid('max_hand_backs', format('expected null or an integer >= 1, got %s', p_max_hand_backs));
  end if;
  v_now := teguh.current_time();
  v_task := teguh._lock_run(p_queue_name, p_run_id);
  execute format($q$select coalesce((c.state->>'count')::integer, 0) from teguh.%I c
                     where c.task_id = $1 and c.checkpoint_name = '$teguh:unhandled'$q$, 'c_' || p_queue_name)
    into v_count using v_task.o_task_id;
  v_count := coalesce(v_count, 0) + 1;
  if p_max_hand_backs is not null and v_count >= p_max_hand_backs then
    execute format('select task_name from teguh.%I where task_id = $1', 't_' || p_queue_name)
      into v_name using v_task.o_task_id;
    execute format('delete from teguh.%I where run_id = $1', 'r_' || p_queue_name) using p_run_id;
    execute format($q$update teguh.%I set state = 'failed', last_failure = $2, finished_at = $3, cancel_at = null
                      where task_id = $1$q$, 't_' || p_queue_name)
      using v_task.o_task_id,
            jsonb_build_object(
              'name', 'NoHandler',
              'message', format('no worker has a handler for task %L: handed back %s times (last by worker %s)',
                                v_name, v_count, coalesce(p_worker_id, 'unknown')),
              'task_name', v_name,
              'hand_backs', v_count),
            v_now;
    execute format($q$delete from teguh.%I where task_id = $1 and checkpoint_name = '$teguh:unhandled'$q$,
                   'c_' || p_queue_name)
      using v_task.o_task_id;
    perform teguh._notify(p_queue_name);  -- a concurrency slot may be free (teguh.next_wake_at)
    return 'failed';
  end if;
  -- lock order: t_ (held), p_ and r_ (release_run), then c_. Pending, not
  -- sleeping: a handed-back task must not look like a durable sleep.
  perform teguh.release_run(p_queue_name, p_run_id, v_now + make_interval(secs => p_delay_seconds),
                            jsonb_build_object('name', 'HandedBack',
                                               'message', format('worker %s has no handler for this task; handed back %s time(s)',
                                                                 coalesce(p_worker_id, 'unknown'), v_count),
                                               'hand_backs', v_count));
  execute format($q$
    insert into teguh.%I as c (task_id, checkpoint_name, state, timed_out, owner_run, updated_at)
    values ($1, '$teguh:unhandled', jsonb_build_object('count', $2), false, $3, $4)
    on conflict (task_id, checkpoint_name) do update set state = excluded.state, owner_run = excluded.owner_run,
                                                         updated_at = excluded.updated_at$q$, 'c_' || p_queue_name)
    using v_task.o_task_id, v_count, p_run_id, v_now;
  return 'handed_back';
end
$$;

-- ---------------------------------------------------------------------------
-- Descriptions for psql's \df+ (the comments above each function say more)
-- ---------------------------------------------------------------------------

comment on function teguh.version() is 'The installed teguh schema version.';
comment on function teguh.current_time() is
  'The engine''s clock: teguh.fake_now where the owner allowed fake time, else the statement time. Errors: 22023, 42501.';
comment on function teguh.portable_uuidv7() is 'A version 7 UUID on the engine''s clock.';
comment on function teguh.create_queue(text) is 'Creates a queue (idempotent). Errors: 22023.';
comment on function teguh.drop_queue(text) is 'Drops a queue and everything in it (no-op when missing). Errors: 22023.';
comment on function teguh.list_queues() is 'Every queue with its creation time.';
comment on function teguh.spawn_task(text, text, jsonb, jsonb) is
  'Creates a task (idempotency_key: the existing one, created = false). Errors: 22023, 42704.';
comment on function teguh.spawn_tasks(text, text, jsonb, jsonb) is
  'Spawns one task per element of a JSON array, atomically. Errors: 22023, 42704.';
comment on function teguh.claim_task(text, text, integer, integer) is
  'Leases ready runs (claim_timeout 0: never expires); attempt is the Go client''s run sequence. Errors: 22023, 42704.';
comment on function teguh.claim_runs(text, text, integer, integer) is
  'claim_task whose attempt is the attempt number a resume keeps (the Python worker''s). Errors: 22023, 42704.';
comment on function teguh.claim_runs_next(text, text, integer, integer) is
  'claim_runs plus, after a short claim, one row (null run_id) with the queue''s next due time. Errors: 22023, 42704.';
comment on function teguh.claim_queues_next(text[], text, integer, integer[], integer) is
  'claim_runs_next for several queues in one transaction (one commit), fair shares of p_total in the order given. Errors: 22023, 42704.';
comment on function teguh.complete_runs(text, uuid[], jsonb[]) is
  'Completes many runs; returns those cancelled or lost. Errors: 22023, 42704.';
comment on function teguh.complete_run(text, uuid, jsonb) is 'Completes an active run. Errors: 42704, AB001, AB002.';
comment on function teguh.fail_run(text, uuid, jsonb, timestamptz) is
  'Fails an active run: retries by the strategy (or at retry_at) or fails the task ("retryable": false: now). Errors: 22023, 42704, AB001, AB002.';
comment on function teguh.release_run(text, uuid, timestamptz, jsonb) is
  'Hands a run back as pending without using an attempt (reason: its last_failure). Errors: 22023, 42704, AB001, AB002.';
comment on function teguh.schedule_run(text, uuid, timestamptz) is
  'Durable sleep: the run is claimable again at wake_at, same run and attempt. Errors: 22023, 42704, AB001, AB002.';
comment on function teguh.extend_claim(text, uuid, integer) is
  'Heartbeat: lease = now + extend_by. Errors: 22023, 42704, AB001, AB002.';
comment on function teguh.extend_claims(text, text, uuid[], integer) is
  'Batched heartbeat; returns the runs cancelled or lost. Errors: 22023, 42704.';
comment on function teguh.set_task_checkpoint_state(text, uuid, text, jsonb, uuid, integer) is
  'Records a step''s result for an active run. Errors: 22023, 42704, AB001, AB002.';
comment on function teguh.get_task_checkpoint_state(text, uuid, text) is 'One checkpoint''s state, or null. Errors: 42704.';
comment on function teguh.get_task_checkpoint_states(text, uuid, uuid) is 'A task''s checkpoints. Errors: 42704, AB001.';
comment on function teguh.wait_event(text, uuid, uuid, text, text, integer) is
  'An event''s payload, or suspends until it is emitted or times out (timed_out). Errors: 22023, 42704, AB001, AB002, 0A000.';
comment on function teguh.await_event(text, uuid, uuid, text, text, integer) is
  'wait_event without timed_out (the Go reference''s columns). Errors: as wait_event.';
comment on function teguh.emit_event(text, text, jsonb) is
  'Records an event (first write wins) and wakes its waiters. Errors: 22023, 42704, 0A000.';
comment on function teguh.cancel_task(text, uuid) is 'Cancels an unfinished task. Errors: 42704, P0002.';
comment on function teguh.retry_task(text, uuid, jsonb) is
  'Retries a failed task in place (created = true), or any task as a new one (spawn_new). Errors: 22023, 42704, P0002, 55000.';
comment on function teguh.get_task_result(text, uuid) is 'A task''s state, attempts and result. Errors: 42704.';
comment on function teguh.get_task(text, uuid) is
  'Everything about a task, live or archived, and what it waits for (wait_kind, next_attempt_at). Errors: 42704.';
comment on function teguh.list_tasks(text, jsonb, uuid, integer) is
  'A page of a queue''s tasks, newest first, filtered; keyset pagination by task_id. Errors: 22023, 42704.';
comment on function teguh.locate_task(uuid) is 'The queue that holds a task (live or archived), or null.';
comment on function teguh.ticker(text) is
  'Recovers expired leases, enforces deadlines, fires due schedules, applies retention, NOTIFYs queues whose work fell due. Errors: 22023, 42704.';
comment on function teguh.next_wake_at(text) is 'When something on the queue falls due next, or null. Errors: 42704.';
comment on function teguh.cleanup_tasks(text, integer, integer, text) is
  'Deletes (or archives, by strategy or the queue policy) up to limit tasks finished more than ttl_seconds ago. Errors: 22023, 42704.';
comment on function teguh.cleanup_all_queues(text) is
  'Cleans up finished tasks and old events by each queue''s TTL. Errors: 42704.';
comment on function teguh.queue_stats(text) is
  'Task counts by state, leases in flight and workers present, per queue. Errors: 42704.';
comment on function teguh.set_queue_policy(text, jsonb) is
  'Merges keys into a queue''s policy (retention, cleanup, paused, defaults, lease_timeout); returns it. Errors: 22023, 42704.';
comment on function teguh.get_queue_policy(text) is 'A queue''s policy, defaults included. Errors: 42704.';
comment on function teguh.set_concurrency_limit(text, text, integer) is
  'At most p_limit runs of tasks with concurrency_key p_key in flight at once (a key ending in * limits each key '
  'with that prefix separately; 0 holds them; null removes the limit). Errors: 22023, 42704.';
comment on function teguh.drop_concurrency_limit(text, text) is
  'Removes a concurrency limit; true when there was one. Errors: 22023, 42704.';
comment on function teguh.list_concurrency_limits(text) is
  'The concurrency limits of a queue (or all), with the runs in flight under each. Errors: 22023, 42704.';
comment on function teguh.create_schedule(text, text, text, text, jsonb, jsonb) is
  'Creates or updates a cron schedule fired by the ticker; returns its next slot. Errors: 22023, 42704.';
comment on function teguh.drop_schedule(text, text) is 'Drops a schedule; true when it existed. Errors: 42704.';
comment on function teguh.list_schedules(text) is 'The schedules of a queue, or of all. Errors: 42704.';
comment on function teguh.pause_schedule(text, text) is 'Stops a schedule firing until resumed. Errors: 42704, P0002.';
comment on function teguh.resume_schedule(text, text) is
  'Fires a paused schedule again from now on. Errors: 42704, P0002.';
comment on function teguh.register_worker(text, text[], text, integer, integer) is
  'Registers (or refreshes) a worker serving queues, present for ttl_seconds. Errors: 22023, 42704.';
comment on function teguh.worker_heartbeat(text, integer, integer) is
  'Renews a worker''s presence (and its count of hung handlers); false when it is not registered. Errors: 22023.';
comment on function teguh.unregister_worker(text) is 'Removes a worker''s registration; true when it was registered.';
comment on function teguh.list_workers(text) is
  'The workers present, all or serving a queue, with their hung handlers. Errors: 42704.';
comment on function teguh.queue_workers(text) is 'How many present workers serve each queue. Errors: 42704.';
comment on function teguh.start(text) is
  'Schedules the ticker and cleanup with pg_cron, when installed, as run_as (never a superuser). Errors: 22023, 42501.';
comment on function teguh.stop() is 'Unschedules teguh''s pg_cron jobs.';
comment on function teguh.hand_back_run(text, uuid, double precision, integer, text) is
  'Hands back a run with no handler here; fails its task (NoHandler) at the max_hand_backs-th. Errors: 22023, 42704, AB001, AB002.';

-- ---------------------------------------------------------------------------
-- Upgrade: complete every existing queue's objects, regenerate its functions
-- ---------------------------------------------------------------------------

select teguh._create_queue_tables(queue_name), teguh._create_queue_functions(queue_name) from teguh.queues;

-- ---------------------------------------------------------------------------
-- Security: keep this section LAST, it secures every function defined above
-- ---------------------------------------------------------------------------
--
-- One role, the owner of schema teguh, owns every object in it: tables, the
-- per-queue tables and functions (create_queue runs as the owner), and the
-- functions. Application roles get USAGE on the schema and EXECUTE on the
-- public functions of their kind (teguh.grant_role), never a privilege on a
-- table nor CREATE on the schema: they cannot own, alter or hang a trigger
-- on anything the owner or a superuser later runs. Every function has its
-- search_path pinned to pg_catalog, pg_temp (objects of schema public or of
-- a session's search_path are never resolved) and every public function but
-- start/stop runs as the owner (security definer). docs/security.md.

create table if not exists teguh.settings (
  name  text primary key,
  value text not null
);

-- Which kind of privileges each role was granted; re-applied on every
-- install, so a function a migration drops and recreates keeps its grants.
create table if not exists teguh.role_grants (
  role_name  text        not null,
  kind       text        not null,
  granted_at timestamptz not null default now(),
  primary key (role_name, kind)
);

-- The public functions each kind of role may execute ('owner': nobody but
-- the schema owner and superusers). Every public function is listed here
-- (tests/sql/test_security.py checks it).
create or replace function teguh._role_functions()
returns table (kind text, function_name text)
language sql immutable as $$
  with kinds(kind, names) as (values
    ('producer',    array['spawn_task', 'spawn_tasks', 'get_task_result']),
    -- a worker also hands runs back, registers its presence and syncs the
    -- schedules its application declares
    ('worker',      array['spawn_task', 'spawn_tasks', 'get_task_result', 'get_task', 'claim_task', 'claim_runs',
                          'claim_runs_next', 'claim_queues_next',
                          'complete_run', 'complete_runs', 'fail_run', 'schedule_run', 'extend_claim', 'extend_claims',
                          'set_task_checkpoint_state', 'get_task_checkpoint_state', 'get_task_checkpoint_states',
                          'await_event', 'wait_event', 'emit_event', 'next_wake_at', 'ticker', 'hand_back_run',
                          'release_run', 'register_worker', 'worker_heartbeat', 'unregister_worker',
                          'get_queue_policy', 'create_schedule', 'list_schedules', 'drop_schedule']),
    ('monitor',     array['queue_stats', 'get_task', 'get_task_result', 'next_wake_at',
                          'list_tasks', 'locate_task', 'list_schedules', 'get_queue_policy', 'list_workers',
                          'queue_workers', 'list_concurrency_limits']),
    ('admin',       array['create_queue', 'drop_queue', 'cancel_task', 'retry_task', 'emit_event', 'cleanup_tasks',
                          'cleanup_all_queues', 'ticker', 'queue_stats', 'get_task', 'get_task_result',
                          'next_wake_at',
                          'set_queue_policy', 'get_queue_policy', 'create_schedule', 'drop_schedule',
                          'list_schedules', 'pause_schedule', 'resume_schedule', 'list_tasks', 'locate_task',
                          'list_workers', 'queue_workers', 'set_concurrency_limit', 'drop_concurrency_limit',
                          'list_concurrency_limits']),
    ('maintenance', array['ticker', 'cleanup_tasks', 'cleanup_all_queues']),
    ('owner',       array['start', 'stop', 'allow_fake_time', 'grant_role', 'grant_producer', 'grant_worker',
                          'grant_monitor', 'grant_admin', 'revoke_role']),
    -- every kind but owner also gets these
    ('common',      array['version', 'current_time', 'portable_uuidv7', '_uuidv7_at', 'list_queues'])
  )
  select k.kind, f.name from kinds k, unnest(k.names) as f(name)
$$;

create or replace function teguh._schema_owner() returns text
language sql stable as $$
  select pg_catalog.pg_get_userbyid(n.nspowner) from pg_catalog.pg_namespace n where n.nspname = 'teguh'
$$;

-- Pins search_path on every function of schema teguh (but the two uuid
-- functions, schema-qualified throughout), makes the public ones (but
-- start/stop, which pg_cron needs to see the caller, and portable_uuidv7,
-- which reads nothing) security definer
-- and takes EXECUTE away from PUBLIC. Functions (re)created since the last
-- call need it: create_queue and the end of this file call it.
create or replace function teguh._secure_functions() returns void
language plpgsql as $$
declare
  v_function record;
begin
  for v_function in
    select p.oid::regprocedure as signature, p.proname, p.prosecdef, p.proconfig, p.proacl
      from pg_catalog.pg_proc p
     where p.pronamespace = 'teguh'::regnamespace and p.prokind in ('f', 'p')
  loop
    if v_function.proname in ('portable_uuidv7', '_uuidv7_at') then
      null;  -- hot, and schema-qualified throughout instead
    elsif not coalesce('search_path=pg_catalog, pg_temp' = any (v_function.proconfig), false) then
      execute format('alter routine %s set search_path = pg_catalog, pg_temp', v_function.signature);
    end if;
    if not v_function.prosecdef and left(v_function.proname, 1) <> '_'
       and v_function.proname not in ('start', 'stop', 'portable_uuidv7') then
      execute format('alter routine %s security definer', v_function.signature);
    end if;
    if v_function.proacl is null or exists (select 1 from aclexplode(v_function.proacl) a where a.grantee = 0) then
      execute format('revoke all on routine %s from public', v_function.signature);
    end if;
  end loop;
end
$$;

-- Grants p_role what its kinds allow (all its kinds when p_kind is null).
create or replace function teguh._apply_grants(p_role text, p_kind text default null) returns void
language plpgsql as $$
declare
  v_function regprocedure;
begin
  execute format('grant usage on schema teguh to %I', p_role);
  for v_function in
    select p.oid::regprocedure
      from pg_catalog.pg_proc p
     where p.pronamespace = 'teguh'::regnamespace
       and p.proname in (select f.function_name from teguh._role_functions() f
                          where f.kind = 'common'
                             or f.kind in (select g.kind from teguh.role_grants g
                                            where g.role_name = p_role and (p_kind is null or g.kind = p_kind)))
  loop
    execute format('grant execute on routine %s to %I', v_function, p_role);
  end loop;
end
$$;

create or replace function teguh._grant_kind(p_role text, p_kind text) returns void
language plpgsql as $$
begin
  if p_kind is null or p_kind = 'common' or p_kind = 'owner'
     or not exists (select 1 from teguh._role_functions() f where f.kind = p_kind) then
    perform teguh._invalid('kind', format('expected producer, worker, monitor, admin or maintenance, got %s',
                                          coalesce(quote_literal(p_kind), 'null')));
  end if;
  if p_role is null or to_regrole(quote_ident(p_role)) is null then
    perform teguh._invalid('role', format('no role named %s', coalesce(quote_literal(p_role), 'null')));
  end if;
  if p_role = teguh._schema_owner() then
    return;  -- the owner may do everything already
  end if;
  insert into teguh.role_grants (role_name, kind) values (p_role, p_kind) on conflict do nothing;
  perform teguh._apply_grants(p_role, p_kind);
end
$$;

-- Grants p_role (a login role or a group role) the privileges of a kind of
-- role: 'producer' (spawn, read results), 'worker' (run tasks), 'monitor'
-- (read-only), 'admin' (manage queues and tasks) or 'maintenance' (ticker,
-- cleanup). Covers queues created later; survives upgrades. Raises 22023
-- (COLUMN kind or role). The schema owner and superusers only.
create or replace function teguh.grant_role(p_role text, p_kind text) returns void
language plpgsql as $$
begin
  perform teguh._grant_kind(p_role, p_kind);
end
$$;

-- grant_role(p_role, 'producer'). Errors: 22023 (role).
create or replace function teguh.grant_producer(p_role text) returns void
language sql as $$ select teguh._grant_kind(p_role, 'producer') $$;

-- grant_role(p_role, 'worker'). Errors: 22023 (role).
create or replace function teguh.grant_worker(p_role text) returns void
language sql as $$ select teguh._grant_kind(p_role, 'worker') $$;

-- grant_role(p_role, 'monitor'). Errors: 22023 (role).
create or replace function teguh.grant_monitor(p_role text) returns void
language sql as $$ select teguh._grant_kind(p_role, 'monitor') $$;

-- grant_role(p_role, 'admin'). Errors: 22023 (role).
create or replace function teguh.grant_admin(p_role text) returns void
language sql as $$ select teguh._grant_kind(p_role, 'admin') $$;

-- Takes back from p_role one kind of privileges (all of teguh's when p_kind
-- is null), keeping what its other kinds allow. The role can then be dropped
-- once it holds nothing else. The schema owner and superusers only.
create or replace function teguh.revoke_role(p_role text, p_kind text default null) returns void
language plpgsql as $$
declare
  v_function regprocedure;
begin
  if p_role is null or to_regrole(quote_ident(p_role)) is null then
    perform teguh._invalid('role', format('no role named %s', coalesce(quote_literal(p_role), 'null')));
  end if;
  delete from teguh.role_grants g where g.role_name = p_role and (p_kind is null or g.kind = p_kind);
  for v_function in
    select p.oid::regprocedure from pg_catalog.pg_proc p where p.pronamespace = 'teguh'::regnamespace
  loop
    execute format('revoke all on routine %s from %I', v_function, p_role);
  end loop;
  if exists (select 1 from teguh.role_grants g where g.role_name = p_role) then
    perform teguh._apply_grants(p_role);
  else
    execute format('revoke all on schema teguh from %I', p_role);
  end if;
end
$$;

-- Allows (or forbids again) the teguh.fake_now setting to move the engine's
-- clock in this database: for test databases only, since any session could
-- then expire others' leases or age their results. The schema owner only.
create or replace function teguh.allow_fake_time(p_allowed boolean default true) returns void
language plpgsql as $$
begin
  if p_allowed is null then
    perform teguh._invalid('allowed', 'expected true or false, got null');
  end if;
  insert into teguh.settings (name, value) values ('allow_fake_time', case when p_allowed then 'on' else 'off' end)
  on conflict (name) do update set value = excluded.value;
end
$$;

-- Run by every install and upgrade: one owner for everything in the schema,
-- no CREATE on it and no table privilege for anybody else (so nobody can hang
-- a trigger, rule or policy on a queue table), functions secured, and the
-- recorded grants applied again (functions a migration recreated lost them).
create or replace function teguh._secure_schema() returns void
language plpgsql as $$
declare
  v_owner  text := teguh._schema_owner();
  v_object record;
begin
  for v_object in
    select c.oid::regclass as name, c.relkind
      from pg_catalog.pg_class c
     where c.relnamespace = 'teguh'::regnamespace and c.relkind in ('r', 'p', 'v', 'm', 'f', 'S')
       and pg_catalog.pg_get_userbyid(c.relowner) <> v_owner
       and not (c.relkind = 'S' and exists (select 1 from pg_catalog.pg_depend d
                                             where d.objid = c.oid and d.classid = 'pg_class'::regclass
                                               and d.deptype in ('a', 'i')))
  loop
    raise notice 'teguh: % now belongs to %, the owner of schema teguh', v_object.name, v_owner;
    begin
      execute format('alter %s %s owner to %I',
                     case v_object.relkind when 'v' then 'view' when 'm' then 'materialized view'
                                           when 'S' then 'sequence' when 'f' then 'foreign table' else 'table' end,
                     v_object.name, v_owner);
    exception when insufficient_privilege then
      raise exception 'teguh: cannot hand % to %, the owner of schema teguh: %', v_object.name, v_owner, sqlerrm
        using errcode = '42501', hint = 'Run the install (teguh install) as a superuser once.';
    end;
  end loop;
  for v_object in
    select p.oid::regprocedure as name from pg_catalog.pg_proc p
     where p.pronamespace = 'teguh'::regnamespace and pg_catalog.pg_get_userbyid(p.proowner) <> v_owner
  loop
    begin
      execute format('alter routine %s owner to %I', v_object.name, v_owner);
    exception when insufficient_privilege then
      raise exception 'teguh: cannot hand % to %, the owner of schema teguh: %', v_object.name, v_owner, sqlerrm
        using errcode = '42501', hint = 'Run the install (teguh install) as a superuser once.';
    end;
  end loop;

  -- nobody but the owner creates objects in the schema
  for v_object in
    select case when a.grantee = 0 then 'public' else quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) end as grantee
      from pg_catalog.pg_namespace n, aclexplode(n.nspacl) a
     where n.nspname = 'teguh' and a.privilege_type = 'CREATE' and a.grantee <> n.nspowner
  loop
    raise notice 'teguh: revoking CREATE on schema teguh from % (queues are created through teguh.create_queue)',
                 v_object.grantee;
    execute format('revoke create on schema teguh from %s', v_object.grantee);
  end loop;
  -- application roles work through the functions, never on the tables
  for v_object in
    select distinct c.oid::regclass as name,
           case when a.grantee = 0 then 'public' else quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) end as grantee
      from pg_catalog.pg_class c, aclexplode(c.relacl) a
     where c.relnamespace = 'teguh'::regnamespace and a.grantee <> c.relowner
  loop
    raise notice 'teguh: revoking the privileges of % on % (roles use the functions: docs/security.md)',
                 v_object.grantee, v_object.name;
    execute format('revoke all on %s from %s', v_object.name, v_object.grantee);
  end loop;
  -- objects only their owner can add; an earlier version let other roles own
  -- queue tables: say so rather than silently keep what they hung on them
  for v_object in
    select format('trigger %I on %s', t.tgname, t.tgrelid::regclass) as what
      from pg_catalog.pg_trigger t join pg_catalog.pg_class c on c.oid = t.tgrelid
     where c.relnamespace = 'teguh'::regnamespace and not t.tgisinternal
    union all
    select format('rule %I on %s', r.rulename, r.ev_class::regclass)
      from pg_catalog.pg_rewrite r join pg_catalog.pg_class c on c.oid = r.ev_class
     where c.relnamespace = 'teguh'::regnamespace and r.rulename <> '_RETURN'
    union all
    select format('policy %I on %s', p.polname, p.polrelid::regclass)
      from pg_catalog.pg_policy p join pg_catalog.pg_class c on c.oid = p.polrelid
     where c.relnamespace = 'teguh'::regnamespace
    union all
    select format('view %s', c.oid::regclass)
      from pg_catalog.pg_class c where c.relnamespace = 'teguh'::regnamespace and c.relkind in ('v', 'm')
  loop
    raise warning 'teguh: unexpected % in schema teguh: it runs with the rights of whoever touches it (the owner, a superuser, pg_cron): drop it unless you created it',
                  v_object.what;
  end loop;

  perform teguh._secure_functions();
  delete from teguh.role_grants g where to_regrole(quote_ident(g.role_name)) is null;
  for v_object in select distinct g.role_name from teguh.role_grants g loop
    perform teguh._apply_grants(v_object.role_name);
  end loop;
end
$$;

-- descriptions for psql's \df+
comment on function teguh.grant_role(text, text) is
  'Grants a role the functions of a kind: producer, worker, monitor, admin, maintenance. Errors: 22023.';
comment on function teguh.grant_producer(text) is 'grant_role(role, ''producer''). Errors: 22023.';
comment on function teguh.grant_worker(text) is 'grant_role(role, ''worker''). Errors: 22023.';
comment on function teguh.grant_monitor(text) is 'grant_role(role, ''monitor''). Errors: 22023.';
comment on function teguh.grant_admin(text) is 'grant_role(role, ''admin''). Errors: 22023.';
comment on function teguh.revoke_role(text, text) is 'Takes back one kind, or all of teguh''s privileges. Errors: 22023.';
comment on function teguh.allow_fake_time(boolean) is 'Lets teguh.fake_now move the clock here (tests). Errors: 22023.';

select teguh._secure_schema();
