-- The interpreter (df_internal.drive), LOOP iterations and signal delivery: the parts of
-- docs/engine.md's state machine that read the node configs stored in df.nodes.query.
-- (The graph check the engine runs before an instance starts is validation.sql; the tree walks
-- are graph.sql.)
--
-- Node configs are pg_durable 0.2.6's (what its DSL writes, so a graph built for pg_durable or
-- inserted by hand runs unchanged): SIGNAL {"signal_name","timeout_seconds"}, WAIT_SCHEDULE
-- {"cron_expr"}, BREAK {"break_value"}, df.if_rows {"condition_type":"result_has_rows",
-- "result_name"}. 0.1.0's shapes are still read (migration 0301 rewrites stored rows, but a row
-- inserted by hand may still carry one).
--
-- Routines are re-applied on every install and upgrade (engine/schema.py): keep every statement
-- idempotent (CREATE OR REPLACE) and schema-qualified.

-- IF truthiness (sql-api.md §6). Row sets are judged by the first column of the first row; the
-- engine records column order in status_details.columns because jsonb does not keep key order.
CREATE OR REPLACE FUNCTION df_internal.truthy(p_result jsonb, p_details jsonb DEFAULT NULL) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v jsonb;
    first_row jsonb;
    col text;
    str text;
BEGIN
    IF p_result IS NULL OR jsonb_typeof(p_result) = 'null' THEN
        RETURN false;
    END IF;
    IF jsonb_typeof(p_result) = 'object' AND p_result ? 'rows' AND p_result ? 'row_count' THEN
        first_row := p_result -> 'rows' -> 0;
        IF first_row IS NULL OR jsonb_typeof(first_row) <> 'object' THEN
            RETURN false;
        END IF;
        col := p_details -> 'columns' ->> 0;
        IF col IS NULL THEN
            SELECT k INTO col FROM jsonb_object_keys(first_row) AS k LIMIT 1;
        END IF;
        v := first_row -> col;
    ELSE
        v := p_result;
    END IF;
    IF v IS NULL THEN
        RETURN false;
    END IF;
    IF jsonb_typeof(v) = 'string' THEN
        -- trimmed of whitespace as Rust's str::trim does (tabs, newlines, Unicode spaces too)
        str := lower(regexp_replace(v #>> '{}',
            '^[\s\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+|[\s\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+$',
            '', 'g'));
    END IF;
    RETURN CASE jsonb_typeof(v)
        WHEN 'null' THEN false
        WHEN 'boolean' THEN v::text::boolean
        WHEN 'number' THEN v::text::numeric <> 0
        -- pg_durable's table: trimmed, case-insensitive; true/t/yes are true, false/f/no and
        -- '' false, a number (numeric columns arrive as strings: '0.0') by its value, any other
        -- text true.
        WHEN 'string' THEN CASE
            WHEN str IN ('true', 't', 'yes') THEN true
            WHEN str IN ('', 'false', 'f', 'no') THEN false
            WHEN str ~ '^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)(e[+-]?[0-9]{1,4})?$'
                THEN str::numeric <> 0
            ELSE true END
        WHEN 'array' THEN jsonb_array_length(v) > 0
        WHEN 'object' THEN v <> '{}'::jsonb
        ELSE false
    END;
END $$;

-- Queue a signal and wake the instance's SIGNAL tasks of that name. Not only those already
-- parked ('waiting'): a wait whose first pass an engine is running right now (task row locked,
-- no signal seen yet) would park after this commits and miss it until its timeout. Matching it
-- too makes this UPDATE wait for that pass to commit, then wake the parked task.
CREATE OR REPLACE FUNCTION df_internal.enqueue_signal(p_instance varchar, p_name text, p_data jsonb,
                                           p_sent_by regrole)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO df_internal.signals (instance_id, name, data, sent_by)
    VALUES (p_instance, p_name, p_data, p_sent_by);
    UPDATE df_internal.tasks t SET run_at = now()
      FROM df.nodes n
     WHERE t.instance_id = p_instance
       AND n.instance_id = t.instance_id AND n.id = t.node_id AND n.node_type = 'SIGNAL'
       AND coalesce(n.query::jsonb ->> 'signal_name', n.query::jsonb ->> 'name') = p_name;
    PERFORM pg_notify('df_work', '');  -- a hint only: no instance ids (docs/security.md, class 7)
