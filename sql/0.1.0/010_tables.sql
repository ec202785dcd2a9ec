-- dftui 0.1.0: tables, constraints, indexes and row-level security.

CREATE TABLE df.instances (
    id            varchar(8)  NOT NULL,
    label         text,
    root_node     varchar(8)  NOT NULL,
    status        text        NOT NULL DEFAULT 'pending',
    submitted_by  regrole     NOT NULL,
    database      text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz,
    CONSTRAINT instances_pkey PRIMARY KEY (id),
    CONSTRAINT instances_id_submitted_by_key UNIQUE (id, submitted_by),
    CONSTRAINT instances_id_check CHECK (id ~ '^[0-9a-f]{8}$'),
    CONSTRAINT instances_status_check
        CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    CONSTRAINT instances_label_check CHECK (label IS NULL OR label !~ '[[:cntrl:]]'),
    CONSTRAINT instances_completed_at_check CHECK (completed_at IS NULL OR status = 'completed')
);
CREATE INDEX instances_status_created_at_idx ON df.instances (status, created_at DESC, id);
CREATE INDEX instances_created_at_idx ON df.instances (created_at DESC, id);
CREATE INDEX instances_label_created_at_idx ON df.instances (label, created_at DESC, id)
    WHERE label IS NOT NULL;
CREATE INDEX instances_submitted_by_idx ON df.instances (submitted_by, created_at DESC, id);

