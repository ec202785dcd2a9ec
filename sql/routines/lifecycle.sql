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
    v_reason text := coalesce(nullif(reason, ''), 'Cancelled by user');
BEGIN
    -- Invisible/unknown, or already terminal (terminal states are never overwritten). RLS
    -- governs this read as it does the UPDATE below.
    v_status := df._instance_status(instance_id);
    IF v_status IS NULL THEN
        RAISE EXCEPTION 'Instance not found or access denied: %', instance_id
            USING ERRCODE = 'no_data_found';
    END IF;
    IF v_status NOT IN ('pending', 'running') THEN
        RETURN 'already ' || v_status;
    END IF;
    -- Never wait for a row lock somebody else holds (a role that skips RLS can take it on any
    -- row): then the request goes in without the row (02_published_status.sql), its trigger
    -- checks ownership as the UPDATE's guard would.
    PERFORM 1 FROM df.instances i WHERE i.id = instance_id FOR NO KEY UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        PERFORM df._file_instance_request(instance_id, 'cancel', v_reason, NULL, NULL);
        RETURN pg_catalog.format('Instance %s cancelled: %s', instance_id, v_reason);
    END IF;
    -- The reason is read by the AFTER UPDATE trigger, which also clears it.
    PERFORM pg_catalog.set_config('df.cancel_reason', v_reason, true);
    UPDATE df.instances i SET status = 'cancelled', updated_at = pg_catalog.now()
     WHERE i.id = instance_id AND i.status IN ('pending', 'running')
    RETURNING i.status INTO v_status;
    PERFORM pg_catalog.set_config('df.cancel_reason', '', true);
    IF v_status = 'cancelled' THEN
        RETURN pg_catalog.format('Instance %s cancelled: %s', instance_id, v_reason);  -- pg_durable's answer
    END IF;
    -- It ended meanwhile (or its unpublished end went in with this update).
    RETURN 'already ' || df._instance_status(instance_id);
END;
$fn$;
COMMENT ON FUNCTION df.cancel(text, text) IS
    'Cancel an instance you own: ''Instance <id> cancelled: <reason>'' (pg_durable''s answer), or ''already <status>'' when it had finished';

-- ---------------------------------------------------------------------------------------------
-- Signals, status, results and awaiting an instance; df.retry (unchanged since 0.1.0)
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION df.signal(instance_id text, signal_name text, signal_data text DEFAULT '{}')
RETURNS text
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    v_data jsonb;
    v_attempt integer;
