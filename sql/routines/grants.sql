-- df.grant_usage / df.revoke_usage (sql-api.md §3, security.md), with pg_durable's argument name
-- p_role. As in pg_durable 0.2.4+ (#242), schema USAGE on df is the access gate: the ordinary df
-- functions and the monitoring views keep PUBLIC EXECUTE/SELECT (routines/zz_pg_durable_surface.sql),
-- so grant_usage grants USAGE, the table privileges, and EXECUTE only on the sensitive functions:
--   * admin helpers (df.grant_usage, df.revoke_usage, df.metrics): only WITH with_grant,
--   * outbound HTTP builders (df.http, df.http_multipart): only WITH include_http.
-- The lists are computed from pg_proc at call time, so they stay right as functions are added.
-- revoke_usage also removes explicit EXECUTE grants on every other df function (0.1.0's
-- grant_usage granted each one).
--
-- Routines are re-applied on every install and upgrade (engine/schema.py): keep every statement
-- idempotent (CREATE OR REPLACE) and schema-qualified.

-- The one lookup of a role named by an administrator (df.grant_usage, df.revoke_usage,
-- df.set_role_limits): the raw name ('labUser', 'role with space') or a quoted identifier
-- ('"labUser"', '"role""with""quote"'); a clear error for an empty or unknown name. In schema df
-- (not df_internal) and executable by PUBLIC (zz_settings.sql) because a delegated admin calls
-- these functions with no access to df_internal; it reads only pg_roles, which anyone may read.
CREATE OR REPLACE FUNCTION df._role_name(p_role text) RETURNS text
LANGUAGE plpgsql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_role text;
BEGIN
    IF p_role IS NULL OR p_role = '' THEN
        RAISE EXCEPTION 'role name must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT pr.rolname INTO v_role FROM pg_catalog.pg_roles pr WHERE pr.rolname = p_role;
    IF v_role IS NULL AND length(p_role) >= 2 AND left(p_role, 1) = '"' AND right(p_role, 1) = '"' THEN
        SELECT pr.rolname INTO v_role FROM pg_catalog.pg_roles pr
         WHERE pr.rolname = replace(substr(p_role, 2, length(p_role) - 2), '""', '"');
    END IF;
    IF v_role IS NULL THEN
        RAISE EXCEPTION 'role "%" does not exist', p_role USING ERRCODE = 'undefined_object';
    END IF;
    RETURN v_role;
END;
$fn$;

CREATE OR REPLACE FUNCTION df.grant_usage(p_role text, include_http boolean DEFAULT false,
                                          with_grant boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_role text;
    v_opt  text := CASE WHEN coalesce(with_grant, false) THEN ' WITH GRANT OPTION' ELSE '' END;
    r      record;
BEGIN
    -- 'public' is PUBLIC, every role (pg_durable's USER_GUIDE allows it: a deliberate act)
    v_role := CASE WHEN p_role IN ('public', '"public"') THEN 'public' ELSE df._role_name(p_role) END;
    EXECUTE format('GRANT USAGE ON SCHEMA df TO %I', v_role) || v_opt;

    EXECUTE format('GRANT SELECT ON df.instances TO %I', v_role) || v_opt;
    EXECUTE format('GRANT UPDATE (status, updated_at) ON df.instances TO %I', v_role) || v_opt;
    EXECUTE format('GRANT INSERT (id, label, root_node, submitted_by, database) ON df.instances TO %I',
                   v_role) || v_opt;
    EXECUTE format('GRANT SELECT ON df.nodes TO %I', v_role) || v_opt;
    EXECUTE format('GRANT INSERT (id, instance_id, node_type, query, result_name, left_node, '
                   'right_node, submitted_by, database) ON df.nodes TO %I', v_role) || v_opt;
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON df.vars TO %I', v_role) || v_opt;

    FOR r IN
        SELECT p.oid::pg_catalog.regprocedure AS signature,
               CASE
                   WHEN p.prorettype = 'pg_catalog.trigger'::pg_catalog.regtype
                     OR p.prorettype = 'pg_catalog.event_trigger'::pg_catalog.regtype
                     OR p.proname LIKE '\_%' THEN 'internal'
                   WHEN p.proname IN ('grant_usage', 'revoke_usage', 'metrics') THEN 'admin'
                   WHEN p.proname IN ('http', 'http_multipart') THEN 'http'
                   ELSE 'user'
               END AS kind
          FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = 'df'::pg_catalog.regnamespace
         ORDER BY p.oid
    LOOP
        IF (r.kind = 'http' AND coalesce(include_http, false))
           OR (r.kind = 'admin' AND coalesce(with_grant, false)) THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', r.signature, v_role) || v_opt;
        END IF;
    END LOOP;

    RAISE NOTICE 'pg_durable: granted df usage privileges to "%"', v_role;
END;
$fn$;

CREATE OR REPLACE FUNCTION df.revoke_usage(p_role text)
RETURNS void
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_role text;
    r      record;
BEGIN
    v_role := CASE WHEN p_role IN ('public', '"public"') THEN 'public' ELSE df._role_name(p_role) END;
    -- Refuse to cut off the caller's own access through a role it is a member of; superusers
    -- are exempt because they keep access regardless. Revoking from itself is left to
    -- PostgreSQL, as in pg_durable: REVOKE removes only what the caller granted, so a delegated
    -- admin's self-revoke keeps the access it was given.
    IF NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)
       AND v_role <> current_user AND v_role <> 'public'
       AND pg_catalog.pg_has_role(current_user, v_role, 'MEMBER') THEN
        RAISE EXCEPTION 'cannot revoke df privileges from "%" because the current role ("%") is a member of it; use a different administrator',
            v_role, current_user USING ERRCODE = 'insufficient_privilege';
    END IF;

    -- Per-function so a delegated admin lacking some privilege (e.g. df.http) still revokes the
    -- rest. CASCADE also removes what the role re-granted WITH GRANT OPTION. From PUBLIC only
    -- what df.grant_usage granted it: PUBLIC keeps EXECUTE on the ordinary functions and SELECT
    -- on the self-filtering views, as a fresh install gives it (schema USAGE is the gate).
    FOR r IN
        SELECT p.oid::pg_catalog.regprocedure AS signature
          FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = 'df'::pg_catalog.regnamespace
           AND (v_role <> 'public'
                OR p.proname IN ('grant_usage', 'revoke_usage', 'metrics', 'http', 'http_multipart'))
         ORDER BY p.oid
    LOOP
        BEGIN
            EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM %I CASCADE', r.signature, v_role);
        EXCEPTION WHEN insufficient_privilege THEN
            NULL;
        END;
    END LOOP;
    FOR r IN
        SELECT c.oid::pg_catalog.regclass AS rel
          FROM pg_catalog.pg_class c
         WHERE c.relnamespace = 'df'::pg_catalog.regnamespace
           AND c.relkind IN ('v', 'm') AND v_role <> 'public'
         ORDER BY c.oid
    LOOP
        EXECUTE format('REVOKE SELECT ON %s FROM %I CASCADE', r.rel, v_role);
    END LOOP;

    EXECUTE format('REVOKE SELECT, INSERT, UPDATE, DELETE ON df.vars FROM %I CASCADE', v_role);
    EXECUTE format('REVOKE INSERT (id, instance_id, node_type, query, result_name, left_node, '
                   'right_node, submitted_by, database) ON df.nodes FROM %I CASCADE', v_role);
    EXECUTE format('REVOKE SELECT ON df.nodes FROM %I CASCADE', v_role);
    EXECUTE format('REVOKE INSERT (id, label, root_node, submitted_by, database) ON df.instances '
                   'FROM %I CASCADE', v_role);
    EXECUTE format('REVOKE UPDATE (status, updated_at) ON df.instances FROM %I CASCADE', v_role);
    EXECUTE format('REVOKE SELECT ON df.instances FROM %I CASCADE', v_role);
    EXECUTE format('REVOKE USAGE ON SCHEMA df FROM %I CASCADE', v_role);

    RAISE NOTICE 'pg_durable: revoked df usage privileges from "%"', v_role;
END;
$fn$;

COMMENT ON FUNCTION df.grant_usage(text, boolean, boolean) IS
    'Grant a role the df privileges it needs (include_http adds df.http*, with_grant makes it a delegated admin)';
COMMENT ON FUNCTION df.revoke_usage(text) IS 'Revoke everything df.grant_usage grants';

