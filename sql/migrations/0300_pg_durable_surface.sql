-- pg_durable 0.2.6 surface, part 1: the readiness/epoch tables and the functions whose
-- signature (argument names, argument list or result columns) differed from pg_durable's.
--
-- CREATE OR REPLACE cannot rename an argument or change result columns, so each such function
-- is dropped here and re-created by its routines file (sql/routines/*.sql) right after the
-- migrations. The privileges explicitly granted on the dropped functions are saved first and
-- re-granted on the new definitions by sql/routines/zz_pg_durable_surface.sql, so a delegated
-- admin keeps df.grant_usage and a role keeps what grant_usage gave it.

-- pg_durable's readiness sentinel: one row (sentinel = true) with an integer schema_version that
-- its setup polls with `WHERE schema_version >= 1`.
DROP TABLE IF EXISTS df_internal._worker_ready;
CREATE TABLE df_internal._worker_ready (
    sentinel        boolean     NOT NULL DEFAULT true PRIMARY KEY,
    schema_version  integer     NOT NULL,
    initialized_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT only_one_sentinel CHECK (sentinel)
);

-- Engine epochs are uuids, as pg_durable's. Rows of running 0.1.0 engines (text ids) are
-- heartbeats only: the engines re-register when they restart on the new schema.
DELETE FROM df._worker_epoch
 WHERE epoch_id OPERATOR(pg_catalog.!~) '^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$';
ALTER TABLE df._worker_epoch ALTER COLUMN epoch_id TYPE uuid USING epoch_id::uuid;

-- Privileges granted on the functions dropped below, re-granted after the routines ran.
CREATE TEMPORARY TABLE df_saved_acl (name text, grantee oid, privilege_type text, grantable boolean)
    ON COMMIT DROP;
INSERT INTO df_saved_acl
SELECT p.proname, a.grantee, a.privilege_type, a.is_grantable
  FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
 WHERE p.pronamespace OPERATOR(pg_catalog.=) 'df'::pg_catalog.regnamespace
   AND p.proname OPERATOR(pg_catalog.=) ANY (ARRAY['grant_usage', 'revoke_usage'])
   AND a.grantee OPERATOR(pg_catalog.<>) p.proowner;

-- df.start(fut, label, database, transaction_mode) must resolve as df.start(text,text,text,text)
-- (GRANT/DROP/has_function_privilege by signature); the instance retry policy moves to
-- df.start_with_retry(fut, retry_policy, ...).
DROP FUNCTION IF EXISTS df.start(text, text, text, text, jsonb);

-- Argument names as pg_durable's (named-argument calls) and result types (bigint execution
-- ids, text output/result/status_details).
DROP FUNCTION IF EXISTS df.grant_usage(text, boolean, boolean);
DROP FUNCTION IF EXISTS df.revoke_usage(text);
DROP FUNCTION IF EXISTS df.wait_for_schedule(text);
DROP FUNCTION IF EXISTS df.list_instances(text, integer);
DROP FUNCTION IF EXISTS df.list_instances(text, integer, text, text);
DROP FUNCTION IF EXISTS df.instance_info(text);
DROP FUNCTION IF EXISTS df.instance_executions(text, integer);
DROP FUNCTION IF EXISTS df.instance_nodes(text);
