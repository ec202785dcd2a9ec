-- Validation of an instance before it starts: its graph (check_graph, which the engine runs for
-- hand-made instances too, whatever bypassed df.start), node configs parsed leniently
-- (try_jsonb) and the retry policies handed over in df.start_meta (check_start_meta).
--
-- Routines are re-applied on every install and upgrade (engine/schema.py): keep every statement
-- idempotent (CREATE OR REPLACE) and schema-qualified.

-- text -> jsonb, NULL when it does not parse (node configs written by direct DML).
CREATE OR REPLACE FUNCTION df_internal.try_jsonb(p text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN p::jsonb;
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;
END $$;

-- The retry policies handed over in df.start_meta, validated like df.start does (the setting
-- can be forged by anyone who inserts rows by hand; the engine trusts these policies).
CREATE OR REPLACE FUNCTION df_internal.check_start_meta(p_meta jsonb) RETURNS void
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

-- Check the graph of an instance before it starts. df.start validates strictly, but a granted
-- role may also INSERT df.instances / df.nodes directly (pg_durable's column grants), so the
-- engine must not trust the rows: a cycle or a shared child would unfold forever, a malformed
-- config would make every claim of the instance fail. Raises with a description of the first
-- problem; start_instance turns that into a failed instance.
CREATE OR REPLACE FUNCTION df_internal.check_graph(p_instance varchar) RETURNS void
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
    -- The size limit first, on the instance's rows (an index count): what is reachable is a
    -- subset, and nothing below may walk an unbounded hand-made graph inside the engine's claim.
    SELECT count(*) INTO total FROM df.nodes x WHERE x.instance_id = p_instance;
    IF total > 10000 THEN
        RAISE EXCEPTION 'Workflow exceeds maximum node count of 10000 (% nodes)', total;
    END IF;
    SELECT string_agg(format('%s (%s)', x.id, x.node_type), ', ' ORDER BY x.id) INTO bad
      FROM df.nodes x
     WHERE x.instance_id = p_instance
       AND df_internal.has_config(x.node_type)
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

    -- The walk from the root, linear: each level looks its children up by primary key (the
    -- children a node names: the same references as df_internal.child_refs). A join against the
    -- whole edge list at every level was quadratic (19 s for an 8,000-node chain, in the claim).
    -- UNION ALL is safe: the tree check above means no node is reached twice.
    WITH RECURSIVE reach AS (
        SELECT x.id, x.node_type, x.query, x.left_node, x.right_node
          FROM df.nodes x WHERE x.instance_id = p_instance AND x.id = root
        UNION ALL
        SELECT y.id, y.node_type, y.query, y.left_node, y.right_node
          FROM reach r
         CROSS JOIN LATERAL (
             SELECT r.left_node WHERE r.left_node IS NOT NULL
             UNION ALL
             SELECT r.right_node WHERE r.right_node IS NOT NULL
             UNION ALL
             SELECT (r.query::jsonb ->> 'condition_node')::varchar
              WHERE r.node_type IN ('IF', 'LOOP') AND r.query IS NOT NULL AND r.query::jsonb ? 'condition_node'
             UNION ALL
             SELECT e.value::varchar
               FROM jsonb_array_elements_text(CASE WHEN r.node_type = 'JOIN' AND r.query IS NOT NULL
                                                   THEN r.query::jsonb -> 'extra_nodes' END) AS e(value)
         ) c(child)
          JOIN df.nodes y ON y.instance_id = p_instance AND y.id = c.child
    )
    SELECT count(*),
           string_agg(format('%s (%s)', x.id, x.node_type), ', ' ORDER BY x.id) FILTER (WHERE NOT CASE x.node_type
        WHEN 'SQL' THEN btrim(x.query, E' \t\r\n;') <> ''
        WHEN 'SLEEP' THEN x.query ~ '^\s*[0-9]{1,12}\s*$'
        WHEN 'WAIT_SCHEDULE' THEN btrim(x.query) <> ''
            AND (ltrim(x.query) NOT LIKE '{%'
                 OR jsonb_typeof(df_internal.try_jsonb(x.query) -> 'cron_expr') = 'string')
        WHEN 'BREAK' THEN true
        WHEN 'SIGNAL' THEN jsonb_typeof(x.query::jsonb) = 'object'
            AND jsonb_typeof(coalesce(x.query::jsonb -> 'signal_name', x.query::jsonb -> 'name')) = 'string'
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
            AND ((x.query::jsonb ? 'condition_node')
                 <> (x.query::jsonb ? 'if_rows'
                     OR coalesce(x.query::jsonb ->> 'condition_type' = 'result_has_rows', false)))
            AND COALESCE(jsonb_typeof(coalesce(x.query::jsonb -> 'result_name', x.query::jsonb -> 'if_rows')),
                         'string') = 'string'
        ELSE true   -- THEN, JOIN, RACE, LOOP: shape checked by constraints and above
     END)
      INTO total, bad
      FROM reach x;
    IF total > 10000 THEN
        RAISE EXCEPTION 'Workflow exceeds maximum node count of 10000 (% nodes)', total;
    END IF;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'invalid node configuration: %', bad;
    END IF;
END $$;
