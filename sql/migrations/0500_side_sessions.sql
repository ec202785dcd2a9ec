-- Console (issue 15): a SQL step that names another database runs on a session of its own in
-- that database (engine/sql_steps.py run_elsewhere), not on the worker's session recorded with
-- the batch. The worker records that session here (committed on the journal connection, before
-- the step runs there), so df.step_activity and df.cancel_step_backend find it the same way:
-- pid and backend_start of a session the engine opened, never anything a role could write.
ALTER TABLE df_internal.inflight ADD COLUMN side_pid integer;
ALTER TABLE df_internal.inflight ADD COLUMN side_backend_start timestamptz;
