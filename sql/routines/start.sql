-- df.start (sql-api.md §3) and its helpers.
--
-- df.start has pg_durable's exact signature, df.start(text, text, text, text); the instance-wide
-- retry policy (+) has its own entry point, df.start_with_retry(fut, retry_policy, label,
-- database, transaction_mode), which holds the implementation.
--
-- Routines are re-applied on every install and upgrade (engine/schema.py): keep every statement
-- idempotent (CREATE OR REPLACE) and schema-qualified.

-- ---------------------------------------------------------------------------------------------
-- df.graph_nodes: parse and validate a workflow strictly and return the rows df.start writes.
-- ---------------------------------------------------------------------------------------------
-- One row per node in pre-order (root first), with fresh 8-hex node ids that are unique within
-- the graph, the parent link and slot (root, left, right, body, condition, loop_condition,
-- extra), and the node's materialised query exactly as stored in df.nodes (IF / LOOP conditions
-- and JOIN extras are separate rows referenced from the parent's query config).
-- Errors read `Invalid durable function graph: <path>: <problem>`, the path naming the node
-- (root, root.left, root.extra_nodes[0], ...). Used by df.start and df.explain; also handy on
-- its own to see what a start would write.
CREATE OR REPLACE FUNCTION df.graph_nodes(fut text)
RETURNS TABLE (node_id text, parent_id text, slot text, depth integer, node_type text,
               query text, result_name text, left_node text, right_node text,
               retry_policy jsonb)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    c_types     constant text[] := ARRAY['SQL', 'THEN', 'IF', 'JOIN', 'LOOP', 'BREAK', 'RACE',
                                         'SLEEP', 'WAIT_SCHEDULE', 'HTTP', 'HTTP_MULTIPART',
                                         'SIGNAL'];
    c_max_depth constant integer := 256;
    c_max_nodes constant integer := 10000;
    -- Node ids: base + k * odd constant (mod 2^32) is a bijection on k, so ids are distinct
    -- by construction yet look random.
    c_mult      constant bigint := 2654435761;
    v_base      bigint;
    v_next      bigint := 0;
    v_root      jsonb;
    -- explicit stack (a deep graph must not recurse in plpgsql)
    st_node     jsonb[] := ARRAY[]::jsonb[];
    st_id       text[] := ARRAY[]::text[];
    st_parent   text[] := ARRAY[]::text[];
    st_slot     text[] := ARRAY[]::text[];
    st_depth    integer[] := ARRAY[]::integer[];
    st_path     text[] := ARRAY[]::text[];
    v_top       integer := 0;
    cur         jsonb;
    cur_id      text;
    cur_path    text;
    cur_depth   integer;
    t           text;
    q           text;
    rn          text;
    l           jsonb;
    r           jsonb;
    cnd         jsonb;
    ex          jsonb;
    rp          jsonb;
    cfg         jsonb;
    v_query     text;
    kids        jsonb[];
    kid_slots   text[];
    kid_paths   text[];
    kid_ids     text[];
    i           integer;
    k           text;
    v_state     text;
    v_msg       text;
