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
