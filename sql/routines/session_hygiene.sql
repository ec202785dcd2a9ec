-- Session state outside the reach of DISCARD: connections a step opened with dblink (issue 13).
--
-- dblink keeps named connections (dblink_connect('name', …)) and one unnamed connection in the
-- backend, outside any transaction: a step's connection stayed open on the engine's session and
-- the next step there — any role's — could run SQL through it as the role that opened it. The
-- engine's session reset (engine/identity.py SESSION_RESET) calls this after every step.
-- Routines are re-applied on every install and upgrade (engine/schema.py): idempotent, qualified.
CREATE OR REPLACE FUNCTION df_internal.close_step_connections() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ns name;
    c text;
BEGIN
    -- the extension's own functions, wherever it is installed (never a same-named lookalike:
    -- the schema comes from pg_extension and the calls match the exact signatures)
    SELECT n.nspname INTO ns FROM pg_catalog.pg_extension e
      JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace
     WHERE e.extname OPERATOR(pg_catalog.=) 'dblink';
    IF ns IS NULL THEN
        RETURN;
    END IF;
    BEGIN
        FOR c IN EXECUTE pg_catalog.format(
                'SELECT pg_catalog.unnest(%I.dblink_get_connections())', ns) LOOP
            EXECUTE pg_catalog.format('SELECT %I.dblink_disconnect($1::pg_catalog.text)', ns) USING c;
        END LOOP;
        -- the unnamed connection (raises when there is none, which is the usual case)
        EXECUTE pg_catalog.format('SELECT %I.dblink_disconnect()', ns);
    EXCEPTION WHEN OTHERS THEN
        NULL;
    END;
END $$;
REVOKE ALL ON FUNCTION df_internal.close_step_connections() FROM PUBLIC;
