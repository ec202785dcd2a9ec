-- df.start (sql-api.md §3) and its helpers.
--
-- df.start has pg_durable's exact signature, df.start(text, text, text, text); the instance-wide
-- retry policy (+) has its own entry point, df.start_with_retry(fut, retry_policy, label,
-- database, transaction_mode), which holds the implementation.
--
-- Routines are re-applied on every install and upgrade (engine/schema.py): keep every statement
-- idempotent (CREATE OR REPLACE) and schema-qualified.

CREATE OR REPLACE FUNCTION df.start_in_new_transaction(fut text, label text, database text,
                                            retry_policy jsonb, as_role text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_schema   text;
    v_can      boolean;
    v_sql      text;
    v_conn     text;
    v_hosts    text[];
    v_host     text;
    v_id       text;
    v_err      text;
    v_detail   text;
    v_state    text;
    v_super    text := lower(coalesce(current_setting('pg_durable.enable_superuser_instances', true), ''));
BEGIN
    -- Inside a workflow step session_user is the engine, not the submitter: its memberships
    -- must not be borrowed (security.md, execution identity).
    IF df_internal.in_engine_step() THEN
        RAISE EXCEPTION 'transaction_mode => ''new'' cannot be used inside a workflow step'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- The loopback logs in as as_role, so only accept roles the session could become anyway:
    -- itself, or a role it may SET ROLE to. (A SECURITY DEFINER wrapper owned by a role the
    -- session cannot become is refused; use transaction_mode => 'caller' there.)
    IF as_role IS NULL OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = as_role) THEN
        RAISE EXCEPTION 'role "%" does not exist', coalesce(as_role, 'NULL')
            USING ERRCODE = 'undefined_object';
    END IF;
    IF current_setting('server_version_num')::integer >= 160000 THEN
        v_can := pg_has_role(session_user, as_role, 'SET');
    ELSE
        v_can := pg_has_role(session_user, as_role, 'MEMBER');
    END IF;
    IF NOT v_can THEN
        RAISE EXCEPTION 'df.start(transaction_mode => ''new'') can only start as the session user or a role it may SET ROLE to ("%" is neither)',
            as_role USING ERRCODE = 'insufficient_privilege';
    END IF;

    SELECT n.nspname INTO v_schema
      FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = 'dblink';
    IF v_schema IS NULL THEN
        RAISE EXCEPTION 'df.start(transaction_mode => ''new'') needs the dblink extension, which is not installed in this database'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Install the PostgreSQL contrib package and run CREATE EXTENSION dblink, or use transaction_mode => ''caller''.';
    END IF;

    v_sql := format('SELECT df.start_with_retry(%L, %L::jsonb, %L, %L, %L)', fut, retry_policy::text,
                    label, database, 'caller');

    -- Prefer the Unix socket, fall back to TCP loopback.
    v_hosts := ARRAY(SELECT btrim(d) FROM unnest(string_to_array(
                         coalesce(current_setting('unix_socket_directories', true), ''), ',')) d
                      WHERE btrim(d) <> '' LIMIT 1);
    IF coalesce(current_setting('listen_addresses', true), '') <> '' THEN
        v_hosts := v_hosts || 'localhost'::text;
    END IF;
    FOREACH v_host IN ARRAY v_hosts LOOP
        v_conn := format('host=%s port=%s dbname=%s user=%s application_name=%s connect_timeout=10',
                         df_internal.conninfo_quote(v_host),
                         df_internal.conninfo_quote(current_setting('port')),
                         df_internal.conninfo_quote(current_database()),
                         df_internal.conninfo_quote(as_role),
                         df_internal.conninfo_quote('dftui: df.start new transaction'));
        IF v_super IN ('on', 'true', 'yes', '1') THEN
            v_conn := v_conn || ' options=' || df_internal.conninfo_quote('-c pg_durable.enable_superuser_instances=on');
        END IF;
        BEGIN
            EXECUTE format('SELECT t.id FROM %I.dblink(%L, %L) AS t(id text)', v_schema, v_conn, v_sql)
               INTO v_id;
            RETURN v_id;
        EXCEPTION WHEN sqlclient_unable_to_establish_sqlconnection THEN
            GET STACKED DIAGNOSTICS v_err = MESSAGE_TEXT, v_detail = PG_EXCEPTION_DETAIL;
            v_detail := coalesce(v_detail, v_err);
        END;
    END LOOP;
    RAISE EXCEPTION 'df.start(transaction_mode => ''new'') could not open a loopback session as role "%": %',
        as_role, coalesce(btrim(v_detail), 'no local connection method (socket or TCP) is configured')
        USING ERRCODE = 'sqlclient_unable_to_establish_sqlconnection',
              HINT = 'The loopback session needs passwordless (trust or peer) local connections for this role; otherwise use transaction_mode => ''caller''.';
END;
$fn$;
COMMENT ON FUNCTION df.start_in_new_transaction(text, text, text, jsonb, text) IS
    'Internal to df.start(transaction_mode => ''new''): run the start in its own committed loopback session';

-- ---------------------------------------------------------------------------------------------
-- df.start
-- ---------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION df.start_with_retry(fut text, retry_policy jsonb,
                                                label text DEFAULT NULL, database text DEFAULT NULL,
                                                transaction_mode text DEFAULT 'caller')
RETURNS text
LANGUAGE plpgsql VOLATILE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_mode      text := lower(btrim(coalesce(transaction_mode, '')));
    v_rp        jsonb;
    v_ids       text[];
    v_types     text[];
    v_queries   text[];
    v_names     text[];
    v_lefts     text[];
    v_rights    text[];
    v_root      text;
    v_policies  jsonb;
    v_role      pg_catalog.pg_roles%ROWTYPE;
    v_super     text := lower(coalesce(current_setting('pg_durable.enable_superuser_instances', true), ''));
    v_id        text;
    v_try       integer := 0;
    v_state     text;
    v_msg       text;
