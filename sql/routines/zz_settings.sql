-- After zz_pg_durable_surface.sql, which gives df functions named "_..." no PUBLIC EXECUTE:
-- df._setting is what SECURITY INVOKER df functions (df.list_instances, df.start) read
-- pg_durable.* settings through, so every caller of those must be able to execute it. It only
-- returns values of pg_durable.* settings (nothing secret) and never one a caller could forge.
GRANT EXECUTE ON FUNCTION df._setting(text) TO PUBLIC;

-- df._role_name is the role lookup of df.grant_usage, df.revoke_usage and df.set_role_limits
-- (SECURITY INVOKER), which a delegated admin calls: it must be able to execute it. It reads
-- only pg_roles, which every role may read.
GRANT EXECUTE ON FUNCTION df._role_name(text) TO PUBLIC;

-- df._mark_non_future_helper and df._refuse_non_future_helper are how the helpers, the builders
-- (df.ensure_durofut) and df.start, which run as their caller, tell a helper's text return
-- value from a workflow step (dsl.sql). They touch only the caller's own transaction-local
-- setting.
GRANT EXECUTE ON FUNCTION df._mark_non_future_helper(text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION df._refuse_non_future_helper(text) TO PUBLIC;
