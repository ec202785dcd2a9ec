-- dftui 0.1.0: schemas. `df` is the public, pg_durable-compatible surface; `df_internal` holds
-- engine state (queues, timers, signal inbox, attempts, heartbeats) and is never granted to users.
CREATE SCHEMA IF NOT EXISTS df;
CREATE SCHEMA IF NOT EXISTS df_internal;
-- Per-role SECURITY DEFINER trampolines the engine runs steps through (engine/identity.py).
CREATE SCHEMA IF NOT EXISTS df_exec;
REVOKE ALL ON SCHEMA df FROM PUBLIC;
REVOKE ALL ON SCHEMA df_internal FROM PUBLIC;
REVOKE ALL ON SCHEMA df_exec FROM PUBLIC;
COMMENT ON SCHEMA df IS 'dftui durable workflows (pg_durable-compatible API)';
COMMENT ON SCHEMA df_internal IS 'dftui engine state; not for direct use';
