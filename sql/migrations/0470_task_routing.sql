-- perf, migration 0470: what the claim needs to route a task, on the task row itself.
--
-- Every claim walks the head of the queue and, per row, needed the node's type (an HTTP step is
-- claimed alone; only worker-occupying steps count against their role's running-step cap) and
-- the instance's frozen submitter (the cap is per role): two index lookups into df.nodes and
-- df_internal.instance_state for every row looked at. A claim whose role has all its slots taken
-- looks at up to 1,000 rows for other roles' tasks, so those lookups made it cost more server
-- time than the steps themselves (issue 17, the drain's 8x regression). The interpreter now
-- writes both when it queues a task (df_internal.drive); NULL means "not recorded" and the claim
-- looks them up as before, so a row queued any other way is still routed and capped correctly.
-- Both are copies of values that never change: a node's type, and the identity frozen at start.
ALTER TABLE df_internal.tasks ADD COLUMN node_type text;
ALTER TABLE df_internal.tasks ADD COLUMN role_oid oid;

UPDATE df_internal.tasks t
   SET node_type = n.node_type
  FROM df.nodes n
 WHERE n.instance_id = t.instance_id AND n.id = t.node_id;
UPDATE df_internal.tasks t
   SET role_oid = s.submitted_by::oid
  FROM df_internal.instance_state s
 WHERE s.instance_id = t.instance_id;
