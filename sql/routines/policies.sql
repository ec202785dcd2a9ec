-- Row-level security: an ordinary role sees and writes only its own instances, nodes and vars
-- (docs/security.md). RLS itself is enabled on the tables (sql/0.1.0/010_tables.sql);
-- superusers, owners and BYPASSRLS roles skip it, which identity.sql closes.
--
-- Routines are re-applied on every install and upgrade (engine/schema.py): keep every statement
-- idempotent (CREATE OR REPLACE) and schema-qualified.

DROP POLICY IF EXISTS instances_owner ON df.instances;
CREATE POLICY instances_owner ON df.instances
    USING (submitted_by = quote_ident(current_user)::regrole)
    WITH CHECK (submitted_by = quote_ident(current_user)::regrole);

DROP POLICY IF EXISTS nodes_owner ON df.nodes;
CREATE POLICY nodes_owner ON df.nodes
    USING (submitted_by = quote_ident(current_user)::regrole)
    WITH CHECK (submitted_by = quote_ident(current_user)::regrole);

DROP POLICY IF EXISTS vars_owner ON df.vars;
CREATE POLICY vars_owner ON df.vars
    USING (owner = quote_ident(current_user)::regrole)
    WITH CHECK (owner = quote_ident(current_user)::regrole);