BEGIN
    IF fut IS NULL THEN
        RAISE EXCEPTION 'Invalid durable function graph: root: the workflow must not be NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF ltrim(fut, E' \t\r\n') LIKE '{%' THEN
        BEGIN
            v_root := fut::jsonb;
        EXCEPTION
            WHEN invalid_text_representation THEN
                v_root := NULL;
            WHEN statement_too_complex THEN
                RAISE EXCEPTION 'Invalid durable function graph: root: Graph exceeds maximum nesting depth of %. Simplify the workflow or break it into multiple instances.',
                    c_max_depth USING ERRCODE = 'program_limit_exceeded';
        END;
    END IF;
    IF v_root IS NULL OR jsonb_typeof(v_root) <> 'object'
       OR NOT (v_root ? 'node_type' OR v_root ? '_partial_if') THEN
        v_root := jsonb_build_object('node_type', 'SQL', 'query', fut);
    END IF;

    v_base := ('x' || left(md5(gen_random_uuid()::text), 8))::bit(32)::bigint;

    v_top := 1;
    st_node[1] := v_root;
    st_id[1] := lpad(to_hex(v_base), 8, '0');
    v_next := 1;
    st_parent[1] := NULL;
    st_slot[1] := 'root';
    st_depth[1] := 0;
    st_path[1] := 'root';

    WHILE v_top > 0 LOOP
        cur := st_node[v_top];
        cur_id := st_id[v_top];
        cur_path := st_path[v_top];
        cur_depth := st_depth[v_top];
        node_id := cur_id;
        parent_id := st_parent[v_top];
        slot := st_slot[v_top];
        depth := cur_depth;
        v_top := v_top - 1;

        IF cur_depth > c_max_depth THEN
            RAISE EXCEPTION 'Invalid durable function graph: %: Graph exceeds maximum nesting depth of %. Simplify the workflow or break it into multiple instances.',
                cur_path, c_max_depth USING ERRCODE = 'program_limit_exceeded';
        END IF;

        BEGIN
            -- ---- generic shape ----
            IF NOT cur ? 'node_type' THEN
                IF cur ? '_partial_if' THEN
                    RAISE EXCEPTION 'incomplete conditional: "cond ?> then" must be followed by "!> else"';
                END IF;
                RAISE EXCEPTION 'node envelope has no node_type';
            END IF;
            IF jsonb_typeof(cur->'node_type') <> 'string' THEN
                RAISE EXCEPTION 'node_type must be a string';
            END IF;
            t := cur->>'node_type';
            IF NOT t = ANY (c_types) THEN
                RAISE EXCEPTION 'Unknown node_type ''%''. Valid types: %', t, array_to_string(c_types, ', ')
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            FOREACH k IN ARRAY ARRAY['query', 'result_name'] LOOP
                IF jsonb_typeof(cur->k) NOT IN ('string', 'null') THEN
                    RAISE EXCEPTION '% must be a string', k;
                END IF;
            END LOOP;
            q := cur->>'query';
            rn := cur->>'result_name';
            IF rn IS NOT NULL AND rn !~ '^[A-Za-z_][A-Za-z0-9_]*$' THEN
                RAISE EXCEPTION 'result name ''%'' is not a valid identifier — must match [a-zA-Z_][a-zA-Z0-9_]*', rn
                    USING ERRCODE = 'invalid_name';
            END IF;
            FOREACH k IN ARRAY ARRAY['left_node', 'right_node'] LOOP
                IF jsonb_typeof(cur->k) NOT IN ('object', 'null') THEN
                    RAISE EXCEPTION 'Durofut children must be JSON objects (% is %)', k, jsonb_typeof(cur->k);
                END IF;
            END LOOP;
            l := CASE WHEN jsonb_typeof(cur->'left_node') = 'object' THEN cur->'left_node' END;
            r := CASE WHEN jsonb_typeof(cur->'right_node') = 'object' THEN cur->'right_node' END;
            IF jsonb_typeof(cur->'condition_node') NOT IN ('object', 'null') THEN
                RAISE EXCEPTION 'condition_node must be a Durofut JSON object';
            END IF;
            cnd := CASE WHEN jsonb_typeof(cur->'condition_node') = 'object' THEN cur->'condition_node' END;
            ex := NULL;
            IF jsonb_typeof(cur->'extra_nodes') NOT IN ('null') THEN
                IF jsonb_typeof(cur->'extra_nodes') <> 'array'
                   OR EXISTS (SELECT 1 FROM jsonb_array_elements(cur->'extra_nodes') e
                               WHERE jsonb_typeof(e) <> 'object') THEN
                    RAISE EXCEPTION 'extra_nodes entries must be Durofut JSON objects';
                END IF;
                IF jsonb_array_length(cur->'extra_nodes') > 0 THEN
                    ex := cur->'extra_nodes';
                END IF;
            END IF;
            IF cnd IS NOT NULL AND t NOT IN ('IF', 'LOOP') THEN
                RAISE EXCEPTION 'condition_node is not valid for % nodes', t;
            END IF;
            IF ex IS NOT NULL AND t <> 'JOIN' THEN
                RAISE EXCEPTION 'extra_nodes is not valid for % nodes', t;
            END IF;

            -- ---- retry policy: validated (and canonicalised) by df.retry_policy ----
            rp := NULL;
            IF jsonb_typeof(cur->'retry_policy') NOT IN ('null') THEN
                rp := cur->'retry_policy';
                IF jsonb_typeof(rp) <> 'object'
                   OR jsonb_typeof(rp->'max_attempts') IS DISTINCT FROM 'number'
                   OR jsonb_typeof(rp->'backoff_seconds') NOT IN ('number', 'null')
                   OR jsonb_typeof(rp->'max_backoff_seconds') NOT IN ('number', 'null')
                   OR jsonb_typeof(rp->'retry_on') NOT IN ('array', 'null')
                   OR EXISTS (SELECT 1 FROM jsonb_array_elements(
                                  CASE WHEN jsonb_typeof(rp->'retry_on') = 'array'
                                       THEN rp->'retry_on' ELSE '[]'::jsonb END) e
                               WHERE jsonb_typeof(e) <> 'string') THEN
                    RAISE EXCEPTION 'retry_policy must be {"max_attempts": integer, "backoff_seconds": number, "max_backoff_seconds": number, "retry_on": [text] | null}';
                END IF;
                IF (rp->>'max_attempts')::numeric <> trunc((rp->>'max_attempts')::numeric) THEN
                    RAISE EXCEPTION 'retry policy: max_attempts must be an integer';
                END IF;
                rp := (df.retry_policy('SELECT 1',
                          (rp->>'max_attempts')::numeric::integer,
                          coalesce((rp->>'backoff_seconds')::double precision, 1),
                          coalesce((rp->>'max_backoff_seconds')::double precision, 60),
                          CASE WHEN jsonb_typeof(rp->'retry_on') = 'array'
                               THEN ARRAY(SELECT jsonb_array_elements_text(rp->'retry_on')) END
                       )::jsonb)->'retry_policy';
            END IF;

            -- Configs embedded the pg_durable-0.1 way are refused rather than guessed at.
            cfg := NULL;
            IF q IS NOT NULL AND t IN ('IF', 'LOOP', 'JOIN') THEN
                BEGIN
                    cfg := q::jsonb;
                EXCEPTION WHEN invalid_text_representation THEN
                    GET STACKED DIAGNOSTICS v_msg = MESSAGE_TEXT;
                    RAISE EXCEPTION 'query in % must be valid JSON config: %', t, v_msg;
                END;
                IF jsonb_typeof(cfg) <> 'object' THEN
                    RAISE EXCEPTION 'query in % must be a JSON config object', t;
                END IF;
                IF t IN ('IF', 'LOOP') AND cfg ? 'condition_node' THEN
                    RAISE EXCEPTION 'condition_node in % must be a first-class Durofut field, not embedded in query', t;
                END IF;
                IF t = 'JOIN' AND cfg ? 'extra_nodes' THEN
                    RAISE EXCEPTION 'extra_nodes in JOIN must be a first-class Durofut field, not embedded in query';
                END IF;
            END IF;

            -- ---- per node type ----
            v_query := NULL;
            CASE
                WHEN t IN ('THEN', 'RACE', 'JOIN') THEN
                    IF l IS NULL OR r IS NULL THEN
                        RAISE EXCEPTION '% nodes need both left_node and right_node', t;
                    END IF;
                    IF t <> 'JOIN' AND q IS NOT NULL THEN
                        RAISE EXCEPTION '% nodes take no query', t;
                    END IF;
                WHEN t = 'IF' THEN
                    IF l IS NULL OR r IS NULL THEN
                        RAISE EXCEPTION 'IF nodes need left_node (then) and right_node (else)';
                    END IF;
                    -- df.if_rows: pg_durable's {"condition_type": "result_has_rows",
                    -- "result_name": ...}; 0.1.0's {"if_rows": ...} is read too.
                    IF cfg IS NOT NULL AND cfg ? 'if_rows' AND NOT cfg ? 'condition_type' THEN
                        cfg := jsonb_build_object('condition_type', 'result_has_rows',
                                                  'result_name', cfg->'if_rows');
                    END IF;
                    IF cnd IS NULL THEN
                        IF cfg IS NULL OR cfg->>'condition_type' IS DISTINCT FROM 'result_has_rows' THEN
                            RAISE EXCEPTION 'IF nodes need a condition_node (or a {"condition_type": "result_has_rows", "result_name": "<result name>"} query config)';
                        END IF;
                        IF jsonb_typeof(cfg->'result_name') IS DISTINCT FROM 'string'
                           OR cfg->>'result_name' !~ '^[A-Za-z_][A-Za-z0-9_]*$' THEN
                            RAISE EXCEPTION '"%" is not a valid identifier: result_name must name a result', cfg->>'result_name'
                                USING ERRCODE = 'invalid_name';
                        END IF;
                    ELSIF cfg ? 'condition_type' THEN
                        RAISE EXCEPTION 'IF nodes take either a condition_node or an if_rows config, not both';
                    END IF;
                WHEN t = 'LOOP' THEN
                    IF l IS NULL THEN
                        RAISE EXCEPTION 'LOOP nodes need a body (left_node)';
                    END IF;
                    IF r IS NOT NULL THEN
                        RAISE EXCEPTION 'LOOP nodes take no right_node (the do-while condition is condition_node)';
                    END IF;
                ELSE
                    -- leaves
                    IF l IS NOT NULL OR r IS NOT NULL THEN
                        RAISE EXCEPTION '% nodes take no child nodes', t;
                    END IF;
                    CASE t
                        WHEN 'SQL' THEN
                            IF q IS NULL OR btrim(q, E' \t\r\n;') = '' THEN
                                RAISE EXCEPTION 'SQL nodes need a non-empty query';
                            END IF;
                            v_query := q;
                        WHEN 'BREAK' THEN
                            -- pg_durable's {"break_value": <text or null>}; 0.1.0 stored the
                            -- value's JSON itself.
                            cfg := NULL;
                            IF q IS NOT NULL THEN
                                BEGIN
                                    cfg := q::jsonb;
                                EXCEPTION WHEN invalid_text_representation THEN
                                    cfg := to_jsonb(q);   -- a bare text value
                                END;
                            END IF;
                            IF jsonb_typeof(cfg) = 'object' AND cfg ? 'break_value' THEN
                                IF jsonb_typeof(cfg->'break_value') NOT IN ('string', 'null') THEN
                                    RAISE EXCEPTION 'BREAK config needs a string or null "break_value"';
                                END IF;
                                v_query := (df.break(cfg->>'break_value')::jsonb)->>'query';
                            ELSE
                                v_query := (df.break(CASE WHEN jsonb_typeof(cfg) = 'string' THEN cfg #>> '{}'
                                                          WHEN cfg IS NULL OR jsonb_typeof(cfg) = 'null' THEN NULL
                                                          ELSE q END)::jsonb)->>'query';
                            END IF;
                        WHEN 'SLEEP' THEN
                            IF q IS NULL OR q !~ '^\s*-?[0-9]{1,18}\s*$' THEN
                                RAISE EXCEPTION 'SLEEP nodes need a whole number of seconds as query (got %)',
                                    coalesce('"' || q || '"', 'NULL');
                            END IF;
                            v_query := (df.sleep(btrim(q)::bigint)::jsonb)->>'query';
                        WHEN 'WAIT_SCHEDULE' THEN
                            -- pg_durable stores {"cron_expr": ...}; accept it.
                            IF q IS NOT NULL AND ltrim(q) LIKE '{%' THEN
                                BEGIN
                                    q := q::jsonb->>'cron_expr';
                                EXCEPTION WHEN invalid_text_representation THEN
                                    NULL;
                                END;
                            END IF;
                            v_query := (df.wait_for_schedule(q)::jsonb)->>'query';
                        WHEN 'SIGNAL' THEN
                            BEGIN
                                cfg := q::jsonb;
                            EXCEPTION WHEN invalid_text_representation THEN
                                cfg := NULL;
                            END;
                            IF cfg IS NULL OR jsonb_typeof(cfg) <> 'object' THEN
                                RAISE EXCEPTION 'SIGNAL nodes need a {"name": ..., "timeout_seconds": ...} query config';
                            END IF;
                            IF jsonb_typeof(coalesce(cfg->'name', cfg->'signal_name')) IS DISTINCT FROM 'string'
                               OR jsonb_typeof(cfg->'timeout_seconds') NOT IN ('number', 'null') THEN
                                RAISE EXCEPTION 'SIGNAL config needs a string "name" and an integer or null "timeout_seconds"';
                            END IF;
                            v_query := (df.wait_for_signal(coalesce(cfg->>'name', cfg->>'signal_name'),
                                                           (cfg->>'timeout_seconds')::numeric::integer)::jsonb)->>'query';
                        WHEN 'HTTP', 'HTTP_MULTIPART' THEN
                            IF NOT has_function_privilege('df.http(text,text,text,jsonb,integer)', 'EXECUTE')
                               OR (t = 'HTTP_MULTIPART' AND NOT has_function_privilege(
                                       'df.http_multipart(text,text,jsonb,jsonb,integer)', 'EXECUTE')) THEN
                                RAISE EXCEPTION 'role % does not have EXECUTE privilege on df.http(); an administrator can grant it with df.grant_usage(role, include_http => true)',
                                    quote_ident(current_user) USING ERRCODE = 'insufficient_privilege';
                            END IF;
                            BEGIN
                                cfg := q::jsonb;
                            EXCEPTION WHEN invalid_text_representation THEN
                                cfg := NULL;
                            END;
                            IF cfg IS NULL OR jsonb_typeof(cfg) <> 'object'
                               OR jsonb_typeof(cfg->'url') IS DISTINCT FROM 'string'
                               OR jsonb_typeof(cfg->'method') NOT IN ('string', 'null')
                               OR jsonb_typeof(cfg->'timeout_seconds') NOT IN ('number', 'null')
                               OR jsonb_typeof(cfg->'headers') NOT IN ('object', 'null') THEN
                                RAISE EXCEPTION '% nodes need a {"url","method","%","headers","timeout_seconds"} query config',
                                    t, CASE t WHEN 'HTTP' THEN 'body' ELSE 'parts' END;
                            END IF;
                            -- A hand-made HTTP node bypasses the engines' "disabled" check of
                            -- df.http(), as in pg_durable (the engine refuses it when it runs).
                            PERFORM set_config('df.building_graph', 'on', true);
                            IF t = 'HTTP' THEN
                                IF jsonb_typeof(cfg->'body') NOT IN ('string', 'null') THEN
                                    RAISE EXCEPTION 'HTTP config "body" must be a string';
                                END IF;
                                v_query := (df.http(cfg->>'url', coalesce(cfg->>'method', 'POST'),
                                                    cfg->>'body',
                                                    CASE WHEN jsonb_typeof(cfg->'headers') = 'object' THEN cfg->'headers' END,
                                                    coalesce((cfg->>'timeout_seconds')::numeric::integer, 30)
                                            )::jsonb)->>'query';
                            ELSE
                                v_query := (df.http_multipart(cfg->>'url', coalesce(cfg->>'method', 'POST'),
                                                    CASE WHEN jsonb_typeof(cfg->'parts') <> 'null' THEN cfg->'parts' END,
                                                    CASE WHEN jsonb_typeof(cfg->'headers') = 'object' THEN cfg->'headers' END,
                                                    coalesce((cfg->>'timeout_seconds')::numeric::integer, 30)
                                            )::jsonb)->>'query';
                            END IF;
                            PERFORM set_config('df.building_graph', '', true);
                    END CASE;
            END CASE;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT;
            IF v_msg LIKE 'Invalid durable function graph:%' THEN
                RAISE EXCEPTION USING ERRCODE = v_state, MESSAGE = v_msg;
            END IF;
            IF v_state = 'P0001' THEN
                v_state := '22023';  -- plain RAISE above: report as invalid_parameter_value
            END IF;
            RAISE EXCEPTION USING ERRCODE = v_state,
                MESSAGE = 'Invalid durable function graph: ' || cur_path || ': ' || v_msg;
        END;

        -- ---- children: ids in discovery order, pushed reversed for pre-order ----
        kids := ARRAY[]::jsonb[];
        kid_slots := ARRAY[]::text[];
        kid_paths := ARRAY[]::text[];
        IF l IS NOT NULL THEN
            kids := kids || l;
            kid_slots := kid_slots || CASE WHEN t = 'LOOP' THEN 'body' ELSE 'left' END;
            kid_paths := kid_paths || (cur_path || '.left');
        END IF;
        IF r IS NOT NULL THEN
            kids := kids || r;
            kid_slots := kid_slots || 'right'::text;
            kid_paths := kid_paths || (cur_path || '.right');
        END IF;
        IF cnd IS NOT NULL THEN
            kids := kids || cnd;
            kid_slots := kid_slots || CASE WHEN t = 'LOOP' THEN 'loop_condition' ELSE 'condition' END;
            kid_paths := kid_paths || (cur_path || '.condition_node');
        END IF;
        IF ex IS NOT NULL THEN
            FOR i IN 0 .. jsonb_array_length(ex) - 1 LOOP
                kids := kids || (ex->i);
                kid_slots := kid_slots || 'extra'::text;
                kid_paths := kid_paths || (cur_path || '.extra_nodes[' || i || ']');
            END LOOP;
        END IF;
        kid_ids := ARRAY[]::text[];
        FOR i IN 1 .. coalesce(array_length(kids, 1), 0) LOOP
            IF v_next >= c_max_nodes THEN
                RAISE EXCEPTION 'Invalid durable function graph: %: Workflow exceeds maximum node count of %. Simplify the workflow or break it into multiple instances.',
                    kid_paths[i], c_max_nodes USING ERRCODE = 'program_limit_exceeded';
            END IF;
            kid_ids := kid_ids || lpad(to_hex((v_base + v_next * c_mult) % 4294967296), 8, '0');
            v_next := v_next + 1;
        END LOOP;
        FOR i IN REVERSE coalesce(array_length(kids, 1), 0) .. 1 LOOP
            v_top := v_top + 1;
            st_node[v_top] := kids[i];
            st_id[v_top] := kid_ids[i];
            st_parent[v_top] := cur_id;
            st_slot[v_top] := kid_slots[i];
            st_depth[v_top] := cur_depth + 1;
            st_path[v_top] := kid_paths[i];
        END LOOP;

        -- ---- the row as stored in df.nodes ----
        left_node := NULL;
        right_node := NULL;
        i := 1;
        IF l IS NOT NULL THEN left_node := kid_ids[i]; i := i + 1; END IF;
        IF r IS NOT NULL THEN right_node := kid_ids[i]; i := i + 1; END IF;
        -- Configs are written compact, as pg_durable writes them ({"condition_node":"<id>"}).
        IF t = 'IF' THEN
            IF cnd IS NOT NULL AND coalesce(cfg, '{}'::jsonb) = '{}'::jsonb THEN
                v_query := '{"condition_node":' || to_json(kid_ids[i])::text || '}';
            ELSIF cnd IS NOT NULL THEN
                v_query := (cfg || jsonb_build_object('condition_node', kid_ids[i]))::text;
            ELSE
                v_query := '{"condition_type":"result_has_rows","result_name":'
                           || to_json(cfg->>'result_name')::text || '}';
            END IF;
        ELSIF t = 'LOOP' THEN
            IF cnd IS NOT NULL AND coalesce(cfg, '{}'::jsonb) = '{}'::jsonb THEN
                v_query := '{"condition_node":' || to_json(kid_ids[i])::text || '}';
            ELSIF cnd IS NOT NULL THEN
                v_query := (cfg || jsonb_build_object('condition_node', kid_ids[i]))::text;
            ELSE
                v_query := cfg::text;
            END IF;
        ELSIF t = 'JOIN' THEN
            IF ex IS NOT NULL AND coalesce(cfg, '{}'::jsonb) = '{}'::jsonb THEN
                v_query := '{"extra_nodes":' || array_to_json(kid_ids[i:])::text || '}';
            ELSIF ex IS NOT NULL THEN
                v_query := (cfg || jsonb_build_object('extra_nodes', to_jsonb(kid_ids[i:])))::text;
            ELSE
                v_query := cfg::text;
            END IF;
        END IF;
        node_type := t;
        query := v_query;
        result_name := rn;
        retry_policy := rp;
        RETURN NEXT;
    END LOOP;
