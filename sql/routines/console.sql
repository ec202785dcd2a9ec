-- The operator's console (issue 15): what a running step is doing inside PostgreSQL, cancel /
-- terminate its backend, and an instance's history. docs/operations.md "The console".
--
-- The engine runs steps on its own sessions, so a submitter cannot see them in pg_stat_activity
-- (PostgreSQL hides another role's query, state and wait events) nor signal them. These SECURITY
-- DEFINER functions do it for the caller's own steps only:
--   * the caller is the role the session acts as (SET ROLE, else the login role), exactly the
--     role RLS filters df.instances by; it sees an instance when it is its submitter (the
--     identity frozen at df.start), a superuser or a member of the df owner — the rule of every
--     df view. Another role's instance behaves exactly like a missing one.
--   * refused inside a workflow step (there the session is the engine's: df_internal.in_engine_step)
--     and when called from inside any other function (PG_CONTEXT has more than this function):
--     another role's SECURITY DEFINER function, run by the caller, must not act as the caller.
--   * a step's backend is the worker session the engine recorded with the batch in
--     df_internal.inflight (pid + backend_start: a reused pid never matches), and the step is
--     the one that session executes right now only when its current statement begins with the
--     step's marker (engine/activity.py), which the engine writes at the very start of the
--     statement it sends: no step text can put it there.
--   * cancel/terminate re-check all of this after taking the instance's orchestration lock
--     (df_internal.lock_instance): while it is held the step cannot be checkpointed or failed,
--     so the worker cannot move on to another task between the check and the signal.
--
-- Routines are re-applied on every install and upgrade (engine/schema.py): keep every statement
-- idempotent and schema-qualified.

-- The role this session acts as: what current_user is outside SECURITY DEFINER functions.
-- Refused inside a workflow step, where the session (and session_user) is the engine's.
CREATE OR REPLACE FUNCTION df_internal.console_caller(p_context text, p_what text)
RETURNS pg_catalog.oid LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r text := pg_catalog.current_setting('role');
    who pg_catalog.oid;
BEGIN
    IF df_internal.in_engine_step() THEN
        RAISE EXCEPTION '% cannot be called from inside a workflow step', p_what
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF pg_catalog.strpos(p_context, E'\n') OPERATOR(pg_catalog.<>) 0 THEN
        RAISE EXCEPTION '% must be called directly, not from inside another function', p_what
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT a.oid INTO who FROM pg_catalog.pg_roles a
     WHERE a.rolname OPERATOR(pg_catalog.=)
           CASE WHEN r OPERATOR(pg_catalog.=) 'none' THEN pg_catalog.session_user()::text ELSE r END;
    RETURN who;
END $$;
REVOKE ALL ON FUNCTION df_internal.console_caller(text, text) FROM PUBLIC;

-- May `p_caller` see (and act on) an instance submitted by `p_submitter`? The df views' rule
-- (01_visibility.sql), for a caller named by oid (these functions run as the schema owner).
CREATE OR REPLACE FUNCTION df_internal.console_may_see(p_caller pg_catalog.oid, p_submitter pg_catalog.oid)
RETURNS boolean LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT p_caller OPERATOR(pg_catalog.=) p_submitter
        OR df_internal.sees_every_instance(p_caller)
$$;
REVOKE ALL ON FUNCTION df_internal.console_may_see(pg_catalog.oid, pg_catalog.oid) FROM PUBLIC;

-- The frozen submitter of an instance the caller may see; else 'Instance not found or access
-- denied', the same as for a missing one.
CREATE OR REPLACE FUNCTION df_internal.console_instance(p_caller pg_catalog.oid, p_instance text)
RETURNS pg_catalog.oid LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    owner pg_catalog.oid;
BEGIN
    SELECT s.submitted_by::pg_catalog.oid INTO owner FROM df_internal.instance_state s
     WHERE s.instance_id OPERATOR(pg_catalog.=) p_instance;
    IF owner IS NULL OR p_caller IS NULL OR NOT df_internal.console_may_see(p_caller, owner) THEN
        RAISE EXCEPTION 'Instance not found or access denied' USING ERRCODE = 'no_data_found';
    END IF;
    RETURN owner;
END $$;
REVOKE ALL ON FUNCTION df_internal.console_instance(pg_catalog.oid, text) FROM PUBLIC;

-- The marker the engine puts at the very start of the statement that runs a step
-- (engine/activity.py step_marker: the same text).
CREATE OR REPLACE FUNCTION df_internal.step_marker(p_instance text, p_node text, p_gen integer)
RETURNS text LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT '/* df-step ' OPERATOR(pg_catalog.||)
           pg_catalog.md5(p_instance OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||) p_node
                          OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||) p_gen::text)
           OPERATOR(pg_catalog.||) ' */'