CREATE TABLE df.nodes (
    id              varchar(8)  NOT NULL,
    instance_id     varchar(8)  NOT NULL,
    node_type       text        NOT NULL,
    query           text,
    result_name     text,
    left_node       varchar(8),
    right_node      varchar(8),
    status          text        NOT NULL DEFAULT 'pending',
    result          jsonb,
    error           text,
    submitted_by    regrole     NOT NULL,
    database        text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    status_details  jsonb,
    CONSTRAINT nodes_pkey PRIMARY KEY (instance_id, id),
    CONSTRAINT nodes_node_type_check CHECK (node_type IN ('SQL', 'THEN', 'IF', 'JOIN', 'LOOP',
        'BREAK', 'RACE', 'SLEEP', 'WAIT_SCHEDULE', 'HTTP', 'HTTP_MULTIPART', 'SIGNAL')),
    CONSTRAINT nodes_status_check CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    CONSTRAINT nodes_result_terminal_check
        CHECK (result IS NULL OR status IN ('completed', 'failed')),
    CONSTRAINT nodes_result_name_check
        CHECK (result_name IS NULL OR result_name ~ '^[A-Za-z_][A-Za-z0-9_]*$'),
    CONSTRAINT nodes_leaf_shape_check CHECK (
        node_type NOT IN ('SQL', 'BREAK', 'SLEEP', 'WAIT_SCHEDULE', 'HTTP', 'HTTP_MULTIPART', 'SIGNAL')
        OR (query IS NOT NULL AND left_node IS NULL AND right_node IS NULL)),
    CONSTRAINT nodes_binary_shape_check CHECK (
        node_type NOT IN ('THEN', 'JOIN', 'RACE')
        OR (left_node IS NOT NULL AND right_node IS NOT NULL)),
    CONSTRAINT nodes_if_shape_check CHECK (
        node_type <> 'IF'
        OR (left_node IS NOT NULL AND right_node IS NOT NULL AND query IS NOT NULL)),
    CONSTRAINT nodes_loop_shape_check CHECK (
        node_type <> 'LOOP' OR (left_node IS NOT NULL AND right_node IS NULL)),
    CONSTRAINT nodes_left_node_same_instance_fkey FOREIGN KEY (instance_id, left_node)
        REFERENCES df.nodes (instance_id, id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT nodes_right_node_same_instance_fkey FOREIGN KEY (instance_id, right_node)
        REFERENCES df.nodes (instance_id, id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT nodes_instance_id_submitted_by_fkey FOREIGN KEY (instance_id, submitted_by)
        REFERENCES df.instances (id, submitted_by) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED
);

ALTER TABLE df.instances ADD CONSTRAINT instances_root_node_same_instance_fkey
    FOREIGN KEY (id, root_node) REFERENCES df.nodes (instance_id, id)
    DEFERRABLE INITIALLY DEFERRED;

CREATE TABLE df.vars (
    name   text    NOT NULL,
    value  text,
    owner  regrole NOT NULL DEFAULT quote_ident(current_user)::regrole,
    CONSTRAINT vars_pkey PRIMARY KEY (owner, name)
);

-- pg_durable compatibility: engine heartbeats, one row per engine process epoch.
CREATE TABLE df._worker_epoch (
    epoch_id      text        NOT NULL PRIMARY KEY,
    started_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now()
);

-- Row-level security: a role sees and touches only its own rows. Superusers and the table owner
-- bypass RLS (it is enabled, not forced).
ALTER TABLE df.instances ENABLE ROW LEVEL SECURITY;
ALTER TABLE df.nodes ENABLE ROW LEVEL SECURITY;
ALTER TABLE df.vars ENABLE ROW LEVEL SECURITY;
CREATE POLICY instances_owner ON df.instances
    USING (submitted_by = quote_ident(current_user)::regrole)
    WITH CHECK (submitted_by = quote_ident(current_user)::regrole);
CREATE POLICY nodes_owner ON df.nodes
    USING (submitted_by = quote_ident(current_user)::regrole)
    WITH CHECK (submitted_by = quote_ident(current_user)::regrole);
CREATE POLICY vars_owner ON df.vars
    USING (owner = quote_ident(current_user)::regrole)
    WITH CHECK (owner = quote_ident(current_user)::regrole);

REVOKE ALL ON ALL TABLES IN SCHEMA df FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- Engine-internal state. Users get no privileges here; df.* functions that must touch it are
-- SECURITY DEFINER and check ownership through RLS-visible df.instances first.
-- ---------------------------------------------------------------------------------------------

-- Installed schema versions (written by the installer).
CREATE TABLE df_internal.schema_version (
    version       text        NOT NULL PRIMARY KEY,
    installed_at  timestamptz NOT NULL DEFAULT now()
);

-- pg_durable compatibility: a row once an engine is up.
CREATE TABLE df_internal._worker_ready (
    schema_version  text        NOT NULL,
    ready_at        timestamptz NOT NULL DEFAULT now()
);

-- Per-instance state frozen at df.start: the caller's vars snapshot and the instance's default
-- retry policy; plus retry bookkeeping.
CREATE TABLE df_internal.instance_state (
    instance_id     varchar(8)  NOT NULL PRIMARY KEY
                    REFERENCES df.instances (id) ON DELETE CASCADE,
    submitted_by    regrole     NOT NULL,  -- frozen identity: the engine trusts only this copy
    database        text,
    vars            jsonb       NOT NULL DEFAULT '{}',
    start_meta      jsonb       NOT NULL DEFAULT '{}',  -- retry policies etc. from df.start
    retry_policy    jsonb,
    started_at      timestamptz,
    finished_at     timestamptz,
    output          jsonb,
    error           text,
    execution       integer     NOT NULL DEFAULT 1,
    cancel_reason   text
);

-- Per-node engine metadata: the tree's parent links (so completion can walk upwards), a
-- generation counter that fences stale writes, timing, attempts and the SQL that actually ran.
CREATE TABLE df_internal.node_meta (
    instance_id   varchar(8)  NOT NULL,
    node_id       varchar(8)  NOT NULL,
    parent_id     varchar(8),
    slot          text        NOT NULL,  -- root | left | right | condition | extra | body | loop_condition
    gen           integer     NOT NULL DEFAULT 0,
    attempts      integer     NOT NULL DEFAULT 0,
    iteration     integer     NOT NULL DEFAULT 0,  -- LOOP nodes: current iteration (1-based)
    retry_policy  jsonb,
    started_at    timestamptz,
    finished_at   timestamptz,
    ran_sql       text,
    PRIMARY KEY (instance_id, node_id),
    FOREIGN KEY (instance_id, node_id) REFERENCES df.nodes (instance_id, id)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX node_meta_parent_idx ON df_internal.node_meta (instance_id, parent_id);

-- The work queue. One row per leaf node (or LOOP iteration) that is ready or waiting on a timer.
-- Claimed with FOR UPDATE SKIP LOCKED inside the transaction that also runs the step and writes
-- its checkpoint, so a crash simply rolls the claim back.
CREATE TABLE df_internal.tasks (
    instance_id  varchar(8)  NOT NULL,
    node_id      varchar(8)  NOT NULL,
    gen          integer     NOT NULL,
    kind         text        NOT NULL DEFAULT 'run',  -- run | iterate
    run_at       timestamptz NOT NULL DEFAULT now(),
    phase        text        NOT NULL DEFAULT 'start', -- start | waiting (timers, signals, cron)
                                                   -- | leased (df_internal.lease_key)
    deadline     timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_id, node_id),
    FOREIGN KEY (instance_id) REFERENCES df.instances (id) ON DELETE CASCADE
);
CREATE INDEX tasks_run_at_idx ON df_internal.tasks (run_at);
-- A queue table: rows are inserted and deleted at a high rate, and every claim scans from the head
-- of the run_at index, so dead tuples there cost every claim. Vacuum it eagerly.
ALTER TABLE df_internal.tasks SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 500,
                                   autovacuum_vacuum_cost_delay = 0, autovacuum_analyze_scale_factor = 0.2);

-- Attempt history: one row per execution attempt of a leaf node (and per LOOP iteration).
CREATE TABLE df_internal.node_attempts (
    id           bigserial   PRIMARY KEY,
    instance_id  varchar(8)  NOT NULL REFERENCES df.instances (id) ON DELETE CASCADE,
    node_id      varchar(8)  NOT NULL,
    iteration    integer     NOT NULL DEFAULT 0,
    attempt      integer     NOT NULL,
    status       text        NOT NULL,  -- completed | failed | retrying | abandoned
    started_at   timestamptz,
    finished_at  timestamptz NOT NULL DEFAULT now(),
    error        text,
    ran_sql      text,
    engine_id    text
);
CREATE INDEX node_attempts_instance_idx ON df_internal.node_attempts (instance_id, node_id, id);
CREATE INDEX node_attempts_finished_idx ON df_internal.node_attempts (finished_at);

-- LOOP iteration history: the body's node states archived before each new iteration.
CREATE TABLE df_internal.loop_iterations (
    instance_id   varchar(8)  NOT NULL REFERENCES df.instances (id) ON DELETE CASCADE,
    loop_node_id  varchar(8)  NOT NULL,
    iteration     integer     NOT NULL,
    started_at    timestamptz,
    finished_at   timestamptz NOT NULL DEFAULT now(),
    nodes         jsonb       NOT NULL,  -- [{node_id, status, result, error}]
    PRIMARY KEY (instance_id, loop_node_id, iteration)
);

-- Named results ($name), kept apart from node rows so nested loops can expose them after exit.
CREATE TABLE df_internal.named_results (
    instance_id  varchar(8)  NOT NULL REFERENCES df.instances (id) ON DELETE CASCADE,
    name         text        NOT NULL,
    node_id      varchar(8)  NOT NULL,
    result       jsonb,
    columns      jsonb,      -- column order of a row-set result (jsonb objects lose it)
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_id, name)
);

