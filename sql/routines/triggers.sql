-- The request triggers of df.instances: df.start's INSERT hands the instance to the engine,
-- and the RLS-checked UPDATE of df.cancel / df.signal / df.retry carries the privileged part
-- (docs/engine.md, "Requests that need privileged work"). The trigger functions
-- (on_instance_insert, guard_instance_update, on_instance_update) are in identity.sql,
-- beside the identity checks they run; the size-limit triggers are in limits.sql.
--
-- Routines are re-applied on every install and upgrade (engine/schema.py): keep every statement
-- idempotent (CREATE OR REPLACE) and schema-qualified.

CREATE OR REPLACE TRIGGER instances_after_insert AFTER INSERT ON df.instances
    FOR EACH ROW EXECUTE FUNCTION df_internal.on_instance_insert();

CREATE OR REPLACE TRIGGER instances_before_update BEFORE UPDATE ON df.instances
    FOR EACH ROW EXECUTE FUNCTION df_internal.guard_instance_update();

-- Only for what it handles (a cancel, or a request set by df.signal / df.retry): the engine's own
-- status updates skip the call.
CREATE OR REPLACE TRIGGER instances_after_update AFTER UPDATE ON df.instances
    FOR EACH ROW
    WHEN ((NEW.status = 'cancelled' AND OLD.status IS DISTINCT FROM 'cancelled')
          OR COALESCE(current_setting('df.request', true), '') <> '')
    EXECUTE FUNCTION df_internal.on_instance_update();
