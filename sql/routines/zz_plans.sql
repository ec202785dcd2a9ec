-- Planner settings of the hot paths: df.start, the engine's claims and its checkpoints use their
-- tables' keys, whatever the statistics say.
--
-- Why: PL/pgSQL caches a plan per statement and session (a generic plan from the sixth call on)
-- and only re-plans when the table's statistics change. A table that VACUUM or ANALYZE found
-- empty (a fresh install, a drained queue) is planned as what it was: empty, where a sequential
-- scan is cheapest. The cached plans then keep scanning every row as the tables fill, until
-- autovacuum's next ANALYZE (a minute or more later) invalidates them: measured on a fresh
-- database, the first df.start calls read 520 buffers each instead of 105, and the first 10,000
-- took 14x as long as later ones. The engine's claim (claim_tasks, and triage per task) met the
-- same cliff on a queue filled after such a VACUUM: its queue walk, its final join to
-- df.instances and the pickup check were sequential scans on every claim (4 engines draining
-- 3,000 instances: 2.8 ms per step in that join alone, 0.3 ms with the keys). Every statement
-- on these paths looks rows up by a key that has an index (instance id, node id; the queue by
-- run_at), so forbidding the sequential scan costs nothing when the
-- statistics are right and removes the cliff when they are not. The setting lives only for the
-- call (a function-level SET): nothing else in the caller's session changes.
--
-- This file sorts last on purpose: CREATE OR REPLACE FUNCTION resets a function's SET clauses,
-- so these must be applied after every routine that (re)defines one of the functions. Every
-- overload of each name is covered, so a changed signature needs no edit here.
DO $plans$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure
          FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
         WHERE (n.nspname, p.proname) IN (
                   ('df', 'start'), ('df', 'start_with_retry'), ('df', 'start_in_new_transaction'),
                   ('df_internal', 'on_instance_insert'), ('df_internal', 'start_instance'),
                   ('df_internal', 'complete_task'), ('df_internal', 'fail_task'),
                   ('df_internal', 'park_task'), ('df_internal', 'loop_iterate'),
                   ('df_internal', 'claim_tasks'), ('df_internal', 'triage'))
    LOOP
        EXECUTE pg_catalog.format('ALTER FUNCTION %s SET enable_seqscan = off', f);
    END LOOP;
END
$plans$;