$$;
REVOKE ALL ON FUNCTION df_internal.step_marker(text, text, integer) FROM PUBLIC;

-- The steps of an instance that an engine session is executing right now, with that session:
-- the worker's own, or, for a step naming another database, the session the worker opened in
-- that database (side_pid, migration 0500: `elsewhere`). `visible` is false when the df owner
-- cannot read the engine session's activity (the schema owner is not the role the engine
-- connects as, and lacks pg_read_all_stats); such a session is reported only as the worker's.
DROP FUNCTION IF EXISTS df_internal.running_step_backends(text);  -- (its columns changed)
CREATE OR REPLACE FUNCTION df_internal.running_step_backends(p_instance text)
RETURNS TABLE (node_id text, gen integer, pid integer, visible boolean, batch_roles pg_catalog.oid[],
               elsewhere boolean)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
    SELECT k.n::text, k.g, a.pid,
           a.query IS NOT NULL AND a.query OPERATOR(pg_catalog.<>) '<insufficient privilege>',
           (SELECT pg_catalog.array_agg(DISTINCT s.submitted_by::pg_catalog.oid)
              FROM df_internal.instance_state s
             WHERE s.instance_id OPERATOR(pg_catalog.=) ANY (f.instance_ids)),
           w.elsewhere
      FROM df_internal.inflight f
     CROSS JOIN LATERAL unnest(f.instance_ids, f.node_ids, f.gens) AS k(i, n, g)  -- (multi-array form: unqualified)
      JOIN df_internal.node_meta m
        ON m.instance_id OPERATOR(pg_catalog.=) k.i AND m.node_id OPERATOR(pg_catalog.=) k.n
       AND m.gen OPERATOR(pg_catalog.=) k.g
     CROSS JOIN LATERAL (VALUES (f.worker_pid, f.worker_backend_start, false),
                                (f.side_pid, f.side_backend_start, true)) AS w(pid, started, elsewhere)
     CROSS JOIN LATERAL pg_catalog.pg_stat_get_activity(w.pid) AS a
     WHERE k.i OPERATOR(pg_catalog.=) p_instance
       AND w.pid IS NOT NULL
       AND a.pid OPERATOR(pg_catalog.=) w.pid
       AND a.backend_start OPERATOR(pg_catalog.=) w.started
       AND ((NOT w.elsewhere AND (a.query IS NULL OR a.query OPERATOR(pg_catalog.=) '<insufficient privilege>'))
            OR (a.state OPERATOR(pg_catalog.=) 'active'
                AND pg_catalog.starts_with(a.query, df_internal.step_marker(k.i, k.n, k.g))));
END $$;
REVOKE ALL ON FUNCTION df_internal.running_step_backends(text) FROM PUBLIC;

-- What each running SQL step of an instance is doing inside PostgreSQL right now: the engine
-- session (pid), its state, wait event, how long the statement has run, the locks it waits for
-- and who blocks it. A blocking session's query, state and wait event are shown only when the
-- caller could see them in pg_stat_activity itself (its own sessions; all for superusers);
-- pid, role and application name of any session are public in pg_stat_activity anyway.
CREATE OR REPLACE FUNCTION df.step_activity(p_instance text)
RETURNS TABLE (node_id text, node_type text, query text, backend_pid integer, state text,
               wait_event_type text, wait_event text, query_start timestamptz,
               duration_ms bigint, xact_start timestamptz, waiting_for jsonb, blocked_by jsonb)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ctx text;
    caller pg_catalog.oid;
    sees_all boolean;
