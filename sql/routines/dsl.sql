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
        RAISE EXCEPTION 'invalid cron expression: it must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_norm := regexp_replace(btrim(cron_expr, E' \t\r\n'), '\s+', ' ', 'g');
    fields := string_to_array(v_norm, ' ');
    IF array_length(fields, 1) <> 5 THEN
        RAISE EXCEPTION 'invalid cron expression "%": expected 5 fields (minute hour day-of-month month day-of-week), got %',
            cron_expr, array_length(fields, 1) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR i IN 1..5 LOOP
        FOREACH item IN ARRAY string_to_array(fields[i], ',') LOOP
            m := regexp_match(upper(item), '^(\*|[0-9A-Z]+(?:-[0-9A-Z]+)?)(?:/([0-9]+))?$');
            IF m IS NULL THEN
                RAISE EXCEPTION 'invalid cron expression "%": bad % field "%"', cron_expr, labels[i], fields[i]
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            IF m[2] IS NOT NULL AND (length(m[2]) > 4 OR m[2]::int < 1 OR m[2]::int > hi[i]) THEN
                RAISE EXCEPTION 'invalid cron expression "%": step "/%" in the % field must be between 1 and %',
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
                        RAISE EXCEPTION 'invalid cron expression "%": "%" is not a valid % value',
                            cron_expr, tok, labels[i] USING ERRCODE = 'invalid_parameter_value';
                    END IF;
                    IF j < lo[i] OR j > hi[i] THEN
                        RAISE EXCEPTION 'invalid cron expression "%": % value % is out of range %-%',
                            cron_expr, labels[i], j, lo[i], hi[i] USING ERRCODE = 'invalid_parameter_value';
                    END IF;
                    vals := vals || j;
                END LOOP;
                a := vals[1];
                b := coalesce(vals[2], vals[1]);
                IF a > b THEN
                    RAISE EXCEPTION 'invalid cron expression "%": range %-% in the % field is reversed',
                        cron_expr, a, b, labels[i] USING ERRCODE = 'invalid_parameter_value';
                END IF;
            END IF;
        END LOOP;
    END LOOP;
    RETURN '{"node_type":"WAIT_SCHEDULE","query":' || to_json(v_norm)::text || '}';
END;
$fn$;
COMMENT ON FUNCTION df.wait_for_schedule(text) IS
    'WAIT_SCHEDULE node: wait until the next UTC match of a standard 5-field cron expression';

