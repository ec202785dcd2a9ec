-- Fairness and resource limits (docs/operations.md "Limits"): per-role overrides set by an
-- administrator (df.set_role_limits), the engines' own defaults, and the per-role "running step"
-- slots the claim takes row locks on.

-- Per-role overrides of the engines' defaults; NULL = the default.
CREATE TABLE df_internal.role_limits (
    role_oid        oid         NOT NULL PRIMARY KEY,
    max_running     integer     CHECK (max_running IS NULL OR max_running >= 1),
    max_pending     integer     CHECK (max_pending IS NULL OR max_pending >= 0),
    step_timeout_ms bigint      CHECK (step_timeout_ms IS NULL OR step_timeout_ms >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    updated_by      name        NOT NULL DEFAULT session_user
);

-- One row per (role, slot). A claim locks one free slot row of the role (FOR UPDATE SKIP LOCKED)
-- for the transaction that runs the role's step: at most "cap" slot rows of a role can be locked
-- at once, across every engine. Row locks on a table only the engine's owner may touch: no other
-- role can take them (an advisory-lock semaphore could be taken by anyone).
CREATE TABLE df_internal.role_slots (
    role_oid  oid     NOT NULL,
    slot      integer NOT NULL,
    PRIMARY KEY (role_oid, slot)
);

-- Each engine's configured defaults, shown by df.engines / `dftui limits`.
ALTER TABLE df_internal.engines ADD COLUMN IF NOT EXISTS role_max_running integer;
ALTER TABLE df_internal.engines ADD COLUMN IF NOT EXISTS step_timeout_ms bigint;

-- A workflow's own step timeout (df.step_timeout in the caller's session at df.start).
ALTER TABLE df_internal.instance_state ADD COLUMN IF NOT EXISTS step_timeout_ms bigint;

REVOKE ALL ON df_internal.role_limits, df_internal.role_slots FROM PUBLIC;

-- Slots for every role that already has instances.
INSERT INTO df_internal.role_slots (role_oid, slot)
SELECT DISTINCT s.submitted_by::oid, g
  FROM df_internal.instance_state s, generate_series(0, 63) g
ON CONFLICT DO NOTHING;

-- The security-relevant pg_durable.* settings as each engine's own session sees them (server
-- configuration, ALTER DATABASE / ALTER ROLE values of superusers): df._setting reads them where
-- an ordinary user's SET cannot reach (sql/routines/settings.sql).
ALTER TABLE df_internal.engines ADD COLUMN IF NOT EXISTS settings jsonb;
