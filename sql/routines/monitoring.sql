-- Monitoring functions (sql-api.md §4), with pg_durable 0.2.6's exact signatures: argument
-- names, bigint execution ids, text output/result/status_details, STRICT where pg_durable's are.
--
-- Visibility as pg_durable: everything reads df.instances / df.nodes under RLS, so an id the
-- caller cannot see (another role's, or unknown) simply yields no rows. The engine-side data
-- (timing, execution number, output, cancel reason) comes from the security_barrier views.
--
-- output is text, as pg_durable's: the root result's JSON when completed, the original error text
-- when failed, the reason when cancelled (never JSON-quoted text).
--
-- Routines are re-applied on every install and upgrade (engine/schema.py): keep every statement
-- idempotent (CREATE OR REPLACE) and schema-qualified.

-- df.list_instances, paginated overload. Order created_at DESC, id ASC; next_cursor is the same
-- page-level keyset token on every row of a page and NULL on the last page. status_filter is
-- compared exactly, as pg_durable: a status that matches nothing returns no rows.
CREATE OR REPLACE FUNCTION df.list_instances(status_filter text, limit_count integer,
                                             label_filter text, after_cursor text DEFAULT NULL)
RETURNS TABLE (instance_id text, label text, function_name text, status text,
               execution_count bigint, output text, created_at timestamptz,
               completed_at timestamptz, next_cursor text)
LANGUAGE plpgsql STABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    v_max     integer;
    -- (never the caller's own SET: a superuser-only setting in pg_durable, see settings.sql)
    v_setting text := df._setting('pg_durable.list_instances_max_limit');
    v_limit   integer := coalesce(limit_count, 100);
    v_raw     text;
    v_parts   text[];
    v_ts      timestamptz;
    v_id      text;
    v_where   text[] := ARRAY['i.created_at IS NOT NULL'];
BEGIN
    IF v_setting IS NULL OR btrim(v_setting) = '' THEN
        v_max := 1000;
    ELSIF btrim(v_setting) ~ '^[0-9]{1,9}$' THEN
        v_max := btrim(v_setting)::integer;
    ELSE
        RAISE EXCEPTION 'df.list_instances: pg_durable.list_instances_max_limit must be a positive integer, got "%"',
            v_setting USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_limit < 1 THEN
        RAISE EXCEPTION 'limit_count must be at least 1'  -- pg_durable's text
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('df.list_instances(): limit_count was %s.', v_limit);
    END IF;
    IF v_limit > v_max THEN
        RAISE EXCEPTION 'df.list_instances: limit_count (%) exceeds pg_durable.list_instances_max_limit (%); request fewer rows, or use the paginated df.list_instances overload (after_cursor/next_cursor) for large result sets',
            v_limit, v_max USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF status_filter IS NOT NULL THEN
        v_where := v_where || format('i.status = %L', status_filter);
    END IF;
    IF label_filter IS NOT NULL THEN
        v_where := v_where || format('i.label = %L', label_filter);
    END IF;
    IF after_cursor IS NOT NULL THEN
        -- Opaque cursor, pg_durable's: hex of 'v1|<created_at as
        -- YYYY-MM-DD"T"HH24:MI:SS.USOF>|<id>' (so a cursor either side issued pages here too;
        -- dftui 0.2/0.3 wrote the instant in UTC with a trailing Z, still accepted).
        BEGIN
            IF length(after_cursor) > 512 OR after_cursor !~ '^([0-9a-fA-F]{2})+$' THEN
                RAISE EXCEPTION 'not hex';
            END IF;
            v_raw := convert_from(decode(after_cursor, 'hex'), 'UTF8');
            v_parts := string_to_array(v_raw, '|');
            IF cardinality(v_parts) <> 3 OR v_parts[1] <> 'v1' OR v_parts[3] !~ '^[0-9a-f]{8}$'
               OR v_parts[2] !~ '^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}(:\d{2})?)$' THEN
                RAISE EXCEPTION 'bad shape';
            END IF;
            v_ts := v_parts[2]::timestamptz;
            v_id := v_parts[3];
        EXCEPTION WHEN OTHERS THEN
            -- pg_durable's message, word for word; what to do in the hint.
            RAISE EXCEPTION 'df.list_instances: invalid after_cursor'
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = format('after_cursor was "%s".', left(after_cursor, 80)),
                      HINT = 'Pass the next_cursor value of a previous call verbatim.';
        END;
        -- created_at DESC, id ASC: rows strictly after (v_ts, v_id). The redundant upper bound
        -- lets the index scan start at the cursor.
        v_where := v_where || format('i.created_at <= %L::timestamptz', v_ts)
                           || format('(i.created_at < %L::timestamptz OR i.id > %L)', v_ts, v_id);
    END IF;

    -- Dynamic SQL so the planner sees the real predicates and picks the matching index
    -- (created_at / status / label, all ordered created_at DESC, id). One row beyond the page
    -- tells whether another page follows; the cursor then points at the page's last row.
    RETURN QUERY EXECUTE format($q$
        WITH page AS MATERIALIZED (
            SELECT i.id, i.label, i.status, i.root_node, i.created_at, i.completed_at
              FROM df.instances i
             WHERE %s
             ORDER BY i.created_at DESC, i.id
             LIMIT %s
        ), numbered AS (
            SELECT p.*, row_number() OVER (ORDER BY p.created_at DESC, p.id) AS rn
              FROM page p
        ), cursor AS (
            SELECT encode(convert_to(
                       'v1|' || to_char(p.created_at, 'YYYY-MM-DD"T"HH24:MI:SS.USOF')
                       || '|' || p.id, 'UTF8'), 'hex') AS next_cursor
              FROM numbered p
             WHERE p.rn = %s AND EXISTS (SELECT 1 FROM numbered q WHERE q.rn > %s)
        )
        SELECT p.id::text,
               p.label,
               'durable_function'::text,
               p.status,
               coalesce(rt.execution, 1)::bigint,
               CASE p.status WHEN 'completed' THEN coalesce(rt.output, rn_.result)::text
                   WHEN 'failed' THEN coalesce(rt.error, rn_.error, rn_.result #>> '{}')
                   WHEN 'cancelled' THEN coalesce(rt.cancel_reason, 'Cancelled by user') END,
               p.created_at,
               p.completed_at,
               (SELECT c.next_cursor FROM cursor c)
          FROM numbered p
          LEFT JOIN LATERAL (
              -- OFFSET 0: one index lookup per listed row; pulled up into the join, the view
              -- was joined whole (every instance's state, to list a page of them).
              SELECT r.execution, r.output, r.error, r.cancel_reason
                FROM df.instance_runtime r WHERE r.instance_id = p.id::text OFFSET 0
          ) rt ON true
          LEFT JOIN LATERAL (
              SELECT n.result, n.error FROM df.nodes n
               WHERE n.instance_id = p.id AND n.id = p.root_node
          ) rn_ ON true
         WHERE p.rn <= %s
         ORDER BY p.rn
    $q$, array_to_string(v_where, ' AND '), v_limit + 1, v_limit, v_limit, v_limit);
END;
$fn$;
COMMENT ON FUNCTION df.list_instances(text, integer, text, text) IS
    'Instances you can see, newest first (created_at DESC, id ASC), one keyset page; next_cursor (same on every row) is NULL on the last page';

CREATE OR REPLACE FUNCTION df.list_instances(status_filter text DEFAULT NULL,
                                             limit_count integer DEFAULT 100)
RETURNS TABLE (instance_id text, label text, function_name text, status text,
               execution_count bigint, output text)
LANGUAGE sql STABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT l.instance_id, l.label, l.function_name, l.status, l.execution_count, l.output
      FROM df.list_instances($1, $2, NULL::text, NULL::text) l
$fn$;
COMMENT ON FUNCTION df.list_instances(text, integer) IS
    'Instances you can see, newest first (pg_durable-compatible; use the 4-argument form to page)';

-- One instance; no rows when the caller cannot see it (as pg_durable). LANGUAGE sql because the
-- argument and the first result column share pg_durable's name "instance_id".
CREATE OR REPLACE FUNCTION df.instance_info(instance_id text)
RETURNS TABLE (instance_id text, label text, function_name text, function_version text,
               current_execution_id bigint, status text, output text)
LANGUAGE sql STABLE STRICT
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT i.id::text, i.label, 'durable_function'::text, df.version(),
           coalesce(rt.execution, 1)::bigint, coalesce(rt.status, i.status),
           CASE coalesce(rt.status, i.status) WHEN 'completed' THEN coalesce(rt.output, rn.result)::text
                   WHEN 'failed' THEN coalesce(rt.error, rn.error, rn.result #>> '{}')
                   WHEN 'cancelled' THEN coalesce(rt.cancel_reason, 'Cancelled by user') END
      FROM df.instances i
      LEFT JOIN df.instance_runtime rt ON rt.instance_id = i.id::text
      LEFT JOIN df.nodes rn ON rn.instance_id = i.id AND rn.id = i.root_node
     WHERE i.id = $1
$fn$;
COMMENT ON FUNCTION df.instance_info(text) IS
    'One instance: label, execution number, status and output (the original error when failed); no rows when not visible';

-- Executions: the first run plus one per df.retry. Execution k spans from its start (creation,
-- or the retry that began it) to the next retry (or the instance's finish); its events are the
-- node attempts recorded in that span. Newest first. No rows for an invisible id.
CREATE OR REPLACE FUNCTION df.instance_executions(instance_id text, limit_count integer DEFAULT 5)
RETURNS TABLE (execution_id bigint, status text, event_count bigint, duration_ms bigint,
               output text)
LANGUAGE plpgsql STABLE STRICT
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    v_id text := $1;
    v_inst df.instances%ROWTYPE;
BEGIN
    IF limit_count < 1 THEN
        RAISE EXCEPTION 'limit_count must be at least 1'  -- pg_durable's text
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('df.instance_executions(): limit_count was %s.', limit_count);
    END IF;
    SELECT * INTO v_inst FROM df.instances i WHERE i.id = v_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH rt AS (
        SELECT r.started_at, r.finished_at, r.execution, r.output, r.error, r.cancel_reason
          FROM df.instance_runtime r WHERE r.instance_id = v_id
    ), bounds AS (
        -- Execution 1 starts at creation; execution k+1 at the k-th retry.
        SELECT 1 AS execution_id, coalesce((SELECT rt.started_at FROM rt), v_inst.created_at) AS t0
        UNION ALL
        SELECT h.execution, h.requested_at FROM df.retry_history h WHERE h.instance_id = v_id
    ), spans AS (
        SELECT b.execution_id, b.t0,
               lead(b.t0) OVER (ORDER BY b.execution_id) AS t1,
               (SELECT h.previous_status FROM df.retry_history h
                 WHERE h.instance_id = v_id AND h.execution = b.execution_id + 1) AS ended_as
          FROM bounds b
    )
    SELECT s.execution_id::bigint,
           coalesce(s.ended_as, v_inst.status),
           (SELECT count(*) FROM df.node_attempt_history a
             WHERE a.instance_id = v_id AND a.kind = 'attempt'
               AND a.finished_at >= s.t0 AND (s.t1 IS NULL OR a.finished_at < s.t1)),
           (extract(epoch FROM (coalesce(s.t1,
                CASE WHEN v_inst.status IN ('completed', 'failed', 'cancelled')
                     THEN coalesce((SELECT rt.finished_at FROM rt), v_inst.completed_at, v_inst.updated_at)
                     ELSE clock_timestamp() END) - s.t0)) * 1000)::bigint,
           CASE
               WHEN s.t1 IS NULL THEN
                   (SELECT CASE v_inst.status WHEN 'completed' THEN coalesce(rt.output, n.result)::text
                   WHEN 'failed' THEN coalesce(rt.error, n.error, n.result #>> '{}')
                   WHEN 'cancelled' THEN coalesce(rt.cancel_reason, 'Cancelled by user') END
                      FROM df.nodes n LEFT JOIN rt ON true
                     WHERE n.instance_id = v_id AND n.id = v_inst.root_node)
               ELSE (SELECT a.error FROM df.node_attempt_history a
                      WHERE a.instance_id = v_id AND a.kind = 'attempt' AND a.status = 'failed'
                        AND a.finished_at >= s.t0 AND a.finished_at < s.t1
                      ORDER BY a.finished_at DESC LIMIT 1)
           END
      FROM spans s
     ORDER BY s.execution_id DESC
     LIMIT limit_count;
END;
$fn$;
COMMENT ON FUNCTION df.instance_executions(text, integer) IS
    'Executions of an instance (the first run plus one per df.retry), newest first';

-- Nodes with a read-time inferred status:
--   * a node of a loop iteration that has finished while the LOOP waits to start the next one
--     (superseded) reads 'pending', from that LOOP;
--   * completed/failed nodes read as they are;
--   * a pending/running node under a decided ancestor reads 'skipped', from the nearest such
--     ancestor: a completed/failed ancestor (the right side of a failed THEN, a still-running
--     race loser, the rest of a loop body after BREAK), or a running IF whose other arm started
--     (the untaken arm);
--   * in a cancelled instance the remaining running nodes read 'cancelled' and pending ones
--     'skipped'; in a completed/failed instance remaining nodes read 'skipped' (no ancestor id:
--     the instance decided it).
-- result and status_details are the stored JSON as text (pg_durable's result columns).
CREATE OR REPLACE FUNCTION df.instance_nodes(instance_id_param text)
RETURNS TABLE (node_id text, node_type text, query text, result_name text, left_node text,
               right_node text, status text, result text, status_details text,
               inferred_status text, inferred_status_from_ancestor_id text,
               updated_at timestamptz)
LANGUAGE plpgsql STABLE STRICT
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    v_id     text := $1;
    v_status text;
    v_root   text;
BEGIN
    SELECT i.status, i.root_node INTO v_status, v_root FROM df.instances i WHERE i.id = v_id;
    IF v_status IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH RECURSIVE n AS MATERIALIZED (
        SELECT x.id::text AS id, x.node_type, x.query, x.result_name, x.left_node::text AS left_node,
               x.right_node::text AS right_node, x.status, x.result, x.status_details, x.updated_at,
               CASE WHEN x.node_type IN ('IF', 'LOOP') AND x.query ~ '^\s*\{'
                    THEN x.query::jsonb ->> 'condition_node' END AS cond,
               CASE WHEN x.node_type = 'JOIN' AND x.query ~ '^\s*\{'
                    THEN x.query::jsonb -> 'extra_nodes' END AS extras
          FROM df.nodes x WHERE x.instance_id = v_id
    ), flags AS MATERIALIZED (
        SELECT p.id,
               p.status IN ('completed', 'failed') AS decided,
               CASE WHEN p.node_type = 'IF' AND p.status = 'running' THEN
                    CASE WHEN l.status <> 'pending' THEN p.right_node
                         WHEN r.status <> 'pending' THEN p.left_node END
               END AS untaken,
               (p.node_type = 'LOOP' AND p.status = 'running' AND l.status = 'completed'
                AND (p.cond IS NULL OR c.status IN ('completed', 'failed'))) AS between_iterations,
               p.cond AS loop_cond
          FROM n p
          LEFT JOIN n l ON l.id = p.left_node
          LEFT JOIN n r ON r.id = p.right_node
          LEFT JOIN n c ON c.id = p.cond
    ), edges AS MATERIALIZED (
        SELECT p.id AS parent, e.child, e.ord
          FROM n p
          CROSS JOIN LATERAL (VALUES (p.cond, CASE WHEN p.node_type = 'LOOP' THEN 9 ELSE 0 END),
                                     (p.left_node, 1), (p.right_node, 2)) AS e(child, ord)
         WHERE e.child IS NOT NULL
        UNION ALL
        SELECT p.id, x.value, 2 + x.ordinality::integer
          FROM n p
          CROSS JOIN LATERAL jsonb_array_elements_text(
                 CASE WHEN jsonb_typeof(p.extras) = 'array' THEN p.extras ELSE '[]'::jsonb END)
                 WITH ORDINALITY AS x(value, ordinality)
    ), tree AS (
        SELECT v_root AS id, ARRAY[0] AS ord, 1 AS depth,
               NULL::text AS sup_id, NULL::text AS dec_id
        UNION ALL
        SELECT e.child, t.ord || e.ord, t.depth + 1,
               coalesce(t.sup_id, CASE WHEN f.between_iterations THEN t.id END),
               CASE WHEN f.decided OR e.child = f.untaken THEN t.id ELSE t.dec_id END
          FROM tree t
          JOIN edges e ON e.parent = t.id
          JOIN flags f ON f.id = t.id
         WHERE t.depth < 1000
    ), placed AS (
        SELECT DISTINCT ON (t.id) t.id, t.ord, t.sup_id, t.dec_id FROM tree t ORDER BY t.id, t.depth
    )
    SELECT n.id, n.node_type, n.query, n.result_name, n.left_node, n.right_node, n.status,
           n.result::text, n.status_details::text,
           CASE
               WHEN pl.sup_id IS NOT NULL AND v_status NOT IN ('completed', 'failed', 'cancelled') THEN 'pending'
               WHEN n.status IN ('completed', 'failed') THEN n.status
               WHEN pl.dec_id IS NOT NULL THEN 'skipped'
               WHEN v_status = 'cancelled' THEN CASE n.status WHEN 'running' THEN 'cancelled' ELSE 'skipped' END
               WHEN v_status IN ('completed', 'failed') THEN 'skipped'
               ELSE n.status
           END,
           CASE
               WHEN pl.sup_id IS NOT NULL AND v_status NOT IN ('completed', 'failed', 'cancelled') THEN pl.sup_id
               WHEN n.status IN ('completed', 'failed') THEN NULL
               ELSE pl.dec_id
           END,
           n.updated_at
      FROM n
      LEFT JOIN placed pl ON pl.id = n.id
     ORDER BY pl.ord NULLS LAST, n.id;
END;
$fn$;
COMMENT ON FUNCTION df.instance_nodes(text) IS
    'Nodes of an instance with inferred_status (skipped/pending/cancelled derived at read time)';

-- pg_durable's pre-0.2.4 shape, kept by pg_durable as a compatibility overload: a projection of
-- df.nodes with a constant execution_id of 1; the second argument is ignored.
CREATE OR REPLACE FUNCTION df.instance_nodes(instance_id_param text, _last_n_executions integer)
RETURNS TABLE (execution_id bigint, node_id text, node_type text, query text, result_name text,
               left_node text, right_node text, status text, result text,
               updated_at timestamptz)
LANGUAGE sql STABLE STRICT
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT 1::bigint, n.id::text, n.node_type, n.query, n.result_name, n.left_node::text,
           n.right_node::text, n.status, n.result::text, n.updated_at
      FROM df.nodes n
     WHERE n.instance_id = $1
$fn$;
COMMENT ON FUNCTION df.instance_nodes(text, integer) IS
    'pg_durable compatibility: df.nodes rows of an instance in the pre-0.2.4 result shape';

-- Engines and their heartbeats: visible to every granted role (no instance data in here), with
-- each engine's HTTP egress policy (df.http() reads it when a graph is built) and its fairness
-- defaults (role_limits.sql; role_max_running NULL = all live engines' workers minus one).
-- steps_done counts every role's steps, so an ordinary role watching it would see other roles'
-- activity (when and how much they run): it is NULL unless the caller is a superuser or a
-- member of the df owner (issue 13, "no role can watch another's work"); an ordinary role's
-- own throughput is df.step_rate, which counts its own steps only.
CREATE OR REPLACE VIEW df.engines WITH (security_barrier = true) AS
SELECT e.id,
       e.host,
       e.pid,
       e.version,
       e.started_at,
       e.heartbeat_at,
       e.stopped_at,
       e.concurrency,
       CASE WHEN (SELECT df_internal.sees_every_instance(r.oid) FROM pg_catalog.pg_roles r
                   WHERE r.rolname OPERATOR(pg_catalog.=) current_user)
            THEN e.steps_done END AS steps_done,
       CASE WHEN e.stopped_at IS NOT NULL THEN 'stopped'
            WHEN e.heartbeat_at > pg_catalog.now() - interval '60 seconds' THEN 'alive'
            ELSE 'stale' END AS state,
       e.http_policy,
       e.http_allow,
       e.http_allow_private,
       e.role_max_running,
       e.step_timeout_ms
  FROM df_internal.engines e;

-- ---------------------------------------------------------------------------------------------
-- Engine-side monitoring views and the installation-wide counters (unchanged since 0.1.0)
-- ---------------------------------------------------------------------------------------------

-- Engine-side state of each instance: timing, current execution number (1 + retries), the
-- final output/error and the cancel reason.
CREATE OR REPLACE VIEW df.instance_runtime WITH (security_barrier = true) AS
SELECT s.instance_id::text                    AS instance_id,
       i.submitted_by,
       df_internal.effective_status(i.status, s.unpublished_status) AS status,
       s.started_at,
       s.finished_at,
       s.execution,
       s.output,
       s.error,
       s.cancel_reason,
       s.retry_policy,
       (SELECT count(*) FROM df_internal.signals g
         WHERE g.instance_id = s.instance_id AND g.consumed_at IS NULL) AS pending_signals,
       -- A step of a 'pending' instance is executing now: the status reads 'pending' until the
       -- first checkpoint commits (the claim, the step and its checkpoint are one transaction),
       -- so a long first step would look queued. The engine commits each batch's task keys to
       -- df_internal.inflight before running it (engine/journal.py); the task still queued and
       -- due at that generation means its batch has not committed yet. (Appended last: views
       -- may only gain columns at the end.)
       i.status = 'pending' AND EXISTS (
           SELECT 1 FROM df_internal.inflight f
            CROSS JOIN LATERAL unnest(f.instance_ids, f.node_ids, f.gens) AS k(i, n, g)
             JOIN df_internal.tasks t ON t.instance_id = k.i AND t.node_id = k.n AND t.gen = k.g
            WHERE s.instance_id = ANY (f.instance_ids) AND k.i = s.instance_id
              AND t.run_at <= now()) AS step_running
  FROM df_internal.instance_state s
  JOIN df.instances i ON i.id = s.instance_id
 WHERE i.submitted_by = pg_catalog.quote_ident(current_user)::regrole
    OR (SELECT df_internal.sees_every_instance(r.oid)
          FROM pg_catalog.pg_roles r WHERE r.rolname = current_user);

-- Per-node engine data: parent link, generation, attempts, loop iteration, timing, the SQL that
-- actually ran (after substitution).
CREATE OR REPLACE VIEW df.node_runs WITH (security_barrier = true) AS
SELECT m.instance_id::text AS instance_id,
       m.node_id::text     AS node_id,
       m.parent_id::text   AS parent_id,
       m.slot,
       n.node_type,
       n.status,
       n.error,
       m.gen,
       m.attempts,
       m.iteration,
       m.retry_policy,
       m.started_at,
       m.finished_at,
       (extract(epoch FROM (m.finished_at - m.started_at)) * 1000)::bigint AS duration_ms,
       m.ran_sql
  FROM df_internal.node_meta m
  JOIN df.instances i ON i.id = m.instance_id
  JOIN df.nodes n ON n.instance_id = m.instance_id AND n.id = m.node_id
 WHERE i.submitted_by = pg_catalog.quote_ident(current_user)::regrole
    OR (SELECT df_internal.sees_every_instance(r.oid)
          FROM pg_catalog.pg_roles r WHERE r.rolname = current_user);

-- Every execution attempt of a leaf node / loop iteration (kind 'attempt'), plus one row per
-- df.retry (kind 'retry': who and when) on the node it resumed: the from_node, else the node
-- whose failure was retried, else the root.
CREATE OR REPLACE VIEW df.node_attempt_history WITH (security_barrier = true) AS
SELECT h.*
  FROM (
    SELECT a.instance_id::text AS instance_id,
           a.node_id::text     AS node_id,
           'attempt'::text     AS kind,
           a.iteration,
           a.attempt,
           a.status,
           a.started_at,
           a.finished_at,
           (extract(epoch FROM (a.finished_at - a.started_at)) * 1000)::bigint AS duration_ms,
           a.error,
           a.ran_sql,
           a.engine_id,
           NULL::regrole       AS requested_by
      FROM df_internal.node_attempts a
    UNION ALL
    SELECT r.instance_id::text,
           coalesce(r.from_node,
                    (SELECT a.node_id FROM df_internal.node_attempts a
                      WHERE a.instance_id = r.instance_id AND a.status = 'failed'
                        AND a.finished_at <= r.requested_at
                      ORDER BY a.finished_at DESC, a.id DESC LIMIT 1),
                    (SELECT i2.root_node FROM df.instances i2 WHERE i2.id = r.instance_id))::text,
           'retry',
           NULL::integer,
           NULL::integer,
           'retried from ' || r.previous_status,
           r.requested_at,
           r.requested_at,
           0::bigint,
           NULL::text,
           NULL::text,
           NULL::text,
           r.requested_by
      FROM df_internal.retries r
  ) h
  JOIN df.instances i ON i.id = h.instance_id
 WHERE i.submitted_by = pg_catalog.quote_ident(current_user)::regrole
    OR (SELECT df_internal.sees_every_instance(rr.oid)
          FROM pg_catalog.pg_roles rr WHERE rr.rolname = current_user);

-- Archived LOOP iterations: the body's node states before each new iteration began.
CREATE OR REPLACE VIEW df.loop_history WITH (security_barrier = true) AS
SELECT l.instance_id::text  AS instance_id,
       l.loop_node_id::text AS loop_node_id,
       l.iteration,
       l.started_at,
       l.finished_at,
       l.nodes
  FROM df_internal.loop_iterations l
  JOIN df.instances i ON i.id = l.instance_id
 WHERE i.submitted_by = pg_catalog.quote_ident(current_user)::regrole
    OR (SELECT df_internal.sees_every_instance(r.oid)
          FROM pg_catalog.pg_roles r WHERE r.rolname = current_user);

-- Who retried what and when (one row per df.retry).
CREATE OR REPLACE VIEW df.retry_history WITH (security_barrier = true) AS
SELECT r.instance_id::text AS instance_id,
       (pg_catalog.row_number() OVER (PARTITION BY r.instance_id ORDER BY r.id) + 1)::integer
                           AS execution,
       r.requested_by,
       r.requested_at,
       r.from_node::text   AS from_node,
       r.previous_status
  FROM df_internal.retries r
  JOIN df.instances i ON i.id = r.instance_id
 WHERE i.submitted_by = pg_catalog.quote_ident(current_user)::regrole
    OR (SELECT df_internal.sees_every_instance(rr.oid)
          FROM pg_catalog.pg_roles rr WHERE rr.rolname = current_user);

-- Whole-installation counters. SECURITY DEFINER because they span every role's instances; only
-- superusers and delegated admins (df.grant_usage(..., with_grant => true)) may execute it.
CREATE OR REPLACE FUNCTION df.metrics()
RETURNS TABLE (total_instances bigint, running_instances bigint, completed_instances bigint,
               failed_instances bigint, total_executions bigint, total_events bigint)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT (SELECT count(*) FROM df.instances),
           (SELECT count(*) FROM df.instances i WHERE i.status = 'running'),
           (SELECT count(*) FROM df.instances i WHERE i.status = 'completed'),
           (SELECT count(*) FROM df.instances i WHERE i.status = 'failed'),
           (SELECT coalesce(sum(s.execution), 0)::bigint FROM df_internal.instance_state s),
           (SELECT count(*) FROM df_internal.node_attempts)
$fn$;