BEGIN
    -- pg_durable's checks and texts (src/dsl.rs), in its order
    IF instance_id = '' THEN
        RAISE EXCEPTION 'Instance ID cannot be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF signal_name IS NULL OR signal_name = '' THEN
        RAISE EXCEPTION 'Signal name cannot be empty' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'df.signal(): the signal name must not be empty.';
    END IF;
    -- Kept as JSON when it parses, else stored as a JSON string.
    IF signal_data IS NULL THEN
        v_data := 'null'::jsonb;
    ELSE
        BEGIN
            v_data := signal_data::jsonb;
        EXCEPTION WHEN invalid_text_representation THEN
            v_data := pg_catalog.to_jsonb(signal_data);
        END;
    END IF;
    -- Ownership pre-check (same RLS policy as the UPDATE below): unknown ids never reach the
    -- loopback.
    IF NOT EXISTS (SELECT 1 FROM df.instances i WHERE i.id = instance_id) THEN
        RAISE EXCEPTION 'Instance not found or access denied: %', instance_id
            USING ERRCODE = 'no_data_found';
    END IF;

    IF pg_catalog.current_setting('df.in_workflow', true) IS DISTINCT FROM 'true'
       AND pg_catalog.lower(coalesce(pg_catalog.current_setting('pg_durable.signal_loopback', true), ''))
           NOT IN ('off', 'false', '0', 'no')
       AND df.signal_loopback(current_user::text, instance_id, signal_name, signal_data) THEN
        RETURN 'OK';
    END IF;

    -- In the caller's transaction: the AFTER UPDATE trigger queues the signal. A deadlock with
    -- the engine's checkpoint (see df.signal_loopback) aborts only this attempt's savepoint:
    -- try again rather than fail the caller's statement (pg_durable's df.signal never does).
    -- Never wait for a row lock somebody else holds: see df.cancel.
    IF EXISTS (SELECT 1 FROM df.instances i WHERE i.id = instance_id)
       AND NOT EXISTS (SELECT 1 FROM df.instances i WHERE i.id = instance_id
                          FOR NO KEY UPDATE SKIP LOCKED) THEN
        PERFORM df._file_instance_request(instance_id, 'signal', NULL, signal_name, v_data);
        RETURN 'OK';
    END IF;
    FOR v_attempt IN 1..5 LOOP
        BEGIN
            PERFORM pg_catalog.set_config('df.request', pg_catalog.json_build_object(
                'op', 'signal', 'instance_id', instance_id, 'name', signal_name, 'data', v_data)::text, true);
            UPDATE df.instances i SET updated_at = pg_catalog.now() WHERE i.id = instance_id;
            IF NOT FOUND THEN
                PERFORM pg_catalog.set_config('df.request', '', true);
                RAISE EXCEPTION 'Instance not found or access denied: %', instance_id
                    USING ERRCODE = 'no_data_found';
            END IF;
            PERFORM pg_catalog.set_config('df.request', '', true);
            RETURN 'OK';
        EXCEPTION WHEN deadlock_detected THEN
            IF v_attempt = 5 THEN
                RAISE;
            END IF;
            PERFORM pg_catalog.pg_sleep(0.05 * v_attempt);
        END;
    END LOOP;
    RETURN 'OK';  -- not reached
END;
$fn$;
COMMENT ON FUNCTION df.signal(text, text, text) IS
    'Queue a named signal for an instance you own; takes effect independently of your transaction when a loopback session is available';

-- Run df.signal in a committed loopback session as p_role. Returns true when the signal was
-- committed there, false when the caller must fall back to its own transaction. Never raises
-- for loopback trouble; see the header for why this is safe to expose.
CREATE OR REPLACE FUNCTION df.signal_loopback(p_role text, instance_id text, signal_name text, signal_data text)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    v_schema  text;
    v_host    text;
    v_conn    text;
    v_sql     text;
    v_result  text;
    v_can_set boolean;
    v_attempt integer;