END $$;

-- The interpreter. Processes a work list of events until nothing is left:
--   {"op":"activate","node":id}                      start a node
--   {"op":"done","node":id,"status":s,"result":r,"error":e}   a node finished
--   {"op":"break","node":id}                         a BREAK node runs
-- Runs under the instance lock taken by the caller.
CREATE OR REPLACE FUNCTION df_internal.drive(p_instance varchar, p_events jsonb)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    work jsonb := p_events;
    ev jsonb;
    nid varchar;
    n df.nodes%ROWTYPE;
    m df_internal.node_meta%ROWTYPE;
    p df.nodes%ROWTYPE;
    pm df_internal.node_meta%ROWTYPE;
    cfg jsonb;
    st text;
    res jsonb;
    err text;
    kids varchar[];
    k varchar;
    all_done boolean;
    arr jsonb;
    anc varchar;
    anc_row df.nodes%ROWTYPE;
    prev varchar;
    delay interval;
    steps integer := 0;
BEGIN
    WHILE jsonb_array_length(work) > 0 LOOP
        steps := steps + 1;
        IF steps > 200000 THEN
            RAISE EXCEPTION 'workflow interpreter did not converge';
        END IF;
        ev := work -> 0;
        work := work - 0;
        nid := ev ->> 'node';
        SELECT * INTO n FROM df.nodes x WHERE x.instance_id = p_instance AND x.id = nid;
        SELECT * INTO m FROM df_internal.node_meta x WHERE x.instance_id = p_instance AND x.node_id = nid;
        IF n.id IS NULL OR m.node_id IS NULL THEN
            RAISE EXCEPTION 'node % of instance % does not exist', nid, p_instance;
        END IF;

        IF ev ->> 'op' = 'activate' THEN
            IF n.status = 'completed' THEN       -- resuming after df.retry: keep the result
                work := work || jsonb_build_array(jsonb_build_object(
                    'op', 'done', 'node', nid, 'status', 'completed', 'result', n.result, 'kept', true));
                CONTINUE;
            END IF;
            UPDATE df.nodes x SET status = 'running', result = NULL, error = NULL, updated_at = now()
             WHERE x.instance_id = p_instance AND x.id = nid;
            -- (clock_timestamp: a checkpoint activates the next node long after its transaction
            -- began, e.g. a batch's or a long first step's claim; now() would date it before
            -- the step that led to it even ran — defect 5 of issue 15)
            UPDATE df_internal.node_meta x SET started_at = clock_timestamp(), finished_at = NULL, gen = x.gen + 1,
                   iteration = CASE WHEN n.node_type = 'LOOP' THEN 1 ELSE x.iteration END
             WHERE x.instance_id = p_instance AND x.node_id = nid
            RETURNING * INTO m;
            cfg := CASE WHEN df_internal.has_config(n.node_type)
                             AND n.query IS NOT NULL THEN n.query::jsonb END;
            CASE n.node_type
            WHEN 'THEN' THEN
                work := work || jsonb_build_array(jsonb_build_object('op', 'activate', 'node', n.left_node));
            WHEN 'IF' THEN
                IF cfg ? 'condition_node' THEN
                    work := work || jsonb_build_array(jsonb_build_object('op', 'activate', 'node', cfg ->> 'condition_node'));
                ELSE
                    SELECT nr.result INTO res FROM df_internal.named_results nr
                     WHERE nr.instance_id = p_instance
                       AND nr.name = coalesce(cfg ->> 'result_name', cfg ->> 'if_rows');
                    work := work || jsonb_build_array(jsonb_build_object('op', 'activate', 'node',
                        CASE WHEN res IS NOT NULL AND jsonb_typeof(res) <> 'null'
                                  AND COALESCE((res ->> 'row_count')::bigint,
                                               CASE WHEN jsonb_typeof(res) = 'array' THEN jsonb_array_length(res) ELSE 1 END) > 0
                             THEN n.left_node ELSE n.right_node END));
                END IF;
            WHEN 'JOIN', 'RACE' THEN
                FOREACH k IN ARRAY df_internal.branches(p_instance, nid) LOOP
                    work := work || jsonb_build_array(jsonb_build_object('op', 'activate', 'node', k));
                END LOOP;
            WHEN 'LOOP' THEN
                -- Named results of a root loop are reset before each *new* iteration
                -- (loop_iterate); not here, so a loop resumed by df.retry keeps them.
                work := work || jsonb_build_array(jsonb_build_object('op', 'activate', 'node', n.left_node));
            WHEN 'BREAK' THEN
                work := work || jsonb_build_array(jsonb_build_object('op', 'break', 'node', nid));
            WHEN 'SLEEP' THEN
                -- Due its seconds after it was reached, not after its transaction began (a
                -- sleep after a long step would otherwise end early, or at once). A sleep
                -- reached by df.start itself (the workflow's first leaf) is due at once instead,
                -- its end as the deadline: an engine takes the instance up (it reads 'running',
                -- as pg_durable's once its worker loaded it; it read 'pending' for the whole
                -- sleep) and parks the timer until then (engine/leaves.py run_sleep).
                INSERT INTO df_internal.tasks AS t (instance_id, node_id, gen, kind, run_at, phase,
                                                    deadline, node_type)
                SELECT p_instance, nid, m.gen, 'run',
                       CASE WHEN fresh THEN now() ELSE due END,
                       CASE WHEN fresh THEN 'start' ELSE 'waiting' END,
                       CASE WHEN fresh THEN due END, n.node_type
                  FROM (SELECT clock_timestamp() + make_interval(secs => n.query::bigint) AS due,
                               df_internal.status_of(p_instance) IS NOT DISTINCT FROM 'pending'
                                   AS fresh) x
                ON CONFLICT (instance_id, node_id) DO UPDATE
                   SET gen = EXCLUDED.gen, kind = 'run', run_at = EXCLUDED.run_at,
                       phase = EXCLUDED.phase, deadline = EXCLUDED.deadline,
                       node_type = EXCLUDED.node_type;
            ELSE   -- SQL, HTTP, HTTP_MULTIPART, SIGNAL, WAIT_SCHEDULE: the engine runs them
                -- (node type and frozen submitter on the row: the claim routes and caps it
                -- without looking them up, see migration 0470)
                INSERT INTO df_internal.tasks AS t (instance_id, node_id, gen, kind, run_at, phase,
                                                    node_type, role_oid)
                VALUES (p_instance, nid, m.gen, 'run', now(), 'start', n.node_type,
                        (SELECT s.submitted_by::oid FROM df_internal.instance_state s
                          WHERE s.instance_id = p_instance))
                ON CONFLICT (instance_id, node_id) DO UPDATE
                   SET gen = EXCLUDED.gen, kind = 'run', run_at = now(), phase = 'start', deadline = NULL,
                       node_type = EXCLUDED.node_type, role_oid = EXCLUDED.role_oid;
            END CASE;

        ELSIF ev ->> 'op' = 'break' THEN
            -- Find the nearest enclosing LOOP reached through its body.
            anc := m.parent_id;
            prev := nid;
            LOOP
                EXIT WHEN anc IS NULL;
                SELECT * INTO anc_row FROM df.nodes x WHERE x.instance_id = p_instance AND x.id = anc;
                -- The nearest LOOP reached through its body or its do-while condition (as
                -- pg_durable: a BREAK in a loop's condition completes that loop).
                EXIT WHEN anc_row.node_type = 'LOOP'
                          AND (SELECT x.slot FROM df_internal.node_meta x
                                WHERE x.instance_id = p_instance AND x.node_id = prev)
                              IN ('body', 'loop_condition');
                prev := anc;
                SELECT x.parent_id INTO anc FROM df_internal.node_meta x
                 WHERE x.instance_id = p_instance AND x.node_id = anc;
            END LOOP;
            IF anc IS NULL THEN
                work := work || jsonb_build_array(jsonb_build_object('op', 'done', 'node', nid,
                    'status', 'failed', 'error', 'BREAK outside of a loop: df.break() must be inside df.loop()'));
                CONTINUE;
            END IF;
            -- pg_durable's BREAK config {"break_value": <text or null>}: the loop's result is
            -- the value as JSON when it parses, else as a JSON string, null without a value.
            cfg := df_internal.try_jsonb(n.query);
            res := CASE
                       WHEN jsonb_typeof(cfg) = 'object' AND cfg ? 'break_value' THEN
                           CASE WHEN jsonb_typeof(cfg -> 'break_value') = 'string'
                                THEN COALESCE(df_internal.try_jsonb(cfg ->> 'break_value'),
                                              to_jsonb(cfg ->> 'break_value'))
                                ELSE COALESCE(cfg -> 'break_value', 'null'::jsonb) END
                       ELSE COALESCE(cfg, 'null'::jsonb)   -- 0.1.0's shape: the value itself
                   END;
            UPDATE df.nodes x SET status = 'completed', result = res, updated_at = now()
             WHERE x.instance_id = p_instance AND x.id = nid;
            UPDATE df_internal.node_meta x SET finished_at = clock_timestamp()
             WHERE x.instance_id = p_instance AND x.node_id = nid;
            -- Every still-running node between the BREAK and the loop ends with it.
            UPDATE df.nodes x SET status = 'completed', updated_at = now()
             WHERE x.instance_id = p_instance AND x.status = 'running' AND x.id <> anc
               AND x.id IN (SELECT s.node_id FROM df_internal.subtree(p_instance, anc) s)
               AND df_internal.is_composite(x.node_type);
            PERFORM df_internal.abandon(p_instance, anc_row.left_node, 'loop exited by BREAK');
            work := work || jsonb_build_array(jsonb_build_object('op', 'done', 'node', anc,
                'status', 'completed', 'result', res, 'from_break', true));

        ELSIF ev ->> 'op' = 'done' THEN
            st := ev ->> 'status';
            res := ev -> 'result';
            err := ev ->> 'error';
            IF NOT COALESCE((ev ->> 'kept')::boolean, false) THEN
                IF st = 'failed' THEN
                    res := to_jsonb(COALESCE(err, 'failed'));
                END IF;
                UPDATE df.nodes x SET status = st, result = res, error = CASE WHEN st = 'failed' THEN err END,
                       updated_at = now()
                 WHERE x.instance_id = p_instance AND x.id = nid;
                IF NOT COALESCE((ev ->> 'finished')::boolean, false) THEN   -- (complete_task wrote it)
                    UPDATE df_internal.node_meta x SET finished_at = clock_timestamp()
                     WHERE x.instance_id = p_instance AND x.node_id = nid;
                END IF;
            END IF;
            IF st = 'completed' AND n.result_name IS NOT NULL THEN
                INSERT INTO df_internal.named_results AS nr (instance_id, name, node_id, result, columns)
                VALUES (p_instance, n.result_name, nid, res, n.status_details -> 'columns')
                ON CONFLICT (instance_id, name) DO UPDATE
                   SET node_id = EXCLUDED.node_id, result = EXCLUDED.result,
                       columns = EXCLUDED.columns, updated_at = now();
            END IF;

            IF m.parent_id IS NULL THEN
                PERFORM df_internal.finish_instance(p_instance, st,
                    CASE WHEN st = 'completed' THEN res END, CASE WHEN st = 'failed' THEN err END);
                CONTINUE;
            END IF;

            SELECT * INTO p FROM df.nodes x WHERE x.instance_id = p_instance AND x.id = m.parent_id;
            SELECT * INTO pm FROM df_internal.node_meta x WHERE x.instance_id = p_instance AND x.node_id = m.parent_id;
            IF p.status <> 'running' THEN
                CONTINUE;   -- parent already decided (race loser, break, failure elsewhere)
            END IF;

            CASE p.node_type
            WHEN 'THEN' THEN
                IF m.slot = 'left' AND st = 'completed' THEN
                    work := work || jsonb_build_array(jsonb_build_object('op', 'activate', 'node', p.right_node));
                ELSE
                    work := work || jsonb_build_array(jsonb_build_object('op', 'done', 'node', p.id,
                        'status', st, 'result', res, 'error', err));
                END IF;
            WHEN 'IF' THEN
                IF m.slot = 'condition' THEN
                    IF st = 'failed' THEN
                        work := work || jsonb_build_array(jsonb_build_object('op', 'done', 'node', p.id,
                            'status', 'failed', 'error', err));
                    ELSE
                        work := work || jsonb_build_array(jsonb_build_object('op', 'activate', 'node',
                            CASE WHEN df_internal.truthy(res, n.status_details) THEN p.left_node ELSE p.right_node END));
                    END IF;
                ELSE
                    work := work || jsonb_build_array(jsonb_build_object('op', 'done', 'node', p.id,
                        'status', st, 'result', res, 'error', err));
                END IF;
            WHEN 'JOIN' THEN
                IF st = 'failed' THEN
                    FOREACH k IN ARRAY df_internal.branches(p_instance, p.id) LOOP
                        IF k <> nid THEN
                            PERFORM df_internal.abandon(p_instance, k, 'join failed');
                        END IF;
                    END LOOP;
                    work := work || jsonb_build_array(jsonb_build_object('op', 'done', 'node', p.id,
                        'status', 'failed', 'error', err));
                ELSE
                    kids := df_internal.branches(p_instance, p.id);
                    SELECT bool_and(x.status = 'completed'),
                           jsonb_agg(x.result ORDER BY array_position(kids, x.id))
                      INTO all_done, arr
                      FROM df.nodes x WHERE x.instance_id = p_instance AND x.id = ANY (kids);
                    IF all_done THEN
                        work := work || jsonb_build_array(jsonb_build_object('op', 'done', 'node', p.id,
                            'status', 'completed', 'result', arr));
                    END IF;
                END IF;
            WHEN 'RACE' THEN
                FOREACH k IN ARRAY df_internal.branches(p_instance, p.id) LOOP
                    IF k <> nid THEN
                        PERFORM df_internal.abandon(p_instance, k, 'lost the race');
                    END IF;
                END LOOP;
                work := work || jsonb_build_array(jsonb_build_object('op', 'done', 'node', p.id,
                    'status', st, 'result', res, 'error', err));
            WHEN 'LOOP' THEN
                cfg := CASE WHEN p.query IS NOT NULL THEN p.query::jsonb END;
                IF st = 'failed' THEN
                    work := work || jsonb_build_array(jsonb_build_object('op', 'done', 'node', p.id,
                        'status', 'failed', 'error', err));
                ELSIF m.slot = 'body' AND cfg ? 'condition_node' THEN
                    UPDATE df_internal.node_meta x SET ran_sql = NULL
                     WHERE x.instance_id = p_instance AND x.node_id = p.id;
                    work := work || jsonb_build_array(jsonb_build_object('op', 'activate', 'node', cfg ->> 'condition_node'));
                ELSIF m.slot = 'loop_condition' AND NOT df_internal.truthy(res, n.status_details) THEN
                    SELECT x.result INTO res FROM df.nodes x WHERE x.instance_id = p_instance AND x.id = p.left_node;
                    work := work || jsonb_build_array(jsonb_build_object('op', 'done', 'node', p.id,
                        'status', 'completed', 'result', res));
                ELSIF pm.iteration >= 100000 THEN
                    work := work || jsonb_build_array(jsonb_build_object('op', 'done', 'node', p.id,
                        'status', 'failed', 'error', 'LOOP exceeded the maximum of 100,000 iterations'));
                ELSE
                    -- Next iteration: archive this one, then schedule it at least 1 s after the
                    -- previous iteration began (a zero-sleep loop must not spin).
                    INSERT INTO df_internal.loop_iterations (instance_id, loop_node_id, iteration, started_at, nodes)
                    SELECT p_instance, p.id, pm.iteration, pm.started_at,
                           COALESCE(jsonb_agg(jsonb_build_object('node_id', x.id, 'status', x.status,
                                   'result', x.result, 'error', x.error) ORDER BY x.id), '[]')
                      FROM df.nodes x
                     WHERE x.instance_id = p_instance
                       AND x.id IN (SELECT s.node_id FROM df_internal.subtree(p_instance, p.id) s WHERE s.node_id <> p.id)
                    ON CONFLICT DO NOTHING;
                    delay := GREATEST(interval '0', pm.started_at + interval '1 second' - clock_timestamp());
                    UPDATE df_internal.node_meta x SET gen = x.gen + 1
                     WHERE x.instance_id = p_instance AND x.node_id = p.id
                    RETURNING * INTO pm;
                    INSERT INTO df_internal.tasks AS t (instance_id, node_id, gen, kind, run_at, phase)
                    VALUES (p_instance, p.id, pm.gen, 'iterate', now() + delay, 'waiting')
                    ON CONFLICT (instance_id, node_id) DO UPDATE
                       SET gen = EXCLUDED.gen, kind = 'iterate', run_at = EXCLUDED.run_at, phase = 'waiting';
                END IF;
            ELSE
                RAISE EXCEPTION 'node % (%) cannot have children', p.id, p.node_type;
            END CASE;
        END IF;
    END LOOP;
END $$;

-- Start the next LOOP iteration (the engine claims the 'iterate' task when it is due).
CREATE OR REPLACE FUNCTION df_internal.loop_iterate(p_instance varchar, p_loop varchar)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
    SET lock_timeout = '2s'  -- a submitter holding its own instance row must not stall a worker
AS $$
DECLARE
    n df.nodes%ROWTYPE;
    m df_internal.node_meta%ROWTYPE;
BEGIN
    PERFORM df_internal.lock_instance(p_instance);
    DELETE FROM df_internal.tasks t WHERE t.instance_id = p_instance AND t.node_id = p_loop;
    SELECT * INTO n FROM df.nodes x WHERE x.instance_id = p_instance AND x.id = p_loop;
    SELECT * INTO m FROM df_internal.node_meta x WHERE x.instance_id = p_instance AND x.node_id = p_loop;
    IF n.status <> 'running' THEN
        RETURN;
    END IF;
    PERFORM df_internal.reset_subtree(p_instance, n.left_node, false);
    IF n.query IS NOT NULL AND n.query::jsonb ? 'condition_node' THEN
        PERFORM df_internal.reset_subtree(p_instance, n.query::jsonb ->> 'condition_node', false);
    END IF;
    IF m.slot = 'root' THEN
        DELETE FROM df_internal.named_results nr WHERE nr.instance_id = p_instance;
    END IF;
    UPDATE df_internal.node_meta x SET iteration = x.iteration + 1, started_at = clock_timestamp()
     WHERE x.instance_id = p_instance AND x.node_id = p_loop;
    PERFORM df_internal.drive(p_instance, jsonb_build_array(
        jsonb_build_object('op', 'activate', 'node', n.left_node)));
END $$;
