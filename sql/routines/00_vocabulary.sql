-- The vocabulary of the schema, each concept defined once (the Python side's twin is
-- dftui/vocabulary.py): which node types have children, which keep a JSON config in
-- df.nodes.query, and which statuses an instance is live in. df_internal's SQL asks these
-- ("is this node composite?") instead of repeating a list. SECURITY INVOKER df functions cannot:
-- their callers have no USAGE on df_internal, so df.start/df.ensure_durofut (the full list of
-- node types) and the monitoring functions spell their lists out.
--
-- Each is an IMMUTABLE SQL-standard function (RETURN ...): its body is resolved when it is
-- created, so no search_path is involved when it runs, and PostgreSQL inlines it into the calling
-- query or PL/pgSQL expression: asking costs what the literal list cost. dftui/vocabulary.py and
-- the CHECK constraints of df.nodes (sql/0.1.0/010_tables.sql) name the same types and statuses;
-- tests/test_routines_layout.py checks that they agree.
--
-- This file sorts first (00_) so the views of later files can use these functions on a fresh
-- install. Routines are re-applied on every install and upgrade (engine/schema.py): keep every
-- statement idempotent (CREATE OR REPLACE) and schema-qualified.

-- Composite nodes: their result is decided by their children (left/right/condition/extra), so
-- no engine ever runs them; every other type is a leaf.
CREATE OR REPLACE FUNCTION df_internal.is_composite(p_node_type text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN p_node_type OPERATOR(pg_catalog.=) ANY (ARRAY['THEN', 'IF', 'JOIN', 'RACE', 'LOOP']::pg_catalog.text[]);

-- Node types whose df.nodes.query is a JSON config rather than SQL text or a plain value
-- (docs/engine.md, "Node rows").
CREATE OR REPLACE FUNCTION df_internal.has_config(p_node_type text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN p_node_type OPERATOR(pg_catalog.=) ANY (
    ARRAY['IF', 'JOIN', 'LOOP', 'SIGNAL', 'HTTP', 'HTTP_MULTIPART', 'BREAK']::pg_catalog.text[]);

-- An instance (or task of one) in one of these may still change; the others are final.
CREATE OR REPLACE FUNCTION df_internal.is_live(p_status text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN p_status OPERATOR(pg_catalog.=) ANY (ARRAY['pending', 'running']::pg_catalog.text[]);

