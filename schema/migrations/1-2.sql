-- teguh schema 1 -> 2.
--
-- Applied by teguh.schema.install()/migrate() (`teguh install`) in the same
-- transaction as the teguh.sql that follows it; it changes only what
-- re-applying teguh.sql cannot. Each part of this wave appends a section.

-- Parameter names follow the Go reference again (p_queue_name, p_checkpoint_name),
-- so named-notation calls from psql scripts and pg_cron jobs keep working.
-- `create or replace` cannot rename an input parameter: drop the version-1
-- functions (identified by their argument types); teguh.sql recreates them.
do $$
declare
  v_function regprocedure;
begin
  for v_function in
    select p.oid::regprocedure
      from pg_proc p
     where p.pronamespace = 'teguh'::regnamespace
       and p.proargnames && array['p_queue', 'p_name']
  loop
    execute format('drop function %s', v_function);
  end loop;
end
$$;

-- gocompat (issue 8 section 5): the Go client's scenarios.
-- list_queues() also returns created_at: a changed result type needs a drop.
drop function if exists teguh.list_queues();
-- The run sequence claim_task reports (claims per task, resumes included)
-- and the claim functions that take p_run_seq: drop the four-argument ones,
-- teguh.sql regenerates every queue's functions.
do $$
declare
  v_queue    text;
  v_function regprocedure;
begin
  for v_queue in select queue_name from teguh.queues loop
    execute format('alter table teguh.%I add column if not exists claims integer not null default 0', 't_' || v_queue);
  end loop;
  for v_function in
    select p.oid::regprocedure
      from pg_proc p
     where p.pronamespace = 'teguh'::regnamespace
       and p.proname like '\_claim\_%'
       and p.proargtypes = '25 23 23 1184'::oidvector
  loop
    execute format('drop function %s', v_function);
  end loop;
end
$$;
