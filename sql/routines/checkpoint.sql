-- The engine's checkpoint API: what a worker calls, with the task still row-locked by its
-- claim (queue.sql), once a leaf has run: mark the instance running, check the task is still
-- the live generation, record the result and drive the graph on (complete_task), park a
-- waiting task (park_task) and consume a signal (take_signal). Failures: fail_task
-- (engine_hints.sql) and task_fault (poison.sql).
--
-- Routines are re-applied on every install and upgrade (engine/schema.py): keep every statement
-- idempotent (CREATE OR REPLACE) and schema-qualified.

-- A started instance reads 'pending' until its first checkpoint (so df.start stays cheap and
-- df.cancel never waits behind a first step); then 'running'. Never waits for the instance row
-- (02_published_status.sql).
CREATE OR REPLACE FUNCTION df_internal.mark_running(p_instance varchar) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF df_internal.status_of(p_instance) = 'pending' THEN
        PERFORM df_internal.set_instance_status(p_instance, 'running');
    END IF;
END $$;

-- Is this (instance, node, generation) still the live one? Used to fence every write.
CREATE OR REPLACE FUNCTION df_internal.task_is_live(p_instance varchar, p_node varchar, p_gen integer)
RETURNS boolean LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (
        SELECT 1 FROM df_internal.node_meta m JOIN df.instances i ON i.id = m.instance_id
          JOIN df_internal.instance_state s ON s.instance_id = m.instance_id
         WHERE m.instance_id = p_instance AND m.node_id = p_node AND m.gen = p_gen
           AND df_internal.is_live(df_internal.effective_status(i.status, s.unpublished_status)))
$$;

-- Checkpoint a finished leaf: record the attempt, write the result, run the interpreter.
-- Returns 'stale' (and changes nothing but dropping the task) when the write is stale; 'shared'
-- when other tasks of the instance (parallel branches) are queued or running: they will need the
-- instance lock this transaction now holds, so a batching engine commits right away; else 'done'.
-- The hot path of every step: the liveness check rides on the node_meta update, and the
-- interpreter is told the node's finish time is already written.
CREATE OR REPLACE FUNCTION df_internal.complete_task(p_instance varchar, p_node varchar, p_gen integer,
                                          p_result jsonb, p_details jsonb, p_ran_sql text,
                                          p_engine text, p_started_at timestamptz)
RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
    SET lock_timeout = '2s'  -- a submitter holding its own instance row must not stall a worker
AS $$
DECLARE
    m df_internal.node_meta%ROWTYPE;
    inst_status text;
    shared boolean;
BEGIN
    inst_status := df_internal.lock_instance(p_instance);  -- (the status under the lock)
    DELETE FROM df_internal.tasks t WHERE t.instance_id = p_instance AND t.node_id = p_node;
    IF inst_status IS NULL OR NOT df_internal.is_live(inst_status) THEN
        RETURN 'stale';
    END IF;
    UPDATE df_internal.node_meta x SET attempts = x.attempts + 1, ran_sql = p_ran_sql,
                                       started_at = COALESCE(p_started_at, x.started_at),
                                       finished_at = clock_timestamp()
     WHERE x.instance_id = p_instance AND x.node_id = p_node AND x.gen = p_gen
    RETURNING * INTO m;
    IF NOT FOUND THEN
        RETURN 'stale';   -- fenced: a newer generation of the node exists
    END IF;
    shared := EXISTS (SELECT 1 FROM df_internal.tasks t WHERE t.instance_id = p_instance);
    INSERT INTO df_internal.node_attempts (instance_id, node_id, iteration, attempt, status,
                                           started_at, ran_sql, engine_id, finished_at)
    VALUES (p_instance, p_node,
            CASE WHEN m.parent_id IS NULL THEN 0 ELSE
                COALESCE((SELECT lm.iteration FROM df_internal.node_meta lm
                           WHERE lm.instance_id = p_instance AND lm.node_id = m.parent_id), 0) END,
            m.attempts, 'completed', p_started_at, p_ran_sql, p_engine, m.finished_at);
    IF p_details IS NOT NULL THEN
        UPDATE df.nodes x SET status_details = p_details
         WHERE x.instance_id = p_instance AND x.id = p_node;
    END IF;
    PERFORM df_internal.drive(p_instance, jsonb_build_array(jsonb_build_object(
        'op', 'done', 'node', p_node, 'status', 'completed', 'result', p_result, 'finished', true)));
    IF inst_status = 'pending' THEN
        PERFORM df_internal.mark_running(p_instance);
    END IF;
    RETURN CASE WHEN shared THEN 'shared' ELSE 'done' END;
END $$;

-- Park a task until a time (cron waits, signal timeouts) or indefinitely (signal without one).
CREATE OR REPLACE FUNCTION df_internal.park_task(p_instance varchar, p_node varchar, p_gen integer,
                                      p_until timestamptz, p_deadline timestamptz)
RETURNS boolean LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
    SET lock_timeout = '2s'  -- a submitter holding its own instance row must not stall a worker
AS $$
BEGIN
    IF NOT df_internal.task_is_live(p_instance, p_node, p_gen) THEN
        DELETE FROM df_internal.tasks t WHERE t.instance_id = p_instance AND t.node_id = p_node;
        RETURN false;
    END IF;
    UPDATE df_internal.tasks t SET run_at = p_until, phase = 'waiting', deadline = p_deadline
     WHERE t.instance_id = p_instance AND t.node_id = p_node;
    PERFORM df_internal.mark_running(p_instance);
    UPDATE df.nodes x SET status_details = jsonb_strip_nulls(jsonb_build_object(
               'waiting_until', CASE WHEN p_until < 'infinity' THEN p_until END,
               'deadline', p_deadline))
     WHERE x.instance_id = p_instance AND x.id = p_node;
    RETURN true;
END $$;

-- Consume the oldest queued signal of a SIGNAL node's name, if any (returns its result envelope).
CREATE OR REPLACE FUNCTION df_internal.take_signal(p_instance varchar, p_node varchar, p_name text)
RETURNS jsonb LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    sig df_internal.signals%ROWTYPE;
BEGIN
    SELECT * INTO sig FROM df_internal.signals s
     WHERE s.instance_id = p_instance AND s.name = p_name AND s.consumed_at IS NULL
     ORDER BY s.id LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    UPDATE df_internal.signals s SET consumed_at = now(), consumed_by = p_node WHERE s.id = sig.id;
    RETURN jsonb_build_object('signal_name', p_name, 'timed_out', false, 'data', sig.data);
END $$;
