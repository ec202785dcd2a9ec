-- Lifecycle functions whose definition changed since 0.1.0 (sql-api.md §3).
--
-- Routines are re-applied on every install and upgrade (engine/schema.py): keep every statement
-- idempotent (CREATE OR REPLACE) and schema-qualified.

CREATE OR REPLACE FUNCTION df.cancel(instance_id text, reason text DEFAULT 'Cancelled by user')
RETURNS text
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    v_status text;
BEGIN
    -- The reason is read by the AFTER UPDATE trigger, which also clears it.
    PERFORM pg_catalog.set_config('df.cancel_reason',
                                  coalesce(nullif(reason, ''), 'Cancelled by user'), true);
    UPDATE df.instances i SET status = 'cancelled', updated_at = pg_catalog.now()
     WHERE i.id = instance_id AND i.status IN ('pending', 'running');
    IF FOUND THEN
        PERFORM pg_catalog.set_config('df.cancel_reason', '', true);
        -- pg_durable's answer.
        RETURN pg_catalog.format('Instance %s cancelled: %s', instance_id,
                                 coalesce(nullif(reason, ''), 'Cancelled by user'));
    END IF;
    PERFORM pg_catalog.set_config('df.cancel_reason', '', true);
    -- Nothing updated: either invisible/unknown, or already terminal (terminal states are never
    -- overwritten). The same RLS policy governs this SELECT as the UPDATE above.
    SELECT i.status INTO v_status FROM df.instances i WHERE i.id = instance_id;
    IF v_status IS NULL THEN
        RAISE EXCEPTION 'Instance not found or access denied: %', instance_id
            USING ERRCODE = 'no_data_found';
    END IF;
    RETURN 'already ' || v_status;
END;
$fn$;
COMMENT ON FUNCTION df.cancel(text, text) IS
    'Cancel an instance you own: ''Instance <id> cancelled: <reason>'' (pg_durable''s answer), or ''already <status>'' when it had finished';
