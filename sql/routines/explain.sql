-- df.explain — a workflow (or a running instance) as a plain-text tree (sql-api.md §4); the
-- header comment of sql/0.1.0/035_explain.sql describes the input forms and the tree format.
-- Reads pg_durable's node configs (and 0.1.0's).
--
-- Routines are re-applied on every install and upgrade (engine/schema.py): keep every statement
-- idempotent (CREATE OR REPLACE) and schema-qualified.

CREATE OR REPLACE FUNCTION df.explain(input text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_in       text := btrim(coalesce(input, ''), E' \t\r\n');
    v_graph    text;
    v_map      jsonb;
    v_root     text;
    v_status   jsonb;
    v_inst     record;
    v_out      text;
    v_header   text := '';
    v_msg      text;
    v_state    text;
    r          record;
    -- rendering
    st         jsonb[] := ARRAY[]::jsonb[];
    v_top      integer := 0;
    fr         jsonb;
    frames     jsonb[];
    lines      text[] := ARRAY[]::text[];
    n          jsonb;
    v_id       text;
    v_prefix   text;
    v_last     boolean;
    v_conn     text;
    v_cp       text;
    seq        text[];
    sst        text[];
    v_budget   integer;
    i          integer;
    j          integer;
    branches   text[];
    cfg        jsonb;
    q          text;
    v_type     text;
    v_text     text;
    v_label    text;
BEGIN
    IF input IS NULL THEN
        RAISE EXCEPTION 'df.explain(): input must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;

    IF v_in ~ '^[0-9A-Fa-f]{8}$' THEN
        ------------------------------------------------------------------ a live instance
        -- An id the caller cannot see (row-level security) reads exactly as one that does not
        -- exist, and, as pg_durable's explain_instance, is answered with a text, not an error.
        SELECT i.id, i.label, i.status, i.root_node INTO v_inst
          FROM df.instances i WHERE i.id = lower(v_in);
        IF NOT FOUND OR v_inst.root_node IS NULL THEN
            RETURN format('Instance ''%s'' not found', v_in);
        END IF;
        v_in := lower(v_in);
        v_root := v_inst.root_node;
        -- Node statuses as df.instance_nodes infers them (skipped arms, superseded iterations);
        -- fall back to the stored status if that function is unavailable.
        IF to_regprocedure('df.instance_nodes(text)') IS NOT NULL THEN
            BEGIN
                EXECUTE 'SELECT jsonb_object_agg(x.node_id, x.inferred_status) FROM df.instance_nodes($1) x'
                   INTO v_status USING v_in;
            EXCEPTION WHEN OTHERS THEN
                v_status := NULL;
            END;
        END IF;
        SELECT jsonb_object_agg(nd.id, jsonb_build_object(
                   't', nd.node_type, 'q', nd.query, 'n', nd.result_name, 'l', nd.left_node,
                   'r', nd.right_node, 's', coalesce(v_status->>nd.id, nd.status)))
          INTO v_map
          FROM df.nodes nd WHERE nd.instance_id = v_in;
        IF v_map IS NULL THEN
            RETURN format('No nodes found for instance ''%s''', v_in);  -- (pg_durable's text)
        END IF;
        IF to_regprocedure('df.instance_info(text)') IS NOT NULL THEN
            BEGIN
                EXECUTE 'SELECT x.output::text FROM df.instance_info($1) x' INTO v_out USING v_in;
            EXCEPTION WHEN OTHERS THEN
                v_out := NULL;
            END;
        END IF;
        IF v_out IS NULL AND v_inst.status = 'completed' THEN
            SELECT nd.result::text INTO v_out FROM df.nodes nd
             WHERE nd.instance_id = v_in AND nd.id = v_root;
        END IF;
        v_header := 'Instance: ' || v_inst.id || coalesce(' (' || v_inst.label || ')', '') || E'\n'
            || 'Status:   ' || CASE v_inst.status WHEN 'completed' THEN '✓' WHEN 'failed' THEN '✗'
                                   WHEN 'cancelled' THEN '✗' WHEN 'running' THEN '⏳' ELSE '○' END
            || ' ' || v_inst.status || E'\n'
            || coalesce('Output:   ' || CASE WHEN length(v_out) > 60 THEN left(v_out, 57) || '...'
                                              ELSE v_out END || E'\n', '')
            || E'\n';
    ELSE
        ------------------------------------------------------------------ a graph
        IF v_in LIKE '{%'
           OR v_in ~* '^(SELECT|INSERT|UPDATE|DELETE|WITH|CREATE|ALTER|DROP|CALL|DO|TRUNCATE|GRANT|REVOKE|EXPLAIN|VALUES|TABLE|COPY|MERGE|VACUUM|ANALYZE|REFRESH|LOCK|NOTIFY|LISTEN|SET|RESET|SHOW|COMMENT|CLUSTER|REINDEX|BEGIN|COMMIT|ROLLBACK|PREPARE|EXECUTE|DECLARE|FETCH|IMPORT|SECURITY|DISCARD|CHECKPOINT|LOAD)\M' THEN
            v_graph := v_in;  -- an envelope, or plain SQL (df.graph_nodes wraps it)
        ELSIF NOT (v_in ~ '(~>|\|=>|\?>|!>|@>|&|\||df\.)' OR v_in ~ '^(''|[Ee]''|\$|\()') THEN
            -- neither a statement nor an expression (pg_durable's text, word for word)
            RETURN E'Cannot explain input: not a valid Durofut JSON, instance ID, SQL statement, or DSL expression.\n'
                   'Hint: DSL expressions use df.*() functions and operators like ~>, |=>, &, |.';
        ELSE
            BEGIN
                -- One expression only: a cursor cannot be opened over several statements.
                FOR r IN EXECUTE 'SELECT (' || v_in || E'\n)::text AS v' LOOP
                    v_graph := r.v;
                END LOOP;
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT;
                RAISE EXCEPTION USING ERRCODE = v_state,
                    MESSAGE = 'df.explain(): could not evaluate the DSL expression: ' || v_msg;
            END;
            IF v_graph IS NULL THEN
                RETURN 'Expression returned NULL';  -- (pg_durable's text)
            END IF;
        END IF;
        BEGIN
            SELECT jsonb_object_agg(g.node_id, jsonb_build_object(
                       't', g.node_type, 'q', g.query, 'n', g.result_name, 'l', g.left_node,
                       'r', g.right_node)),
                   (array_agg(g.node_id) FILTER (WHERE g.slot = 'root'))[1]
              INTO v_map, v_root
              FROM df.graph_nodes(v_graph) g;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT;
            IF v_msg LIKE 'Invalid durable function graph:%' THEN
                RETURN v_msg;
            END IF;
            RAISE EXCEPTION USING ERRCODE = v_state, MESSAGE = v_msg;
        END;
    END IF;


    ---------------------------------------------------------------------- render
    -- Iterative (an explicit stack of frames) so deep graphs cannot exhaust the plpgsql stack;
    -- a budget stops hand-made cyclic rows from looping forever. Label and child logic is
    -- inline because df.explain runs as the caller, who cannot reach helpers in df_internal.
    v_budget := 8 * (coalesce((SELECT count(*) FROM jsonb_object_keys(v_map)), 0)::integer + 8);
    v_top := 1;
    st[1] := jsonb_build_object('k', 'node', 'id', v_root, 'p', '', 'last', true);
    WHILE v_top > 0 LOOP
        v_budget := v_budget - 1;
        IF v_budget < 0 THEN
            lines := lines || '... (graph truncated: its nodes refer to each other in a cycle)'::text;
            EXIT;
        END IF;
        fr := st[v_top];
        v_top := v_top - 1;
        IF fr->>'k' = 'line' THEN
            lines := lines || (fr->>'s');
            CONTINUE;
        END IF;

        v_id := fr->>'id';
        v_prefix := fr->>'p';
        v_last := (fr->>'last')::boolean;
        v_conn := CASE WHEN v_prefix = '' THEN '' WHEN v_last THEN '└─' ELSE '├─' END;
        n := v_map->v_id;

        -- A THEN chain is drawn as one flattened sequence; any other node as a sequence of one.
        seq := ARRAY[v_id];
        IF n->>'t' = 'THEN' THEN
            seq := ARRAY[]::text[];
            sst := ARRAY[v_id];
            WHILE cardinality(sst) > 0 AND cardinality(seq) < v_budget LOOP
                v_id := sst[cardinality(sst)];
                sst := sst[1:cardinality(sst) - 1];
                IF v_map->v_id->>'t' = 'THEN' THEN
                    IF v_map->v_id->>'r' IS NOT NULL THEN sst := sst || (v_map->v_id->>'r'); END IF;
                    IF v_map->v_id->>'l' IS NOT NULL THEN sst := sst || (v_map->v_id->>'l'); END IF;
                ELSE
                    seq := seq || v_id;
                END IF;
            END LOOP;
            v_cp := v_prefix || '    ';
        ELSE
            v_cp := CASE WHEN v_prefix = '' THEN '    ' WHEN v_last THEN v_prefix || '    '
                         ELSE v_prefix || '│   ' END;
        END IF;

        frames := ARRAY[]::jsonb[];
        FOR i IN 1 .. cardinality(seq) LOOP
            n := v_map->seq[i];
            IF n IS NULL THEN
                frames := frames || jsonb_build_object('k', 'line', 's', v_prefix
                    || CASE WHEN i = 1 THEN v_conn ELSE '→ ' END
                    || '? (missing node ' || coalesce(seq[i], 'NULL') || ')');
                CONTINUE;
            END IF;
            v_type := n->>'t';
            q := n->>'q';
            cfg := NULL;
            IF q IS NOT NULL AND v_type IN ('IF', 'LOOP', 'JOIN', 'SIGNAL', 'HTTP', 'HTTP_MULTIPART',
                                            'BREAK', 'WAIT_SCHEDULE') THEN
                BEGIN
                    cfg := q::jsonb;
                EXCEPTION WHEN OTHERS THEN
                    cfg := NULL;
                END;
            END IF;
            -- Labels as pg_durable's explain prints them (src/explain.rs, format_node_display):
            -- the query as stored, cut at 50 characters; a URL at 40; a string break value at
            -- 20; the cron expression and the signal timeout in its words.
            IF v_type = 'SQL' THEN
                v_text := coalesce(q, '?');
                v_label := 'SQL: ' || CASE WHEN length(v_text) > 50 THEN left(v_text, 47) || '...'
                                           ELSE v_text END;
            ELSIF v_type IN ('HTTP', 'HTTP_MULTIPART') THEN
                v_text := coalesce(cfg->>'url', '?');
                v_label := v_type || ' ' || coalesce(cfg->>'method', 'POST') || ' '
                    || CASE WHEN length(v_text) > 40 THEN left(v_text, 37) || '...' ELSE v_text END;
            ELSIF v_type = 'BREAK' THEN
                -- pg_durable's {"break_value": ...}: shown when it is a string, as pg_durable
                -- does; 0.1.0 stored the value's JSON itself.
                v_text := CASE WHEN jsonb_typeof(cfg) = 'object' AND cfg ? 'break_value'
                               THEN CASE WHEN jsonb_typeof(cfg->'break_value') = 'string'
                                         THEN cfg->>'break_value' END
                               ELSE nullif(coalesce(cfg #>> '{}', q), 'null') END;
                v_label := 'BREAK' || CASE WHEN v_text IS NULL THEN ''
                                           WHEN length(v_text) > 20 THEN ' ''' || left(v_text, 17) || '...'''
                                           ELSE ' ''' || v_text || '''' END;
            ELSE
                v_label := CASE v_type
                    WHEN 'SLEEP' THEN 'SLEEP ' || coalesce(q, '?') || 's'
                    WHEN 'WAIT_SCHEDULE' THEN 'WAIT ''' || coalesce(cfg->>'cron_expr',
                        CASE WHEN cfg IS NULL THEN q END, '?') || ''''
                    WHEN 'SIGNAL' THEN 'SIGNAL ''' || coalesce(cfg->>'signal_name', cfg->>'name', '?')
                        || '''' || CASE WHEN jsonb_typeof(cfg->'timeout_seconds') = 'number'
                                        THEN ' (' || (cfg->>'timeout_seconds') || 's)' ELSE '' END
                    WHEN 'LOOP' THEN CASE WHEN cfg ? 'condition_node' THEN 'LOOP (while)'
                                          ELSE 'LOOP (infinite)' END
                    WHEN 'IF' THEN 'IF'  -- df.if_rows too: pg_durable names no result there
                    WHEN 'JOIN' THEN 'JOIN (' || ((n->>'l' IS NOT NULL)::integer
                                                  + (n->>'r' IS NOT NULL)::integer
                                                  + CASE WHEN jsonb_typeof(cfg->'extra_nodes') = 'array'
                                                         THEN jsonb_array_length(cfg->'extra_nodes')
                                                         ELSE 0 END) || ')'
                    WHEN 'THEN' THEN 'SEQUENCE'
                    ELSE coalesce(v_type, '?')
                END;
            END IF;
            v_label := v_label || coalesce(' |=> ''' || (n->>'n') || '''', '')
                || CASE n->>'s' WHEN 'completed' THEN ' ✓' WHEN 'failed' THEN ' ✗'
                                WHEN 'running' THEN ' ⏳' WHEN 'pending' THEN ' ○'
                                WHEN 'skipped' THEN ' ⊘' ELSE '' END;
            frames := frames || jsonb_build_object('k', 'line', 's',
                v_prefix || CASE WHEN i = 1 THEN v_conn ELSE '→ ' END || v_label);

            -- what is drawn under the node
            IF v_type = 'LOOP' THEN
                IF n->>'l' IS NOT NULL THEN
                    frames := frames
                        || jsonb_build_object('k', 'line', 's', v_cp || '↻ body:')
                        || jsonb_build_object('k', 'node', 'id', n->>'l', 'p', v_cp || '  ', 'last', true);
                END IF;
                IF cfg->>'condition_node' IS NOT NULL THEN
                    frames := frames
                        || jsonb_build_object('k', 'line', 's', v_cp || '? while:')
                        || jsonb_build_object('k', 'node', 'id', cfg->>'condition_node', 'p', v_cp || '  ',
                                              'last', true);
                END IF;
            ELSIF v_type = 'IF' THEN
                IF cfg->>'condition_node' IS NOT NULL THEN
                    frames := frames
                        || jsonb_build_object('k', 'line', 's', v_cp || '? condition:')
                        || jsonb_build_object('k', 'node', 'id', cfg->>'condition_node', 'p', v_cp || '  ',
                                              'last', true);
                END IF;
                IF n->>'l' IS NOT NULL THEN
                    frames := frames
                        || jsonb_build_object('k', 'line', 's', v_cp || '✓ then:')
                        || jsonb_build_object('k', 'node', 'id', n->>'l', 'p', v_cp || '  ', 'last', true);
                END IF;
                IF n->>'r' IS NOT NULL THEN
                    frames := frames
                        || jsonb_build_object('k', 'line', 's', v_cp || '✗ else:')
                        || jsonb_build_object('k', 'node', 'id', n->>'r', 'p', v_cp || '  ', 'last', true);
                END IF;
            ELSIF v_type IN ('JOIN', 'RACE') THEN
                branches := array_remove(ARRAY[n->>'l', n->>'r'], NULL);
                IF jsonb_typeof(cfg->'extra_nodes') = 'array' THEN
                    branches := branches || ARRAY(SELECT jsonb_array_elements_text(cfg->'extra_nodes'));
                END IF;
                FOR j IN 1 .. coalesce(cardinality(branches), 0) LOOP
                    frames := frames
                        || jsonb_build_object('k', 'line', 's', v_cp || '║ branch ' || j || ':')
                        || jsonb_build_object('k', 'node', 'id', branches[j], 'p', v_cp || '  ',
                                              'last', j = cardinality(branches));
                END LOOP;
            END IF;
        END LOOP;

        FOR i IN REVERSE cardinality(frames) .. 1 LOOP
            v_top := v_top + 1;
            st[v_top] := frames[i];
        END LOOP;
    END LOOP;

    -- As pg_durable: the tree's text split into lines (a query's own line breaks included), each
    -- padded with spaces to the longest line plus four.
    v_text := rtrim(array_to_string(lines, E'\n'), E' \t\r\n');
    SELECT max(length(l)) + 4 INTO j FROM regexp_split_to_table(v_text, E'\r?\n') AS l;
    RETURN v_header || (SELECT string_agg(rpad(l, j), E'\n' ORDER BY o)
                          FROM regexp_split_to_table(v_text, E'\r?\n') WITH ORDINALITY AS t(l, o));
END;
$fn$;
COMMENT ON FUNCTION df.explain(text) IS
    'Explain an instance id, a node envelope, DSL text or plain SQL as a text tree (invalid graphs are returned as text)';