BEGIN
    GET DIAGNOSTICS ctx = PG_CONTEXT;
    caller := df_internal.console_caller(ctx, 'df.step_activity');
    PERFORM df_internal.console_instance(caller, p_instance);
    sees_all := COALESCE((SELECT r.rolsuper FROM pg_catalog.pg_roles r
                           WHERE r.oid OPERATOR(pg_catalog.=) caller), false)
                OR pg_catalog.pg_has_role(caller, 'pg_read_all_stats', 'USAGE');
    PERFORM pg_catalog.pg_stat_clear_snapshot();
    RETURN QUERY
    SELECT b.node_id, n.node_type, n.query, b.pid, a.state, a.wait_event_type, a.wait_event,
           a.query_start,
           (pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) a.query_start)
            OPERATOR(pg_catalog.*) 1000)::bigint,
           a.xact_start,
           COALESCE((SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                        'locktype', l.locktype, 'mode', l.mode,
                        -- (a step in another database: its relations are not this one's)
                        'relation', CASE WHEN l.relation IS NULL THEN NULL
                                         WHEN l.database IN (0, (SELECT d.oid FROM pg_catalog.pg_database d
                                                                  WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()))
                                         THEN l.relation::pg_catalog.regclass::text
                                         ELSE pg_catalog.format('relation %s in database %s', l.relation,
                                                  (SELECT d.datname FROM pg_catalog.pg_database d
                                                    WHERE d.oid OPERATOR(pg_catalog.=) l.database)) END,
                        'transactionid', l.transactionid::text,
                        'virtualxid', l.virtualxid,
                        'tuple', CASE WHEN l.tuple IS NOT NULL
                                      THEN l.page::text OPERATOR(pg_catalog.||) ','
                                           OPERATOR(pg_catalog.||) l.tuple::text END))
                       FROM pg_catalog.pg_locks l
                      WHERE l.pid OPERATOR(pg_catalog.=) b.pid AND NOT l.granted), '[]'::jsonb),
           COALESCE((SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                        'pid', o.pid,
                        'role', (SELECT r.rolname FROM pg_catalog.pg_roles r
                                  WHERE r.oid OPERATOR(pg_catalog.=) o.usesysid),
                        'application_name', o.application_name,
                        'backend_type', o.backend_type,
                        'state', CASE WHEN mine THEN o.state END,
                        'wait_event', CASE WHEN mine THEN o.wait_event END,
                        'query', CASE WHEN mine THEN o.query END,
                        'xact_start', CASE WHEN mine THEN o.xact_start END))
                       FROM pg_catalog.unnest(pg_catalog.pg_blocking_pids(b.pid)) AS bp(pid)
                      CROSS JOIN LATERAL pg_catalog.pg_stat_get_activity(bp.pid) AS o
                      CROSS JOIN LATERAL (SELECT sees_all OR o.usesysid OPERATOR(pg_catalog.=) caller
                                          AS mine) AS v), '[]'::jsonb)
      FROM df_internal.running_step_backends(p_instance) b
      JOIN df.nodes n ON n.instance_id OPERATOR(pg_catalog.=) p_instance
                     AND n.id OPERATOR(pg_catalog.=) b.node_id
     CROSS JOIN LATERAL pg_catalog.pg_stat_get_activity(b.pid) AS a
     WHERE b.visible
     ORDER BY b.node_id;
END $$;

-- Cancel (pg_cancel_backend: the step fails with "canceling statement due to user request",
-- as any cancelled statement; a retry policy that retries query_canceled applies) or terminate
-- (pg_terminate_backend: the engine session ends, its whole transaction rolls back and the
-- step runs again later) the engine session running one of the caller's steps. Terminate is
-- refused when that transaction also holds other roles' steps (they would be rolled back).
CREATE OR REPLACE FUNCTION df_internal.signal_step_backend(p_caller pg_catalog.oid, p_instance text,
                                                           p_node text, p_terminate boolean)
RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET lock_timeout = '2s' AS $$
DECLARE
    owner pg_catalog.oid;
    verb text := CASE WHEN p_terminate THEN 'terminate' ELSE 'cancel' END;
    b record;
    found_n integer := 0;
    ok boolean;
    msg text;
