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

-- security (issue 8 §2): teguh.start() takes an optional role to run the
-- pg_cron jobs as; the version-1 start() would make a call without argument
-- ambiguous. Everything else (owner, grants, security definer functions,
-- revoking CREATE on the schema and table privileges that version 1's docs
-- prescribed) is done by teguh.sql's last section on every install.
drop function if exists teguh.start();

-- Version 1's functions were executable by PUBLIC and its docs had roles
-- granted USAGE on the schema (plus DML on the tables, and CREATE on the
-- schema to create queues). Version 2 takes all of that away (teguh.sql's
-- last section) and grants functions by kind of role: keep those roles
-- working by recording them as 'worker' (and 'admin' when they could create
-- queues); teguh.sql applies the grants. Narrow them afterwards with
-- teguh.revoke_role/grant_role (docs/security.md).
create table if not exists teguh.role_grants (
  role_name  text        not null,
  kind       text        not null,
  granted_at timestamptz not null default now(),
  primary key (role_name, kind)
);
do $$
declare
  v_grant record;
begin
  for v_grant in
    select distinct pg_get_userbyid(a.grantee) as role_name,
           case a.privilege_type when 'CREATE' then 'admin' else 'worker' end as kind
      from pg_namespace n, aclexplode(n.nspacl) a
     where n.nspname = 'teguh' and a.grantee <> n.nspowner and a.grantee <> 0
  loop
    raise notice 'teguh: role % keeps working as a teguh % (see docs/security.md to narrow it)',
                 quote_ident(v_grant.role_name), v_grant.kind;
    insert into teguh.role_grants (role_name, kind) values (v_grant.role_name, v_grant.kind)
    on conflict do nothing;
  end loop;
end
$$;
