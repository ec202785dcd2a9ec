-- Settings that gate security, read where an ordinary user's SET cannot reach (issue 13 class 5,
-- docs/security.md). pg_durable registers pg_durable.enable_superuser_instances,
-- list_instances_max_limit and the HTTP settings as superuser-only (PGC_SUSET) parameters;
-- without an extension they are placeholders that any session may SET, so a df function that
-- trusts current_setting() lets every user change them for itself.
--
-- df._setting(name) is the value a pg_durable user would get, minus what a non-superuser could
-- have set (first match wins):
--   1. the session's own value, only when the session user is a superuser (as with PGC_SUSET)
--      and no engine step is running in the session (there session_user is the engine);
--   2. ALTER ROLE <session user> IN DATABASE <this db> SET, ALTER ROLE <session user> SET,
--      ALTER DATABASE <this db> SET (on PostgreSQL 15+ only superusers, or roles an
--      administrator GRANTed SET on the parameter, may store a placeholder there);
--   3. the value the newest live engine's own session sees (df_internal.engines.settings:
--      postgresql.conf, ALTER SYSTEM, and the settings above for the engine's role);
--   4. postgresql.conf / ALTER SYSTEM read directly (pg_file_settings), when this function's
--      owner may read them (a superuser installation);
-- else NULL. A plain SET, set_config(), PGOPTIONS or a connection's `options` by an ordinary
-- role is never honoured.
CREATE OR REPLACE FUNCTION df._setting(p_name text) RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v text;
BEGIN
    IF p_name IS NULL OR p_name !~ '^pg_durable\.[a-z_]+$' THEN
        RAISE EXCEPTION 'df._setting: only pg_durable.* settings can be read, not "%"', p_name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- (inside an engine step session_user is the engine, not the step's role: not trusted there)
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = session_user)
       AND NOT df_internal.in_engine_step() THEN
        v := NULLIF(pg_catalog.current_setting(p_name, true), '');
        IF v IS NOT NULL THEN
            RETURN v;
        END IF;
    END IF;
    SELECT substr(cfg, length(p_name) + 2) INTO v
      FROM pg_catalog.pg_db_role_setting s, LATERAL unnest(s.setconfig) AS cfg
     WHERE cfg LIKE p_name || '=%'
       AND s.setrole IN (0, (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = session_user))
       AND s.setdatabase IN (0, (SELECT d.oid FROM pg_catalog.pg_database d
                                  WHERE d.datname = pg_catalog.current_database()))
       AND NOT (s.setrole = 0 AND s.setdatabase = 0)
     ORDER BY (s.setrole <> 0) DESC, (s.setdatabase <> 0) DESC
     LIMIT 1;
    IF v IS NOT NULL THEN
        RETURN v;
    END IF;
    SELECT e.settings ->> p_name INTO v
      FROM df_internal.engines e
     WHERE e.stopped_at IS NULL AND e.heartbeat_at > pg_catalog.now() - interval '60 seconds'
       AND e.settings IS NOT NULL
     ORDER BY e.started_at DESC LIMIT 1;
    IF FOUND THEN
        RETURN NULLIF(v, '');
    END IF;
    IF pg_catalog.has_table_privilege('pg_catalog.pg_file_settings', 'SELECT') THEN
        SELECT f.setting INTO v FROM pg_catalog.pg_file_settings f
         WHERE f.name = p_name AND f.applied ORDER BY f.seqno DESC LIMIT 1;
        RETURN v;
    END IF;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION df._setting(text) IS
    'The trusted value of a pg_durable.* setting: never what an ordinary session SET itself';