BEGIN
    owner := df_internal.console_instance(p_caller, p_instance);
    IF p_node IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM df.nodes n WHERE n.instance_id OPERATOR(pg_catalog.=) p_instance
                                       AND n.id OPERATOR(pg_catalog.=) p_node) THEN
        RAISE EXCEPTION 'node % does not belong to instance %', p_node, p_instance
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    BEGIN
        PERFORM df_internal.lock_instance(p_instance);
    EXCEPTION WHEN lock_not_available THEN
        RAISE EXCEPTION 'instance % is busy (the engine is checkpointing it); try again', p_instance
            USING ERRCODE = 'lock_not_available';
    END;
    PERFORM pg_catalog.pg_stat_clear_snapshot();
    FOR b IN SELECT * FROM df_internal.running_step_backends(p_instance) r
              WHERE p_node IS NULL OR r.node_id OPERATOR(pg_catalog.=) p_node LOOP
        found_n := found_n + 1;
        IF found_n > 1 THEN
            RAISE EXCEPTION 'instance % runs several steps now; name the node to %', p_instance, verb
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF NOT b.visible THEN
            RAISE EXCEPTION 'the df schema owner cannot see the engine''s sessions (grant it pg_read_all_stats and pg_signal_backend, or run the engine as the owner)'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF p_terminate AND b.elsewhere THEN
            RAISE EXCEPTION 'node % runs in another database, on a session of its own: terminating it would fail the step, not run it again: cancel the step instead', b.node_id
                USING ERRCODE = 'feature_not_supported';
        END IF;
        IF p_terminate AND b.batch_roles IS DISTINCT FROM ARRAY[owner] THEN
            RAISE EXCEPTION 'the engine session running node % also runs other roles'' steps in the same transaction; terminating it would roll them back: cancel the step instead', b.node_id
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        p_node := b.node_id;
        BEGIN
            IF p_terminate THEN
                ok := pg_catalog.pg_terminate_backend(b.pid);
            ELSE
                ok := pg_catalog.pg_cancel_backend(b.pid);
            END IF;
        EXCEPTION WHEN insufficient_privilege THEN
            GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
            RAISE EXCEPTION 'cannot % the engine session %: %', verb, b.pid, msg
                USING ERRCODE = 'insufficient_privilege';
        END;
        INSERT INTO df_internal.step_actions (instance_id, node_id, action, requested_by, backend_pid, signalled)
        VALUES (p_instance, b.node_id, verb, p_caller::pg_catalog.regrole, b.pid, ok);
        IF NOT ok THEN
            RETURN format('engine session %s had already ended; nothing was %s', b.pid,
                          CASE WHEN p_terminate THEN 'terminated' ELSE 'cancelled' END);
        END IF;
        RETURN CASE WHEN p_terminate
                    THEN format('terminated engine session %s (node %s); its transaction rolls back and the step runs again', b.pid, b.node_id)
                    ELSE format('cancelled the statement of node %s on engine session %s; the step fails unless its retry policy retries it', b.node_id, b.pid) END;
    END LOOP;
    RAISE EXCEPTION '%', CASE WHEN p_node IS NULL
                             THEN format('instance %s has no step executing in an engine session now', p_instance)
                             ELSE format('node %s of instance %s is not executing in an engine session now', p_node, p_instance) END
        USING ERRCODE = 'object_not_in_prerequisite_state';
END $$;
REVOKE ALL ON FUNCTION df_internal.signal_step_backend(pg_catalog.oid, text, text, boolean) FROM PUBLIC;

CREATE OR REPLACE FUNCTION df.cancel_step_backend(p_instance text, p_node text DEFAULT NULL)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ctx text;
BEGIN
    GET DIAGNOSTICS ctx = PG_CONTEXT;
    RETURN df_internal.signal_step_backend(df_internal.console_caller(ctx, 'df.cancel_step_backend'),
                                           p_instance, p_node, false);
END $$;

CREATE OR REPLACE FUNCTION df.terminate_step_backend(p_instance text, p_node text DEFAULT NULL)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ctx text;
BEGIN
    GET DIAGNOSTICS ctx = PG_CONTEXT;
    RETURN df_internal.signal_step_backend(df_internal.console_caller(ctx, 'df.terminate_step_backend'),
                                           p_instance, p_node, true);
END $$;

