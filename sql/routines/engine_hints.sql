-- Notifications are wake-up hints only (issue 13, class 7): any role may LISTEN on df_work /
-- df_done / df_cancel / df_abandon, so payloads carry nothing (they used to carry instance ids of
-- every role). The engine acts on a notification only after checking the database (see
-- cancel_dead_steps in engine/listener.py); clients waiting for an instance check its status.
-- These are the 0.1.0 definitions with the payloads removed. (This file sorts before the other
-- routines on purpose: a later routine file that redefines one of these functions wins; it must
-- keep the payload empty.)
--
-- Routines are re-applied on every install and upgrade (engine/schema.py): keep every
-- statement idempotent (CREATE OR REPLACE) and schema-qualified.




-- Fence and drop everything under a node that is still in flight: queued tasks are deleted
-- (locked ones are left to their worker, which will find its generation stale), running leaves
-- are announced on df_abandon so engines cancel their statements. A losing LOOP is marked failed.
CREATE OR REPLACE FUNCTION df_internal.abandon(p_instance varchar, p_node varchar, p_why text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    running varchar[];
BEGIN
    WITH sub AS (SELECT s.node_id FROM df_internal.subtree(p_instance, p_node) s),
    bumped AS (
        UPDATE df_internal.node_meta m SET gen = m.gen + 1
          FROM sub WHERE m.instance_id = p_instance AND m.node_id = sub.node_id
        RETURNING m.node_id
    )
    SELECT array_agg(n.id) INTO running
      FROM df.nodes n JOIN bumped b ON n.instance_id = p_instance AND n.id = b.node_id
     WHERE n.status = 'running' AND NOT df_internal.is_composite(n.node_type);
    DELETE FROM df_internal.tasks t
     WHERE t.ctid IN (SELECT t2.ctid FROM df_internal.tasks t2
                       WHERE t2.instance_id = p_instance
                         AND t2.node_id IN (SELECT s.node_id FROM df_internal.subtree(p_instance, p_node) s)
                         FOR UPDATE SKIP LOCKED);
    UPDATE df.nodes n SET status = 'failed', result = to_jsonb(p_why), error = p_why, updated_at = now()
     WHERE n.instance_id = p_instance AND n.node_type = 'LOOP' AND n.status = 'running'
       AND n.id IN (SELECT s.node_id FROM df_internal.subtree(p_instance, p_node) s);
    IF running IS NOT NULL THEN
        PERFORM pg_catalog.pg_notify('df_abandon', '');
    END IF;
END $$;

-- Finish the whole instance (root node decided).
CREATE OR REPLACE FUNCTION df_internal.finish_instance(p_instance varchar, p_status text, p_result jsonb,
                                            p_error text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- (never waits for the instance row: 02_published_status.sql)
    IF df_internal.is_live(df_internal.status_of(p_instance)) THEN
        PERFORM df_internal.set_instance_status(p_instance, p_status,
            CASE WHEN p_status = 'completed' THEN clock_timestamp() END);
    END IF;
    UPDATE df_internal.instance_state s
       SET finished_at = clock_timestamp(), output = p_result, error = p_error
     WHERE s.instance_id = p_instance;
    DELETE FROM df_internal.tasks t
     WHERE t.ctid IN (SELECT t2.ctid FROM df_internal.tasks t2
                       WHERE t2.instance_id = p_instance FOR UPDATE SKIP LOCKED);
    PERFORM pg_catalog.pg_notify('df_done', '');
END $$;

-- Record a failed attempt. When p_retry_delay is given the node is retried after that delay
-- (durable timer); otherwise the node fails and the interpreter propagates the failure.
CREATE OR REPLACE FUNCTION df_internal.fail_task(p_instance varchar, p_node varchar, p_gen integer,
                                      p_error text, p_ran_sql text, p_engine text,
                                      p_started_at timestamptz, p_retry_delay interval DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
    SET lock_timeout = '2s'  -- a submitter holding its own instance row must not stall a worker
AS $$
DECLARE
    m df_internal.node_meta%ROWTYPE;
BEGIN
    PERFORM df_internal.lock_instance(p_instance);
    IF NOT df_internal.task_is_live(p_instance, p_node, p_gen) THEN
        DELETE FROM df_internal.tasks t WHERE t.instance_id = p_instance AND t.node_id = p_node;
        RETURN false;
    END IF;
    UPDATE df_internal.node_meta x SET attempts = x.attempts + 1, ran_sql = COALESCE(p_ran_sql, x.ran_sql)
     WHERE x.instance_id = p_instance AND x.node_id = p_node
    RETURNING * INTO m;
    INSERT INTO df_internal.node_attempts (instance_id, node_id, attempt, status, started_at,
                                           error, ran_sql, engine_id, finished_at)
    VALUES (p_instance, p_node, m.attempts,
            CASE WHEN p_retry_delay IS NULL THEN 'failed' ELSE 'retrying' END,
            p_started_at, p_error, p_ran_sql, p_engine, clock_timestamp());
    PERFORM df_internal.mark_running(p_instance);
    IF p_retry_delay IS NOT NULL THEN
        UPDATE df_internal.tasks t SET run_at = now() + p_retry_delay, phase = 'start', deadline = NULL
         WHERE t.instance_id = p_instance AND t.node_id = p_node;
        UPDATE df.nodes x SET status_details = jsonb_build_object(
                   'retrying', true, 'attempt', m.attempts, 'last_error', p_error,
                   'next_attempt_at', now() + p_retry_delay), updated_at = now()
         WHERE x.instance_id = p_instance AND x.id = p_node;
        PERFORM pg_catalog.pg_notify('df_work', '');
        RETURN true;
    END IF;
    DELETE FROM df_internal.tasks t WHERE t.instance_id = p_instance AND t.node_id = p_node;
    PERFORM df_internal.drive(p_instance, jsonb_build_array(jsonb_build_object(
        'op', 'done', 'node', p_node, 'status', 'failed', 'error', p_error)));
    RETURN true;
END $$;


CREATE OR REPLACE FUNCTION df_internal.retry_instance(p_instance varchar, p_from_node varchar, p_requested_by text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    i df.instances%ROWTYPE;
BEGIN
    SELECT * INTO i FROM df.instances x WHERE x.id = p_instance FOR UPDATE;
    IF i.status = 'completed' THEN
        RAISE EXCEPTION 'instance % is completed; only failed or cancelled instances can be retried', p_instance
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF df_internal.is_live(i.status) THEN
        RETURN;   -- already running again (a second df.retry is a no-op)
    END IF;
    IF p_from_node IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM df.nodes n WHERE n.instance_id = p_instance AND n.id = p_from_node) THEN
        RAISE EXCEPTION 'node % does not belong to instance %', p_from_node, p_instance
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO df_internal.retries (instance_id, requested_by, from_node, previous_status)
    VALUES (p_instance, p_requested_by::regrole, p_from_node, i.status);
    UPDATE df_internal.instance_state s
       SET execution = s.execution + 1, finished_at = NULL, output = NULL, error = NULL,
           cancel_reason = NULL, unpublished_status = NULL, unpublished_completed_at = NULL
     WHERE s.instance_id = p_instance;
    IF NOT EXISTS (SELECT 1 FROM df_internal.node_meta m WHERE m.instance_id = p_instance) THEN
        PERFORM df_internal.build_node_meta(p_instance);
    END IF;
    -- Everything not completed goes back to pending; from_node also re-runs that node and every
    -- node after it: its subtree, and (walking up) the later siblings are pending anyway.
    PERFORM df_internal.reset_subtree(p_instance, i.root_node, true);
    IF p_from_node IS NOT NULL THEN
        PERFORM df_internal.reset_subtree(p_instance, p_from_node, false);
        -- Ancestors of from_node and everything that ran after it must run again.
        UPDATE df.nodes n SET status = 'pending', result = NULL, error = NULL, updated_at = now()
         WHERE n.instance_id = p_instance AND n.id IN (
             WITH RECURSIVE up AS (
                 SELECT m.parent_id AS id FROM df_internal.node_meta m
                  WHERE m.instance_id = p_instance AND m.node_id = p_from_node
                 UNION ALL
                 SELECT m.parent_id FROM df_internal.node_meta m JOIN up ON m.instance_id = p_instance AND m.node_id = up.id
                  WHERE m.parent_id IS NOT NULL)
             SELECT id FROM up WHERE id IS NOT NULL);
        UPDATE df.nodes n SET status = 'pending', result = NULL, error = NULL, updated_at = now()
         WHERE n.instance_id = p_instance AND n.status = 'completed'
           AND n.updated_at >= (SELECT x.updated_at FROM df.nodes x
                                 WHERE x.instance_id = p_instance AND x.id = p_from_node)
           AND NOT df_internal.is_composite(n.node_type);
    END IF;
    PERFORM set_config('df.retrying', p_instance, true);
    UPDATE df.instances x SET status = 'running', completed_at = NULL WHERE x.id = p_instance;
    PERFORM set_config('df.retrying', '', true);
    PERFORM df_internal.drive(p_instance, jsonb_build_array(jsonb_build_object(
        'op', 'activate', 'node', i.root_node)));
    PERFORM pg_catalog.pg_notify('df_work', '');
END $$;

