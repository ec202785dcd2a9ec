-- Who sees every instance: the one rule behind the df views that show a role only its own rows
-- (monitoring.sql, role_limits.sql, health.sql through df_internal.visible) and the console
-- functions that act on a running step (console.sql): a superuser, or a member of the role owning the df schemas, sees everyone's;
-- any other role only the instances it submitted.
--
-- A SQL-standard body (RETURN ...), resolved when it is created (no search_path involved when it
-- runs); PUBLIC may execute it because the views run their functions as the querying role, and
-- it reveals nothing pg_roles and pg_auth_members do not. The views ask it once per query, in an
-- uncorrelated subquery over the calling role (an InitPlan), not once per row.
--
-- Sorts right after 00_vocabulary.sql so the views of later files can use it on a fresh install.
-- Routines are re-applied on every install and upgrade (engine/schema.py): keep every statement
-- idempotent (CREATE OR REPLACE) and schema-qualified.

CREATE OR REPLACE FUNCTION df_internal.sees_every_instance(p_role pg_catalog.oid) RETURNS boolean
LANGUAGE sql STABLE
RETURN COALESCE((SELECT r.rolsuper FROM pg_catalog.pg_roles r
                  WHERE r.oid OPERATOR(pg_catalog.=) p_role), false)
    OR COALESCE((SELECT pg_catalog.pg_has_role(p_role, ns.nspowner, 'MEMBER')
                   FROM pg_catalog.pg_namespace ns
                  WHERE ns.nspname OPERATOR(pg_catalog.=) 'df'), false);
GRANT EXECUTE ON FUNCTION df_internal.sees_every_instance(pg_catalog.oid) TO PUBLIC;

-- Can the querying role see instances submitted by `p_owner`? Called per row from the health
-- views (health.sql), so current_user is the caller. A SQL-standard body without subqueries:
-- the planner can fold it into the view's query.
CREATE OR REPLACE FUNCTION df_internal.visible(p_owner regrole) RETURNS boolean
LANGUAGE sql STABLE
RETURN p_owner OPERATOR(pg_catalog.=) pg_catalog.quote_ident(current_user)::pg_catalog.regrole
    OR df_internal.sees_every_instance(
           pg_catalog.quote_ident(current_user)::pg_catalog.regrole::pg_catalog.oid);