END;
$fn$;
COMMENT ON FUNCTION df.graph_nodes(text) IS
    'Validate a workflow strictly and return the df.nodes rows a start would write (pre-order, root first)';

CREATE OR REPLACE FUNCTION df.start_in_new_transaction(fut text, label text, database text,
                                            retry_policy jsonb, as_role text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_schema   text;
    v_can      boolean;
    v_sql      text;
    v_conn     text;
    v_hosts    text[];
    v_host     text;
    v_id       text;
    v_err      text;
    v_detail   text;
    v_state    text;
    v_super    text := lower(coalesce(current_setting('pg_durable.enable_superuser_instances', true), ''));
BEGIN
    -- Inside a workflow step session_user is the engine, not the submitter: its memberships
    -- must not be borrowed (security.md, execution identity).
    IF df_internal.in_engine_step() THEN
        RAISE EXCEPTION 'transaction_mode => ''new'' cannot be used inside a workflow step'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- The loopback logs in as as_role, so only accept roles the session could become anyway:
    -- itself, or a role it may SET ROLE to. (A SECURITY DEFINER wrapper owned by a role the
    -- session cannot become is refused; use transaction_mode => 'caller' there.)
    IF as_role IS NULL OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = as_role) THEN
        RAISE EXCEPTION 'role "%" does not exist', coalesce(as_role, 'NULL')
            USING ERRCODE = 'undefined_object';
    END IF;
    IF current_setting('server_version_num')::integer >= 160000 THEN
        v_can := pg_has_role(session_user, as_role, 'SET');
    ELSE
        v_can := pg_has_role(session_user, as_role, 'MEMBER');
    END IF;
    IF NOT v_can THEN
        RAISE EXCEPTION 'df.start(transaction_mode => ''new'') can only start as the session user or a role it may SET ROLE to ("%" is neither)',
            as_role USING ERRCODE = 'insufficient_privilege';
    END IF;

    SELECT n.nspname INTO v_schema
      FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = 'dblink';
    IF v_schema IS NULL THEN
        RAISE EXCEPTION 'df.start(transaction_mode => ''new'') needs the dblink extension, which is not installed in this database'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Install the PostgreSQL contrib package and run CREATE EXTENSION dblink, or use transaction_mode => ''caller''.';
    END IF;

    v_sql := format('SELECT df.start_with_retry(%L, %L::jsonb, %L, %L, %L)', fut, retry_policy::text,
                    label, database, 'caller');

    -- Prefer the Unix socket, fall back to TCP loopback.
    v_hosts := ARRAY(SELECT btrim(d) FROM unnest(string_to_array(
                         coalesce(current_setting('unix_socket_directories', true), ''), ',')) d
                      WHERE btrim(d) <> '' LIMIT 1);
    IF coalesce(current_setting('listen_addresses', true), '') <> '' THEN
        v_hosts := v_hosts || 'localhost'::text;
    END IF;
    FOREACH v_host IN ARRAY v_hosts LOOP
        v_conn := format('host=%s port=%s dbname=%s user=%s application_name=%s connect_timeout=10',
                         df_internal.conninfo_quote(v_host),
                         df_internal.conninfo_quote(current_setting('port')),
                         df_internal.conninfo_quote(current_database()),
                         df_internal.conninfo_quote(as_role),
                         df_internal.conninfo_quote('dftui: df.start new transaction'));
        IF v_super IN ('on', 'true', 'yes', '1') THEN
            v_conn := v_conn || ' options=' || df_internal.conninfo_quote('-c pg_durable.enable_superuser_instances=on');
        END IF;
        BEGIN
            EXECUTE format('SELECT t.id FROM %I.dblink(%L, %L) AS t(id text)', v_schema, v_conn, v_sql)
               INTO v_id;
            RETURN v_id;
        EXCEPTION WHEN sqlclient_unable_to_establish_sqlconnection THEN
            GET STACKED DIAGNOSTICS v_err = MESSAGE_TEXT, v_detail = PG_EXCEPTION_DETAIL;
            v_detail := coalesce(v_detail, v_err);
        END;
    END LOOP;
    RAISE EXCEPTION 'df.start(transaction_mode => ''new'') could not open a loopback session as role "%": %',
        as_role, coalesce(btrim(v_detail), 'no local connection method (socket or TCP) is configured')
        USING ERRCODE = 'sqlclient_unable_to_establish_sqlconnection',
              HINT = 'The loopback session needs passwordless (trust or peer) local connections for this role; otherwise use transaction_mode => ''caller''.';
