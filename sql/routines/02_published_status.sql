-- Instance status: the engine's truth, published into df.instances without waiting (issue 13,
-- availability; migration 0510, docs/architecture.md "Instance status").
--
-- Every df role may row-lock its df.instances rows (pg_durable grants UPDATE (status,
-- updated_at)), and a role that skips RLS may lock anyone's. Nothing that makes an instance
-- progress waits for that row: a status that cannot be written at once is kept in
-- df_internal.instance_state.unpublished_status, every reader that decides anything takes it
-- from there (df_internal.status_of, and df_internal.my_unpublished_statuses for the callers'
-- own), and the next UPDATE of the row carries it in (publish_on_update below; the engine's
-- housekeeping calls publish_unpublished).
--
-- Sorts before the routines that use it (lifecycle.sql's BEGIN ATOMIC bodies name the view).
-- Routines are re-applied on every install and upgrade (engine/schema.py): keep every statement
-- idempotent (CREATE OR REPLACE) and schema-qualified.

-- The status that counts: a terminal row is final (nothing overwrites it, and the engine's
-- status written while a cancel held the row came second); else the unpublished one, if any.
CREATE OR REPLACE FUNCTION df_internal.effective_status(p_row_status text, p_unpublished text)
RETURNS text LANGUAGE sql IMMUTABLE
RETURN CASE WHEN p_row_status OPERATOR(pg_catalog.=) ANY (ARRAY['completed', 'failed', 'cancelled'])
            THEN p_row_status
            ELSE COALESCE(p_unpublished, p_row_status) END;
GRANT EXECUTE ON FUNCTION df_internal.effective_status(text, text) TO PUBLIC;

CREATE OR REPLACE FUNCTION df_internal.status_of(p_instance varchar) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT df_internal.effective_status(i.status, s.unpublished_status)
      FROM df.instances i LEFT JOIN df_internal.instance_state s ON s.instance_id = i.id
     WHERE i.id = p_instance
$$;
REVOKE ALL ON FUNCTION df_internal.status_of(varchar) FROM PUBLIC;

-- The calling role's unpublished statuses (everyone's for a role that sees every instance): a
-- view run with its owner's table privileges, filtered on the querying role, so SELECT on it is
-- harmless for anyone. Only BEGIN ATOMIC bodies name it (users have no USAGE on df_internal).
CREATE OR REPLACE VIEW df_internal.my_unpublished_statuses WITH (security_barrier) AS
    SELECT s.instance_id, s.unpublished_status AS status
      FROM df_internal.instance_state s
     WHERE s.unpublished_status IS NOT NULL
       AND df_internal.visible(s.submitted_by);
REVOKE ALL ON df_internal.my_unpublished_statuses FROM PUBLIC;
GRANT SELECT ON df_internal.my_unpublished_statuses TO PUBLIC;

