-- Fairness and resource limits (docs/operations.md "Limits"; issue 13 "Fairness"): no role's long
-- or numerous steps may starve the others.
--   * running steps per role: each engine has a default cap (--role-max-running, by default all
--     live engines' workers minus one, so one role never takes every worker); an administrator
--     overrides it
--     per role. Enforced in the claim (df_internal.claim_tasks) with row locks on
--     df_internal.role_slots, so the cap holds across every engine and nobody else can take them;
--   * a per-step statement_timeout: the engine's --step-timeout, a per-role ceiling set by an
--     administrator, and per workflow `SET df.step_timeout = '...'` before df.start (never above
--     the role's ceiling);
--   * optionally a per-role limit on pending + running instances, enforced when the instance is
--     inserted (df.start or a direct INSERT) with a clear error.

-- Make sure a role has at least p_count slot rows (0 .. p_count - 1). Run in the transaction
-- that inserts the role's instance, so the rows exist (committed) before any of its tasks can
-- be claimed; the claim never inserts (an uncommitted slot would be invisible to other engines).
CREATE OR REPLACE FUNCTION df_internal.ensure_role_slots(p_role oid, p_count integer DEFAULT 64)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM df_internal.role_slots r
                    WHERE r.role_oid = p_role AND r.slot = GREATEST(p_count, 1) - 1) THEN
        INSERT INTO df_internal.role_slots (role_oid, slot)
        SELECT p_role, g FROM pg_catalog.generate_series(0, GREATEST(p_count, 1) - 1) g
        ON CONFLICT DO NOTHING;
    END IF;
END $$;

-- A step timeout as milliseconds: a bare number is milliseconds (as statement_timeout), else
-- any interval ('30s', '5min'). `p_what` names the setting in the error: the one parser of
-- df.step_timeout (admit_instance) and of df.set_role_limits' step_timeout.
CREATE OR REPLACE FUNCTION df_internal.duration_ms(p_value text, p_what text) RETURNS bigint
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_ms bigint;
BEGIN
    BEGIN
        v_ms := (EXTRACT(EPOCH FROM CASE WHEN p_value ~ '^\s*[0-9]+\s*$' THEN (p_value || ' ms')::interval
                                         ELSE p_value::interval END) * 1000)::bigint;
    EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION '% must be a duration such as ''30s'' or ''5min'', got "%"', p_what, p_value
            USING ERRCODE = 'invalid_parameter_value';
    END;
    IF v_ms < 0 THEN
        RAISE EXCEPTION '% must not be negative, got "%"', p_what, p_value
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN v_ms;
END $$;

-- Called by on_instance_insert for the frozen identity: slots, the pending limit, and the
-- workflow's own step timeout (df.step_timeout, an ordinary setting: it can only lower the
-- role's ceiling, see step_timeout_for).
CREATE OR REPLACE FUNCTION df_internal.admit_instance(p_instance varchar, p_role regrole)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    lim df_internal.role_limits%ROWTYPE;
    active bigint;
    wf text := NULLIF(pg_catalog.current_setting('df.step_timeout', true), '');
    wf_ms bigint;
BEGIN
    SELECT * INTO lim FROM df_internal.role_limits l WHERE l.role_oid = p_role::oid;
    PERFORM df_internal.ensure_role_slots(p_role::oid, GREATEST(64, COALESCE(lim.max_running, 0)));
    IF lim.max_pending IS NOT NULL THEN
        -- One admission of the role at a time: concurrent df.start calls of one role each counted
        -- the others' uncommitted instances as absent, so six open transactions of a role with a
        -- limit of 2 all got in. The role's own row of role_limits, locked until the inserting
        -- transaction ends: it delays only that role's next df.start (the engine reads the row
        -- without locking it), and the count below, a new statement, sees what the previous
        -- admission committed (exact under READ COMMITTED, the default; a REPEATABLE READ
        -- caller counts from its own snapshot).
        PERFORM 1 FROM df_internal.role_limits l WHERE l.role_oid = p_role::oid FOR UPDATE;
        SELECT count(*) INTO active FROM df.instances i
         WHERE i.submitted_by = p_role AND df_internal.is_live(i.status);
        IF active > lim.max_pending THEN
            RAISE EXCEPTION 'pg_durable: role % already has % pending or running instances, its limit is %; wait for some to finish (or ask an administrator: df.set_role_limits)',
                            p_role, active - 1, lim.max_pending
                USING ERRCODE = 'configuration_limit_exceeded';
        END IF;
    END IF;
    IF wf IS NOT NULL THEN
        wf_ms := df_internal.duration_ms(wf, 'df.step_timeout');
        UPDATE df_internal.instance_state s SET step_timeout_ms = wf_ms WHERE s.instance_id = p_instance;
    END IF;
END $$;

