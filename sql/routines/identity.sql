-- Identity is enforced, not assumed (docs/security.md, issue 13 classes 4 and 6, issue 14
-- "tampered identity").
--
-- Row-level security keeps ordinary roles to rows with their own submitted_by, but superusers,
-- the tables' owner and BYPASSRLS roles skip it. So:
--   * an INSERT into df.instances or df.nodes must name the inserting role (current_user) as
--     submitted_by, checked by a SECURITY INVOKER trigger that sees the real inserter;
--   * the identity the engine runs steps as is the copy frozen in df_internal.instance_state
--     when the instance was inserted; an UPDATE of df.instances.submitted_by by a role allowed to
--     make it goes through (as in pg_durable); made before an engine took the instance up, the
--     engine then fails the *instance*, without running anything (df_internal.identity_verdict,
--     called when a task is claimed); made later, it changes nothing (as pg_durable, which runs
--     on the graph it loaded);
--   * who cancelled, signalled or retried comes from the session that made the UPDATE
--     (current_user, captured by a SECURITY INVOKER trigger), never from a setting the client
--     could have written (df.request's requested_by was one).

-- BEFORE INSERT on df.instances and df.nodes. SECURITY INVOKER on purpose: current_user is the
-- role that runs the INSERT (df.start is SECURITY INVOKER too), whatever RLS it bypasses.
-- Another role's name is refused, except from the privileged (superusers and members of the df
-- owner, who can act as any submitter anyway and seed or migrate history this way); for those
-- rows the identity frozen for execution is still the inserter (capture_inserter, below), so
-- such an instance fails before anything of it runs.
CREATE OR REPLACE FUNCTION df_internal.check_submitter() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    me pg_catalog.regrole := pg_catalog.quote_ident(current_user)::pg_catalog.regrole;
BEGIN
    IF NEW.submitted_by IS DISTINCT FROM me
       AND NOT pg_catalog.pg_has_role(current_user,
               (SELECT n.nspowner FROM pg_catalog.pg_namespace n WHERE n.nspname = 'df'), 'MEMBER') THEN
        RAISE EXCEPTION 'submitted_by of a new % row must be the inserting role "%", not %',
                        CASE TG_TABLE_NAME WHEN 'instances' THEN 'df.instances' ELSE 'df.nodes' END,
                        current_user, COALESCE(NEW.submitted_by::text, 'NULL')
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Start workflows with df.start() as the role that should run them (SET ROLE to it first).';
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE TRIGGER instances_before_insert_submitter BEFORE INSERT ON df.instances
    FOR EACH ROW EXECUTE FUNCTION df_internal.check_submitter();
CREATE OR REPLACE TRIGGER nodes_before_insert_submitter BEFORE INSERT ON df.nodes
    FOR EACH ROW EXECUTE FUNCTION df_internal.check_submitter();