-- Write an instance's status: into the row when nobody else holds it, else kept unpublished.
-- Returns whether the row was written. The caller decides whether the change is allowed.
CREATE OR REPLACE FUNCTION df_internal.set_instance_status(p_instance varchar, p_status text,
                                                           p_completed_at timestamptz DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- (one statement: the row is taken only if nobody holds it, then written; the hot path of
    -- every instance's end)
    UPDATE df.instances i SET status = p_status, completed_at = p_completed_at
     WHERE i.id = p_instance
       AND i.id IN (SELECT x.id FROM df.instances x WHERE x.id = p_instance
                     FOR NO KEY UPDATE SKIP LOCKED);
    IF FOUND THEN
        RETURN true;
    END IF;
    UPDATE df_internal.instance_state s
       SET unpublished_status = p_status, unpublished_completed_at = p_completed_at
     WHERE s.instance_id = p_instance;
    RETURN false;
END $$;
REVOKE ALL ON FUNCTION df_internal.set_instance_status(varchar, text, timestamptz) FROM PUBLIC;

-- BEFORE UPDATE of an instance row, after the guard (triggers fire in name order): whoever
-- updates the row holds it now, so an unpublished status goes in with this update. A terminal
-- row stays as it is (its status came later than the unpublished one, see effective_status);
-- an update that sets a status of its own keeps it unless the unpublished one is terminal
-- (terminal statuses are never overwritten: a cancel after the engine finished changes nothing).
CREATE OR REPLACE FUNCTION df_internal.publish_on_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    u_status text;
    u_completed timestamptz;
BEGIN
    UPDATE df_internal.instance_state s
       SET unpublished_status = NULL, unpublished_completed_at = NULL
      FROM (SELECT x.instance_id, x.unpublished_status, x.unpublished_completed_at
              FROM df_internal.instance_state x
             WHERE x.instance_id = NEW.id AND x.unpublished_status IS NOT NULL
               FOR NO KEY UPDATE) prev
     WHERE s.instance_id = prev.instance_id
    RETURNING prev.unpublished_status, prev.unpublished_completed_at INTO u_status, u_completed;
    IF u_status IS NULL OR OLD.status IN ('completed', 'failed', 'cancelled') THEN
        RETURN NEW;
    END IF;
    IF NEW.status IS NOT DISTINCT FROM OLD.status OR u_status IN ('completed', 'failed', 'cancelled') THEN
        NEW.status := u_status;
        NEW.completed_at := u_completed;
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE TRIGGER instances_before_update_publish BEFORE UPDATE ON df.instances
    FOR EACH ROW EXECUTE FUNCTION df_internal.publish_on_update();

-- The engine's publisher (housekeeping): every unpublished status whose row nobody holds now.
-- Returns how many were published.
CREATE OR REPLACE FUNCTION df_internal.publish_unpublished() RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n integer;
BEGIN
    WITH free AS (
        SELECT i.id FROM df.instances i
         WHERE i.id IN (SELECT s.instance_id FROM df_internal.instance_state s
                         WHERE s.unpublished_status IS NOT NULL)
           FOR NO KEY UPDATE SKIP LOCKED)
    UPDATE df.instances i SET updated_at = i.updated_at FROM free WHERE i.id = free.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;
REVOKE ALL ON FUNCTION df_internal.publish_unpublished() FROM PUBLIC;

-- Requests filed without the instance row (df.cancel / df.signal when somebody else holds it):
-- the inserting role is requested_by (its column default; not insertable). Ownership is RLS's
-- rule, applied here for every requester: only the instance's submitter, or a role that sees
-- every instance, may act on it. The row is deleted once done: what it did is recorded where
-- the row path records it (instance_state.cancelled_by, df_internal.signals.requested_by).
CREATE OR REPLACE FUNCTION df_internal.on_instance_request() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    owner regrole;
    st text;
BEGIN
    SELECT s.submitted_by, df_internal.effective_status(i.status, s.unpublished_status)
      INTO owner, st
      FROM df.instances i JOIN df_internal.instance_state s ON s.instance_id = i.id
     WHERE i.id = NEW.instance_id;
    IF owner IS NULL
       OR (owner IS DISTINCT FROM NEW.requested_by
           AND NOT df_internal.sees_every_instance(NEW.requested_by::oid)) THEN
        RAISE EXCEPTION 'Instance not found or access denied: %', NEW.instance_id
            USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM df_internal.lock_instance(NEW.instance_id);
    st := df_internal.status_of(NEW.instance_id);
    IF NEW.op = 'cancel' AND st IN ('pending', 'running') THEN
        PERFORM df_internal.apply_cancel(NEW.instance_id, NEW.reason, NEW.requested_by);
        PERFORM df_internal.set_instance_status(NEW.instance_id, 'cancelled');
    ELSIF NEW.op = 'signal' THEN
        PERFORM df_internal.enqueue_signal(NEW.instance_id, NEW.signal_name,
                                           COALESCE(NEW.signal_data, '{}'), NEW.requested_by);
    END IF;
    DELETE FROM df_internal.instance_requests r WHERE r.id = NEW.id;
    RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER instance_requests_after_insert AFTER INSERT ON df_internal.instance_requests
    FOR EACH ROW EXECUTE FUNCTION df_internal.on_instance_request();

-- What a cancel does besides the status (shared by the row's trigger and the request path):
-- record why and by whom, drop queued work, and tell engines to stop the running steps (they
-- check the database: listener.cancel_dead_steps). Once per execution: a cancel already
-- recorded (cancel_reason is reset by df.retry) is not recorded again when it is published.
CREATE OR REPLACE FUNCTION df_internal.apply_cancel(p_instance varchar, p_reason text, p_requester regrole)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE df_internal.instance_state
       SET cancel_reason = COALESCE(p_reason, 'Cancelled by user'), finished_at = clock_timestamp(),
           error = COALESCE(p_reason, 'Cancelled by user'), cancelled_by = p_requester
     WHERE instance_id = p_instance AND cancel_reason IS NULL;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- Queued work goes now; tasks locked by a running step are dropped by its worker.
    DELETE FROM df_internal.tasks t
     WHERE t.ctid IN (SELECT t2.ctid FROM df_internal.tasks t2
                       WHERE t2.instance_id = p_instance FOR UPDATE SKIP LOCKED);
    PERFORM pg_notify('df_cancel', '');
END $$;
REVOKE ALL ON FUNCTION df_internal.apply_cancel(varchar, text, regrole) FROM PUBLIC;

-- df.cancel's and df.signal's way around an instance row somebody else holds (the caller's own
-- checks ran first). A SQL-standard body: resolved when created, so it runs for roles without
-- USAGE on df_internal; the INSERT runs as the caller, who becomes requested_by.
CREATE OR REPLACE FUNCTION df._file_instance_request(p_instance text, p_op text, p_reason text,
                                                     p_signal_name text, p_signal_data jsonb)
RETURNS void LANGUAGE sql SECURITY INVOKER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    INSERT INTO df_internal.instance_requests (instance_id, op, reason, signal_name, signal_data)
    VALUES (p_instance, p_op, p_reason, p_signal_name, p_signal_data);
END;
COMMENT ON FUNCTION df._file_instance_request(text, text, text, text, jsonb) IS
    'Internal to df.cancel and df.signal: a request for an instance whose row another session holds';

-- The caller's view of an instance's status (RLS on df.instances, plus its own unpublished one).
CREATE OR REPLACE FUNCTION df._instance_status(p_instance text) RETURNS text
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT df_internal.effective_status(i.status, u.status)
      FROM df.instances i
      LEFT JOIN df_internal.my_unpublished_statuses u ON u.instance_id = i.id
     WHERE i.id = p_instance;
END;
COMMENT ON FUNCTION df._instance_status(text) IS
    'Internal: an instance''s status as the df functions report it (NULL when not visible)';

-- Deleting an instance deletes its engine state, and with it (foreign keys to instance_state,
-- ON DELETE CASCADE) its nodes, tasks, attempts, signals and the rest; a TRUNCATE of
-- df.instances empties them all. (A trigger, not a foreign key: see migration 0510, item 5.)
CREATE OR REPLACE FUNCTION df_internal.on_instance_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM df_internal.instance_state s WHERE s.instance_id = OLD.id;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION df_internal.on_instances_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    TRUNCATE df_internal.instance_state CASCADE;
    RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER instances_after_delete_state AFTER DELETE ON df.instances
    FOR EACH ROW EXECUTE FUNCTION df_internal.on_instance_delete();
CREATE OR REPLACE TRIGGER instances_after_truncate_state AFTER TRUNCATE ON df.instances
    FOR EACH STATEMENT EXECUTE FUNCTION df_internal.on_instances_truncate();
