-- dftui 0.1.0: the workflow state machine.
--
-- All orchestration (what runs next when a node finishes) happens here, in the same transaction
-- as the step that triggered it. The engine only claims tasks, runs leaf nodes (SQL, HTTP, timers,
-- signals) and calls df_internal.complete_task / fail_task; so a step's effects, its checkpoint
-- and the scheduling of its successors commit atomically.
--
-- Every function pins search_path; engine-facing functions are owned by the installer and never
-- granted to users.

-- ---------------------------------------------------------------------------------------------
-- Small helpers
-- ---------------------------------------------------------------------------------------------

-- Is user code of an engine step running in this session right now? Inside a step, session_user
-- is the engine, not the submitter, so helpers that decide what "the session" may do from
-- session_user's role memberships (the dblink loopbacks) must refuse. The engine's trampolines
-- (engine/identity.py) take a shared transaction-level advisory lock before running the step;
-- user code cannot release a transaction-level lock, so this cannot be forged away. Taking the
-- same lock in an ordinary session only makes that session look like a step (refusals only).
CREATE FUNCTION df_internal.in_engine_step() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks l
                    WHERE l.pid = pg_catalog.pg_backend_pid() AND l.locktype = 'advisory'
                      AND l.classid = 72629379 AND l.objid = 1 AND l.objsubid = 2 AND l.granted)
$$;

