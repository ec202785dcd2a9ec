-- After zz_pg_durable_surface.sql, which gives df functions named "_..." no PUBLIC EXECUTE:
-- df._setting is what SECURITY INVOKER df functions (df.list_instances, df.start) read
-- pg_durable.* settings through, so every caller of those must be able to execute it. It only
-- returns values of pg_durable.* settings (nothing secret) and never one a caller could forge.
GRANT EXECUTE ON FUNCTION df._setting(text) TO PUBLIC;
