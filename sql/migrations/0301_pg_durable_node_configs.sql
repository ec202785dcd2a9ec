-- pg_durable 0.2.6 surface, part 2: node configs stored in df.nodes.query are rewritten into the
-- shapes pg_durable's DSL writes (and dftui's DSL now writes, sql/routines/dsl.sql), so a
-- monitoring query written for pg_durable (n.query::jsonb ->> 'signal_name', ...) reads every
-- instance, including those started before the upgrade, and they keep running:
--   SIGNAL         {"name": n, "timeout_seconds": t}  -> {"signal_name": n, "timeout_seconds": t}
--   WAIT_SCHEDULE  <cron text>                        -> {"cron_expr": <cron text>}
--   BREAK          <the value's JSON>                 -> {"break_value": <the value as text | null>}
--   IF (if_rows)   {"if_rows": r}                     -> {"condition_type": "result_has_rows", "result_name": r}
--   IF/LOOP/JOIN   {"condition_node": "x"} (jsonb text, with spaces) -> compact, as pg_durable
-- Configs are written as compact text in pg_durable's key order. Rows whose config does not
-- parse (hand-made) are left alone: the engine's graph check reports them as before.

UPDATE df.nodes n
   SET query = '{"signal_name":' || pg_catalog.to_json(c.cfg ->> 'name')::text
               || ',"timeout_seconds":' || coalesce((c.cfg -> 'timeout_seconds')::text, 'null') || '}'
  FROM (SELECT x.instance_id, x.id, df_internal.try_jsonb(x.query) AS cfg
          FROM df.nodes x WHERE x.node_type OPERATOR(pg_catalog.=) 'SIGNAL') c
 WHERE n.instance_id OPERATOR(pg_catalog.=) c.instance_id AND n.id OPERATOR(pg_catalog.=) c.id
   AND pg_catalog.jsonb_typeof(c.cfg) OPERATOR(pg_catalog.=) 'object'
   AND c.cfg ? 'name' AND NOT c.cfg ? 'signal_name';

UPDATE df.nodes n
   SET query = '{"cron_expr":' || pg_catalog.to_json(n.query)::text || '}'
 WHERE n.node_type OPERATOR(pg_catalog.=) 'WAIT_SCHEDULE'
   AND n.query IS NOT NULL AND pg_catalog.ltrim(n.query) OPERATOR(pg_catalog.!~~) '{%';

UPDATE df.nodes n
   SET query = '{"break_value":'
               || coalesce(pg_catalog.to_json(CASE
                      WHEN c.cfg IS NULL THEN n.query
                      WHEN pg_catalog.jsonb_typeof(c.cfg) OPERATOR(pg_catalog.=) 'null' THEN NULL
                      WHEN pg_catalog.jsonb_typeof(c.cfg) OPERATOR(pg_catalog.=) 'string' THEN c.cfg #>> '{}'
                      ELSE n.query END)::text, 'null') || '}'
  FROM (SELECT x.instance_id, x.id, df_internal.try_jsonb(x.query) AS cfg
          FROM df.nodes x WHERE x.node_type OPERATOR(pg_catalog.=) 'BREAK') c
 WHERE n.instance_id OPERATOR(pg_catalog.=) c.instance_id AND n.id OPERATOR(pg_catalog.=) c.id
   AND NOT (pg_catalog.jsonb_typeof(c.cfg) IS NOT DISTINCT FROM 'object' AND c.cfg ? 'break_value');

UPDATE df.nodes n
   SET query = '{"condition_type":"result_has_rows","result_name":'
               || pg_catalog.to_json(c.cfg ->> 'if_rows')::text || '}'
  FROM (SELECT x.instance_id, x.id, df_internal.try_jsonb(x.query) AS cfg
          FROM df.nodes x WHERE x.node_type OPERATOR(pg_catalog.=) 'IF') c
 WHERE n.instance_id OPERATOR(pg_catalog.=) c.instance_id AND n.id OPERATOR(pg_catalog.=) c.id
   AND pg_catalog.jsonb_typeof(c.cfg) OPERATOR(pg_catalog.=) 'object' AND c.cfg ? 'if_rows';

UPDATE df.nodes n
   SET query = CASE WHEN c.cfg ? 'condition_node'
                    THEN '{"condition_node":' || pg_catalog.to_json(c.cfg ->> 'condition_node')::text || '}'
                    ELSE '{"extra_nodes":' || pg_catalog.array_to_json(ARRAY(
                             SELECT pg_catalog.jsonb_array_elements_text(c.cfg -> 'extra_nodes')))::text || '}' END
  FROM (SELECT x.instance_id, x.id, df_internal.try_jsonb(x.query) AS cfg
          FROM df.nodes x WHERE x.node_type OPERATOR(pg_catalog.=) ANY (ARRAY['IF', 'LOOP', 'JOIN'])) c
 WHERE n.instance_id OPERATOR(pg_catalog.=) c.instance_id AND n.id OPERATOR(pg_catalog.=) c.id
   AND pg_catalog.jsonb_typeof(c.cfg) OPERATOR(pg_catalog.=) 'object'
   AND (SELECT pg_catalog.count(*) FROM pg_catalog.jsonb_object_keys(c.cfg)) OPERATOR(pg_catalog.=) 1
   AND ((c.cfg ? 'condition_node'
         AND pg_catalog.jsonb_typeof(c.cfg -> 'condition_node') OPERATOR(pg_catalog.=) 'string')
        OR (c.cfg ? 'extra_nodes'
            AND pg_catalog.jsonb_typeof(c.cfg -> 'extra_nodes') OPERATOR(pg_catalog.=) 'array'));
