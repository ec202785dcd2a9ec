-- Who cancelled an instance, taken from the session that cancelled it (sql/routines/identity.sql).
ALTER TABLE df_internal.instance_state ADD COLUMN IF NOT EXISTS cancelled_by regrole;