-- BEFORE UPDATE OR DELETE on df.nodes, BEFORE DELETE on df.instances: RLS's ownership rule for
-- everyone who is not privileged (superusers and members of the df owner: the engine, its
-- SECURITY DEFINER functions, and the cascades of a privileged DELETE, which run as the tables'
-- owner). SECURITY INVOKER on purpose, as check_submitter. The engine reads a step's SQL from
-- df.nodes when it claims the step, so a BYPASSRLS role with table UPDATE (managed services'
-- admin roles) rewrote another role's pending node and its SQL ran as that role; a table DELETE
-- removed another role's work. (UPDATE of df.instances has its own guard with the same rule,
-- guard_instance_update, below.)
CREATE OR REPLACE FUNCTION df_internal.guard_foreign_row() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    instance text;
BEGIN
    IF OLD.submitted_by IS DISTINCT FROM pg_catalog.quote_ident(current_user)::pg_catalog.regrole
       AND NOT pg_catalog.pg_has_role(current_user,
               (SELECT n.nspowner FROM pg_catalog.pg_namespace n WHERE n.nspname = 'df'), 'MEMBER') THEN
        IF TG_TABLE_NAME = 'nodes' THEN  -- (a record's field is resolved when the line runs)
            instance := OLD.instance_id;
        ELSE
            instance := OLD.id;
        END IF;
        RAISE EXCEPTION 'Instance not found or access denied: %', instance
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Only the role that started an instance may change or delete its rows.';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE TRIGGER nodes_before_write_owner BEFORE UPDATE OR DELETE ON df.nodes
    FOR EACH ROW EXECUTE FUNCTION df_internal.guard_foreign_row();
CREATE OR REPLACE TRIGGER instances_before_delete_owner BEFORE DELETE ON df.instances
    FOR EACH ROW EXECUTE FUNCTION df_internal.guard_foreign_row();

-- The deferred constraint trigger nodes_instance_id_submitted_by_fkey (migration 0510): a node's
-- (instance_id, submitted_by) must be an instance's (id, submitted_by), as the foreign key of that
-- name required, but read without a lock (FOR KEY SHARE on the instance row would wait for any
-- role's FOR UPDATE). Deleting an instance deletes its nodes through instance_state.
CREATE OR REPLACE FUNCTION df_internal.check_node_identity() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM df.nodes n
                    WHERE n.instance_id = NEW.instance_id AND n.id = NEW.id
                      AND n.submitted_by = NEW.submitted_by) THEN
        RETURN NULL;  -- gone, or its identity written again since (that write is checked)
    END IF;
    IF NOT EXISTS (SELECT 1 FROM df.instances i
                    WHERE i.id = NEW.instance_id AND i.submitted_by = NEW.submitted_by) THEN
        RAISE EXCEPTION 'insert or update on table "nodes" violates foreign key constraint "nodes_instance_id_submitted_by_fkey"'
            USING ERRCODE = 'foreign_key_violation',
                  DETAIL = pg_catalog.format('Key (instance_id, submitted_by)=(%s, %s) is not present in table "instances".',
                                             NEW.instance_id, NEW.submitted_by);
    END IF;
    RETURN NULL;
END $$;

-- The trigger itself: deferred like the foreign key it replaces (a hand-made graph may insert a
-- node before its instance; df.start checks its own rows early, SET CONSTRAINTS by this name).
-- PostgreSQL has no CREATE OR REPLACE for constraint triggers, so it is dropped and re-created.
DROP TRIGGER IF EXISTS nodes_instance_id_submitted_by_fkey ON df.nodes;
CREATE CONSTRAINT TRIGGER nodes_instance_id_submitted_by_fkey
    AFTER INSERT OR UPDATE OF instance_id, submitted_by ON df.nodes
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION df_internal.check_node_identity();

-- AFTER INSERT, SECURITY INVOKER, fired right before instances_after_insert for the same row
-- (AFTER triggers of one row fire in name order, one after the other, with no user code between
-- them): hands the inserting role to on_instance_insert, which as SECURITY DEFINER cannot see it.
-- Not from the BEFORE trigger: AFTER triggers fire at the end of the whole statement, and the
-- rest of the inserter's statement runs in between (a data-modifying CTE's outer query, its
-- RETURNING), so a setting written there could be rewritten with another role's oid (that made
-- the other role, or the least-privilege engine role, the identity alice's steps ran as).
CREATE OR REPLACE FUNCTION df_internal.capture_inserter() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_catalog.set_config('df.inserter',
        pg_catalog.quote_ident(current_user)::pg_catalog.regrole::pg_catalog.oid::pg_catalog.text, true);
    RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER instances_after_capture_inserter AFTER INSERT ON df.instances
    FOR EACH ROW EXECUTE FUNCTION df_internal.capture_inserter();

-- The frozen identity is the inserting role (see check_submitter), otherwise as in 0.1.0.
CREATE OR REPLACE FUNCTION df_internal.on_instance_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    raw text := NULLIF(current_setting('df.start_meta', true), '');
    meta jsonb := COALESCE(raw::jsonb, '{}');
    -- the role that really inserted the row (capture_inserter, an instant ago, for this row;
    -- it always fires first, so the setting is never one the inserter wrote)
    frozen regrole := NULLIF(current_setting('df.inserter', true), '')::oid::regrole;
