-- Graph bookkeeping of an instance's node tree: which rows each node references
-- (child_refs), the parent links and slots derived from them once at start (build_node_meta,
-- in df_internal.node_meta), and the walks over that tree the interpreter and df.retry use
-- (subtree, branches, reset_subtree). The interpreter itself is interpreter.sql.
--
-- Routines are re-applied on every install and upgrade (engine/schema.py): keep every statement
-- idempotent (CREATE OR REPLACE) and schema-qualified.

-- The node rows each node of an instance references, with the slot they fill. The one place
-- that knows how node_type, left_node, right_node and the query config encode children (see the
-- node-row table in docs/engine.md). Configs must be valid JSON (check_graph checks first).
CREATE OR REPLACE FUNCTION df_internal.child_refs(p_instance varchar)
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
CREATE OR REPLACE FUNCTION df_internal.build_node_meta(p_instance varchar)
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

-- The ids of a node and all its descendants (through node_meta parent links).
CREATE OR REPLACE FUNCTION df_internal.subtree(p_instance varchar, p_node varchar)
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

-- Children of a composite node in branch order (JOIN: left, right, extras).
CREATE OR REPLACE FUNCTION df_internal.branches(p_instance varchar, p_node varchar)
RETURNS varchar[] LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ARRAY[n.left_node, n.right_node]
           || COALESCE((SELECT array_agg(e.value::varchar ORDER BY e.ordinality)
                          FROM jsonb_array_elements_text(
                                 CASE WHEN n.query IS NOT NULL AND n.query::jsonb ? 'extra_nodes'
                                      THEN n.query::jsonb -> 'extra_nodes' END)
                               WITH ORDINALITY AS e(value, ordinality)), '{}')
      FROM df.nodes n WHERE n.instance_id = p_instance AND n.id = p_node
$$;

-- Reset a subtree to pending for the next loop iteration or a retry, archiving nothing.
CREATE OR REPLACE FUNCTION df_internal.reset_subtree(p_instance varchar, p_node varchar, p_keep_completed boolean)
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