-- IF truthiness (sql-api.md §6). Row sets are judged by the first column of the first row; the
-- engine records column order in status_details.columns because jsonb does not keep key order.
CREATE FUNCTION df_internal.truthy(p_result jsonb, p_details jsonb DEFAULT NULL) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v jsonb;
    first_row jsonb;
    col text;
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
    RETURN CASE jsonb_typeof(v)
        WHEN 'null' THEN false
        WHEN 'boolean' THEN v::text::boolean
        WHEN 'number' THEN v::text::numeric <> 0
        WHEN 'string' THEN lower(v #>> '{}') NOT IN ('', 'false', 'f', 'no', '0')
        WHEN 'array' THEN jsonb_array_length(v) > 0
        WHEN 'object' THEN v <> '{}'::jsonb
        ELSE false
    END;
END $$;

-- The ids of a node and all its descendants (through node_meta parent links).
CREATE FUNCTION df_internal.subtree(p_instance varchar, p_node varchar)
RETURNS TABLE (node_id varchar)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH RECURSIVE sub AS (
        SELECT p_node::varchar AS node_id
        UNION ALL
        SELECT m.node_id FROM df_internal.node_meta m
          JOIN sub ON m.instance_id = p_instance AND m.parent_id = sub.node_id
    )
    SELECT node_id FROM sub
$$;

-- ---------------------------------------------------------------------------------------------
-- Triggers on df.instances: the unforgeable bridge from user calls to engine state
-- ---------------------------------------------------------------------------------------------

CREATE FUNCTION df_internal.on_instance_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    raw text := NULLIF(current_setting('df.start_meta', true), '');
    meta jsonb := COALESCE(raw::jsonb, '{}');
BEGIN
    PERFORM set_config('df.start_meta', '', true);
    INSERT INTO df_internal.instance_state
        (instance_id, submitted_by, database, vars, start_meta, retry_policy)
    VALUES (NEW.id, NEW.submitted_by, NEW.database,
            COALESCE((SELECT jsonb_object_agg(v.name, v.value) FROM df.vars v
                       WHERE v.owner = NEW.submitted_by), '{}'),
            meta, NULLIF(meta -> 'instance_retry_policy', 'null'::jsonb));
    IF raw IS NOT NULL THEN
        -- df.start inserted a validated graph before this row: activate it now, in the caller's
        -- transaction, so the first leaves are queued the moment df.start commits (no separate
        -- start transaction in the engine). The instance reads 'pending' until its first
        -- checkpoint. A hand-made graph that cannot be activated fails the caller's INSERT.
        -- df.start_meta is an ordinary setting: anyone inserting rows by hand can set it, so
        -- the graph and the retry policies are checked here too (cheap next to df.start's own
        -- validation; a forged hand-off must not smuggle a cycle or a bad policy past it).
        PERFORM df_internal.check_graph(NEW.id);
        PERFORM df_internal.check_start_meta(meta);
        PERFORM df_internal.build_node_meta(NEW.id);
        UPDATE df_internal.instance_state s SET started_at = now() WHERE s.instance_id = NEW.id;
        PERFORM df_internal.drive(NEW.id, jsonb_build_array(jsonb_build_object(
            'op', 'activate', 'node', NEW.root_node)));
    ELSE
        -- Rows inserted by hand (nodes may follow under the deferred FKs): the engine validates
        -- and starts the graph when it claims this task.
        INSERT INTO df_internal.tasks (instance_id, node_id, gen, kind)
        VALUES (NEW.id, NEW.root_node, 0, 'start');
    END IF;
    PERFORM pg_notify('df_work', NEW.id);
    RETURN NULL;
END $$;

-- Ordinary roles may only move a non-terminal instance to 'cancelled'. Terminal states are never
-- overwritten by anyone, except by df.retry (which sets df.retrying for its own update).
-- SECURITY INVOKER on purpose: the check is about who runs the UPDATE. (As SECURITY DEFINER,
-- current_user would always be the owner and every role could set any status.) A privileged
-- caller is a superuser or a member of the df schema owner: the engine, and the SECURITY
-- DEFINER df_internal functions df.retry reaches through the instances trigger. The check is
-- inlined because ordinary roles cannot execute df_internal functions.
CREATE FUNCTION df_internal.guard_instance_update() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    status_changed boolean := NEW.status IS DISTINCT FROM OLD.status;
    privileged boolean;
BEGIN
    IF status_changed OR NEW.submitted_by IS DISTINCT FROM OLD.submitted_by THEN
        -- (Not current_setting('is_superuser'): it follows SET ROLE but not SECURITY DEFINER, so
        -- inside a step it would report the engine. Superusers are members of every role.)
        privileged := pg_catalog.pg_has_role(current_user,
            (SELECT n.nspowner FROM pg_catalog.pg_namespace n WHERE n.nspname = 'df'), 'MEMBER');
        IF status_changed THEN
            IF OLD.status IN ('completed', 'failed', 'cancelled')
               AND NOT (privileged AND COALESCE(current_setting('df.retrying', true), '') = NEW.id) THEN
                NEW.status := OLD.status;          -- never overwritten
                NEW.completed_at := OLD.completed_at;
            ELSIF NEW.status <> 'cancelled' AND NOT privileged THEN
                RAISE EXCEPTION 'only df.cancel may change an instance''s status'
                    USING ERRCODE = 'insufficient_privilege';
            END IF;
        END IF;
        IF NEW.submitted_by IS DISTINCT FROM OLD.submitted_by AND NOT privileged THEN
            RAISE EXCEPTION 'submitted_by cannot be changed' USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END $$;

CREATE FUNCTION df_internal.on_instance_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    req jsonb;
    reason text;
BEGIN
    IF NEW.status = 'cancelled' AND OLD.status <> 'cancelled' THEN
        reason := NULLIF(current_setting('df.cancel_reason', true), '');
        PERFORM set_config('df.cancel_reason', '', true);
        UPDATE df_internal.instance_state
           SET cancel_reason = COALESCE(reason, 'Cancelled by user'), finished_at = now(),
               error = COALESCE(reason, 'Cancelled by user')
         WHERE instance_id = NEW.id;
        -- Queued work goes now; tasks locked by a running step are dropped by its worker, which
        -- the df_cancel notification tells to cancel the statement on the server.
        DELETE FROM df_internal.tasks t
         WHERE t.ctid IN (SELECT t2.ctid FROM df_internal.tasks t2
                           WHERE t2.instance_id = NEW.id FOR UPDATE SKIP LOCKED);
        PERFORM pg_notify('df_cancel', NEW.id);
    END IF;

    req := NULLIF(current_setting('df.request', true), '')::jsonb;
    IF req IS NOT NULL AND req ->> 'instance_id' = NEW.id THEN
        PERFORM set_config('df.request', '', true);
        IF req ->> 'op' = 'signal' THEN
            PERFORM df_internal.enqueue_signal(NEW.id, req ->> 'name',
                                               COALESCE(req -> 'data', '{}'), NEW.submitted_by);
        ELSIF req ->> 'op' = 'retry' THEN
            PERFORM df_internal.retry_instance(NEW.id, req ->> 'from_node',
                                               COALESCE(req ->> 'requested_by', NEW.submitted_by::text));
        END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER instances_after_insert AFTER INSERT ON df.instances
    FOR EACH ROW EXECUTE FUNCTION df_internal.on_instance_insert();
CREATE TRIGGER instances_before_update BEFORE UPDATE ON df.instances
    FOR EACH ROW EXECUTE FUNCTION df_internal.guard_instance_update();
-- Only for what it handles (a cancel, or a request set by df.signal / df.retry): the engine's own
-- status updates skip the call.
CREATE TRIGGER instances_after_update AFTER UPDATE ON df.instances
    FOR EACH ROW
    WHEN ((NEW.status = 'cancelled' AND OLD.status IS DISTINCT FROM 'cancelled')
          OR COALESCE(current_setting('df.request', true), '') <> '')
    EXECUTE FUNCTION df_internal.on_instance_update();

-- Queue a signal and wake the instance's waiting SIGNAL tasks.
CREATE FUNCTION df_internal.enqueue_signal(p_instance varchar, p_name text, p_data jsonb,
                                           p_sent_by regrole)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO df_internal.signals (instance_id, name, data, sent_by)
    VALUES (p_instance, p_name, p_data, p_sent_by);
    UPDATE df_internal.tasks t SET run_at = now()
      FROM df.nodes n
     WHERE t.instance_id = p_instance AND t.phase = 'waiting'
       AND n.instance_id = t.instance_id AND n.id = t.node_id AND n.node_type = 'SIGNAL'
       AND (n.query::jsonb ->> 'name') = p_name;
    PERFORM pg_notify('df_work', p_instance);
END $$;

-- ---------------------------------------------------------------------------------------------
-- Graph bookkeeping
-- ---------------------------------------------------------------------------------------------

-- The node rows each node of an instance references, with the slot they fill. The one place
-- that knows how node_type, left_node, right_node and the query config encode children (see the
-- node-row table in docs/architecture.md). Configs must be valid JSON (check_graph checks first).
CREATE FUNCTION df_internal.child_refs(p_instance varchar)
RETURNS TABLE (parent varchar, child varchar, slot text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT x.id, c.child, c.slot
      FROM df.nodes x
     CROSS JOIN LATERAL (
         SELECT x.left_node AS child, CASE WHEN x.node_type = 'LOOP' THEN 'body' ELSE 'left' END AS slot
          WHERE x.left_node IS NOT NULL
         UNION ALL
         SELECT x.right_node, 'right' WHERE x.right_node IS NOT NULL
         UNION ALL
         SELECT (x.query::jsonb ->> 'condition_node')::varchar,
                CASE WHEN x.node_type = 'LOOP' THEN 'loop_condition' ELSE 'condition' END
          WHERE x.node_type IN ('IF', 'LOOP') AND x.query IS NOT NULL
            AND x.query::jsonb ? 'condition_node'
         UNION ALL
         SELECT e.value::varchar, 'extra'
           FROM jsonb_array_elements_text(
                  CASE WHEN x.node_type = 'JOIN' AND x.query IS NOT NULL
                       THEN x.query::jsonb -> 'extra_nodes' END) AS e(value)
     ) c
     WHERE x.instance_id = p_instance
$$;

-- Derive parent links for every node from df.nodes (once, when the instance starts). Node configs
-- are frozen at df.start: users cannot UPDATE df.nodes.
CREATE FUNCTION df_internal.build_node_meta(p_instance varchar)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    root varchar;
    policies jsonb;
BEGIN
    SELECT i.root_node INTO root FROM df.instances i WHERE i.id = p_instance;
    SELECT s.start_meta -> 'node_retry_policies' INTO policies
      FROM df_internal.instance_state s WHERE s.instance_id = p_instance;
    INSERT INTO df_internal.node_meta (instance_id, node_id, parent_id, slot, retry_policy)
    WITH RECURSIVE refs AS (
        SELECT r.parent, r.child, r.slot FROM df_internal.child_refs(p_instance) r
    ), tree AS (
        SELECT root::varchar AS node_id, NULL::varchar AS parent_id, 'root'::text AS slot, 0 AS depth
        UNION ALL
        SELECT r.child, r.parent, r.slot, tree.depth + 1
          FROM tree JOIN refs r ON r.parent = tree.node_id
         WHERE tree.depth < 300
    )
    SELECT p_instance, tree.node_id, tree.parent_id, tree.slot, policies -> tree.node_id
      FROM tree
    ON CONFLICT (instance_id, node_id) DO NOTHING;
END $$;

-- Children of a composite node in branch order (JOIN: left, right, extras).
CREATE FUNCTION df_internal.branches(p_instance varchar, p_node varchar)
RETURNS varchar[] LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ARRAY[n.left_node, n.right_node]
           || COALESCE((SELECT array_agg(e.value::varchar ORDER BY e.ordinality)
                          FROM jsonb_array_elements_text(
                                 CASE WHEN n.query IS NOT NULL AND n.query::jsonb ? 'extra_nodes'
                                      THEN n.query::jsonb -> 'extra_nodes' END)
                               WITH ORDINALITY AS e(value, ordinality)), '{}')
      FROM df.nodes n WHERE n.instance_id = p_instance AND n.id = p_node
$$;

-- Fence and drop everything under a node that is still in flight: queued tasks are deleted
-- (locked ones are left to their worker, which will find its generation stale), running leaves
-- are announced on df_abandon so engines cancel their statements. A losing LOOP is marked failed.
CREATE FUNCTION df_internal.abandon(p_instance varchar, p_node varchar, p_why text)
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
     WHERE n.status = 'running' AND n.node_type NOT IN ('THEN', 'IF', 'JOIN', 'RACE', 'LOOP');
    DELETE FROM df_internal.tasks t
     WHERE t.ctid IN (SELECT t2.ctid FROM df_internal.tasks t2
                       WHERE t2.instance_id = p_instance
                         AND t2.node_id IN (SELECT s.node_id FROM df_internal.subtree(p_instance, p_node) s)
                         FOR UPDATE SKIP LOCKED);
    UPDATE df.nodes n SET status = 'failed', result = to_jsonb(p_why), error = p_why, updated_at = now()
     WHERE n.instance_id = p_instance AND n.node_type = 'LOOP' AND n.status = 'running'
       AND n.id IN (SELECT s.node_id FROM df_internal.subtree(p_instance, p_node) s);
    IF running IS NOT NULL THEN
        PERFORM pg_notify('df_abandon', json_build_object('instance_id', p_instance,
                                                          'nodes', running)::text);
    END IF;
END $$;

-- Reset a subtree to pending for the next loop iteration or a retry, archiving nothing.
CREATE FUNCTION df_internal.reset_subtree(p_instance varchar, p_node varchar, p_keep_completed boolean)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM df_internal.abandon(p_instance, p_node, 'superseded');
    UPDATE df.nodes n SET status = 'pending', result = NULL, error = NULL, status_details = NULL,
                          updated_at = now()
     WHERE n.instance_id = p_instance
       AND n.id IN (SELECT s.node_id FROM df_internal.subtree(p_instance, p_node) s)
       AND NOT (p_keep_completed AND n.status = 'completed');
    UPDATE df_internal.node_meta m SET started_at = NULL, finished_at = NULL, attempts = 0,
                                       iteration = 0
     WHERE m.instance_id = p_instance
       AND m.node_id IN (SELECT s.node_id FROM df_internal.subtree(p_instance, p_node) s)
       AND NOT (p_keep_completed AND EXISTS (SELECT 1 FROM df.nodes n WHERE n.instance_id = p_instance
                                              AND n.id = m.node_id AND n.status = 'completed'));
END $$;

-- Finish the whole instance (root node decided).
CREATE FUNCTION df_internal.finish_instance(p_instance varchar, p_status text, p_result jsonb,
                                            p_error text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE df.instances i
       SET status = p_status,
           completed_at = CASE WHEN p_status = 'completed' THEN now() END
     WHERE i.id = p_instance AND i.status IN ('pending', 'running');
    UPDATE df_internal.instance_state s
       SET finished_at = now(), output = p_result, error = p_error
     WHERE s.instance_id = p_instance;
    DELETE FROM df_internal.tasks t
     WHERE t.ctid IN (SELECT t2.ctid FROM df_internal.tasks t2
                       WHERE t2.instance_id = p_instance FOR UPDATE SKIP LOCKED);
    PERFORM pg_notify('df_done', p_instance);
END $$;

-- The interpreter. Processes a work list of events until nothing is left:
--   {"op":"activate","node":id}                      start a node
--   {"op":"done","node":id,"status":s,"result":r,"error":e}   a node finished
--   {"op":"break","node":id}                         a BREAK node runs
-- Runs under the instance lock taken by the caller.
CREATE FUNCTION df_internal.drive(p_instance varchar, p_events jsonb)
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
            UPDATE df_internal.node_meta x SET started_at = now(), finished_at = NULL, gen = x.gen + 1,
                   iteration = CASE WHEN n.node_type = 'LOOP' THEN 1 ELSE x.iteration END
             WHERE x.instance_id = p_instance AND x.node_id = nid
            RETURNING * INTO m;
            cfg := CASE WHEN n.node_type IN ('IF', 'JOIN', 'LOOP', 'SIGNAL', 'HTTP', 'HTTP_MULTIPART')
                             AND n.query IS NOT NULL THEN n.query::jsonb END;
            CASE n.node_type
            WHEN 'THEN' THEN
                work := work || jsonb_build_array(jsonb_build_object('op', 'activate', 'node', n.left_node));
            WHEN 'IF' THEN
                IF cfg ? 'condition_node' THEN
                    work := work || jsonb_build_array(jsonb_build_object('op', 'activate', 'node', cfg ->> 'condition_node'));
                ELSE
                    SELECT nr.result INTO res FROM df_internal.named_results nr
                     WHERE nr.instance_id = p_instance AND nr.name = cfg ->> 'if_rows';
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
                INSERT INTO df_internal.tasks AS t (instance_id, node_id, gen, kind, run_at, phase)
                VALUES (p_instance, nid, m.gen, 'run', now() + make_interval(secs => n.query::bigint), 'waiting')
                ON CONFLICT (instance_id, node_id) DO UPDATE
                   SET gen = EXCLUDED.gen, kind = 'run', run_at = EXCLUDED.run_at, phase = 'waiting', deadline = NULL;
            ELSE   -- SQL, HTTP, HTTP_MULTIPART, SIGNAL, WAIT_SCHEDULE: the engine runs them
                INSERT INTO df_internal.tasks AS t (instance_id, node_id, gen, kind, run_at, phase)
                VALUES (p_instance, nid, m.gen, 'run', now(), 'start')
                ON CONFLICT (instance_id, node_id) DO UPDATE
                   SET gen = EXCLUDED.gen, kind = 'run', run_at = now(), phase = 'start', deadline = NULL;
            END CASE;

        ELSIF ev ->> 'op' = 'break' THEN
            -- Find the nearest enclosing LOOP reached through its body.
            anc := m.parent_id;
            prev := nid;
            LOOP
                EXIT WHEN anc IS NULL;
                SELECT * INTO anc_row FROM df.nodes x WHERE x.instance_id = p_instance AND x.id = anc;
                EXIT WHEN anc_row.node_type = 'LOOP'
                          AND (SELECT x.slot FROM df_internal.node_meta x
                                WHERE x.instance_id = p_instance AND x.node_id = prev) = 'body';
                prev := anc;
                SELECT x.parent_id INTO anc FROM df_internal.node_meta x
                 WHERE x.instance_id = p_instance AND x.node_id = anc;
            END LOOP;
            IF anc IS NULL THEN
                work := work || jsonb_build_array(jsonb_build_object('op', 'done', 'node', nid,
                    'status', 'failed', 'error', 'BREAK outside of a loop: df.break() must be inside df.loop()'));
                CONTINUE;
            END IF;
            res := COALESCE(n.query::jsonb, 'null'::jsonb);
            UPDATE df.nodes x SET status = 'completed', result = res, updated_at = now()
             WHERE x.instance_id = p_instance AND x.id = nid;
            UPDATE df_internal.node_meta x SET finished_at = now()
             WHERE x.instance_id = p_instance AND x.node_id = nid;
            -- Every still-running node between the BREAK and the loop ends with it.
            UPDATE df.nodes x SET status = 'completed', updated_at = now()
             WHERE x.instance_id = p_instance AND x.status = 'running' AND x.id <> anc
               AND x.id IN (SELECT s.node_id FROM df_internal.subtree(p_instance, anc) s)
               AND x.node_type IN ('THEN', 'IF', 'JOIN', 'RACE', 'LOOP');
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
CREATE FUNCTION df_internal.loop_iterate(p_instance varchar, p_loop varchar)
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
    UPDATE df_internal.node_meta x SET iteration = x.iteration + 1, started_at = now()
     WHERE x.instance_id = p_instance AND x.node_id = p_loop;
    PERFORM df_internal.drive(p_instance, jsonb_build_array(
        jsonb_build_object('op', 'activate', 'node', n.left_node)));
END $$;

-- ---------------------------------------------------------------------------------------------
-- Engine API: claim, complete, fail. Called by `dftui engine` inside the step's transaction.
-- ---------------------------------------------------------------------------------------------

-- Claim up to p_limit due tasks, row-locked until the caller's transaction ends. The engine runs
-- them one after another in that transaction, each behind its own savepoint, and commits them
-- together: one queue scan and one commit for many steps, each still exactly-once. A batch holds
-- at most one task per instance, so parallel branches (JOIN, RACE) never wait for each other
-- inside one batch, and an HTTP step (a network wait) is only ever claimed alone. Candidates are
-- read without locks and locked one by one (FOR UPDATE SKIP LOCKED on the key), so a task this
-- call passes over is never held. Stale tasks (generation fenced, instance terminal) are deleted
-- on the way. A due 'start' task of a hand-made instance is processed inline (the instance is
-- started, its first leaves queued) and reported as kind 'started'. No rows: nothing is due.
CREATE FUNCTION df_internal.claim_tasks(p_engine text, p_limit integer DEFAULT 1,
                                        p_slice integer DEFAULT 0, p_slices integer DEFAULT 1)
RETURNS TABLE (instance_id varchar, node_id varchar, gen integer, kind text, phase text,
               deadline timestamptz, node_type text, query text, result_name text,
               submitted_by regrole, role_oid oid, database text, vars jsonb,
               named_results jsonb, label text, attempts integer, retry_policy jsonb,
               role_name name, role_can_login boolean, role_is_super boolean,
               superuser_allowed boolean, more boolean)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    c record;
    t df_internal.tasks%ROWTYPE;
    verdict text;
    want integer := GREATEST(COALESCE(p_limit, 1), 1);
    insts varchar[] := '{}';   -- the claimed tasks, in claim order
    nodes varchar[] := '{}';
    started text[] := '{}';
    lone boolean := false;
    slices integer := GREATEST(COALESCE(p_slices, 1), 1);
BEGIN
    -- Concurrent claimers all start at the head of the queue. Each first looks at its own slice
    -- of it (instances hashed over p_slices, the engine's workers), so they do not queue up on
    -- one another's row locks, then, if its batch is not full, at everything.
    FOR pass IN CASE WHEN slices > 1 THEN 1 ELSE 2 END .. 2 LOOP
        FOR c IN
            SELECT x.instance_id, x.node_id,
                   -- a per-row subquery, so the plan keeps walking the run_at index
                   COALESCE((SELECT n.node_type FROM df.nodes n
                              WHERE n.instance_id = x.instance_id AND n.id = x.node_id), '')
                       IN ('HTTP', 'HTTP_MULTIPART') AS http
              FROM df_internal.tasks x
             WHERE x.run_at <= now()
               AND (pass = 2 OR (hashtext(x.instance_id) & 2147483647) % slices = p_slice)
             ORDER BY x.run_at
             LIMIT 1000
        LOOP
            EXIT WHEN cardinality(insts) >= want OR lone;
            CONTINUE WHEN c.instance_id = ANY (insts) OR (c.http AND cardinality(insts) > 0);
            SELECT * INTO t FROM df_internal.tasks x
             WHERE x.instance_id = c.instance_id AND x.node_id = c.node_id AND x.run_at <= now()
             FOR UPDATE SKIP LOCKED;
            CONTINUE WHEN NOT FOUND;
            verdict := df_internal.triage(t);
            IF verdict = 'started' THEN
                started := started || t.instance_id::text;
            ELSIF verdict = 'ok' THEN
                insts := insts || t.instance_id;
                nodes := nodes || t.node_id;
                lone := c.http;
            END IF;
        END LOOP;
        EXIT WHEN cardinality(insts) >= want OR lone;
    END LOOP;

    RETURN QUERY
    SELECT s.id::varchar, NULL::varchar, NULL::integer, 'started'::text, NULL::text,
           NULL::timestamptz, NULL::text, NULL::text, NULL::text, NULL::regrole,
           NULL::oid, NULL::text, NULL::jsonb, NULL::jsonb, NULL::text, NULL::integer,
           NULL::jsonb, NULL::name, NULL::boolean, NULL::boolean, NULL::boolean, true
      FROM unnest(started) AS s(id);
    RETURN QUERY
    SELECT t2.instance_id, t2.node_id, t2.gen, t2.kind, t2.phase, t2.deadline,
           n.node_type, n.query, n.result_name,
           s.submitted_by, s.submitted_by::oid, s.database, s.vars,
           COALESCE((SELECT jsonb_object_agg(nr.name, jsonb_build_object('result', nr.result,
                                                                           'columns', nr.columns))
                       FROM df_internal.named_results nr
                      WHERE nr.instance_id = t2.instance_id), '{}'),
           i.label, COALESCE(m.attempts, 0), COALESCE(m.retry_policy, s.retry_policy),
           r.rolname, r.rolcanlogin, r.rolsuper,
           COALESCE(current_setting('pg_durable.enable_superuser_instances', true), '')
               IN ('on', 'true', '1', 'yes'),
           -- "more may be due" (the batch is full, or an HTTP step was taken alone): the engine
           -- chain-wakes another worker. (An EXISTS probe here walked the queue's dead tuples.)
           cardinality(insts) >= want OR lone
      FROM unnest(insts, nodes) WITH ORDINALITY AS k(instance_id, node_id, ord)
      JOIN df_internal.tasks t2 ON t2.instance_id = k.instance_id AND t2.node_id = k.node_id
      JOIN df_internal.instance_state s ON s.instance_id = t2.instance_id
      JOIN df.instances i ON i.id = t2.instance_id
      LEFT JOIN df.nodes n ON n.instance_id = t2.instance_id AND n.id = t2.node_id
      LEFT JOIN df_internal.node_meta m ON m.instance_id = t2.instance_id AND m.node_id = t2.node_id
      LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.submitted_by::oid
     ORDER BY k.ord;
END $$;

-- A statement PostgreSQL refuses in a transaction block (VACUUM, CREATE INDEX CONCURRENTLY) runs
-- while the engine holds no transaction: CREATE INDEX CONCURRENTLY waits for every transaction
-- older than its snapshot, so a claim held open around it deadlocks (unseen by PostgreSQL) with
-- the engine's own step waiting on it. Such a task is *leased* instead: its row says
-- phase = 'leased' and the running engine session holds this session-level advisory lock, which
-- its connection's end releases. A claim takes a leased task over only when the lock is free.
CREATE FUNCTION df_internal.lease_key(p_instance varchar, p_node varchar) RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.hashtext(p_instance || '/' || p_node)
$$;

-- Lease a claimed task (row locked by the caller, who commits next). False when it is stale.
CREATE FUNCTION df_internal.lease_task(p_instance varchar, p_node varchar, p_gen integer)
RETURNS boolean LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_advisory_lock(72629380, df_internal.lease_key(p_instance, p_node));
    UPDATE df_internal.tasks t SET phase = 'leased'
     WHERE t.instance_id = p_instance AND t.node_id = p_node AND t.gen = p_gen;
    IF NOT FOUND THEN
        PERFORM pg_advisory_unlock(72629380, df_internal.lease_key(p_instance, p_node));
    END IF;
    RETURN FOUND;
END $$;

CREATE FUNCTION df_internal.end_lease(p_instance varchar, p_node varchar) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT FROM pg_catalog.pg_advisory_unlock(72629380, df_internal.lease_key(p_instance, p_node))
$$;

-- What to do with a locked task: 'ok' (run it), 'stale' (deleted: its generation was fenced or its
-- instance ended), 'started' (a hand-made instance's start task, processed here) or 'busy' (leased
-- by a live engine session, see lease_key).
CREATE FUNCTION df_internal.triage(t df_internal.tasks) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    inst_status text;
    cur_gen integer;
BEGIN
    IF t.phase = 'leased'
       AND NOT pg_try_advisory_xact_lock(72629380, df_internal.lease_key(t.instance_id, t.node_id)) THEN
        RETURN 'busy';
    END IF;
    SELECT i.status INTO inst_status FROM df.instances i WHERE i.id = t.instance_id;
    IF t.kind = 'start' THEN
        IF inst_status = 'pending' THEN
            PERFORM df_internal.start_instance(t.instance_id);
            RETURN 'started';
        END IF;
    ELSE
        SELECT m.gen INTO cur_gen FROM df_internal.node_meta m
         WHERE m.instance_id = t.instance_id AND m.node_id = t.node_id;
        IF inst_status IN ('pending', 'running') AND cur_gen = t.gen THEN
            RETURN 'ok';
        END IF;
    END IF;
    DELETE FROM df_internal.tasks x WHERE x.instance_id = t.instance_id AND x.node_id = t.node_id;
    RETURN 'stale';
END $$;

-- Take the per-instance lock that serialises orchestration for one instance. An advisory lock,
-- not a row lock, so df.cancel and df.signal (which update the instance row) never wait for it.
CREATE FUNCTION df_internal.lock_instance(p_instance varchar) RETURNS text
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.pg_advisory_xact_lock(7262937, pg_catalog.hashtext(p_instance));
    SELECT i.status FROM df.instances i WHERE i.id = p_instance
$$;

-- text -> jsonb, NULL when it does not parse (node configs written by direct DML).
CREATE FUNCTION df_internal.try_jsonb(p text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN p::jsonb;
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;
END $$;

-- Check the graph of an instance before it starts. df.start validates strictly, but a granted
-- role may also INSERT df.instances / df.nodes directly (pg_durable's column grants), so the
-- engine must not trust the rows: a cycle or a shared child would unfold forever, a malformed
-- config would make every claim of the instance fail. Raises with a description of the first
-- problem; start_instance turns that into a failed instance.
CREATE FUNCTION df_internal.check_graph(p_instance varchar) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    root varchar;
    bad text;
    missing text;
    total integer;
BEGIN
    SELECT i.root_node INTO root FROM df.instances i WHERE i.id = p_instance;
    IF NOT EXISTS (SELECT 1 FROM df.nodes x WHERE x.instance_id = p_instance AND x.id = root) THEN
        RAISE EXCEPTION 'the root node % does not exist', root;
    END IF;
    SELECT string_agg(format('%s (%s)', x.id, x.node_type), ', ' ORDER BY x.id) INTO bad
      FROM df.nodes x
     WHERE x.instance_id = p_instance
       AND x.node_type IN ('IF', 'JOIN', 'LOOP', 'SIGNAL', 'HTTP', 'HTTP_MULTIPART', 'BREAK')
       AND x.query IS NOT NULL AND df_internal.try_jsonb(x.query) IS NULL;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'node config is not valid JSON: %', bad;
    END IF;
    SELECT string_agg(format('%s (%s)', x.id, x.node_type), ', ' ORDER BY x.id) INTO bad
      FROM df.nodes x
     WHERE x.instance_id = p_instance AND x.node_type IN ('IF', 'JOIN', 'LOOP')
       AND x.query IS NOT NULL
       AND (jsonb_typeof(x.query::jsonb) <> 'object'
            OR (x.query::jsonb ? 'condition_node'
                AND jsonb_typeof(x.query::jsonb -> 'condition_node') <> 'string')
            OR (x.query::jsonb ? 'extra_nodes'
                AND jsonb_typeof(x.query::jsonb -> 'extra_nodes') <> 'array'));
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'malformed child reference in the config of %', bad;
    END IF;

    -- Every node has at most one parent and the root none: then what is reachable from the
    -- root is a finite tree (a cycle would need a node with two parents to be reachable).
    WITH refs AS (
        SELECT r.parent, r.child FROM df_internal.child_refs(p_instance) r
    ), twice AS (
        SELECT r.child FROM refs r GROUP BY r.child HAVING count(*) > 1 OR r.child = root
    )
    SELECT (SELECT string_agg(t.child, ', ' ORDER BY t.child) FROM twice t),
           (SELECT string_agg(DISTINCT r.child, ', ') FROM refs r
             WHERE NOT EXISTS (SELECT 1 FROM df.nodes x WHERE x.instance_id = p_instance AND x.id = r.child))
      INTO bad, missing;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'the graph is not a tree: node(s) % are referenced more than once', bad;
    END IF;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'referenced node(s) % do not exist', missing;
    END IF;

    WITH RECURSIVE refs AS (
        SELECT r.parent, r.child FROM df_internal.child_refs(p_instance) r
    ), reach AS (
        SELECT root::varchar AS id
        UNION
        SELECT r.child FROM reach JOIN refs r ON r.parent = reach.id
    )
    SELECT count(*),
           string_agg(format('%s (%s)', x.id, x.node_type), ', ' ORDER BY x.id) FILTER (WHERE NOT CASE x.node_type
        WHEN 'SQL' THEN btrim(x.query, E' \t\r\n;') <> ''
        WHEN 'SLEEP' THEN x.query ~ '^\s*[0-9]{1,12}\s*$'
        WHEN 'WAIT_SCHEDULE' THEN btrim(x.query) <> ''
        WHEN 'BREAK' THEN true
        WHEN 'SIGNAL' THEN jsonb_typeof(x.query::jsonb) = 'object'
            AND jsonb_typeof(x.query::jsonb -> 'name') = 'string'
            AND COALESCE(jsonb_typeof(x.query::jsonb -> 'timeout_seconds'), 'null') IN ('null', 'number')
        WHEN 'HTTP' THEN jsonb_typeof(x.query::jsonb) = 'object'
            AND jsonb_typeof(x.query::jsonb -> 'url') = 'string'
            AND COALESCE(jsonb_typeof(x.query::jsonb -> 'method'), 'null') IN ('null', 'string')
            AND COALESCE(jsonb_typeof(x.query::jsonb -> 'headers'), 'null') IN ('null', 'object')
            AND COALESCE(jsonb_typeof(x.query::jsonb -> 'timeout_seconds'), 'null') IN ('null', 'number')
        WHEN 'HTTP_MULTIPART' THEN jsonb_typeof(x.query::jsonb) = 'object'
            AND jsonb_typeof(x.query::jsonb -> 'url') = 'string'
            AND COALESCE(jsonb_typeof(x.query::jsonb -> 'method'), 'null') IN ('null', 'string')
            AND COALESCE(jsonb_typeof(x.query::jsonb -> 'headers'), 'null') IN ('null', 'object')
            AND COALESCE(jsonb_typeof(x.query::jsonb -> 'timeout_seconds'), 'null') IN ('null', 'number')
            AND jsonb_typeof(x.query::jsonb -> 'parts') = 'array'
            AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(x.query::jsonb -> 'parts') p(v)
                             WHERE jsonb_typeof(p.v) <> 'object'
                                OR jsonb_typeof(p.v -> 'name') IS DISTINCT FROM 'string')
        WHEN 'IF' THEN x.query IS NOT NULL
            AND ((x.query::jsonb ? 'condition_node') <> (x.query::jsonb ? 'if_rows'))
            AND COALESCE(jsonb_typeof(x.query::jsonb -> 'if_rows'), 'string') = 'string'
        ELSE true   -- THEN, JOIN, RACE, LOOP: shape checked by constraints and above
     END)
      INTO total, bad
      FROM df.nodes x JOIN reach g ON g.id = x.id
     WHERE x.instance_id = p_instance;
    IF total > 10000 THEN
        RAISE EXCEPTION 'Workflow exceeds maximum node count of 10000 (% nodes)', total;
    END IF;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'invalid node configuration: %', bad;
    END IF;
END $$;

-- The retry policies handed over in df.start_meta, validated like df.start does (the setting
-- can be forged by anyone who inserts rows by hand; the engine trusts these policies).
CREATE FUNCTION df_internal.check_start_meta(p_meta jsonb) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pol jsonb;
BEGIN
    IF jsonb_typeof(p_meta) <> 'object'
       OR COALESCE(jsonb_typeof(p_meta -> 'node_retry_policies'), 'object') NOT IN ('object', 'null') THEN
        RAISE EXCEPTION 'invalid df.start_meta: expected {"instance_retry_policy": ..., "node_retry_policies": {...}}'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR pol IN
        SELECT p_meta -> 'instance_retry_policy'
        UNION ALL
        SELECT e.value FROM jsonb_each(CASE WHEN jsonb_typeof(p_meta -> 'node_retry_policies') = 'object'
                                            THEN p_meta -> 'node_retry_policies' END) AS e
    LOOP
        IF pol IS NOT NULL AND jsonb_typeof(pol) <> 'null' THEN
            PERFORM 1 FROM df.graph_nodes(jsonb_build_object('node_type', 'SQL', 'query', 'SELECT 1',
                                                             'retry_policy', pol)::text);
        END IF;
    END LOOP;
END $$;

-- Begin an instance: check the graph, build parent links, mark it running, activate the root.
-- An instance that cannot start (a hand-made graph df.start would have refused) fails with the
-- reason; it must never make the claim fail, which would wedge every worker on it.
CREATE FUNCTION df_internal.start_instance(p_instance varchar) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    root varchar;
    msg text;
BEGIN
    IF df_internal.lock_instance(p_instance) IS DISTINCT FROM 'pending' THEN
        DELETE FROM df_internal.tasks t WHERE t.instance_id = p_instance AND t.kind = 'start';
        RETURN;
    END IF;
    DELETE FROM df_internal.tasks t WHERE t.instance_id = p_instance AND t.kind = 'start';
    SELECT i.root_node INTO root FROM df.instances i WHERE i.id = p_instance;
    BEGIN
        PERFORM df_internal.check_graph(p_instance);
        PERFORM df_internal.build_node_meta(p_instance);
        UPDATE df.instances i SET status = 'running' WHERE i.id = p_instance;
        UPDATE df_internal.instance_state s SET started_at = COALESCE(s.started_at, now())
         WHERE s.instance_id = p_instance;
        PERFORM df_internal.drive(p_instance, jsonb_build_array(jsonb_build_object('op', 'activate', 'node', root)));
    EXCEPTION
        WHEN query_canceled OR lock_not_available OR deadlock_detected OR serialization_failure
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

-- A started instance reads 'pending' until its first checkpoint (so df.start stays cheap and
-- df.cancel never waits behind a first step); then 'running'.
CREATE FUNCTION df_internal.mark_running(p_instance varchar) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    UPDATE df.instances i SET status = 'running' WHERE i.id = p_instance AND i.status = 'pending'
$$;

-- Is this (instance, node, generation) still the live one? Used to fence every write.
CREATE FUNCTION df_internal.task_is_live(p_instance varchar, p_node varchar, p_gen integer)
RETURNS boolean LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (
        SELECT 1 FROM df_internal.node_meta m JOIN df.instances i ON i.id = m.instance_id
         WHERE m.instance_id = p_instance AND m.node_id = p_node AND m.gen = p_gen
           AND i.status IN ('pending', 'running'))
$$;

-- Checkpoint a finished leaf: record the attempt, write the result, run the interpreter.
-- Returns 'stale' (and changes nothing but dropping the task) when the write is stale; 'shared'
-- when other tasks of the instance (parallel branches) are queued or running: they will need the
-- instance lock this transaction now holds, so a batching engine commits right away; else 'done'.
-- The hot path of every step: the liveness check rides on the node_meta update, and the
-- interpreter is told the node's finish time is already written.
CREATE FUNCTION df_internal.complete_task(p_instance varchar, p_node varchar, p_gen integer,
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
    PERFORM df_internal.lock_instance(p_instance);
    DELETE FROM df_internal.tasks t WHERE t.instance_id = p_instance AND t.node_id = p_node;
    SELECT i.status INTO inst_status FROM df.instances i WHERE i.id = p_instance;
    IF inst_status IS NULL OR inst_status NOT IN ('pending', 'running') THEN
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

-- Record a failed attempt. When p_retry_delay is given the node is retried after that delay
-- (durable timer); otherwise the node fails and the interpreter propagates the failure.
CREATE FUNCTION df_internal.fail_task(p_instance varchar, p_node varchar, p_gen integer,
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
        PERFORM pg_notify('df_work', p_instance);
        RETURN true;
    END IF;
    DELETE FROM df_internal.tasks t WHERE t.instance_id = p_instance AND t.node_id = p_node;
    PERFORM df_internal.drive(p_instance, jsonb_build_array(jsonb_build_object(
        'op', 'done', 'node', p_node, 'status', 'failed', 'error', p_error)));
    RETURN true;
END $$;

-- Park a task until a time (cron waits, signal timeouts) or indefinitely (signal without one).
CREATE FUNCTION df_internal.park_task(p_instance varchar, p_node varchar, p_gen integer,
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
CREATE FUNCTION df_internal.take_signal(p_instance varchar, p_node varchar, p_name text)
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

-- ---------------------------------------------------------------------------------------------
-- Retry: resume a failed or cancelled instance, keeping every completed result.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION df_internal.retry_instance(p_instance varchar, p_from_node varchar, p_requested_by text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    i df.instances%ROWTYPE;
BEGIN
    SELECT * INTO i FROM df.instances x WHERE x.id = p_instance FOR UPDATE;
    IF i.status = 'completed' THEN
        RAISE EXCEPTION 'instance % is completed; only failed or cancelled instances can be retried', p_instance
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF i.status IN ('pending', 'running') THEN
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
           cancel_reason = NULL
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
           AND n.node_type NOT IN ('THEN', 'IF', 'JOIN', 'RACE', 'LOOP');
    END IF;
    PERFORM set_config('df.retrying', p_instance, true);
    UPDATE df.instances x SET status = 'running', completed_at = NULL WHERE x.id = p_instance;
    PERFORM set_config('df.retrying', '', true);
    PERFORM df_internal.drive(p_instance, jsonb_build_array(jsonb_build_object(
        'op', 'activate', 'node', i.root_node)));
    PERFORM pg_notify('df_work', p_instance);
END $$;

-- df.retry(id [, from_node]): SECURITY INVOKER; ownership is proven by the RLS-checked UPDATE,
-- the privileged part runs in the df.instances trigger.
CREATE FUNCTION df.retry(instance_id text, from_node text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    st text;
BEGIN
    IF current_setting('df.in_workflow', true) = 'true' THEN
        RAISE EXCEPTION 'df.retry() cannot be called inside a workflow';
    END IF;
    SELECT i.status INTO st FROM df.instances i WHERE i.id = instance_id;
    IF st IS NULL THEN
        RAISE EXCEPTION 'Instance not found or access denied: %', instance_id
            USING ERRCODE = 'no_data_found';
    END IF;
    IF st = 'completed' THEN
        RAISE EXCEPTION 'Instance % is completed; only failed or cancelled instances can be retried', instance_id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF st IN ('pending', 'running') THEN
        RETURN st;    -- idempotent: nothing to do
    END IF;
    PERFORM set_config('df.request', json_build_object('op', 'retry', 'instance_id', instance_id,
        'from_node', from_node, 'requested_by', quote_ident(current_user))::text, true);
    UPDATE df.instances i SET updated_at = now() WHERE i.id = instance_id;
    PERFORM set_config('df.request', '', true);
    RETURN 'running';
END $$;
