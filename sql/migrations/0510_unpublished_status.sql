-- Row locks on df.instances stall nobody's work (issue 13, availability; docs/architecture.md,
-- "Instance status: engine truth, published row").
--
-- pg_durable grants UPDATE (status, updated_at) on df.instances, so every df role may take row
-- locks there (SELECT … FOR UPDATE), and a role that skips RLS (BYPASSRLS) may take them on
-- another role's rows. No trigger fires on a row lock. Whatever the engine must write for an
-- instance to progress therefore never waits for that row:
--
-- 1. A status the engine (or a request filed while the row is held) cannot write at once is kept
--    in instance_state.unpublished_status and counts as the instance's status everywhere; the
--    next UPDATE of the row (the engine's publisher, or anyone's) carries it into df.instances
--    (trigger instances_before_update_publish) and clears it.
-- 2. The engine's own tables referenced df.instances: every insert of a task, attempt, signal,
--    loop iteration or named result took FOR KEY SHARE on the instance row, which FOR UPDATE
--    blocks. They reference instance_state instead, which only the df owner can lock; it goes
--    with its instance (ON DELETE CASCADE), so deleting an instance still deletes all of them.
-- 3. df.cancel / df.signal on a row somebody else holds file their request in
--    instance_requests (an INSERT: no row lock to wait for, and no UPDATE privilege to lock it
--    with); its trigger checks ownership and does what the row's trigger would have done.
--    (df.retry starts a new execution on the row itself: it says the row is held, at once.)
ALTER TABLE df_internal.instance_state ADD COLUMN unpublished_status text;
ALTER TABLE df_internal.instance_state ADD COLUMN unpublished_completed_at timestamptz;
CREATE INDEX instance_state_unpublished_idx ON df_internal.instance_state (instance_id)
    WHERE unpublished_status IS NOT NULL;

DO $$
DECLARE
    c record;
BEGIN
    FOR c IN
        SELECT con.conrelid::regclass AS tbl, con.conname
          FROM pg_catalog.pg_constraint con
         WHERE con.contype = 'f'
           AND con.confrelid = 'df.instances'::regclass
           AND con.conrelid IN ('df_internal.tasks'::regclass, 'df_internal.node_attempts'::regclass,
                                'df_internal.loop_iterations'::regclass,
                                'df_internal.named_results'::regclass, 'df_internal.signals'::regclass,
                                'df_internal.retries'::regclass, 'df_internal.step_actions'::regclass)
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', c.tbl, c.conname);
        -- NOT VALID, then validated: rows of an instance whose state row is missing (none are
        -- known) must not stop the upgrade; new rows are checked either way.
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I FOREIGN KEY (instance_id) '
                       'REFERENCES df_internal.instance_state (instance_id) ON DELETE CASCADE NOT VALID',
                       c.tbl, c.conname);
        BEGIN
            EXECUTE format('ALTER TABLE %s VALIDATE CONSTRAINT %I', c.tbl, c.conname);
        EXCEPTION WHEN foreign_key_violation THEN
            RAISE WARNING '%: rows without an instance state row; the constraint stays NOT VALID', c.tbl;
        END;
    END LOOP;
END $$;

-- Requests (cancel, signal) filed without touching the instance row. Users insert through
-- df.cancel / df.signal only (no USAGE on df_internal); requested_by is the inserting
-- role (column default, not insertable), and the trigger in sql/routines/02_published_status.sql refuses a
-- request for an instance that is not the requester's.
CREATE TABLE df_internal.instance_requests (
    id            bigserial   PRIMARY KEY,
    instance_id   varchar(8)  NOT NULL,
    op            text        NOT NULL CHECK (op IN ('cancel', 'signal')),
    reason        text,
    signal_name   text,
    signal_data   jsonb,
    requested_by  regrole     NOT NULL DEFAULT pg_catalog.quote_ident(current_user)::pg_catalog.regrole,
    requested_at  timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
);
REVOKE ALL ON df_internal.instance_requests FROM PUBLIC;
GRANT INSERT (instance_id, op, reason, signal_name, signal_data)
    ON df_internal.instance_requests TO PUBLIC;
REVOKE ALL ON SEQUENCE df_internal.instance_requests_id_seq FROM PUBLIC;
GRANT USAGE ON SEQUENCE df_internal.instance_requests_id_seq TO PUBLIC;

-- 4. df.nodes' identity key (instance_id, submitted_by) referenced df.instances too, and a
--    foreign key is checked again on every later UPDATE of a row this transaction already wrote
--    (the interpreter writes a node more than once per checkpoint): FOR KEY SHARE on the
--    instance row, again. Its two jobs are split: deleting an instance deletes its nodes through
--    instance_state, and the identity match (a node belongs to an instance of the same
--    submitted_by, so nobody adds nodes to another role's instance) is a deferred constraint
--    trigger of the same name (df.start's SET CONSTRAINTS still names it), which reads the
--    instance row without locking it and fires only when a node's instance_id or submitted_by
--    is written.
ALTER TABLE df.nodes DROP CONSTRAINT nodes_instance_id_submitted_by_fkey;
ALTER TABLE df.nodes ADD CONSTRAINT nodes_instance_state_fkey FOREIGN KEY (instance_id)
    REFERENCES df_internal.instance_state (instance_id) ON DELETE CASCADE
    DEFERRABLE INITIALLY DEFERRED NOT VALID;
DO $$
BEGIN
    ALTER TABLE df.nodes VALIDATE CONSTRAINT nodes_instance_state_fkey;
EXCEPTION WHEN foreign_key_violation THEN
    RAISE WARNING 'df.nodes: rows without an instance state row; nodes_instance_state_fkey stays NOT VALID';
END $$;
-- (The constraint trigger and its function: sql/routines/identity.sql, applied right after.)

-- 5. instance_state itself referenced df.instances: the engine writes it more than once per
--    checkpoint, and from the second write on the key was checked again (FOR KEY SHARE on the
--    instance row). Deleting (or truncating) df.instances deletes its state by trigger instead
--    (sql/routines/02_published_status.sql), and everything else goes with the state row.
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN
        SELECT con.conname FROM pg_catalog.pg_constraint con
         WHERE con.contype = 'f' AND con.confrelid = 'df.instances'::regclass
           AND con.conrelid = 'df_internal.instance_state'::regclass
    LOOP
        EXECUTE format('ALTER TABLE df_internal.instance_state DROP CONSTRAINT %I', c.conname);
    END LOOP;
END $$;
