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
        RAISE EXCEPTION 'signal name must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF timeout_seconds IS NOT NULL AND timeout_seconds <= 0 THEN
        RAISE EXCEPTION 'signal timeout_seconds must be positive (got %)', timeout_seconds
            USING ERRCODE = 'invalid_parameter_value';
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
    IF result_name !~ '^[A-Za-z_][A-Za-z0-9_]*$' THEN
        RAISE EXCEPTION '"%" is not a valid identifier: result names must match ^[A-Za-z_][A-Za-z0-9_]*$',
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
    IF v_method NOT IN ('GET', 'POST', 'PUT', 'DELETE', 'PATCH') THEN
        RAISE EXCEPTION 'invalid HTTP method "%": must be GET, POST, PUT, DELETE or PATCH', method
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF timeout_seconds IS NULL OR timeout_seconds <= 0 THEN
        RAISE EXCEPTION 'df.http(): timeout_seconds must be positive (got %)',
            coalesce(timeout_seconds::text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF headers IS NOT NULL AND jsonb_typeof(headers) NOT IN ('object', 'null') THEN
        RAISE EXCEPTION 'df.http(): headers must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF strpos(url, '{') = 0 AND strpos(url, '$') = 0 THEN
        v_scheme := lower((regexp_match(btrim(url), '^([A-Za-z][A-Za-z0-9+.-]*):'))[1]);
        IF v_scheme IS NULL OR v_scheme NOT IN ('http', 'https')
           OR btrim(url) !~* '^https?://[^/?#]' THEN
            RAISE EXCEPTION 'Blocked: unsupported URL scheme "%" in "%": only http and https URLs are allowed',
                coalesce(v_scheme, ''), url USING ERRCODE = 'invalid_parameter_value';
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
BEGIN
    IF v_method NOT IN ('POST', 'PUT', 'PATCH') THEN
        RAISE EXCEPTION 'invalid HTTP method for multipart "%": must be POST, PUT or PATCH', method
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF timeout_seconds IS NULL OR timeout_seconds <= 0 THEN
        RAISE EXCEPTION 'df.http_multipart(): timeout_seconds must be positive (got %)',
            coalesce(timeout_seconds::text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The policy, URL and header checks are df.http's; its messages name df.http_multipart().
    BEGIN
        PERFORM df.http(url, v_method, NULL, headers, timeout_seconds);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT, v_hint = PG_EXCEPTION_HINT;
        v_msg := CASE WHEN v_msg LIKE 'df.http() is disabled%'
                      THEN replace(v_msg, 'df.http() is disabled', 'df.http_multipart() is disabled (df.http() is disabled)')
                      ELSE replace(v_msg, 'df.http()', 'df.http_multipart()') END;
        IF v_hint IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = v_state, MESSAGE = v_msg;
        END IF;
        RAISE EXCEPTION USING ERRCODE = v_state, HINT = v_hint, MESSAGE = v_msg;
    END;
    IF parts IS NULL OR jsonb_typeof(parts) = 'null' THEN
        RAISE EXCEPTION 'df.http_multipart(): parts is required and must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF jsonb_typeof(parts) <> 'array' THEN
        RAISE EXCEPTION 'df.http_multipart(): parts must be a JSON array of part objects'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF jsonb_array_length(parts) = 0 THEN
        RAISE EXCEPTION 'df.http_multipart(): parts must contain at least one part'
            USING ERRCODE = 'invalid_parameter_value';
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
