-- teguh schema 2 -> 3.
--
-- Applied by teguh.schema.install()/migrate() (`teguh install`) in the same
-- transaction as the teguh.sql that follows it; it changes only what
-- re-applying teguh.sql cannot. Each part of this wave appends a section.

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
