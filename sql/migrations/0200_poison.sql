-- 0.2.0, migration 0200: quarantine for tasks the engine cannot process (issue 18).
--
-- faults counts, per task generation (fault_gen), the times the engine failed to process the task
-- itself (an exception in its own handling, or its process dying while running it); it lives on
-- the task row, so it survives engine restarts. last_fault is the latest reason (shown while the
-- task waits for its next attempt). See df_internal.task_fault (sql/routines/poison.sql).
ALTER TABLE df_internal.tasks ADD COLUMN faults integer NOT NULL DEFAULT 0;
ALTER TABLE df_internal.tasks ADD COLUMN fault_gen integer;
ALTER TABLE df_internal.tasks ADD COLUMN last_fault text;
-- The task was in a batch of an engine that died: claims take it alone from now on, so if it is
-- what kills engines, the next death is charged to it alone (df_internal.reap_inflight).
ALTER TABLE df_internal.tasks ADD COLUMN suspect boolean NOT NULL DEFAULT false;

-- What each engine worker is running right now, written (and committed) by the engine before it
-- runs a batch, on a connection of its own: a claim is rolled back when its engine dies, so only
-- this row remembers which tasks were in flight. backend_pid/backend_start identify the writing
-- session: once it no longer exists the engine is gone and df_internal.reap_inflight charges the
-- tasks still queued. Unlogged: nothing here needs to survive a server crash.
CREATE UNLOGGED TABLE df_internal.inflight (
    engine_id      text        NOT NULL,
    worker         integer     NOT NULL,
    backend_pid    integer     NOT NULL,
    backend_start  timestamptz NOT NULL,
    instance_ids   varchar[]   NOT NULL,
    node_ids       varchar[]   NOT NULL,
    gens           integer[]   NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (engine_id, worker)
);
REVOKE ALL ON df_internal.inflight FROM PUBLIC;
