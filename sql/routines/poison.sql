-- Poison tasks: a task the engine cannot process is retried a bounded number of times with
-- backoff, then its node fails with the reason; it never loops or stays silently pending
-- (issue 18). Routines are re-applied on every install and upgrade (engine/schema.py): keep every
-- statement idempotent and schema-qualified.

-- Count one fault of a task (locked by the caller, or skipped by it when locked elsewhere):
-- below p_limit the task waits 2^(faults-1) s (at most 60 s) and is tried again, out of every
-- claim meanwhile, so the workers stay free for other work and other roles; at p_limit its node
-- fails with the error. Returns 'retry', 'failed' or 'stale' (no such task generation).
CREATE OR REPLACE FUNCTION df_internal.task_fault(p_instance varchar, p_node varchar,
                                                  p_gen integer, p_error text, p_engine text,
                                                  p_started_at timestamptz, p_limit integer)
RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
    SET lock_timeout = '2s'  -- a submitter holding its own instance row must not stall a worker
AS $$
DECLARE
    n integer;
    wait interval;
BEGIN
    UPDATE df_internal.tasks t
       SET faults = CASE WHEN t.fault_gen = t.gen THEN t.faults + 1 ELSE 1 END,
           fault_gen = t.gen, last_fault = p_error
     WHERE t.instance_id = p_instance AND t.node_id = p_node AND t.gen = p_gen
    RETURNING t.faults INTO n;
    IF NOT FOUND THEN
        RETURN 'stale';
    END IF;
    IF n >= GREATEST(COALESCE(p_limit, 3), 1) THEN
        PERFORM df_internal.fail_task(p_instance, p_node, p_gen,
            format('%s (gave up after %s tries)', p_error, n),
            NULL, p_engine, p_started_at);
        RETURN 'failed';
    END IF;
    wait := make_interval(secs => LEAST(60, 2 ^ (n - 1)));
    UPDATE df_internal.tasks t SET run_at = now() + wait
     WHERE t.instance_id = p_instance AND t.node_id = p_node;
    UPDATE df.nodes x SET status_details = jsonb_build_object(
               'engine_fault', p_error, 'faults', n, 'next_attempt_at', now() + wait),
           updated_at = now()
     WHERE x.instance_id = p_instance AND x.id = p_node;
    RETURN 'retry';
END $$;
REVOKE ALL ON FUNCTION df_internal.task_fault(varchar, varchar, integer, text, text, timestamptz,
                                              integer) FROM PUBLIC;

-- Charge the tasks that were in flight in an engine session that no longer exists (the engine
-- crashed or was killed, maybe by a task), so a task that kills its engine is quarantined across
-- restarts like any other: a task that was running alone gets a fault (task_fault); the tasks of
-- a larger batch become suspects, claimed alone from then on (claim_tasks), so the culprit's next
-- kill is charged to it alone. Tasks locked right now (claimed again) are left for a later call.
-- Returns the number of faults counted.
CREATE OR REPLACE FUNCTION df_internal.reap_inflight(p_limit integer) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    k record;
    n integer := 0;
    left_over boolean;
BEGIN
    FOR r IN
        SELECT f.* FROM df_internal.inflight f
         -- (backend_start is NULL for another role's session, unless privileged: then the pid
         -- alone says it lives)
         WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a
                            WHERE a.pid = f.backend_pid
                              AND (a.backend_start IS NULL OR a.backend_start = f.backend_start))
           FOR UPDATE SKIP LOCKED
    LOOP
        left_over := false;
        FOR k IN SELECT u.i, u.nd, u.g FROM unnest(r.instance_ids, r.node_ids, r.gens) AS u(i, nd, g)
        LOOP
            CONTINUE WHEN NOT EXISTS (SELECT 1 FROM df_internal.tasks t
                                       WHERE t.instance_id = k.i AND t.node_id = k.nd AND t.gen = k.g);
            PERFORM 1 FROM df_internal.tasks t
             WHERE t.instance_id = k.i AND t.node_id = k.nd AND t.gen = k.g
               FOR UPDATE SKIP LOCKED;
            -- Never wait for a lock a role holds: a fault at the limit fails the node and the
            -- instance (writes its row), and the submitter may hold its own instance row FOR
            -- UPDATE for as long as it likes. Waiting made this whole call time out on every
            -- heartbeat, so no dead engine's tasks were charged for anyone (a task that kills
            -- every engine ran for ever) and the housekeeping after it (retention, timer
            -- wake-ups) never ran. A held instance is left for a later call.
            IF NOT FOUND OR NOT df_internal.try_lock_instance(k.i) THEN
                left_over := true;
                CONTINUE;
            END IF;
            IF cardinality(r.instance_ids) = 1 THEN
                PERFORM df_internal.task_fault(k.i, k.nd, k.g,
                    'the engine process running this step stopped (it crashed or was killed)',
                    r.engine_id, NULL, p_limit);
                n := n + 1;
            ELSE
                UPDATE df_internal.tasks t SET suspect = true
                 WHERE t.instance_id = k.i AND t.node_id = k.nd;
            END IF;
        END LOOP;
        IF NOT left_over THEN
            DELETE FROM df_internal.inflight f WHERE f.engine_id = r.engine_id AND f.worker = r.worker;
        END IF;
    END LOOP;
    RETURN n;
END $$;
REVOKE ALL ON FUNCTION df_internal.reap_inflight(integer) FROM PUBLIC;