-- The signal inbox: queued per instance, consumed oldest-first by wait_for_signal(name).
CREATE TABLE df_internal.signals (
    id           bigserial   PRIMARY KEY,
    instance_id  varchar(8)  NOT NULL REFERENCES df.instances (id) ON DELETE CASCADE,
    name         text        NOT NULL,
    data         jsonb       NOT NULL DEFAULT '{}',
    sent_by      regrole,
    sent_at      timestamptz NOT NULL DEFAULT now(),
    consumed_at  timestamptz,
    consumed_by  varchar(8)
);
CREATE INDEX signals_pending_idx ON df_internal.signals (instance_id, name, id)
    WHERE consumed_at IS NULL;

-- df.retry history: who retried what, when.
CREATE TABLE df_internal.retries (
    id            bigserial   PRIMARY KEY,
    instance_id   varchar(8)  NOT NULL REFERENCES df.instances (id) ON DELETE CASCADE,
    requested_by  regrole     NOT NULL,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    from_node     varchar(8),
    previous_status text      NOT NULL
);
CREATE INDEX retries_instance_idx ON df_internal.retries (instance_id, id);

-- Engine registry and heartbeats.
CREATE TABLE df_internal.engines (
    id            text        NOT NULL PRIMARY KEY,
    host          text        NOT NULL,
    pid           integer     NOT NULL,
    version       text        NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    stopped_at    timestamptz,
    concurrency   integer,
    steps_done    bigint      NOT NULL DEFAULT 0
);

REVOKE ALL ON ALL TABLES IN SCHEMA df_internal FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA df_internal FROM PUBLIC;
