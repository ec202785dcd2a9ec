-- pg_durable 0.2.6's catalog, where dftui's own definitions say otherwise (applied last, after
-- every other routines file; tests/test_pg_durable_catalog.py holds the whole surface to
-- tests/fixtures/pg_durable_0_2_6_catalog.json, generated from pg_durable's own SQL).
--
-- Volatility: pgrx declares every #[pg_extern] function VOLATILE unless told otherwise, and
-- pg_durable's are, builders included. dftui's definitions say IMMUTABLE or STABLE (true for
-- them, but a difference a pg_durable user can see and rely on: a VOLATILE call is evaluated
-- for every row, never folded into a plan or an index expression). Idempotent: ALTER FUNCTION
-- after the CREATE OR REPLACE of each apply.
ALTER FUNCTION df."as"(text, text) VOLATILE;
ALTER FUNCTION df."break"(text) VOLATILE;
ALTER FUNCTION df.getvar(text) VOLATILE;
ALTER FUNCTION df.http(text, text, text, jsonb, integer) VOLATILE;
ALTER FUNCTION df.http_multipart(text, text, jsonb, jsonb, integer) VOLATILE;
ALTER FUNCTION df."if"(text, text, text) VOLATILE;
ALTER FUNCTION df.if_rows(text, text, text) VOLATILE;
ALTER FUNCTION df.instance_executions(text, integer) VOLATILE;
ALTER FUNCTION df.instance_info(text) VOLATILE;
ALTER FUNCTION df.instance_nodes(text) VOLATILE;
ALTER FUNCTION df.instance_nodes(text, integer) VOLATILE;
ALTER FUNCTION df."join"(text, text) VOLATILE;
ALTER FUNCTION df.join3(text, text, text) VOLATILE;
ALTER FUNCTION df.list_instances(text, integer) VOLATILE;
ALTER FUNCTION df.list_instances(text, integer, text, text) VOLATILE;
ALTER FUNCTION df."loop"(text, text) VOLATILE;
ALTER FUNCTION df.metrics() VOLATILE;
ALTER FUNCTION df.race(text, text) VOLATILE;
ALTER FUNCTION df.result(text) VOLATILE;
ALTER FUNCTION df.seq(text, text) VOLATILE;
ALTER FUNCTION df.sleep(bigint) VOLATILE;
ALTER FUNCTION df.sql(text) VOLATILE;
ALTER FUNCTION df.status(text) VOLATILE;
ALTER FUNCTION df.version() VOLATILE;
ALTER FUNCTION df.wait_for_schedule(text) VOLATILE;
ALTER FUNCTION df.wait_for_signal(text, integer) VOLATILE;

-- The `|=>` operator calls df.as_op, as pg_durable's (0.1.0 pointed it at df.as: the same
-- result, but df.as is STRICT and as_op is not). Recreated where it is (pg_catalog, or the
-- schema a managed install chose); left alone, with a notice, if a user's view depends on it.
DO $$
DECLARE
    op_schema text;
    note text;
BEGIN
    SELECT n.nspname, pg_catalog.obj_description(o.oid, 'pg_operator') INTO op_schema, note
      FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
     WHERE o.oprname = '|=>' AND o.oprleft = 'pg_catalog.text'::pg_catalog.regtype
       AND o.oprright = 'pg_catalog.text'::pg_catalog.regtype
       AND o.oprcode = 'df.as(text,text)'::pg_catalog.regprocedure;
    IF op_schema IS NULL THEN
        RETURN;
    END IF;
    BEGIN
        EXECUTE pg_catalog.format('DROP OPERATOR %I.|=> (text, text)', op_schema);
        EXECUTE pg_catalog.format('CREATE OPERATOR %I.|=> (FUNCTION = df.as_op, LEFTARG = text, '
                                  'RIGHTARG = text)', op_schema);
        IF note IS NOT NULL THEN
            EXECUTE pg_catalog.format('COMMENT ON OPERATOR %I.|=> (text, text) IS %L', op_schema, note);
        END IF;
    EXCEPTION WHEN dependent_objects_still_exist THEN
        RAISE NOTICE 'the |=> operator keeps calling df.as (objects depend on it): %', SQLERRM;
    END;
END $$;