BEGIN
    PERFORM set_config('df.start_meta', '', true);
    PERFORM set_config('df.inserter', '', true);
    IF frozen IS NULL THEN  -- capture_inserter did not run: never guess
        RAISE EXCEPTION 'df.instances: the inserting role of instance % is unknown', NEW.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO df_internal.instance_state
        (instance_id, submitted_by, database, vars, start_meta, retry_policy)
    VALUES (NEW.id, frozen, NEW.database,
            -- (the lock-free copy of df.vars: sql/routines/vars.sql)
            COALESCE((SELECT jsonb_object_agg(v.name, v.value) FROM df_internal.var_values v
                       WHERE v.owner = frozen), '{}'),
            meta, NULLIF(meta -> 'instance_retry_policy', 'null'::jsonb));
    -- slots, the pending-instances limit, the workflow's step timeout (sql/routines/role_limits.sql)
    PERFORM df_internal.admit_instance(NEW.id, frozen);
    IF raw IS NOT NULL THEN
        -- df.start inserted a validated graph before this row: activate it now, in the caller's
        -- transaction, so the first leaves are queued the moment df.start commits (no separate
        -- start transaction in the engine). The instance reads 'pending' until its first
        -- checkpoint. A hand-made graph that cannot be activated fails the caller's INSERT.
        -- df.start_meta is an ordinary setting: anyone inserting rows by hand can set it, so
        -- the graph and the retry policies are checked here too (cheap next to df.start's own
        -- validation; a forged hand-off must not smuggle a cycle or a bad policy past it).
        PERFORM df_internal.check_graph(NEW.id);
        PERFORM df_internal.check_start_meta(meta);
        PERFORM df_internal.build_node_meta(NEW.id);
        UPDATE df_internal.instance_state s SET started_at = now() WHERE s.instance_id = NEW.id;
        PERFORM df_internal.drive(NEW.id, jsonb_build_array(jsonb_build_object(
            'op', 'activate', 'node', NEW.root_node)));
        -- Nothing due now (its first leaves are timers): no engine claims anything of it until
        -- the first fires, yet pg_durable's worker would have loaded it right away. Taken up at
        -- the commit of df.start, then (a rewrite in this very transaction still counts as
        -- before, see on_identity_rewrite; df_internal.instance_pickups).
        -- (Not one inserted in another role's name by a privileged role: that one is refused at
        -- its first claim, identity_verdict, before anything of it runs.)
        IF NEW.submitted_by OPERATOR(pg_catalog.=) frozen
           AND NOT EXISTS (SELECT 1 FROM df_internal.tasks t
                            WHERE t.instance_id = NEW.id AND t.run_at <= now()) THEN
            INSERT INTO df_internal.instance_pickups (instance_id) VALUES (NEW.id);
        END IF;
    ELSE
        -- Rows inserted by hand (nodes may follow under the deferred FKs): the engine validates
        -- and starts the graph when it claims this task.
        INSERT INTO df_internal.tasks (instance_id, node_id, gen, kind)
        VALUES (NEW.id, NEW.root_node, 0, 'start');
    END IF;
    PERFORM pg_notify('df_work', '');  -- a hint only: no instance ids (docs/security.md, class 7)
    RETURN NULL;
END $$;

-- Ordinary roles may only move a non-terminal instance to 'cancelled'. Terminal states are never
-- overwritten by anyone, except by df.retry (which sets df.retrying for its own update).
-- SECURITY INVOKER on purpose: the check is about who runs the UPDATE. (As SECURITY DEFINER,
-- current_user would always be the owner and every role could set any status.) A privileged
-- caller is a superuser or a member of the df schema owner: the engine, and the SECURITY
-- DEFINER df_internal functions df.retry reaches through the instances trigger. The check is

