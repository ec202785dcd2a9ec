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

-- df._instance_status and df._file_instance_request are how df.status, df.await_instance,
-- df.cancel, df.signal and df.retry (SECURITY INVOKER) read an instance's status and reach an
-- instance whose row another session holds (02_published_status.sql). The first shows only
-- what the caller may see; the second files a request as the caller, refused unless the
-- instance is the caller's.
GRANT EXECUTE ON FUNCTION df._instance_status(text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION df._file_instance_request(text, text, text, text, jsonb) TO PUBLIC;
