-- df.vars, readable without ever waiting on a lock another role holds (issue 13, availability).
--
-- pg_durable's grants (table-level UPDATE and DELETE on df.vars) let any granted role LOCK
-- TABLE df.vars IN ACCESS EXCLUSIVE MODE. df.vars is therefore only written and read directly
-- by users; everything that must not wait on such a lock reads df_internal.var_values, a copy
-- the triggers below keep equal to df.vars in the writer's own transaction: df.start's vars
-- snapshot (df_internal.on_instance_insert), df.getvar, the engine. Only the df owner can lock
-- df_internal.var_values. df.setvar/unsetvar/clearvars write df.vars itself (they are refused
-- inside workflows, so no step waits there).
-- Routines are re-applied on every install and upgrade (engine/schema.py): idempotent, qualified.

CREATE OR REPLACE FUNCTION df_internal.copy_var() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        DELETE FROM df_internal.var_values c WHERE c.owner = OLD.owner AND c.name = OLD.name;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO df_internal.var_values AS c (owner, name, value)
        VALUES (NEW.owner, NEW.name, NEW.value)
        ON CONFLICT (owner, name) DO UPDATE SET value = EXCLUDED.value;
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION df_internal.copy_vars_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM df_internal.var_values;
    RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER vars_copy AFTER INSERT OR UPDATE OR DELETE ON df.vars
    FOR EACH ROW EXECUTE FUNCTION df_internal.copy_var();
CREATE OR REPLACE TRIGGER vars_copy_truncate AFTER TRUNCATE ON df.vars
    FOR EACH STATEMENT EXECUTE FUNCTION df_internal.copy_vars_truncate();

-- The calling role's own vars. A view (run with its owner's table privileges) filtering on
-- current_user, the querying role: SELECT on it is harmless for anyone, and the strongest lock
-- SELECT allows (ACCESS SHARE) blocks nobody. Only df.getvar names it (users have no USAGE on
-- df_internal; getvar's body is resolved when it is created).
CREATE OR REPLACE VIEW df_internal.my_var_values WITH (security_barrier) AS
    SELECT c.name, c.value FROM df_internal.var_values c
     WHERE c.owner OPERATOR(pg_catalog.=) pg_catalog.quote_ident(current_user)::pg_catalog.regrole;
REVOKE ALL ON df_internal.my_var_values FROM PUBLIC;
GRANT SELECT ON df_internal.my_var_values TO PUBLIC;

CREATE OR REPLACE FUNCTION df.getvar(name text)
RETURNS text
LANGUAGE sql STABLE STRICT
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT v.value FROM df_internal.my_var_values v WHERE v.name OPERATOR(pg_catalog.=) getvar.name;
END;
COMMENT ON FUNCTION df.getvar(text) IS 'Value of a variable of the current role, else NULL';

-- A var is code for its owner's steps: `{name}` is replaced by its value, raw, in the step's SQL,
-- which runs as the owner. RLS keeps ordinary roles to their own vars, but a BYPASSRLS role (or
-- the owner of df.vars) skips it: with pg_durable's table grants it could write another role's
-- vars and so run SQL as that role. A var row may therefore only be written or removed by its
-- owner (current_user: this trigger is SECURITY INVOKER), or by the privileged (superusers and
-- members of the df owner, who can act as any role anyway).
CREATE OR REPLACE FUNCTION df_internal.check_var_owner() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    me pg_catalog.regrole := pg_catalog.quote_ident(current_user)::pg_catalog.regrole;
    theirs pg_catalog.regrole;
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.owner IS DISTINCT FROM me THEN
        theirs := OLD.owner;
    ELSIF TG_OP IN ('INSERT', 'UPDATE') AND NEW.owner IS DISTINCT FROM me THEN
        theirs := NEW.owner;
    END IF;
    IF theirs IS NOT NULL
       AND NOT pg_catalog.pg_has_role(current_user,
               (SELECT n.nspowner FROM pg_catalog.pg_namespace n
                 WHERE n.nspname OPERATOR(pg_catalog.=) 'df'), 'MEMBER') THEN
        RAISE EXCEPTION 'df.vars rows of role % can only be written by that role, not "%"',
                        COALESCE(theirs::text, 'NULL'), current_user
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Set vars with df.setvar() as the role whose workflows use them.';
    END IF;
    RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
END $$;

CREATE OR REPLACE TRIGGER vars_owner_check BEFORE INSERT OR UPDATE OR DELETE ON df.vars
    FOR EACH ROW EXECUTE FUNCTION df_internal.check_var_owner();

-- ---------------------------------------------------------------------------------------------
-- Writing vars: df.setvar, df.unsetvar, df.clearvars (unchanged since 0.1.0)
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION df.setvar(name text, value text)
RETURNS text
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
BEGIN
    IF pg_catalog.current_setting('df.in_workflow', true) = 'true' THEN
        RAISE EXCEPTION 'df.setvar() cannot be called inside a workflow - set variables before starting the workflow'
            USING ERRCODE = 'feature_not_supported';
    END IF;
    IF name IS NULL OR name = '' THEN
        RAISE EXCEPTION 'df.setvar: variable name must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO df.vars AS v (name, value, owner)
    VALUES (name, value, pg_catalog.quote_ident(current_user)::regrole)
    ON CONFLICT ON CONSTRAINT vars_pkey DO UPDATE SET value = EXCLUDED.value;
    PERFORM df._mark_non_future_helper('df.setvar');  -- (its 'OK' is no workflow step, dsl.sql)
    RETURN 'OK';
END;
$fn$;
COMMENT ON FUNCTION df.setvar(text, text) IS 'Set a variable of the current role (snapshotted by df.start)';

CREATE OR REPLACE FUNCTION df.unsetvar(name text)
RETURNS text
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
BEGIN
    IF pg_catalog.current_setting('df.in_workflow', true) = 'true' THEN
        RAISE EXCEPTION 'df.unsetvar() cannot be called inside a workflow - manage variables before starting the workflow'
            USING ERRCODE = 'feature_not_supported';
    END IF;
    DELETE FROM df.vars v
     WHERE v.owner = pg_catalog.quote_ident(current_user)::regrole AND v.name = name;
    PERFORM df._mark_non_future_helper('df.unsetvar');
    RETURN 'OK';
END;
$fn$;
COMMENT ON FUNCTION df.unsetvar(text) IS 'Remove a variable of the current role';

CREATE OR REPLACE FUNCTION df.clearvars()
RETURNS text
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF pg_catalog.current_setting('df.in_workflow', true) = 'true' THEN
        RAISE EXCEPTION 'df.clearvars() cannot be called inside a workflow - manage variables before starting the workflow'
            USING ERRCODE = 'feature_not_supported';
    END IF;
    DELETE FROM df.vars v WHERE v.owner = pg_catalog.quote_ident(current_user)::regrole;
    PERFORM df._mark_non_future_helper('df.clearvars');
    RETURN 'OK';
END;
$fn$;
COMMENT ON FUNCTION df.clearvars() IS 'Remove every variable of the current role';
