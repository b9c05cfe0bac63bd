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