-- The statement_timeout (milliseconds, as text for set_config) of the next step of an instance:
-- the role's ceiling (its override, else the engine's default; 0 = none), lowered by the
-- workflow's own value if it has one.
CREATE OR REPLACE FUNCTION df_internal.step_timeout_for(p_instance varchar, p_engine_default_ms bigint)
RETURNS text LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (CASE WHEN wf > 0 AND (ceiling = 0 OR wf < ceiling) THEN wf ELSE ceiling END)::text
      FROM (SELECT COALESCE(s.step_timeout_ms, 0) AS wf,
                   COALESCE((SELECT l.step_timeout_ms FROM df_internal.role_limits l
                              WHERE l.role_oid = s.submitted_by::oid),
                            GREATEST(p_engine_default_ms, 0), 0) AS ceiling
              FROM df_internal.instance_state s WHERE s.instance_id = p_instance) x
    UNION ALL SELECT GREATEST(p_engine_default_ms, 0)::text
    LIMIT 1
$$;

-- The running-step cap of a role for a claim by engine p_engine: the role's override, else the
-- engine's --role-max-running, else all live engines' workers minus one (at least 1): one role
-- alone can use every engine but one worker, which is always left for the others.
CREATE OR REPLACE FUNCTION df_internal.role_cap(p_role oid, p_engine text) RETURNS integer
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT COALESCE(
        (SELECT l.max_running FROM df_internal.role_limits l WHERE l.role_oid = p_role),
        (SELECT e.role_max_running FROM df_internal.engines e WHERE e.id = p_engine),
        (SELECT GREATEST(1, pg_catalog.sum(e.concurrency)::integer - 1) FROM df_internal.engines e
          WHERE e.stopped_at IS NULL AND e.heartbeat_at > pg_catalog.now() - interval '60 seconds'
         HAVING pg_catalog.count(*) > 0),
        2147483647)  -- no live engine known (a claim outside any engine): nothing to share
$$;

-- Set a role's overrides (NULL = the engines' default). SECURITY INVOKER: only a superuser or a
-- member of the df owner may write df_internal.role_limits; checked first for a clear message.
CREATE OR REPLACE FUNCTION df.set_role_limits(p_role text, max_running integer DEFAULT NULL,
                                              max_pending integer DEFAULT NULL,
                                              step_timeout text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
#variable_conflict use_variable
DECLARE
    v_name text;
    v_oid oid;
    v_ms bigint;
BEGIN
    IF NOT pg_catalog.pg_has_role(current_user,
            (SELECT n.nspowner FROM pg_catalog.pg_namespace n WHERE n.nspname = 'df_internal'), 'MEMBER') THEN
        RAISE EXCEPTION 'df.set_role_limits: only a superuser or the owner of the df schemas may set limits'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    v_name := df._role_name(p_role);
    SELECT r.oid INTO v_oid FROM pg_catalog.pg_roles r WHERE r.rolname = v_name;
    IF max_running IS NOT NULL AND max_running < 1 THEN
        RAISE EXCEPTION 'max_running must be at least 1, got %', max_running USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF max_pending IS NOT NULL AND max_pending < 0 THEN
        RAISE EXCEPTION 'max_pending must not be negative, got %', max_pending USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF step_timeout IS NOT NULL THEN
        v_ms := df_internal.duration_ms(step_timeout, 'step_timeout');
    END IF;
    IF max_running IS NULL AND max_pending IS NULL AND v_ms IS NULL THEN
        DELETE FROM df_internal.role_limits l WHERE l.role_oid = v_oid;
    ELSE
        INSERT INTO df_internal.role_limits AS l (role_oid, max_running, max_pending, step_timeout_ms)
        VALUES (v_oid, max_running, max_pending, v_ms)
        ON CONFLICT (role_oid) DO UPDATE
           SET max_running = EXCLUDED.max_running, max_pending = EXCLUDED.max_pending,
               step_timeout_ms = EXCLUDED.step_timeout_ms, updated_at = now(), updated_by = session_user;
    END IF;
    PERFORM df_internal.ensure_role_slots(v_oid, GREATEST(64, COALESCE(max_running, 0)));
END $fn$;
-- (PUBLIC keeps EXECUTE, as every ordinary df function: the function checks the caller itself)

-- Limits in force, one row per role that has an override or instances: what the TUI's engines
-- screen and `dftui limits` show. An ordinary role sees only its own row.
CREATE OR REPLACE VIEW df.role_limits WITH (security_barrier = true) AS
SELECT r.rolname::text AS role,
       l.max_running, l.max_pending,
       l.step_timeout_ms,
       l.updated_at
  FROM df_internal.role_limits l
  JOIN pg_catalog.pg_roles r ON r.oid = l.role_oid
 WHERE r.rolname = current_user
    OR (SELECT df_internal.sees_every_instance(rr.oid)
          FROM pg_catalog.pg_roles rr WHERE rr.rolname = current_user);
REVOKE ALL ON df.role_limits FROM PUBLIC;

-- (df.engines, in monitoring.sql, shows each engine's role_max_running and step_timeout_ms.)