-- Keep how an execution ended when df.retry starts the next (retry_instance then resets it).
CREATE OR REPLACE FUNCTION df_internal.retries_keep_previous() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    SELECT s.error, s.cancelled_by, s.finished_at
      INTO NEW.previous_error, NEW.previous_cancelled_by, NEW.previous_finished_at
      FROM df_internal.instance_state s
     WHERE s.instance_id OPERATOR(pg_catalog.=) NEW.instance_id;
    RETURN NEW;
END $$;
REVOKE ALL ON FUNCTION df_internal.retries_keep_previous() FROM PUBLIC;
CREATE OR REPLACE TRIGGER retries_before_insert_keep_previous BEFORE INSERT ON df_internal.retries
    FOR EACH ROW EXECUTE FUNCTION df_internal.retries_keep_previous();

-- Every event of an instance in time order, kept across retries and loop iterations: submitted,
-- started, each attempt of each node with its outcome, each execution's end (completed, failed,
-- cancelled and who cancelled), retries and who asked, signals sent (and by whom) and consumed,
-- loop iterations, cancel/terminate of a step's engine session and who asked.
CREATE OR REPLACE FUNCTION df.instance_history(p_instance text)
RETURNS TABLE (at timestamptz, event text, execution integer, node_id text, node_type text,
               iteration integer, attempt integer, status text, actor text, detail text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ctx text;
    caller pg_catalog.oid;
BEGIN
    GET DIAGNOSTICS ctx = PG_CONTEXT;
    caller := df_internal.console_caller(ctx, 'df.instance_history');
    PERFORM df_internal.console_instance(caller, p_instance);
    RETURN QUERY
    WITH ex AS (   -- executions: 1, then one per df.retry
        SELECT 1 AS execution, NULL::timestamptz AS t0
        UNION ALL
        SELECT (pg_catalog.row_number() OVER (ORDER BY r.id) OPERATOR(pg_catalog.+) 1)::integer,
               r.requested_at
          FROM df_internal.retries r WHERE r.instance_id OPERATOR(pg_catalog.=) p_instance
    ), ev AS (
        SELECT i.created_at AS at, 'submitted'::text AS event, NULL::text AS node_id,
               NULL::integer AS iteration, NULL::integer AS attempt, NULL::text AS status,
               s.submitted_by::text AS actor,
               COALESCE('label ' OPERATOR(pg_catalog.||) pg_catalog.quote_literal(i.label), '') AS detail,
               0 AS ord
          FROM df.instances i JOIN df_internal.instance_state s ON s.instance_id OPERATOR(pg_catalog.=) i.id
         WHERE i.id OPERATOR(pg_catalog.=) p_instance
        UNION ALL
        SELECT s.started_at, 'started', NULL, NULL, NULL, NULL, NULL, '', 1
          FROM df_internal.instance_state s
         WHERE s.instance_id OPERATOR(pg_catalog.=) p_instance AND s.started_at IS NOT NULL
        UNION ALL
        SELECT a.finished_at,
               CASE a.status WHEN 'retrying' THEN 'attempt failed, retrying'
                             ELSE 'attempt ' OPERATOR(pg_catalog.||) a.status END,
               a.node_id::text, NULLIF(a.iteration, 0), a.attempt, a.status, NULL,
               pg_catalog.concat_ws('; ',
                   CASE WHEN a.started_at IS NOT NULL THEN 'ran ' OPERATOR(pg_catalog.||)
                        pg_catalog.round((pg_catalog.date_part('epoch', a.finished_at OPERATOR(pg_catalog.-) a.started_at)
                                          OPERATOR(pg_catalog.*) 1000)::numeric, 0)::text OPERATOR(pg_catalog.||) ' ms' END,
                   a.error),
               2
          FROM df_internal.node_attempts a WHERE a.instance_id OPERATOR(pg_catalog.=) p_instance
        UNION ALL
        SELECT l.finished_at, 'loop iteration ended', l.loop_node_id::text, l.iteration, NULL, NULL,
               NULL, '', 2
          FROM df_internal.loop_iterations l WHERE l.instance_id OPERATOR(pg_catalog.=) p_instance
        UNION ALL
        SELECT g.sent_at, 'signal received', NULL, NULL, NULL, NULL, g.sent_by::text,
               pg_catalog.quote_literal(g.name) OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||) g.data::text, 2
          FROM df_internal.signals g WHERE g.instance_id OPERATOR(pg_catalog.=) p_instance
        UNION ALL
        SELECT g.consumed_at, 'signal consumed', g.consumed_by::text, NULL, NULL, NULL, NULL,
               pg_catalog.quote_literal(g.name), 3
          FROM df_internal.signals g
         WHERE g.instance_id OPERATOR(pg_catalog.=) p_instance AND g.consumed_at IS NOT NULL
        UNION ALL   -- how each earlier execution ended (kept by retries_keep_previous)
        -- (an end is stamped with its transaction's start, an attempt with the clock: an end
        -- is never shown before the attempts that led to it)
        SELECT GREATEST(COALESCE(r.previous_finished_at, r.requested_at),
                                   (SELECT pg_catalog.max(a.finished_at) FROM df_internal.node_attempts a
                                     WHERE a.instance_id OPERATOR(pg_catalog.=) p_instance
                                       AND a.finished_at OPERATOR(pg_catalog.<) r.requested_at)),
               r.previous_status, NULL, NULL, NULL,
               r.previous_status,
               CASE WHEN r.previous_status OPERATOR(pg_catalog.=) 'cancelled' THEN r.previous_cancelled_by::text END,
               COALESCE(r.previous_error, ''), 4
          FROM df_internal.retries r WHERE r.instance_id OPERATOR(pg_catalog.=) p_instance
        UNION ALL
        SELECT r.requested_at, 'retried', r.from_node::text, NULL, NULL, NULL, r.requested_by::text,
               'from ' OPERATOR(pg_catalog.||) r.previous_status
               OPERATOR(pg_catalog.||) COALESCE(', re-running from node ' OPERATOR(pg_catalog.||) r.from_node, ''), 5
          FROM df_internal.retries r WHERE r.instance_id OPERATOR(pg_catalog.=) p_instance
        UNION ALL
        SELECT x.requested_at,
               CASE x.action WHEN 'cancel' THEN 'backend cancelled' ELSE 'backend terminated' END,
               x.node_id::text, NULL, NULL, NULL, x.requested_by::text,
               'engine session ' OPERATOR(pg_catalog.||) x.backend_pid::text
               OPERATOR(pg_catalog.||) CASE WHEN x.signalled THEN '' ELSE ' (had already ended)' END, 3
          FROM df_internal.step_actions x WHERE x.instance_id OPERATOR(pg_catalog.=) p_instance
        UNION ALL   -- the current execution's end
        SELECT GREATEST(COALESCE(s.finished_at, i.updated_at),
                                   (SELECT pg_catalog.max(a.finished_at) FROM df_internal.node_attempts a
                                     WHERE a.instance_id OPERATOR(pg_catalog.=) p_instance)),
               i.status, NULL, NULL, NULL, i.status,
               CASE WHEN i.status OPERATOR(pg_catalog.=) 'cancelled' THEN s.cancelled_by::text END,
               COALESCE(s.error, ''), 6
          FROM df.instances i JOIN df_internal.instance_state s ON s.instance_id OPERATOR(pg_catalog.=) i.id
         WHERE i.id OPERATOR(pg_catalog.=) p_instance
           AND i.status OPERATOR(pg_catalog.=) ANY ('{completed,failed,cancelled}'::text[])
    )
    SELECT ev.at, ev.event,
           (SELECT pg_catalog.max(ex.execution) FROM ex
             WHERE ex.t0 IS NULL OR ex.t0 OPERATOR(pg_catalog.<) ev.at
                OR (ex.t0 OPERATOR(pg_catalog.=) ev.at AND ev.ord OPERATOR(pg_catalog.>=) 5))::integer,
           ev.node_id, n.node_type, ev.iteration, ev.attempt, ev.status, ev.actor, ev.detail
      FROM ev
      LEFT JOIN df.nodes n ON n.instance_id OPERATOR(pg_catalog.=) p_instance
                          AND n.id OPERATOR(pg_catalog.=) ev.node_id
     WHERE ev.at IS NOT NULL
     ORDER BY ev.at, ev.ord, ev.node_id;
END $$;