END;
$fn$;
COMMENT ON FUNCTION df.start_in_new_transaction(text, text, text, jsonb, text) IS
    'Internal to df.start(transaction_mode => ''new''): run the start in its own committed loopback session';

-- ---------------------------------------------------------------------------------------------
-- df.start
-- ---------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION df.start_with_retry(fut text, retry_policy jsonb,
                                                label text DEFAULT NULL, database text DEFAULT NULL,
                                                transaction_mode text DEFAULT 'caller')
RETURNS text
LANGUAGE plpgsql VOLATILE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_mode      text := lower(btrim(coalesce(transaction_mode, '')));
    v_rp        jsonb;
    v_ids       text[];
    v_types     text[];
    v_queries   text[];
    v_names     text[];
    v_lefts     text[];
    v_rights    text[];
    v_root      text;
    v_policies  jsonb;
    v_role      pg_catalog.pg_roles%ROWTYPE;
    v_id        text;
    v_try       integer := 0;
    v_state     text;
    v_msg       text;
BEGIN
    -- 1. transaction mode
    IF v_mode NOT IN ('caller', 'new') THEN
        RAISE EXCEPTION 'invalid transaction_mode "%" for df.start(): expected ''caller'' or ''new''',
            coalesce(transaction_mode, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- 2. strict graph parse and validation, then the other arguments. pg_durable's strict parse
    -- of the root speaks first: a helper's text return value (df.setvar's 'OK', see dsl.sql) is
    -- no workflow, and an unknown root node type is 'Invalid durable function: …' (deeper
    -- problems are 'Invalid durable function graph: <path>: …', as df.graph_nodes says them).
    IF ltrim(fut, E' \t\r\n') NOT LIKE '{%' THEN
        PERFORM df._refuse_non_future_helper('Invalid durable function: ');
    END IF;
    BEGIN
        SELECT array_agg(g.node_id), array_agg(g.node_type), array_agg(g.query),
               array_agg(g.result_name), array_agg(g.left_node), array_agg(g.right_node),
               (array_agg(g.node_id) FILTER (WHERE g.slot = 'root'))[1],
               jsonb_object_agg(g.node_id, g.retry_policy) FILTER (WHERE g.retry_policy IS NOT NULL)
          INTO v_ids, v_types, v_queries, v_names, v_lefts, v_rights, v_root, v_policies
          FROM df.graph_nodes(fut) g;
    EXCEPTION WHEN invalid_parameter_value THEN
        GET STACKED DIAGNOSTICS v_msg = MESSAGE_TEXT;
        IF v_msg LIKE 'Invalid durable function graph: root: Unknown node_type %' THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE =
                'Invalid durable function: ' || substr(v_msg, length('Invalid durable function graph: root: ') + 1);
        END IF;
        RAISE;
    END;

    IF start_with_retry.label IS NOT NULL AND start_with_retry.label ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'invalid label: labels must not contain control characters (newlines, tabs, ...)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF start_with_retry.retry_policy IS NOT NULL AND jsonb_typeof(start_with_retry.retry_policy) <> 'null' THEN
        BEGIN
            SELECT g.retry_policy INTO v_rp
              FROM df.graph_nodes(jsonb_build_object('node_type', 'SQL', 'query', 'SELECT 1',
                                                     'retry_policy', start_with_retry.retry_policy)::text) g;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT;
            RAISE EXCEPTION USING ERRCODE = v_state, MESSAGE = 'invalid retry_policy for df.start(): '
                || regexp_replace(v_msg, '^Invalid durable function graph: root: ', '');
        END;
    END IF;

    -- 3. target database
    IF start_with_retry.database IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE datname = start_with_retry.database) THEN
        RAISE EXCEPTION 'database "%" does not exist', start_with_retry.database
            USING ERRCODE = 'invalid_catalog_name';
    END IF;

    -- 4. the engine runs every step as this role, so it must be able to log in
    SELECT * INTO v_role FROM pg_catalog.pg_roles WHERE rolname = current_user;
    IF NOT v_role.rolcanlogin THEN
        RAISE EXCEPTION 'current_user "%" does not have LOGIN privilege. The background worker must connect as this role to execute SQL. Grant LOGIN to this role or call df.start() as a role with LOGIN.',
            current_user USING ERRCODE = 'insufficient_privilege',
            DETAIL = 'dftui''s engine runs every step as the submitting role.';
    END IF;

    -- 5. superusers only when explicitly enabled
    -- (a superuser-only setting in pg_durable: df._setting honours the session's own value only
    -- when the session user is a superuser, never a SET of an ordinary role that reached here
    -- through a superuser's SECURITY DEFINER function; read only for superusers, off the hot path)
    IF v_role.rolsuper AND lower(coalesce(df._setting('pg_durable.enable_superuser_instances'), ''))
                           NOT IN ('on', 'true', 'yes', '1') THEN
        RAISE EXCEPTION 'pg_durable: superuser instances are disabled. current_user "%" is a superuser, but pg_durable.enable_superuser_instances is off. Set pg_durable.enable_superuser_instances = on to allow this.',
            current_user USING ERRCODE = 'insufficient_privilege',
            HINT = 'Or start workflows as an ordinary role.';
    END IF;

    IF v_mode = 'new' THEN
        RETURN df.start_in_new_transaction(fut, start_with_retry.label, start_with_retry.database, v_rp, current_user);
    END IF;

    -- Write the rows. A clash with an existing instance id (possibly another role's, invisible
    -- here) rolls back this attempt's rows and re-rolls the id.
    LOOP
        v_try := v_try + 1;
        v_id := left(replace(gen_random_uuid()::text, '-', ''), 8);
        BEGIN
            INSERT INTO df.nodes (id, instance_id, node_type, query, result_name, left_node,
                                  right_node, submitted_by, database)
            SELECT u.id, v_id, u.t, u.q, u.n, u.l, u.r,
                   quote_ident(current_user)::regrole, start_with_retry.database
              FROM unnest(v_ids, v_types, v_queries, v_names, v_lefts, v_rights)
                   AS u(id, t, q, n, l, r);
            PERFORM set_config('df.start_meta',
                jsonb_build_object('instance_retry_policy', v_rp,
                                   'node_retry_policies', coalesce(v_policies, '{}'::jsonb))::text,
                true);
            INSERT INTO df.instances (id, label, root_node, submitted_by, database)
            VALUES (v_id, start_with_retry.label, v_root, quote_ident(current_user)::regrole, start_with_retry.database);
            EXIT;
        EXCEPTION WHEN unique_violation THEN
            IF v_try >= 10 THEN
                RAISE EXCEPTION 'df.start(): could not find a free instance id after % attempts', v_try
                    USING ERRCODE = 'unique_violation';
            END IF;
        END;
    END LOOP;
    PERFORM set_config('df.start_meta', '', true);
    -- Check this start's rows against their deferred foreign keys (nodes -> instance and its
    -- state, instance -> root node) now, inside df.start, rather than at COMMIT: each session plans those checks
    -- once and keeps the plan, and planned at COMMIT on tables VACUUMed empty (a fresh database)
    -- it is a sequential scan that grows with the tables until autovacuum's next ANALYZE
    -- (measured: the first 4,000 starts scanned df.nodes 8,000 times, 15.5 M rows). Here the
    -- function's enable_seqscan = off applies (zz_plans.sql), so the plans use the keys. Back to
    -- DEFERRED, their declared mode, after. (node_meta -> nodes is still checked at COMMIT: its
    -- name is not visible to the caller, and making it immediate needs a lock an upgrade under
    -- a running engine could not get; see docs/scaling.md.) A hand-made graph the caller is still
    -- inserting in this transaction would fail the early check: then nothing changes and COMMIT
    -- checks everything, as before.
    BEGIN
        SET CONSTRAINTS df.nodes_instance_id_submitted_by_fkey, df.nodes_instance_state_fkey,
                        df.instances_root_node_same_instance_fkey IMMEDIATE;
        SET CONSTRAINTS df.nodes_instance_id_submitted_by_fkey, df.nodes_instance_state_fkey,
                        df.instances_root_node_same_instance_fkey DEFERRED;
    EXCEPTION WHEN foreign_key_violation THEN
        NULL;
    END;
    RETURN v_id;
END;
$fn$;
COMMENT ON FUNCTION df.start_with_retry(text, jsonb, text, text, text) IS
    'df.start with an instance-wide default retry policy (nodes without their own df.retry_policy use it)';

-- pg_durable's df.start(fut, label, database, transaction_mode): resolves as
-- df.start(text, text, text, text), so GRANT/REVOKE/DROP/has_function_privilege by that
-- signature work as on pg_durable. SECURITY INVOKER, so current_user is still the caller.
CREATE OR REPLACE FUNCTION df.start(fut text, label text DEFAULT NULL, database text DEFAULT NULL,
                                    transaction_mode text DEFAULT 'caller')
RETURNS text
LANGUAGE sql VOLATILE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT df.start_with_retry($1, NULL::jsonb, $2, $3, $4)
$fn$;
COMMENT ON FUNCTION df.start(text, text, text, text) IS
    'Start a workflow as current_user; returns the 8-hex instance id. transaction_mode ''new'' commits the start on its own';
