-- Engine coordination on engine-owned rows and relations (issue 13, class 7); see
-- sql/migrations/0150_engine_locks.sql.
--
-- Routines are re-applied on every install and upgrade (engine/schema.py): keep every
-- statement idempotent (CREATE OR REPLACE) and schema-qualified.

REVOKE ALL ON df._step_marker FROM PUBLIC;
GRANT SELECT ON df._step_marker TO PUBLIC;  -- LOCK ... IN ACCESS SHARE MODE needs SELECT

-- Is user code of an engine step running in this session right now? Inside a step, session_user
-- is the engine, not the submitter, so helpers that decide what "the session" may do from
-- session_user's role memberships (the dblink loopbacks) must refuse. The engine's trampolines
-- (engine/identity.py) lock df._step_marker before running the step; a transaction-level lock
-- cannot be released by user code, so this cannot be forged away.
CREATE OR REPLACE FUNCTION df_internal.in_engine_step() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks l
                    WHERE l.pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()
                      AND l.locktype OPERATOR(pg_catalog.=) 'relation'
                      AND l.database OPERATOR(pg_catalog.=)
                          (SELECT d.oid FROM pg_catalog.pg_database d
                            WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())
                      AND l.relation OPERATOR(pg_catalog.=) 'df._step_marker'::pg_catalog.regclass
                      AND l.granted)
$$;

-- Take the per-instance lock that serialises orchestration for one instance: a row lock on an
-- engine-owned table (no other role can lock it), not the instance row, so df.cancel and
-- df.signal (which update the instance row) never wait for it. Callers bound the wait with
-- their own lock_timeout. Returns the instance's status (NULL when it does not exist).
CREATE OR REPLACE FUNCTION df_internal.lock_instance(p_instance varchar) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM 1 FROM df_internal.instance_locks l
     WHERE l.instance_id OPERATOR(pg_catalog.=) p_instance FOR UPDATE;
    IF NOT FOUND THEN
        -- The first lock of an instance makes its row: a row this transaction inserted is as
        -- good as locked (a concurrent inserter waits for this transaction on the key). Only
        -- when another transaction made it first is it locked the usual way.
        INSERT INTO df_internal.instance_locks (instance_id)
        SELECT s.instance_id FROM df_internal.instance_state s
         WHERE s.instance_id OPERATOR(pg_catalog.=) p_instance
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            PERFORM 1 FROM df_internal.instance_locks l
             WHERE l.instance_id OPERATOR(pg_catalog.=) p_instance FOR UPDATE;
        END IF;
    END IF;
    RETURN df_internal.status_of(p_instance);
END $$;

-- The non-waiting form of lock_instance, for work done inside a claim (start_instance, the
-- refusal in triage) and by the reaper: nothing there may wait for another engine transaction.
-- The instance row itself is not needed: any role with df usage can lock it (FOR UPDATE: pg_durable
-- grants UPDATE (status)), so the engine never writes it in a way that waits
-- (02_published_status.sql), and its own tables reference instance_state, not the row
-- (migration 0510). Returns false when the orchestration lock is held by another engine
-- transaction (or the instance is gone); the lock is this transaction's until it ends.
CREATE OR REPLACE FUNCTION df_internal.try_lock_instance(p_instance varchar) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM 1 FROM df_internal.instance_locks l
     WHERE l.instance_id OPERATOR(pg_catalog.=) p_instance FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        IF EXISTS (SELECT 1 FROM df_internal.instance_locks l
                    WHERE l.instance_id OPERATOR(pg_catalog.=) p_instance) THEN
            RETURN false;  -- held by another engine transaction
        END IF;
        INSERT INTO df_internal.instance_locks (instance_id)
        SELECT s.instance_id FROM df_internal.instance_state s
         WHERE s.instance_id OPERATOR(pg_catalog.=) p_instance
        ON CONFLICT DO NOTHING;
        PERFORM 1 FROM df_internal.instance_locks l
         WHERE l.instance_id OPERATOR(pg_catalog.=) p_instance FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            RETURN false;
        END IF;
    END IF;
    RETURN true;
END $$;
REVOKE ALL ON FUNCTION df_internal.try_lock_instance(varchar) FROM PUBLIC;

-- Begin an instance (see 0.1.0). Runs inside a claim: every wait is bounded, and a start blocked
-- by another engine transaction is retried later instead of failing (or stalling) the claim.
CREATE OR REPLACE FUNCTION df_internal.start_instance(p_instance varchar) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
    SET lock_timeout = '2s'  -- bounded, whatever waits (nothing a role can lock is needed)
AS $$
DECLARE
    root varchar;
    msg text;
BEGIN
    IF NOT df_internal.try_lock_instance(p_instance) THEN
        IF EXISTS (SELECT 1 FROM df.instances i WHERE i.id = p_instance) THEN
            UPDATE df_internal.tasks t SET run_at = now() + interval '5 seconds'
             WHERE t.instance_id = p_instance AND t.kind = 'start';
            RETURN;
        END IF;
    END IF;
    IF df_internal.status_of(p_instance) IS DISTINCT FROM 'pending' THEN
        DELETE FROM df_internal.tasks t WHERE t.instance_id = p_instance AND t.kind = 'start';
        RETURN;
    END IF;
    SELECT i.root_node INTO root FROM df.instances i WHERE i.id = p_instance;
    BEGIN
        DELETE FROM df_internal.tasks t WHERE t.instance_id = p_instance AND t.kind = 'start';
        PERFORM df_internal.check_graph(p_instance);
        PERFORM df_internal.build_node_meta(p_instance);
        PERFORM df_internal.set_instance_status(p_instance, 'running');
        UPDATE df_internal.instance_state s SET started_at = COALESCE(s.started_at, clock_timestamp())
         WHERE s.instance_id = p_instance;
        PERFORM df_internal.drive(p_instance, jsonb_build_array(jsonb_build_object('op', 'activate', 'node', root)));
    EXCEPTION
        WHEN lock_not_available THEN
            -- Something waited longer than lock_timeout: try again in a few seconds rather
            -- than fail the claim, which would wedge every worker on this task.
            -- (The start task is still there, row-locked by the claim: no foreign-key check.)
            UPDATE df_internal.tasks t SET run_at = now() + interval '5 seconds'
             WHERE t.instance_id = p_instance AND t.kind = 'start';
            RETURN;
        WHEN query_canceled OR deadlock_detected OR serialization_failure
             OR admin_shutdown THEN
            RAISE;
        WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
            msg := 'Invalid durable function graph: ' || msg;
            UPDATE df.nodes x SET status = 'failed', result = to_jsonb(msg), error = msg, updated_at = now()
             WHERE x.instance_id = p_instance AND x.id = root;
            UPDATE df_internal.instance_state s SET started_at = COALESCE(s.started_at, now())
             WHERE s.instance_id = p_instance;
            PERFORM df_internal.finish_instance(p_instance, 'failed', NULL, msg);
    END;
END $$;

-- The lease of the former non-transactional path is gone (such statements are refused): its
-- functions go, and nothing takes advisory locks any more.
DROP FUNCTION IF EXISTS df_internal.lease_task(varchar, varchar, integer);
DROP FUNCTION IF EXISTS df_internal.end_lease(varchar, varchar);
