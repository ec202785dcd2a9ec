-- Console (issue 15): what a running step is doing inside PostgreSQL, and an instance's history.
--
-- The engine session that runs a batch of steps (the worker), recorded with the batch in
-- df_internal.inflight (committed on the engine's journal connection before the batch runs):
-- df.step_activity finds a running step's backend from here, never from anything a role could
-- write. backend_start pins the session (a pid can be reused by a later session).
ALTER TABLE df_internal.inflight ADD COLUMN worker_pid integer;
ALTER TABLE df_internal.inflight ADD COLUMN worker_backend_start timestamptz;

-- How each execution ended, kept when df.retry starts the next one (df.retry resets the
-- instance's error, finish time and canceller): filled by a trigger on df_internal.retries.
ALTER TABLE df_internal.retries ADD COLUMN previous_error text;
ALTER TABLE df_internal.retries ADD COLUMN previous_cancelled_by regrole;
ALTER TABLE df_internal.retries ADD COLUMN previous_finished_at timestamptz;

-- Append-only record of cancel-backend / terminate-backend requests on running steps
-- (df.cancel_step_backend, df.terminate_step_backend): who asked, what was signalled.
CREATE TABLE df_internal.step_actions (
    id            bigserial   PRIMARY KEY,
    instance_id   varchar(8)  NOT NULL REFERENCES df.instances (id) ON DELETE CASCADE,
    node_id       varchar(8)  NOT NULL,
    action        text        NOT NULL CHECK (action IN ('cancel', 'terminate')),
    requested_by  regrole     NOT NULL,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    backend_pid   integer     NOT NULL,
    signalled     boolean     NOT NULL
);
CREATE INDEX step_actions_instance_idx ON df_internal.step_actions (instance_id, id);
REVOKE ALL ON df_internal.step_actions FROM PUBLIC;
REVOKE ALL ON SEQUENCE df_internal.step_actions_id_seq FROM PUBLIC;