-- Ordinary roles may only move a non-terminal instance to 'cancelled'. Terminal states are never
-- overwritten by anyone, except by df.retry (which sets df.retrying for its own update).
-- SECURITY INVOKER on purpose: the check is about who runs the UPDATE. (As SECURITY DEFINER,
-- current_user would always be the owner and every role could set any status.) A privileged
-- caller is a superuser or a member of the df schema owner: the engine, and the SECURITY
-- DEFINER df_internal functions df.retry reaches through the instances trigger. The check is
-- inlined because ordinary roles cannot execute df_internal functions.
-- submitted_by: only a role that may UPDATE the column and skips RLS can change it at all
-- (WITH CHECK keeps everyone else to their own name). pg_durable lets that UPDATE through, so
-- does dftui; it changes nothing about who runs the steps (the frozen copy in instance_state),
-- and the engine fails such an instance when it next claims one of its tasks.
CREATE OR REPLACE FUNCTION df_internal.guard_instance_update() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    privileged boolean;
BEGIN
    -- Ownership first, for every UPDATE (a cancel, df.signal's and df.retry's request, any
    -- column): RLS's rule (submitted_by = current_user) is the only check an ordinary role meets,
    -- but BYPASSRLS roles skip RLS, so the same rule is enforced here for everyone who is not
    -- privileged. (Without it a BYPASSRLS role cancelled, signalled or retried another role's
    -- instance: docs/security.md, "BYPASSRLS acts on another role's instance".) submitted_by is
    -- not writable by ordinary roles (column grants), and a rewrite by one allowed to make it
    -- is refused here unless the row is its own (then the engine fails it: identity_verdict).
    IF OLD.submitted_by IS DISTINCT FROM pg_catalog.quote_ident(current_user)::pg_catalog.regrole THEN
        -- (Not current_setting('is_superuser'): it follows SET ROLE but not SECURITY DEFINER, so
        -- inside a step it would report the engine. Superusers are members of every role.)
        privileged := pg_catalog.pg_has_role(current_user,
            (SELECT n.nspowner FROM pg_catalog.pg_namespace n WHERE n.nspname = 'df'), 'MEMBER');
        -- Except a rewrite of submitted_by alone (no status change, no signal or retry request):
        -- pg_durable lets it through and fails the instance if no engine took it up yet
        -- (identity_verdict), else it changes nothing; its e2e test 17 does exactly this.
        IF NOT privileged
           AND NOT (NEW.submitted_by IS DISTINCT FROM OLD.submitted_by
                    AND ROW(NEW.id, NEW.label, NEW.root_node, NEW.status, NEW.database,
                            NEW.created_at, NEW.completed_at)
                        IS NOT DISTINCT FROM ROW(OLD.id, OLD.label, OLD.root_node, OLD.status,
                                                 OLD.database, OLD.created_at, OLD.completed_at)
                    AND COALESCE(pg_catalog.current_setting('df.request', true), '') = '') THEN
            RAISE EXCEPTION 'Instance not found or access denied: %', OLD.id
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = 'Only the role that started an instance may cancel, signal, retry or change it.';
        END IF;
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        IF privileged IS NULL THEN
            privileged := pg_catalog.pg_has_role(current_user,
                (SELECT n.nspowner FROM pg_catalog.pg_namespace n WHERE n.nspname = 'df'), 'MEMBER');
        END IF;
        IF OLD.status IN ('completed', 'failed', 'cancelled')
           AND NOT (privileged AND COALESCE(pg_catalog.current_setting('df.retrying', true), '') = NEW.id) THEN
            NEW.status := OLD.status;          -- never overwritten
            NEW.completed_at := OLD.completed_at;
        ELSIF NEW.status <> 'cancelled' AND NOT privileged THEN
            RAISE EXCEPTION 'only df.cancel may change an instance''s status'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
    -- (the moment of the change, not its transaction's start: an instance finished by a long
    -- step's checkpoint, or in a batch, ended then — its "took" must include the step)
    NEW.updated_at := pg_catalog.clock_timestamp();
    RETURN NEW;
END $$;

-- AFTER UPDATE, SECURITY INVOKER, fired right before instances_after_update for the same row
-- (triggers of one event fire in name order, and no user code runs between two AFTER triggers
-- of one row): hands the updating role to the SECURITY DEFINER trigger, which cannot see it.
-- Same WHEN as instances_after_update, so whenever that one fires, this one has just run.
CREATE OR REPLACE FUNCTION df_internal.capture_requester() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_catalog.set_config('df.requester',
        pg_catalog.quote_ident(current_user)::pg_catalog.regrole::pg_catalog.oid::text, true);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION df_internal.on_instance_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    req jsonb;
    reason text;
    requester regrole;
BEGIN
    -- Set by capture_requester for this very row an instant ago; read once, then cleared.
    requester := COALESCE(NULLIF(current_setting('df.requester', true), '')::oid::regrole,
                          NEW.submitted_by);
    PERFORM set_config('df.requester', '', true);
    IF NEW.status = 'cancelled' AND OLD.status <> 'cancelled' THEN
        reason := NULLIF(current_setting('df.cancel_reason', true), '');
        PERFORM set_config('df.cancel_reason', '', true);
        -- (a no-op when this publishes a cancel filed while the row was held: 02_published_status.sql)
        PERFORM df_internal.apply_cancel(NEW.id, reason, requester);
    END IF;

    req := NULLIF(current_setting('df.request', true), '')::jsonb;
    IF req IS NOT NULL AND req ->> 'instance_id' = NEW.id THEN
        PERFORM set_config('df.request', '', true);
        -- (req ->> 'requested_by' is ignored: the client can write df.request.)
        IF req ->> 'op' = 'signal' THEN
            PERFORM df_internal.enqueue_signal(NEW.id, req ->> 'name',
                                               COALESCE(req -> 'data', '{}'), requester);
        ELSIF req ->> 'op' = 'retry' THEN
            PERFORM df_internal.retry_instance(NEW.id, req ->> 'from_node', requester::text);
        END IF;
    END IF;
    RETURN NULL;
END $$;

-- AFTER UPDATE OF submitted_by (it changed): a rewrite in the transaction that started the
-- instance happened before any engine could take it up, so the instance is refused at its first
-- claim (identity_verdict) even if df.start counted it as taken up at commit: df.start wrote
-- picked_up_at = now(), the start time of this very transaction. (Another transaction that started
-- in the same microsecond and took it up could be mistaken for this one: the instance would then
-- be refused, which is safe too — nothing ever runs as the rewritten name either way.)
CREATE OR REPLACE FUNCTION df_internal.on_identity_rewrite() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM df_internal.instance_pickups p
     WHERE p.instance_id = NEW.id AND p.picked_up_at OPERATOR(pg_catalog.=) pg_catalog.now();
    RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER instances_after_identity_rewrite AFTER UPDATE OF submitted_by ON df.instances
    FOR EACH ROW WHEN (OLD.submitted_by IS DISTINCT FROM NEW.submitted_by)
    EXECUTE FUNCTION df_internal.on_identity_rewrite();

CREATE OR REPLACE TRIGGER instances_after_capture_requester AFTER UPDATE ON df.instances
    FOR EACH ROW
    WHEN ((NEW.status = 'cancelled' AND OLD.status IS DISTINCT FROM 'cancelled')
          OR COALESCE(pg_catalog.current_setting('df.request', true), '') <> '')
    EXECUTE FUNCTION df_internal.capture_requester();

-- Run when a task of an instance is claimed, before anything of it runs (df_internal.triage):
-- NULL when the instance may go on, else why it must fail. The identity steps run as is the one
-- frozen when the instance was inserted; the recorded one must still be the same when an engine
-- first takes the instance up (someone who skips RLS rewrote it; later rewrites change nothing,
-- see df_internal.instance_pickups), and it must not be a superuser unless superuser instances are enabled
-- in the engine's own session (never the submitter's: pg_durable reads it in its worker too)
-- and the engine is a superuser itself.
CREATE OR REPLACE FUNCTION df_internal.identity_verdict(p_instance varchar) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    recorded regrole;
    frozen regrole;
    is_super boolean;
    name text;
    loaded boolean;
