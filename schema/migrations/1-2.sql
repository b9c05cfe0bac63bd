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

-- values (issue 8 §1): generated names that no two queues can share.
-- Version 1 named a queue's indexes and keys <table>_<suffix> (t_jobs_ikey),
-- which is also the table name of another queue (jobs_ikey): whichever came
-- second failed or silently lacked an index. Version 2 names every per-queue
-- object <kind>_<queue> (see the header of teguh.sql). Rename what exists,
-- found through the catalog by its table and old name (an index version 1
-- could not create is created by teguh.sql, which completes every queue's
-- objects). The identity sequence of p_<q> is found by its column.
do $$
declare
  v_queue    text;
  v_rename   text[];
  v_sequence text;
begin
  for v_queue in select queue_name from teguh.queues loop
    foreach v_rename slice 1 in array array[
      array['t_', '_pkey', 'tpk_'], array['t_', '_ikey', 'tikey_'], array['t_', '_cncl', 'tcncl_'],
      array['p_', '_pkey', 'ppk_'], array['p_', '_order', 'porder_'], array['p_', '_due', 'pdue_'],
      array['r_', '_pkey', 'rpk_'], array['r_', '_exp', 'rexp_'],
      array['c_', '_pkey', 'cpk_'],
      array['e_', '_pkey', 'epk_'], array['e_', '_at', 'eat_'],
      array['w_', '_pkey', 'wpk_'], array['w_', '_event', 'wevent_']
    ] loop
      if exists (select 1 from pg_index i
                   join pg_class ic on ic.oid = i.indexrelid
                   join pg_class tc on tc.oid = i.indrelid
                  where tc.relnamespace = 'teguh'::regnamespace and tc.relname = v_rename[1] || v_queue
                    and ic.relname = v_rename[1] || v_queue || v_rename[2]) then
        -- renaming a key's index renames its constraint too
        execute format('alter index teguh.%I rename to %I', v_rename[1] || v_queue || v_rename[2],
                       v_rename[3] || v_queue);
      end if;
    end loop;
    v_sequence := pg_get_serial_sequence(format('teguh.%I', 'p_' || v_queue), 'seq');
    if v_sequence is not null then
      execute format('alter sequence %s rename to %I', v_sequence, 'pseq_' || v_queue);
    end if;
  end loop;
end
$$;
