-- Small pg_durable 0.2.6 functions that exist for compatibility only (sql-api.md §4, and
-- docs/pg_durable.md for what each one means here).
--
-- Routines are re-applied on every install and upgrade (engine/schema.py): keep every statement
-- idempotent (CREATE OR REPLACE) and schema-qualified.

-- The function behind pg_durable's `|=>` operator in its install script; dftui's operator calls
-- df.as directly, this is the same thing under pg_durable's name.
CREATE OR REPLACE FUNCTION df.as_op(fut text, name text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT df.as(fut, name)
$fn$;
COMMENT ON FUNCTION df.as_op(text, text) IS 'pg_durable compatibility: the same as df.as(fut, name)';

-- pg_durable: the database its background worker processes (setting pg_durable.database).
-- dftui's engines run the workflows of the database the df schema is installed in, which is
-- therefore always the answer here.
CREATE OR REPLACE FUNCTION df.target_database()
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT pg_catalog.current_database()::text
$fn$;
COMMENT ON FUNCTION df.target_database() IS
    'pg_durable compatibility: the database whose workflows this installation runs (this one)';

-- pg_durable: a no-op that reports a triggered run. Here it also wakes idle engines, which is
-- harmless: they look for due work anyway.
CREATE OR REPLACE FUNCTION df.run(instance_id text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM pg_catalog.pg_notify('df_work', '');  -- a hint only: payloads carry no instance ids
    IF instance_id IS NULL THEN
        RETURN 'Triggered run for all pending instances';
    END IF;
    RETURN 'Triggered run for instance: ' || instance_id;
END;
$fn$;
COMMENT ON FUNCTION df.run(text) IS 'pg_durable compatibility: wake the engines (returns what pg_durable returns)';

-- ---------------------------------------------------------------------------------------------
-- Versions (unchanged since 0.1.0)
-- ---------------------------------------------------------------------------------------------

-- SECURITY DEFINER only to read the installer's version table (users cannot).
CREATE OR REPLACE FUNCTION df.version()
RETURNS text
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT coalesce(
        (SELECT s.version FROM df_internal.schema_version s
          ORDER BY pg_catalog.string_to_array(s.version, '.')::int[] DESC LIMIT 1),
        '0.1.0')
$fn$;
COMMENT ON FUNCTION df.version() IS 'Installed dftui schema version';

CREATE OR REPLACE FUNCTION df.duroxide_schema()
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT 'df_internal'::text
$fn$;
COMMENT ON FUNCTION df.duroxide_schema() IS
    'pg_durable compatibility: the schema holding engine state (_worker_ready lives there)';