BEGIN
    -- 1. transaction mode
    IF v_mode NOT IN ('caller', 'new') THEN
        RAISE EXCEPTION 'invalid transaction_mode "%" for df.start(): expected ''caller'' or ''new''',
            coalesce(transaction_mode, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- 2. strict graph parse and validation, then the other arguments
    SELECT array_agg(g.node_id), array_agg(g.node_type), array_agg(g.query),
           array_agg(g.result_name), array_agg(g.left_node), array_agg(g.right_node),
           (array_agg(g.node_id) FILTER (WHERE g.slot = 'root'))[1],
           jsonb_object_agg(g.node_id, g.retry_policy) FILTER (WHERE g.retry_policy IS NOT NULL)
      INTO v_ids, v_types, v_queries, v_names, v_lefts, v_rights, v_root, v_policies
      FROM df.graph_nodes(fut) g;

    IF start_with_retry.label IS NOT NULL AND start_with_retry.label ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'invalid label: labels must not contain control characters (newlines, tabs, ...)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF start_with_retry.retry_policy IS NOT NULL AND jsonb_typeof(start_with_retry.retry_policy) <> 'null' THEN
        BEGIN
            SELECT g.retry_policy INTO v_rp
              FROM df.graph_nodes(jsonb_build_object('node_type', 'SQL', 'query', 'SELECT 1',
                                                     'retry_policy', start_with_retry.retry_policy)::text) g;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT;
            RAISE EXCEPTION USING ERRCODE = v_state, MESSAGE = 'invalid retry_policy for df.start(): '
                || regexp_replace(v_msg, '^Invalid durable function graph: root: ', '');
        END;
    END IF;

    -- 3. target database
    IF start_with_retry.database IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE datname = start_with_retry.database) THEN
        RAISE EXCEPTION 'database "%" does not exist', start_with_retry.database
            USING ERRCODE = 'invalid_catalog_name';
    END IF;

    -- 4. the engine runs every step as this role, so it must be able to log in
    SELECT * INTO v_role FROM pg_catalog.pg_roles WHERE rolname = current_user;
    IF NOT v_role.rolcanlogin THEN
        RAISE EXCEPTION 'current_user "%" does not have LOGIN privilege: every step runs as the submitting role, so it must be able to log in',
            current_user USING ERRCODE = 'insufficient_privilege',
            HINT = 'Grant LOGIN to the role, or call df.start as a role with LOGIN (e.g. after SET ROLE).';
    END IF;

    -- 5. superusers only when explicitly enabled
    IF v_role.rolsuper AND v_super NOT IN ('on', 'true', 'yes', '1') THEN
        RAISE EXCEPTION 'pg_durable: superuser instances are disabled: current_user "%" is a superuser and pg_durable.enable_superuser_instances is off',
            current_user USING ERRCODE = 'insufficient_privilege',
            HINT = 'Start workflows as an ordinary role, or SET pg_durable.enable_superuser_instances = on.';
    END IF;

    IF v_mode = 'new' THEN
        RETURN df.start_in_new_transaction(fut, start_with_retry.label, start_with_retry.database, v_rp, current_user);
    END IF;

    -- Write the rows. A clash with an existing instance id (possibly another role's, invisible
    -- here) rolls back this attempt's rows and re-rolls the id.
    LOOP
        v_try := v_try + 1;
        v_id := left(replace(gen_random_uuid()::text, '-', ''), 8);
        BEGIN
            INSERT INTO df.nodes (id, instance_id, node_type, query, result_name, left_node,
                                  right_node, submitted_by, database)
            SELECT u.id, v_id, u.t, u.q, u.n, u.l, u.r,
                   quote_ident(current_user)::regrole, start_with_retry.database
              FROM unnest(v_ids, v_types, v_queries, v_names, v_lefts, v_rights)
                   AS u(id, t, q, n, l, r);
            PERFORM set_config('df.start_meta',
                jsonb_build_object('instance_retry_policy', v_rp,
                                   'node_retry_policies', coalesce(v_policies, '{}'::jsonb))::text,
                true);
            INSERT INTO df.instances (id, label, root_node, submitted_by, database)
            VALUES (v_id, start_with_retry.label, v_root, quote_ident(current_user)::regrole, start_with_retry.database);
            EXIT;
        EXCEPTION WHEN unique_violation THEN
            IF v_try >= 10 THEN
                RAISE EXCEPTION 'df.start(): could not find a free instance id after % attempts', v_try
                    USING ERRCODE = 'unique_violation';
            END IF;
        END;
    END LOOP;
    PERFORM set_config('df.start_meta', '', true);
    RETURN v_id;
END;
$fn$;
COMMENT ON FUNCTION df.start_with_retry(text, jsonb, text, text, text) IS
    'df.start with an instance-wide default retry policy (nodes without their own df.retry_policy use it)';

-- pg_durable's df.start(fut, label, database, transaction_mode): resolves as
-- df.start(text, text, text, text), so GRANT/REVOKE/DROP/has_function_privilege by that
-- signature work as on pg_durable. SECURITY INVOKER, so current_user is still the caller.
CREATE OR REPLACE FUNCTION df.start(fut text, label text DEFAULT NULL, database text DEFAULT NULL,
                                    transaction_mode text DEFAULT 'caller')
RETURNS text
LANGUAGE sql VOLATILE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT df.start_with_retry($1, NULL::jsonb, $2, $3, $4)
$fn$;
COMMENT ON FUNCTION df.start(text, text, text, text) IS
    'Start a workflow as current_user; returns the 8-hex instance id. transaction_mode ''new'' commits the start on its own';