BEGIN
    -- Inside a workflow step session_user is the engine: never borrow its memberships; the
    -- caller falls back to queueing the signal in its own transaction.
    IF df_internal.in_engine_step() THEN
        RETURN false;
    END IF;
    IF p_role IS NULL OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = p_role) THEN
        RETURN false;
    END IF;
    -- Only act as a role the login role could become itself.
    IF pg_catalog.current_setting('server_version_num')::int >= 160000 THEN
        v_can_set := pg_catalog.pg_has_role(session_user, p_role, 'SET');
    ELSE
        v_can_set := pg_catalog.pg_has_role(session_user, p_role, 'MEMBER');
    END IF;
    IF NOT v_can_set THEN
        RETURN false;
    END IF;
    SELECT n.nspname INTO v_schema
      FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = 'dblink';
    IF v_schema IS NULL THEN
        RETURN false;
    END IF;

    v_host := pg_catalog.btrim(pg_catalog.split_part(
        pg_catalog.current_setting('unix_socket_directories'), ',', 1));
    IF v_host = '' THEN
        v_host := 'localhost';
    END IF;
    v_conn := pg_catalog.format('host=%s port=%s dbname=%s user=%s application_name=%s connect_timeout=5',
        df_internal.conninfo_quote(v_host),
        df_internal.conninfo_quote(pg_catalog.current_setting('port')),
        df_internal.conninfo_quote(pg_catalog.current_database()),
        df_internal.conninfo_quote(current_user::text),
        df_internal.conninfo_quote('dftui signal loopback'));
    -- One implicit transaction: the SETs are local to this short-lived session.
    v_sql := pg_catalog.format(
        'SET search_path = pg_catalog, pg_temp; SET lock_timeout = ''2s''; '
        'SET statement_timeout = ''30s''; SET pg_durable.signal_loopback = off; '
        'SET ROLE %I; SELECT df.signal(%L, %L, %L)',
        p_role, instance_id, signal_name, signal_data);
    -- A signal sent as an instance takes its first steps can deadlock with the engine (the
    -- signal locks the instance row, then the SIGNAL task; the engine's checkpoint holds the
    -- task and marks the instance running): PostgreSQL aborts one of the two, and the engine
    -- retries its side. So does this, a few times: falling back to the caller's transaction
    -- would hold the instance row until the caller commits, and a caller that waits for the
    -- signal to be consumed in that same transaction (a DO block, as pg_durable's own tests
    -- do) would then wait for ever.
    FOR v_attempt IN 1..5 LOOP
        BEGIN
            EXECUTE pg_catalog.format('SELECT t.r FROM %I.dblink($1, $2) AS t(r text)', v_schema)
               INTO v_result USING v_conn, v_sql;
            RETURN v_result = 'OK';
        EXCEPTION
            WHEN deadlock_detected OR lock_not_available OR serialization_failure THEN
                PERFORM pg_catalog.pg_sleep(0.05 * v_attempt);
            WHEN OTHERS THEN
                -- Not reachable, not visible there yet, row locked by the caller, ...: the
                -- caller's own transaction decides (and reports the authoritative error).
                RETURN false;
        END;
    END LOOP;
    RETURN false;
END;
$fn$;
COMMENT ON FUNCTION df.signal_loopback(text, text, text, text) IS
    'Internal to df.signal: deliver a signal in a committed loopback session as a role the login role may SET ROLE to';

