-- DSL node builders whose definition changed since 0.1.0 (sql-api.md §1).
--
-- Routines are re-applied on every install and upgrade (engine/schema.py): keep every statement
-- idempotent (CREATE OR REPLACE) and schema-qualified.

-- Standard 5-field cron (minute hour day-of-month month day-of-week, UTC; 0 or 7 = Sunday;
-- names JAN-DEC / SUN-SAT; lists, ranges and steps). Validated here so a bad schedule is
-- rejected when the graph is built, not when the timer is due.
CREATE OR REPLACE FUNCTION df.wait_for_schedule(cron_expr text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    fields   text[];
    labels   text[] := ARRAY['minute', 'hour', 'day-of-month', 'month', 'day-of-week'];
    lo       int[] := ARRAY[0, 0, 1, 1, 0];
    hi       int[] := ARRAY[59, 23, 31, 12, 7];
    months   text[] := ARRAY['JAN', 'FEB', 'MAR', 'APR', 'MAY', 'JUN', 'JUL', 'AUG', 'SEP',
                             'OCT', 'NOV', 'DEC'];
    days     text[] := ARRAY['SUN', 'MON', 'TUE', 'WED', 'THU', 'FRI', 'SAT'];
    i        int;
    item     text;
    m        text[];
    a        int;
    b        int;
    tok      text;
    vals     int[];
    j        int;
    v_norm   text;
BEGIN
    IF cron_expr IS NULL OR btrim(cron_expr) = '' THEN
        RAISE EXCEPTION 'Invalid cron expression '''': it must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_norm := regexp_replace(btrim(cron_expr, E' \t\r\n'), '\s+', ' ', 'g');
    fields := string_to_array(v_norm, ' ');
    IF array_length(fields, 1) <> 5 THEN
        RAISE EXCEPTION 'Invalid cron expression ''%'': expected 5 fields (minute hour day-of-month month day-of-week), got %',
            cron_expr, array_length(fields, 1) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR i IN 1..5 LOOP
        FOREACH item IN ARRAY string_to_array(fields[i], ',') LOOP
            m := regexp_match(upper(item), '^(\*|[0-9A-Z]+(?:-[0-9A-Z]+)?)(?:/([0-9]+))?$');
            IF m IS NULL THEN
                RAISE EXCEPTION 'Invalid cron expression ''%'': bad % field "%"', cron_expr, labels[i], fields[i]
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            IF m[2] IS NOT NULL AND (length(m[2]) > 4 OR m[2]::int < 1 OR m[2]::int > hi[i]) THEN
                RAISE EXCEPTION 'Invalid cron expression ''%'': step "/%" in the % field must be between 1 and %',
                    cron_expr, m[2], labels[i], hi[i] USING ERRCODE = 'invalid_parameter_value';
            END IF;
            IF m[1] <> '*' THEN
                vals := ARRAY[]::int[];
                FOREACH tok IN ARRAY string_to_array(m[1], '-') LOOP
                    IF tok ~ '^[0-9]{1,4}$' THEN
                        j := tok::int;
                    ELSIF i = 4 AND array_position(months, tok) IS NOT NULL THEN
                        j := array_position(months, tok);
                    ELSIF i = 5 AND array_position(days, tok) IS NOT NULL THEN
                        j := array_position(days, tok) - 1;
                    ELSE
                        RAISE EXCEPTION 'Invalid cron expression ''%'': "%" is not a valid % value',
                            cron_expr, tok, labels[i] USING ERRCODE = 'invalid_parameter_value';
                    END IF;
                    IF j < lo[i] OR j > hi[i] THEN
                        RAISE EXCEPTION 'Invalid cron expression ''%'': % value % is out of range %-%',
                            cron_expr, labels[i], j, lo[i], hi[i] USING ERRCODE = 'invalid_parameter_value';
                    END IF;
                    vals := vals || j;
                END LOOP;
                a := vals[1];
                b := coalesce(vals[2], vals[1]);
                IF a > b THEN
                    RAISE EXCEPTION 'Invalid cron expression ''%'': range %-% in the % field is reversed',
                        cron_expr, a, b, labels[i] USING ERRCODE = 'invalid_parameter_value';
                END IF;
            END IF;
        END LOOP;
    END LOOP;
    -- Stored as pg_durable stores it: {"cron_expr": <the expression as given>}.
    RETURN '{"node_type":"WAIT_SCHEDULE","query":'
        || to_json('{"cron_expr":' || to_json(cron_expr)::text || '}')::text || '}';
END;
$fn$;
COMMENT ON FUNCTION df.wait_for_schedule(text) IS
    'WAIT_SCHEDULE node: wait until the next UTC match of a standard 5-field cron expression';


-- pg_durable's SIGNAL config: {"signal_name": <name>, "timeout_seconds": <seconds or null>}.
CREATE OR REPLACE FUNCTION df.wait_for_signal(name text, timeout_seconds integer DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF name IS NULL OR btrim(name) = '' THEN
        -- pg_durable's texts (src/dsl.rs), word for word; dftui's specifics in the detail
        RAISE EXCEPTION 'Signal name cannot be empty' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'df.wait_for_signal(): the signal name must not be empty or blank.';
    END IF;
    IF timeout_seconds IS NOT NULL AND timeout_seconds <= 0 THEN
        RAISE EXCEPTION 'Timeout must be positive' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('df.wait_for_signal(): timeout_seconds was %s.', timeout_seconds);
    END IF;
    RETURN '{"node_type":"SIGNAL","query":'
        || to_json('{"signal_name":' || to_json(name)::text || ',"timeout_seconds":'
                   || coalesce(timeout_seconds::text, 'null') || '}')::text || '}';
END;
$fn$;
COMMENT ON FUNCTION df.wait_for_signal(text, integer) IS
    'SIGNAL node: consume the oldest queued signal of that name; result {"signal_name","timed_out","data"}';

-- pg_durable's BREAK config: {"break_value": <the value as given, or null>}. The value is not
-- run as SQL; when the node runs, the loop's result is the value as JSON when it parses, else a
-- JSON string (null without a value).
CREATE OR REPLACE FUNCTION df.break(value text DEFAULT NULL)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT '{"node_type":"BREAK","query":'
        || to_json('{"break_value":' || coalesce(to_json(value)::text, 'null') || '}')::text || '}'
$fn$;
COMMENT ON FUNCTION df.break(text) IS
    'BREAK node: leave the nearest loop; the value (JSON if it parses, else a JSON string) is the loop''s result';

-- pg_durable's df.if_rows config: {"condition_type": "result_has_rows", "result_name": <name>}.
CREATE OR REPLACE FUNCTION df.if_rows(result_name text, then_branch text, else_branch text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    -- (pg_durable takes any name here; one that no result can have is refused at once)
    IF result_name !~ '^[A-Za-z_][A-Za-z0-9_]*$' THEN
        RAISE EXCEPTION 'df.if_rows: result name ''%'' is not a valid identifier — must match [a-zA-Z_][a-zA-Z0-9_]*',
            result_name USING ERRCODE = 'invalid_name';
    END IF;
    RETURN '{"node_type":"IF","query":'
        || to_json('{"condition_type":"result_has_rows","result_name":' || to_json(result_name)::text || '}')::text
        || ',"left_node":' || df.ensure_durofut(then_branch)
        || ',"right_node":' || df.ensure_durofut(else_branch) || '}';
END;
$fn$;
COMMENT ON FUNCTION df.if_rows(text, text, text) IS
    'IF node that is true when the named result has rows (no query runs)';

-- URL checks shared by df.http and df.http_multipart, applied when the graph is built. The
-- authoritative egress policy is the engines' configuration, which every running engine
-- records (df.engines.http_policy): while all alive engines have it `disabled`, df.http()
-- raises `df.http() is disabled` (like pg_durable built without HTTP). Otherwise each request
-- is checked by the engine when it runs (allowlist; under allow-all a public bare IP passes,
-- private/loopback/link-local/CGNAT addresses never do, after DNS resolution). Settings an
-- operator may set to mirror the policy add build-time checks:
--   pg_durable.http_security: disabled | restricted | unrestricted (unset: only the scheme check)
--   pg_durable.http_allowed_domains: comma-separated domain suffixes (restricted mode)
-- URLs with {var} or $name placeholders are checked by the engine after substitution.
CREATE OR REPLACE FUNCTION df.http(url text, method text DEFAULT 'POST', body text DEFAULT NULL,
                        headers jsonb DEFAULT NULL, timeout_seconds integer DEFAULT 30)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_security text := lower(coalesce(current_setting('pg_durable.http_security', true), ''));
    v_domains  text := coalesce(current_setting('pg_durable.http_allowed_domains', true), '');
    v_method   text := upper(btrim(coalesce(method, '')));
    v_scheme   text;
    v_host     text;
    v_ok       boolean;
    d          text;
    eng        record;
BEGIN
    -- The running engines' policy, as pg_durable's compiled-in one: while every alive engine
    -- has HTTP disabled, df.http() is disabled. Otherwise the engines check each request when
    -- it runs (allowlist, and private addresses after DNS resolution); the mirror settings
    -- below may add build-time checks.
    SELECT count(*) AS alive, bool_and(e.http_policy = 'disabled') AS all_disabled
      INTO eng
      FROM df.engines e
     WHERE e.state = 'alive' AND e.http_policy IS NOT NULL;
    IF eng.alive > 0 AND eng.all_disabled
       AND coalesce(current_setting('df.building_graph', true), '') <> 'on' THEN
        v_security := 'disabled';
    END IF;
    IF v_security = 'disabled' THEN
        RAISE EXCEPTION 'df.http() is disabled: outbound HTTP requests are turned off (%)',
            CASE WHEN eng.alive > 0 AND eng.all_disabled THEN 'the running engines'' --http-policy is disabled'
                 ELSE 'pg_durable.http_security = disabled' END
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Start the engine with --http-policy allowlist --http-allow DOMAIN, or --http-policy allow-all.';
    END IF;
    IF url IS NULL OR btrim(url) = '' THEN
        RAISE EXCEPTION 'df.http(): url must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF strpos(url, '{') = 0 AND strpos(url, '$') = 0 THEN
        v_scheme := lower((regexp_match(btrim(url), '^([A-Za-z][A-Za-z0-9+.-]*):'))[1]);
        IF v_scheme IS NULL OR v_scheme NOT IN ('http', 'https')
           OR btrim(url) !~* '^https?://[^/?#]' THEN
            -- pg_durable's text (src/ssrf.rs), its scheme being what precedes "://"
            RAISE EXCEPTION 'Blocked: unsupported URL scheme ''%''. Only http and https are allowed.',
                lower(split_part(btrim(url), '://', 1)) USING ERRCODE = 'invalid_parameter_value',
                DETAIL = format('The URL was "%s"; it needs http:// or https:// and a host.', url);
        END IF;
        -- authority without userinfo and port
        v_host := (regexp_match(btrim(url), '^[A-Za-z]+://(?:[^/?#@]*@)?(\[[^\]]*\]|[^/?#:]*)'))[1];
        v_host := lower(rtrim(coalesce(v_host, ''), '.'));
        IF v_security = 'restricted' THEN
            IF v_host LIKE '[%' OR v_host ~ '^[0-9]+(\.[0-9]+){0,3}$'
               OR v_host ~ '^0x[0-9a-f]+$' THEN
                RAISE EXCEPTION 'Blocked: bare IP address "%" in URL "%": use a host name (pg_durable.http_security = restricted)',
                    v_host, url USING ERRCODE = 'invalid_parameter_value';
            END IF;
            IF btrim(v_domains) <> '' THEN
                v_ok := false;
                FOREACH d IN ARRAY string_to_array(v_domains, ',') LOOP
                    d := lower(btrim(btrim(d), '.'));
                    IF d <> '' AND (v_host = d OR right(v_host, length(d) + 1) = '.' || d) THEN
                        v_ok := true;
                    END IF;
                END LOOP;
                IF NOT v_ok THEN
                    RAISE EXCEPTION 'Blocked: host "%" is not in the allowed domains (pg_durable.http_allowed_domains)',
                        v_host USING ERRCODE = 'invalid_parameter_value';
                END IF;
            END IF;
        END IF;
    END IF;
    -- (after the URL, as pg_durable checks them)
    IF v_method NOT IN ('GET', 'POST', 'PUT', 'DELETE', 'PATCH') THEN
        RAISE EXCEPTION 'Invalid HTTP method: %. Must be GET, POST, PUT, DELETE, or PATCH', method
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF timeout_seconds IS NULL OR timeout_seconds <= 0 THEN
        RAISE EXCEPTION 'Timeout must be positive' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('df.http(): timeout_seconds was %s.', coalesce(timeout_seconds::text, 'NULL'));
    END IF;
    IF headers IS NOT NULL AND jsonb_typeof(headers) NOT IN ('object', 'null') THEN
        RAISE EXCEPTION 'df.http(): headers must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN '{"node_type":"HTTP","query":'
        || to_json('{"url":' || to_json(url)::text
                   || ',"method":' || to_json(v_method)::text
                   || ',"body":' || coalesce(to_json(body)::text, 'null')
                   || ',"headers":' || coalesce(headers::text, 'null')
                   || ',"timeout_seconds":' || timeout_seconds::text || '}')::text || '}';
END;
$fn$;
COMMENT ON FUNCTION df.http(text, text, text, jsonb, integer) IS
    'HTTP node: one outbound request (GET/POST/PUT/DELETE/PATCH), subject to the engine''s egress policy';

CREATE OR REPLACE FUNCTION df.http_multipart(url text, method text DEFAULT 'POST', parts jsonb DEFAULT NULL,
                                  headers jsonb DEFAULT NULL, timeout_seconds integer DEFAULT 30)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_method text := upper(btrim(coalesce(method, '')));
    p        jsonb;
    n        int := 0;
    v_data   text;
    k        text;
    v_state  text;
    v_msg    text;
    v_hint   text;
    v_detail text;
BEGIN
    -- In pg_durable's order: the HTTP policy and the URL first (df.http's checks, with a valid
    -- method and timeout so only they can fail; their messages then name df.http_multipart()),
    -- the method, the timeout, then the parts.
    BEGIN
        PERFORM df.http(url, 'POST', NULL, headers, 30);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT,
                                v_hint = PG_EXCEPTION_HINT, v_detail = PG_EXCEPTION_DETAIL;
        v_msg := CASE WHEN v_msg LIKE 'df.http() is disabled%'
                      THEN replace(v_msg, 'df.http() is disabled', 'df.http_multipart() is disabled (df.http() is disabled)')
                      ELSE replace(v_msg, 'df.http()', 'df.http_multipart()') END;
        v_detail := replace(nullif(v_detail, ''), 'df.http()', 'df.http_multipart()');
        v_hint := nullif(v_hint, '');
        IF v_hint IS NOT NULL AND v_detail IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = v_state, MESSAGE = v_msg, HINT = v_hint, DETAIL = v_detail;
        ELSIF v_hint IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = v_state, MESSAGE = v_msg, HINT = v_hint;
        ELSIF v_detail IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = v_state, MESSAGE = v_msg, DETAIL = v_detail;
        END IF;
        RAISE EXCEPTION USING ERRCODE = v_state, MESSAGE = v_msg;
    END;
    IF v_method NOT IN ('POST', 'PUT', 'PATCH') THEN
        RAISE EXCEPTION 'Invalid HTTP method for multipart: %. Must be POST, PUT, or PATCH', method
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF timeout_seconds IS NULL OR timeout_seconds <= 0 THEN
        RAISE EXCEPTION 'Timeout must be positive' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('df.http_multipart(): timeout_seconds was %s.',
                            coalesce(timeout_seconds::text, 'NULL'));
    END IF;
    IF parts IS NULL OR jsonb_typeof(parts) = 'null' THEN
        RAISE EXCEPTION 'parts is required and cannot be NULL' USING ERRCODE = 'null_value_not_allowed',
            DETAIL = 'df.http_multipart() needs a JSON array of parts.';
    END IF;
    IF jsonb_typeof(parts) <> 'array' THEN
        RAISE EXCEPTION 'parts must be a JSON array of part objects'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('df.http_multipart(): parts was a JSON %s.', jsonb_typeof(parts));
    END IF;
    IF jsonb_array_length(parts) = 0 THEN
        RAISE EXCEPTION 'parts must contain at least one part'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'df.http_multipart(): parts was [].';
    END IF;
    FOR p IN SELECT e FROM jsonb_array_elements(parts) e LOOP
        n := n + 1;
        IF jsonb_typeof(p) <> 'object' THEN
            RAISE EXCEPTION 'df.http_multipart(): part % must be a JSON object', n
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF jsonb_typeof(p->'name') IS DISTINCT FROM 'string' OR p->>'name' = '' THEN
            RAISE EXCEPTION 'df.http_multipart(): part % needs a non-empty "name"', n
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF jsonb_typeof(p->'data_b64') IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION 'df.http_multipart(): part "%" needs "data_b64" (base64 text)', p->>'name'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        FOREACH k IN ARRAY ARRAY['filename', 'content_type'] LOOP
            IF p ? k AND jsonb_typeof(p->k) NOT IN ('string', 'null') THEN
                RAISE EXCEPTION 'df.http_multipart(): "%" of part "%" must be a string', k, p->>'name'
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
        END LOOP;
        v_data := p->>'data_b64';
        IF strpos(v_data, '$') > 0 OR strpos(v_data, '{') > 0 THEN
            IF v_data !~ '^\s*(\$[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?\??|\{[A-Za-z_][A-Za-z0-9_]*\})\s*$' THEN
                RAISE EXCEPTION 'df.http_multipart(): data_b64 of part "%" must be base64 or a single whole-value reference such as "$resp.body" (mixing a reference with other text cannot yield valid base64)',
                    p->>'name' USING ERRCODE = 'invalid_parameter_value';
            END IF;
        ELSE
            BEGIN
                PERFORM decode(regexp_replace(v_data, '\s', '', 'g'), 'base64');
            EXCEPTION WHEN OTHERS THEN
                RAISE EXCEPTION 'df.http_multipart(): data_b64 of part "%" is not valid base64', p->>'name'
                    USING ERRCODE = 'invalid_parameter_value';
            END;
        END IF;
    END LOOP;
    RETURN '{"node_type":"HTTP_MULTIPART","query":'
        || to_json('{"url":' || to_json(url)::text
                   || ',"method":' || to_json(v_method)::text
                   || ',"parts":' || parts::text
                   || ',"headers":' || coalesce(headers::text, 'null')
                   || ',"timeout_seconds":' || timeout_seconds::text || '}')::text || '}';
END;
$fn$;
COMMENT ON FUNCTION df.http_multipart(text, text, jsonb, jsonb, integer) IS
    'HTTP_MULTIPART node: a multipart/form-data request; parts: [{"name","data_b64","filename"?,"content_type"?}]';

-- ---------------------------------------------------------------------------------------------
-- The node envelope (df.ensure_durofut), the node builders and the helpers the DSL operators call (unchanged since 0.1.0)
-- ---------------------------------------------------------------------------------------------

-- * a JSON object whose node_type is a known node type is a node: it is re-emitted in canonical
--   key order (children verbatim) after a shallow shape check; a malformed one raises;
-- * the partial marker produced by `?>` raises (it is only meaningful as the left side of `!>`);
-- * anything else (plain SQL, other JSON, unknown node types) becomes a SQL node. df.start is
--   the strict entry point that rejects unknown node types.
-- Optional overrides replace result_name / retry_policy (used by df.as and df.retry_policy).
-- pg_durable's #153: a helper whose text return value ('OK', a status) is no workflow step marks
-- the statement it ran in (df.setvar, df.unsetvar, df.clearvars, a finished df.await_instance),
-- in the transaction-local setting df.non_future_helper ('name<newline>statement_timestamp()',
-- pg_durable's marker, of the same name); the builders (df.ensure_durofut) and df.start refuse
-- plain text given in a marked statement. Callable by every role: all of them run as their caller.
CREATE OR REPLACE FUNCTION df._mark_non_future_helper(p_helper text)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT FROM pg_catalog.set_config('df.non_future_helper',
                                      p_helper || E'\n' || pg_catalog.statement_timestamp()::text, true)
$fn$;
COMMENT ON FUNCTION df._mark_non_future_helper(text) IS
    'Internal: mark this statement as one a helper ran in (its text return value is no workflow step)';

CREATE OR REPLACE FUNCTION df._refuse_non_future_helper(p_context text DEFAULT '')
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_marker text := pg_catalog.current_setting('df.non_future_helper', true);
    v_helper text := pg_catalog.split_part(v_marker, E'\n', 1);
BEGIN
    IF pg_catalog.split_part(v_marker, E'\n', 2) = pg_catalog.statement_timestamp()::text THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = p_context || v_helper
            || ' cannot be used as a workflow step. Call ' || v_helper || ' before df.start().';
    END IF;
END;
$fn$;
COMMENT ON FUNCTION df._refuse_non_future_helper(text) IS
    'Internal: refuse plain text given to a builder or df.start in a statement a helper ran in';

CREATE OR REPLACE FUNCTION df.ensure_durofut(val text, result_name text DEFAULT NULL,
                                  retry_policy text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_keys   text[];
    v_vals   json[];
    v_nt     json;
    v_q      json;
    v_rn     json;
    v_left   json;
    v_right  json;
    v_cond   json;
    v_extra  json;
    v_rp     json;
    v_type   text;
    v_query  text;
    v_name   text;
    v_out    text;
    i        integer;
BEGIN
    IF val IS NULL THEN
        RAISE EXCEPTION 'a workflow step must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;

    -- One pass over the top-level members (children stay unparsed raw text), so wrapping a
    -- large graph again costs one JSON scan, not one per field.
    IF ltrim(val, E' \t\r\n') NOT LIKE '{%' THEN
        -- Plain text: a helper's return value ('OK', a status) fed to a builder in the
        -- statement that called it is refused, as pg_durable does (#153, above)
        PERFORM df._refuse_non_future_helper();
    ELSE
        BEGIN
            SELECT array_agg(e.key), array_agg(e.value) INTO v_keys, v_vals
              FROM json_each(val::json) e;
        EXCEPTION
            WHEN invalid_text_representation THEN
                v_keys := NULL;  -- not JSON: plain SQL that happens to start with a brace
            WHEN statement_too_complex THEN
                RAISE EXCEPTION 'workflow graph exceeds the maximum nesting depth of 256'
                    USING ERRCODE = 'program_limit_exceeded';
        END;
    END IF;

    FOR i IN 1 .. coalesce(cardinality(v_keys), 0) LOOP
        CASE v_keys[i]
            WHEN 'node_type' THEN v_nt := v_vals[i];
            WHEN 'query' THEN v_q := v_vals[i];
            WHEN 'result_name' THEN v_rn := v_vals[i];
            WHEN 'left_node' THEN v_left := v_vals[i];
            WHEN 'right_node' THEN v_right := v_vals[i];
            WHEN 'condition_node' THEN v_cond := v_vals[i];
            WHEN 'extra_nodes' THEN v_extra := v_vals[i];
            WHEN 'retry_policy' THEN v_rp := v_vals[i];
            ELSE NULL;
        END CASE;
    END LOOP;

    IF v_nt IS NULL AND '_partial_if' = ANY (v_keys) THEN
        RAISE EXCEPTION 'incomplete conditional: "cond ?> then" must be followed by "!> else"'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_nt IS NOT NULL THEN
        IF json_typeof(v_nt) <> 'string' THEN
            RAISE EXCEPTION 'Invalid Durofut JSON: node_type must be a string'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_type := v_nt #>> '{}';
    END IF;

    IF v_type IN ('SQL', 'THEN', 'IF', 'JOIN', 'LOOP', 'BREAK', 'RACE', 'SLEEP',
                  'WAIT_SCHEDULE', 'HTTP', 'HTTP_MULTIPART', 'SIGNAL') THEN
        -- Shallow shape check (json_typeof only reads the first token); df.start validates
        -- the whole graph.
        IF json_typeof(v_q) NOT IN ('string', 'null') THEN
            RAISE EXCEPTION 'Invalid Durofut JSON: query must be a string'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF json_typeof(v_rn) NOT IN ('string', 'null') THEN
            RAISE EXCEPTION 'Invalid Durofut JSON: result_name must be a string'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF json_typeof(v_left) NOT IN ('object', 'null') THEN
            RAISE EXCEPTION 'Invalid Durofut JSON: Durofut children must be JSON objects (left_node is %)',
                json_typeof(v_left) USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF json_typeof(v_right) NOT IN ('object', 'null') THEN
            RAISE EXCEPTION 'Invalid Durofut JSON: Durofut children must be JSON objects (right_node is %)',
                json_typeof(v_right) USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF json_typeof(v_cond) NOT IN ('object', 'null') THEN
            RAISE EXCEPTION 'Invalid Durofut JSON: condition_node must be a Durofut JSON object'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF json_typeof(v_extra) = 'null' THEN
            v_extra := NULL;
        ELSIF v_extra IS NOT NULL THEN
            IF json_typeof(v_extra) <> 'array'
               OR EXISTS (SELECT 1 FROM json_array_elements(v_extra) e
                           WHERE json_typeof(e) <> 'object') THEN
                RAISE EXCEPTION 'Invalid Durofut JSON: extra_nodes entries must be Durofut JSON objects'
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            IF json_array_length(v_extra) = 0 THEN
                v_extra := NULL;
            END IF;
        END IF;
        IF json_typeof(v_rp) NOT IN ('object', 'null') THEN
            RAISE EXCEPTION 'Invalid Durofut JSON: retry_policy must be a JSON object'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_query := v_q #>> '{}';
        v_name := v_rn #>> '{}';
        IF json_typeof(v_left) = 'null' THEN v_left := NULL; END IF;
        IF json_typeof(v_right) = 'null' THEN v_right := NULL; END IF;
        IF json_typeof(v_cond) = 'null' THEN v_cond := NULL; END IF;
        IF json_typeof(v_rp) = 'null' THEN v_rp := NULL; END IF;
    ELSE
        -- plain SQL, non-envelope JSON, or an unknown node type: a SQL node
        v_type := 'SQL';
        v_query := val;
        v_name := NULL;
        v_left := NULL; v_right := NULL; v_cond := NULL; v_extra := NULL; v_rp := NULL;
    END IF;

    IF result_name IS NOT NULL THEN
        v_name := result_name;
    END IF;
    IF retry_policy IS NOT NULL THEN
        v_rp := retry_policy::json;
    END IF;

    v_out := '{"node_type":' || to_json(v_type)::text;
    IF v_query IS NOT NULL THEN
        v_out := v_out || ',"query":' || to_json(v_query)::text;
    END IF;
    IF v_name IS NOT NULL THEN
        v_out := v_out || ',"result_name":' || to_json(v_name)::text;
    END IF;
    IF v_left IS NOT NULL THEN
        v_out := v_out || ',"left_node":' || v_left::text;
    END IF;
    IF v_right IS NOT NULL THEN
        v_out := v_out || ',"right_node":' || v_right::text;
    END IF;
    IF v_cond IS NOT NULL THEN
        v_out := v_out || ',"condition_node":' || v_cond::text;
    END IF;
    IF v_extra IS NOT NULL THEN
        v_out := v_out || ',"extra_nodes":' || v_extra::text;
    END IF;
    IF v_rp IS NOT NULL THEN
        v_out := v_out || ',"retry_policy":' || v_rp::text;
    END IF;
    RETURN v_out || '}';
END;
$fn$;
COMMENT ON FUNCTION df.ensure_durofut(text, text, text) IS
    'Canonical node envelope for a DSL value: envelopes pass through, anything else becomes a SQL node';

CREATE OR REPLACE FUNCTION df.sql(query text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF query IS NULL THEN
        RAISE EXCEPTION 'df.sql(): query must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    RETURN '{"node_type":"SQL","query":' || to_json(query)::text || '}';
END;
$fn$;
COMMENT ON FUNCTION df.sql(text) IS 'SQL node: one statement run as the submitting role';

-- The one builder of a node with branches (THEN, JOIN, RACE): the children wrapped in source
-- order, in the canonical key order of the header. A SQL-standard body (RETURN ...) is resolved
-- when it is created, so df.seq / df.join / df.join3 / df.race, SECURITY INVOKER builders whose
-- callers have no USAGE on df_internal, can call it; it only builds text.
CREATE OR REPLACE FUNCTION df_internal.branch_node(p_node_type text, p_left text, p_right text,
                                                   p_extra text DEFAULT NULL)
RETURNS text
LANGUAGE sql IMMUTABLE
RETURN '{"node_type":' OPERATOR(pg_catalog.||) pg_catalog.to_json(p_node_type)::pg_catalog.text
    OPERATOR(pg_catalog.||) ',"left_node":' OPERATOR(pg_catalog.||) df.ensure_durofut(p_left)
    OPERATOR(pg_catalog.||) ',"right_node":' OPERATOR(pg_catalog.||) df.ensure_durofut(p_right)
    OPERATOR(pg_catalog.||) CASE WHEN p_extra IS NULL THEN ''
        ELSE ',"extra_nodes":[' OPERATOR(pg_catalog.||) df.ensure_durofut(p_extra) OPERATOR(pg_catalog.||) ']' END
    OPERATOR(pg_catalog.||) '}';

CREATE OR REPLACE FUNCTION df.seq(a text, b text)
RETURNS text
LANGUAGE sql IMMUTABLE
RETURN df_internal.branch_node('THEN', a, b);
COMMENT ON FUNCTION df.seq(text, text) IS 'THEN node (operator ~>): run a, then b; result is b''s';

CREATE OR REPLACE FUNCTION df.as(fut text, name text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF name IS NULL OR name = '' THEN
        RAISE EXCEPTION 'df.as: result name cannot be empty' USING ERRCODE = 'invalid_name';
    END IF;
    IF name !~ '^[A-Za-z_][A-Za-z0-9_]*$' THEN
        RAISE EXCEPTION 'df.as: result name ''%'' is not a valid identifier — must match [a-zA-Z_][a-zA-Z0-9_]*',
            name USING ERRCODE = 'invalid_name';
    END IF;
    RETURN df.ensure_durofut(fut, name);
END;
$fn$;
COMMENT ON FUNCTION df.as(text, text) IS 'Name a node''s result (operator |=>) so later steps can use $name';

CREATE OR REPLACE FUNCTION df.join(a text, b text)
RETURNS text
LANGUAGE sql IMMUTABLE
RETURN df_internal.branch_node('JOIN', a, b);
COMMENT ON FUNCTION df.join(text, text) IS 'JOIN node (operator &): both branches in parallel; result is the JSON array of branch results';

CREATE OR REPLACE FUNCTION df.join3(a text, b text, c text)
RETURNS text
LANGUAGE sql IMMUTABLE
RETURN df_internal.branch_node('JOIN', a, b, c);
COMMENT ON FUNCTION df.join3(text, text, text) IS 'JOIN node with three parallel branches';

CREATE OR REPLACE FUNCTION df.race(a text, b text)
RETURNS text
LANGUAGE sql IMMUTABLE
RETURN df_internal.branch_node('RACE', a, b);
COMMENT ON FUNCTION df.race(text, text) IS 'RACE node (operator |): the first branch to finish decides';

CREATE OR REPLACE FUNCTION df.if(condition text, then_branch text, else_branch text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    -- Wrapped in source order so an error points at the first bad operand.
    v_cond text := df.ensure_durofut(condition);
    v_then text := df.ensure_durofut(then_branch);
    v_else text := df.ensure_durofut(else_branch);
BEGIN
    RETURN '{"node_type":"IF","left_node":' || v_then || ',"right_node":' || v_else
        || ',"condition_node":' || v_cond || '}';
END;
$fn$;
COMMENT ON FUNCTION df.if(text, text, text) IS 'IF node (operators ?> !>): runs the condition node, then one arm';

CREATE OR REPLACE FUNCTION df.loop(body text, condition text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_body text := df.ensure_durofut(body);
BEGIN
    IF condition IS NULL THEN
        RETURN '{"node_type":"LOOP","left_node":' || v_body || '}';
    END IF;
    RETURN '{"node_type":"LOOP","left_node":' || v_body
        || ',"condition_node":' || df.ensure_durofut(condition) || '}';
END;
$fn$;
COMMENT ON FUNCTION df.loop(text, text) IS
    'LOOP node (prefix operator @>): repeat body; with a condition, do-while (body first)';

CREATE OR REPLACE FUNCTION df.sleep(seconds bigint)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF seconds IS NULL THEN
        RAISE EXCEPTION 'df.sleep(): seconds must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF seconds < 0 THEN
        RAISE EXCEPTION 'Sleep duration must be non-negative' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('df.sleep(): seconds was %s.', seconds);
    END IF;
    RETURN '{"node_type":"SLEEP","query":"' || seconds::text || '"}';
END;
$fn$;
COMMENT ON FUNCTION df.sleep(bigint) IS 'SLEEP node: a durable timer of the given seconds (>= 0)';

-- Retry policy for one node (and, through df.start's retry_policy argument, for a whole
-- instance). Stored in the envelope under "retry_policy"; df.start hands it to the engine.
CREATE OR REPLACE FUNCTION df.retry_policy(fut text, max_attempts integer,
                                backoff_seconds double precision DEFAULT 1,
                                max_backoff_seconds double precision DEFAULT 60,
                                retry_on text[] DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF max_attempts IS NULL OR max_attempts < 1 THEN
        RAISE EXCEPTION 'retry policy: max_attempts must be at least 1 (got %)',
            coalesce(max_attempts::text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF backoff_seconds IS NULL OR backoff_seconds < 0 OR backoff_seconds = 'Infinity'::float8
       OR backoff_seconds = 'NaN'::float8 THEN
        RAISE EXCEPTION 'retry policy: backoff_seconds must be a finite number >= 0 (got %)',
            coalesce(backoff_seconds::text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF max_backoff_seconds IS NULL OR max_backoff_seconds < backoff_seconds
       OR max_backoff_seconds = 'Infinity'::float8 OR max_backoff_seconds = 'NaN'::float8 THEN
        RAISE EXCEPTION 'retry policy: max_backoff_seconds must be a finite number >= backoff_seconds (got %)',
            coalesce(max_backoff_seconds::text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF retry_on IS NOT NULL AND EXISTS (SELECT 1 FROM unnest(retry_on) r
                                         WHERE r IS NULL OR btrim(r) = '') THEN
        RAISE EXCEPTION 'retry policy: retry_on entries must be non-empty strings'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN df.ensure_durofut(fut, NULL,
        '{"max_attempts":' || max_attempts::text
        || ',"backoff_seconds":' || to_json(backoff_seconds)::text
        || ',"max_backoff_seconds":' || to_json(max_backoff_seconds)::text
        || ',"retry_on":' || coalesce(to_json(retry_on)::text, 'null') || '}');
END;
$fn$;
COMMENT ON FUNCTION df.retry_policy(text, integer, double precision, double precision, text[]) IS
    'Attach a retry policy to a node: attempts, exponential backoff (seconds, capped) and retryable error classes';

-- cond ?> then: a partial marker that only !> accepts.
CREATE OR REPLACE FUNCTION df.if_then_op(condition text, then_branch text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    RETURN '{"_partial_if":true,"condition":' || df.ensure_durofut(condition)
        || ',"then_branch":' || df.ensure_durofut(then_branch) || '}';
END;
$fn$;
COMMENT ON FUNCTION df.if_then_op(text, text) IS 'Operator ?>: the first half of cond ?> then !> else';

CREATE OR REPLACE FUNCTION df.if_else_op(partial_if text, else_branch text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    j json;
BEGIN
    IF partial_if IS NOT NULL AND ltrim(partial_if) LIKE '{"_partial_if":%' THEN
        BEGIN
            j := partial_if::json;
        EXCEPTION WHEN invalid_text_representation THEN
            j := NULL;
        END;
    END IF;
    IF j IS NULL OR json_typeof(j) <> 'object' OR j->'_partial_if' IS NULL
       OR json_typeof(j->'condition') IS DISTINCT FROM 'object'
       OR json_typeof(j->'then_branch') IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'Invalid if-then-else: left side of !> must be a ?> expression'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN df.if((j->'condition')::text, (j->'then_branch')::text, else_branch);
END;
$fn$;
COMMENT ON FUNCTION df.if_else_op(text, text) IS 'Operator !>: completes cond ?> then !> else';

CREATE OR REPLACE FUNCTION df.loop_prefix_op(body text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    RETURN df.loop(body);
END;
$fn$;
COMMENT ON FUNCTION df.loop_prefix_op(text) IS 'Prefix operator @>: an infinite loop';