BEGIN
    SELECT i.submitted_by, s.submitted_by, r.rolsuper, r.rolname,
           EXISTS (SELECT 1 FROM df_internal.instance_pickups p WHERE p.instance_id = i.id)
      INTO recorded, frozen, is_super, name, loaded
      FROM df.instances i
      JOIN df_internal.instance_state s ON s.instance_id = i.id
      LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.submitted_by::oid
     WHERE i.id = p_instance;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    -- Rewritten before an engine took the instance up: refused, as pg_durable's load refuses
    -- it. Rewritten later: ignored, the steps keep running as the frozen identity (pg_durable
    -- runs on the graph it loaded; its e2e test 17 checks both).
    IF recorded IS DISTINCT FROM frozen AND NOT loaded THEN
        RETURN format('pg_durable blocked instance %s: submitted_by (%s) is not the role that started it (%s); '
                      'an instance only ever runs as the role that started it', p_instance, recorded, frozen);
    END IF;
    IF is_super AND lower(COALESCE(current_setting('pg_durable.enable_superuser_instances', true), ''))
                    NOT IN ('on', 'true', '1', 'yes') THEN
        RETURN format('pg_durable blocked instance %s: submitted_by role "%s" is a superuser, but '
                      'pg_durable.enable_superuser_instances is off', p_instance, name);
    END IF;
    -- Enabled, but only an engine that is a superuser itself runs a superuser's steps (as
    -- pg_durable's worker, whose worker_role must be one); a least-privilege engine cannot.
    IF is_super AND NOT COALESCE((SELECT e.rolsuper FROM pg_catalog.pg_roles e
                                   WHERE e.rolname = session_user), false) THEN
        RETURN format('pg_durable blocked instance %s: submitted_by role "%s" is a superuser, but '
                      'the engine (role "%s") is not a superuser and cannot run superuser instances',
                      p_instance, name, session_user);
    END IF;
    RETURN NULL;
END $$;

-- Fail an instance that must not run (identity_verdict): the instance fails with the reason, its
-- queued tasks go, no node is marked failed and nothing of it runs (pg_durable fails the instance
-- itself when its graph is refused at load).
CREATE OR REPLACE FUNCTION df_internal.refuse_instance(p_instance varchar, p_reason text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM df_internal.lock_instance(p_instance);
    UPDATE df_internal.instance_state s SET started_at = COALESCE(s.started_at, now())
     WHERE s.instance_id = p_instance;
    PERFORM df_internal.finish_instance(p_instance, 'failed', NULL, p_reason);
    DELETE FROM df_internal.tasks t WHERE t.instance_id = p_instance;
END $$;
