-- Engine coordination without advisory locks (issue 13, class 7). Advisory-lock keys are shared by
-- every session of a database: any role could take the engine's keys and freeze a step, an
-- instance or every step. The engine now locks rows and relations only it controls.

-- One row per instance, locked FOR UPDATE to serialise orchestration (df_internal.lock_instance).
-- Created lazily by the first lock; goes with the instance (cascade through instance_state).
CREATE TABLE df_internal.instance_locks (
    instance_id varchar(8) NOT NULL PRIMARY KEY
                REFERENCES df_internal.instance_state (instance_id) ON DELETE CASCADE
);

-- Every trampoline takes ACCESS SHARE on this table before running a step, so
-- df_internal.in_engine_step() can recognise user code running inside an engine step (the lock
-- lasts until the transaction ends; user code cannot release it). ACCESS SHARE conflicts only
-- with ACCESS EXCLUSIVE, which nobody but its owner can take: unlike an advisory key, no role
-- can block it. Anybody may take it too, which only makes that session look like a step.
CREATE TABLE df._step_marker ();