-- libpq conninfo value quoting. 030_start.sql defines the identical helper for
-- df.start(transaction_mode => 'new'); OR REPLACE keeps either file installable on its own.
CREATE OR REPLACE FUNCTION df_internal.conninfo_quote(val text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT '''' || replace(replace(val, '\', '\\'), '''', '\''') || ''''
$fn$;

CREATE OR REPLACE FUNCTION df.status(instance_id text)
RETURNS text
LANGUAGE sql STABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT df._instance_status($1)
$fn$;
COMMENT ON FUNCTION df.status(text) IS 'Status of an instance you can see, else NULL';

CREATE OR REPLACE FUNCTION df.result(instance_id text)
RETURNS text
LANGUAGE sql STABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT n.result::text
      FROM df.instances i
      JOIN df.nodes n ON n.instance_id = i.id AND n.id = i.root_node
     WHERE i.id = $1 AND n.status = 'completed'
$fn$;
COMMENT ON FUNCTION df.result(text) IS 'Root node result (JSON text) once the root completed, else NULL';

-- Polls with a fresh snapshot per check (READ COMMITTED), so it also works inside a DO block.
-- Under REPEATABLE READ / SERIALIZABLE the snapshot never changes: the wait then times out
-- unless the instance is already terminal.
CREATE OR REPLACE FUNCTION df.await_instance(instance_id text, timeout_seconds integer DEFAULT 30)
RETURNS text
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    v_status   text;
    v_deadline timestamptz;
    v_pause    double precision := 0.01;
BEGIN
    -- (pg_durable's texts, word for word; STRICT, see zz_pg_durable_surface.sql: NULL in, NULL out)
    IF pg_catalog.current_setting('df.in_workflow', true) = 'true' THEN
        RAISE EXCEPTION 'df.await_instance() cannot be called inside a workflow - it would block a worker thread (and self-deadlock if waiting on the current instance). Use df.signal() and df.wait_for_signal() for cross-workflow coordination.'
            USING ERRCODE = 'feature_not_supported';
    END IF;
    IF timeout_seconds IS NULL OR timeout_seconds <= 0 THEN
        RAISE EXCEPTION 'Timeout must be positive' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('df.await_instance(): timeout_seconds was %s; it is a whole number of seconds >= 1.',
                            coalesce(timeout_seconds::text, 'NULL'));
    END IF;
    v_deadline := pg_catalog.clock_timestamp() + pg_catalog.make_interval(secs => timeout_seconds);
    LOOP
        v_status := df._instance_status(instance_id);
        IF v_status IS NULL THEN
            RAISE EXCEPTION 'Instance not found: %', instance_id USING ERRCODE = 'no_data_found';
        END IF;
        IF v_status IN ('completed', 'failed', 'cancelled') THEN
            PERFORM df._mark_non_future_helper('df.await_instance');  -- (no workflow step, dsl.sql)
            RETURN v_status;
        END IF;
        IF pg_catalog.clock_timestamp() >= v_deadline THEN
            RAISE EXCEPTION 'Timeout after %s waiting for instance % (status: %). Check if background worker is running.',
                timeout_seconds, instance_id, v_status USING ERRCODE = 'query_canceled';
        END IF;
        PERFORM pg_catalog.pg_sleep(LEAST(v_pause,
            GREATEST(0.001, extract(epoch FROM v_deadline - pg_catalog.clock_timestamp())::double precision)));
        v_pause := LEAST(v_pause * 2, 0.25);
    END LOOP;
END;
$fn$;
COMMENT ON FUNCTION df.await_instance(text, integer) IS
    'Wait until an instance is completed, failed or cancelled and return that status';

CREATE OR REPLACE FUNCTION df.wait_for_completion(instance_id text, timeout_seconds integer DEFAULT 30)
RETURNS text
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    RAISE WARNING 'df.wait_for_completion() is deprecated; use df.await_instance() instead';
    RETURN df.await_instance(instance_id, timeout_seconds);
END;
$fn$;
COMMENT ON FUNCTION df.wait_for_completion(text, integer) IS 'Deprecated alias of df.await_instance';

-- df.retry(id [, from_node]): SECURITY INVOKER; ownership is proven by the RLS-checked UPDATE,
-- the privileged part runs in the df.instances trigger.
CREATE OR REPLACE FUNCTION df.retry(instance_id text, from_node text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    st text;
BEGIN
    IF current_setting('df.in_workflow', true) = 'true' THEN
        RAISE EXCEPTION 'df.retry() cannot be called inside a workflow';
    END IF;
    st := df._instance_status(instance_id);
    IF st IS NULL THEN
        RAISE EXCEPTION 'Instance not found or access denied: %', instance_id
            USING ERRCODE = 'no_data_found';
    END IF;
    IF st = 'completed' THEN
        RAISE EXCEPTION 'Instance % is completed; only failed or cancelled instances can be retried', instance_id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF st IN ('pending', 'running') THEN
        RETURN st;    -- idempotent: nothing to do
    END IF;
    -- A retry needs the row (it starts a new execution on it): when somebody else holds it, say
    -- so rather than wait for them.
    PERFORM 1 FROM df.instances i WHERE i.id = instance_id FOR NO KEY UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Instance % is locked by another session; nothing was retried', instance_id
            USING ERRCODE = 'lock_not_available',
                  HINT = 'Try again when that session''s transaction has ended.';
    END IF;
    PERFORM set_config('df.request', json_build_object('op', 'retry', 'instance_id', instance_id,
        'from_node', from_node, 'requested_by', quote_ident(current_user))::text, true);
    UPDATE df.instances i SET updated_at = now() WHERE i.id = instance_id;
    PERFORM set_config('df.request', '', true);
    RETURN 'running';
END $$;
