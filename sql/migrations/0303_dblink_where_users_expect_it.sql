-- dblink is a database-wide extension other code shares (pg_durable's own tests and users' scripts
-- run `CREATE EXTENSION IF NOT EXISTS dblink` and then call dblink(...) unqualified). 0.1.0
-- installed it, when missing, into its private schema df_internal, where nobody else can reach
-- it while that CREATE EXTENSION becomes a no-op. dftui never takes over a shared extension: it
-- uses an existing installation wherever it lives (df.start and df.signal look the schema up in
-- pg_extension), and the copy it installed itself moves to schema public, where CREATE EXTENSION
-- would have put it (docs/pg_durable.md, "dblink").
DO $dblink$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension e
                WHERE e.extname OPERATOR(pg_catalog.=) 'dblink'
                  AND e.extnamespace OPERATOR(pg_catalog.=) 'df_internal'::pg_catalog.regnamespace)
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n
                    WHERE n.nspname OPERATOR(pg_catalog.=) 'public') THEN
        BEGIN
            ALTER EXTENSION dblink SET SCHEMA public;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE WARNING 'dftui: dblink stays in schema df_internal (this role may not move it to public: %); move it with ALTER EXTENSION dblink SET SCHEMA public', SQLERRM;
        END;
    END IF;
END
$dblink$;
