-- teguh schema 2 -> 3.
--
-- Applied by teguh.schema.install()/migrate() (`teguh install`) in the same
-- transaction as the teguh.sql that follows it; it changes only what
-- re-applying teguh.sql cannot. Each part of this wave appends a section.

-- ---------------------------------------------------------------------------
-- Seeing what is there (issue 10): get_task says what a task waits for,
-- queue_stats counts the workers present, workers report hung handlers.
-- ---------------------------------------------------------------------------
-- New result columns (create or replace cannot change a result type) and a
-- new optional argument of worker_heartbeat (it would become an overload):
-- the old functions go, teguh.sql creates the new ones and re-grants them.
drop function if exists teguh.get_task(text, uuid);
drop function if exists teguh.queue_stats(text);
drop function if exists teguh.list_workers(text);
drop function if exists teguh.worker_heartbeat(text, integer);
-- teguh.workers exists from version 2 on (a version-1 database gets it,
-- column included, from teguh.sql).
do $$
begin
  if to_regclass('teguh.workers') is not null then
    alter table teguh.workers add column if not exists hung_handlers integer not null default 0;
  end if;
end
$$;

-- Per-key concurrency limits (issue 10): every queue's t_, p_ and r_ gain
-- concurrency_key; porder_<q> now orders only the tasks without a key (the
-- keyed ones are in pkey_<q>, which teguh.sql creates), so it is rebuilt as
-- a partial index; the per-queue _spawn_<q> takes the key as an eleventh
-- argument and _parse_spawn_options returns it, so their old forms are
-- dropped (teguh.sql creates the new ones).
do $$
declare
  v_queue    text;
  v_function regprocedure;
begin
  for v_queue in select queue_name from teguh.queues loop
    execute format('alter table teguh.%I add column if not exists concurrency_key text', 't_' || v_queue);
    execute format('alter table teguh.%I add column if not exists concurrency_key text', 'p_' || v_queue);
    execute format('alter table teguh.%I add column if not exists concurrency_key text', 'r_' || v_queue);
    execute format('drop index if exists teguh.%I', 'porder_' || v_queue);
  end loop;
  for v_function in
    select p.oid::regprocedure
      from pg_proc p
     where p.pronamespace = 'teguh'::regnamespace
       and p.proname like '\_spawn\_%'
       and p.pronargs = 10
  loop
    execute format('drop function %s', v_function);
  end loop;
end
$$;
drop function if exists teguh._parse_spawn_options(jsonb, boolean);
