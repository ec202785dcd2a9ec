-- When an engine first took an instance up (its first claim), as pg_durable's worker loads an
-- instance's graph once (load_function_graph) and then runs on that snapshot. A rewrite of
-- submitted_by by a role that skips RLS fails the instance only if it happened before; later it
-- changes nothing (the instance keeps running as the identity frozen at its start), which is
-- what pg_durable's own e2e test 17 (tests 3 to 5) checks.
--
-- A table of its own, written with plain INSERTs (no unique key, so two workers claiming two
-- branches of one new instance never wait for each other): the claim must not lock a row that
-- df.cancel updates (instance_state), or a cancel would wait behind a first step, or deadlock.
CREATE TABLE df_internal.instance_pickups (
    instance_id  varchar(8)  NOT NULL REFERENCES df_internal.instance_state (instance_id)
                             ON DELETE CASCADE,
    picked_up_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX instance_pickups_instance_idx ON df_internal.instance_pickups (instance_id);
REVOKE ALL ON df_internal.instance_pickups FROM PUBLIC;
-- Instances that already checkpointed were taken up; the others count as not yet (stricter).
INSERT INTO df_internal.instance_pickups (instance_id, picked_up_at)
SELECT s.instance_id, COALESCE(s.started_at, now())
  FROM df_internal.instance_state s JOIN df.instances i ON i.id = s.instance_id
 WHERE i.status <> 'pending';
