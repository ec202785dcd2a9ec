-- The pg_durable 0.2.6 contract for the whole df surface, applied after every other routines
-- file (hence the name) so it holds whichever file defines a function:
--
--  * STRICT exactly where pg_durable's functions are STRICT (a NULL argument returns NULL);
--  * default privileges as pg_durable 0.2.4+ (#242): schema USAGE on df is the access gate, so
--    the ordinary df functions keep PUBLIC EXECUTE and the monitoring views PUBLIC SELECT (each
--    view filters its rows to the querying role); only the sensitive functions are revoked
--    from PUBLIC and granted by df.grant_usage: df.http, df.http_multipart (include_http) and
--    df.grant_usage, df.revoke_usage, df.metrics (with_grant). Internal helpers (names starting
--    with "_", trigger functions) get nothing.
--
-- A role holding exactly the "manual grants" of pg_durable's USER_GUIDE (USAGE + the table
-- privileges) can therefore use df. tests/test_pg_durable_surface.py checks all of it against
-- pg_durable's catalog.
--
-- Routines are re-applied on every install and upgrade (engine/schema.py): keep every statement
-- idempotent and schema-qualified.

ALTER FUNCTION df.as(text, text) STRICT;
ALTER FUNCTION df.await_instance(text, integer) STRICT;
ALTER FUNCTION df.cancel(text, text) STRICT;
ALTER FUNCTION df.clearvars() STRICT;
ALTER FUNCTION df.explain(text) STRICT;
ALTER FUNCTION df.getvar(text) STRICT;
ALTER FUNCTION df.if(text, text, text) STRICT;
ALTER FUNCTION df.if_rows(text, text, text) STRICT;
ALTER FUNCTION df.instance_executions(text, integer) STRICT;
ALTER FUNCTION df.instance_info(text) STRICT;
ALTER FUNCTION df.instance_nodes(text) STRICT;
ALTER FUNCTION df.instance_nodes(text, integer) STRICT;
ALTER FUNCTION df.join(text, text) STRICT;
ALTER FUNCTION df.join3(text, text, text) STRICT;
ALTER FUNCTION df.metrics() STRICT;
ALTER FUNCTION df.race(text, text) STRICT;
ALTER FUNCTION df.result(text) STRICT;
ALTER FUNCTION df.seq(text, text) STRICT;
ALTER FUNCTION df.setvar(text, text) STRICT;
ALTER FUNCTION df.signal(text, text, text) STRICT;
ALTER FUNCTION df.sleep(bigint) STRICT;
ALTER FUNCTION df.sql(text) STRICT;
ALTER FUNCTION df.status(text) STRICT;
ALTER FUNCTION df.target_database() STRICT;
ALTER FUNCTION df.unsetvar(text) STRICT;
ALTER FUNCTION df.version() STRICT;
ALTER FUNCTION df.wait_for_completion(text, integer) STRICT;
ALTER FUNCTION df.wait_for_schedule(text) STRICT;

DO $surface$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT p.oid::pg_catalog.regprocedure AS signature,
               CASE
                   WHEN p.prorettype OPERATOR(pg_catalog.=) 'pg_catalog.trigger'::pg_catalog.regtype
                     OR p.prorettype OPERATOR(pg_catalog.=) 'pg_catalog.event_trigger'::pg_catalog.regtype
                     OR p.proname OPERATOR(pg_catalog.~~) '\_%' THEN 'internal'
                   WHEN p.proname OPERATOR(pg_catalog.=) ANY (ARRAY['grant_usage', 'revoke_usage', 'metrics',
                                                                    'http', 'http_multipart']) THEN 'sensitive'
                   ELSE 'ordinary'
               END AS kind
          FROM pg_catalog.pg_proc p
         WHERE p.pronamespace OPERATOR(pg_catalog.=) 'df'::pg_catalog.regnamespace
    LOOP
        IF r.kind OPERATOR(pg_catalog.=) 'ordinary' THEN
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', r.signature);
        ELSE
            EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', r.signature);
        END IF;
    END LOOP;

    FOR r IN
        SELECT c.oid::pg_catalog.regclass AS rel
          FROM pg_catalog.pg_class c
         WHERE c.relnamespace OPERATOR(pg_catalog.=) 'df'::pg_catalog.regnamespace
           AND c.relkind OPERATOR(pg_catalog.=) ANY (ARRAY['v', 'm']::"char"[])
           AND c.relname OPERATOR(pg_catalog.!~~) '\_%'
    LOOP
        EXECUTE pg_catalog.format('GRANT SELECT ON %s TO PUBLIC', r.rel);
    END LOOP;

    -- Privileges saved by a migration that had to drop and re-create functions (0300): granted
    -- again on the new definitions of the same names.
    IF pg_catalog.to_regclass('pg_temp.df_saved_acl') IS NOT NULL THEN
        FOR r IN
            SELECT p.oid::pg_catalog.regprocedure AS signature, a.grantee, a.privilege_type, a.grantable
              FROM pg_temp.df_saved_acl a
              JOIN pg_catalog.pg_proc p ON p.proname OPERATOR(pg_catalog.=) a.name
             WHERE p.pronamespace OPERATOR(pg_catalog.=) 'df'::pg_catalog.regnamespace
        LOOP
            EXECUTE pg_catalog.format('GRANT %s ON FUNCTION %s TO %s%s', r.privilege_type, r.signature,
                CASE WHEN r.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC'
                     ELSE r.grantee::pg_catalog.regrole::text END,
                CASE WHEN r.grantable THEN ' WITH GRANT OPTION' ELSE '' END);
        END LOOP;
        DELETE FROM pg_temp.df_saved_acl;
    END IF;
END
$surface$;
