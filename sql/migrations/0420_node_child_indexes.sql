-- Deleting an instance's nodes is linear again (issue 13, availability: retention).
--
-- df.nodes' left_node / right_node foreign keys reference df.nodes itself, ON DELETE CASCADE:
-- for every node row deleted, PostgreSQL looks up the rows whose left_node (then right_node)
-- name it. Without an index on those columns each lookup walked every node of the instance
-- (the primary key's instance_id prefix), so deleting one 10,000-node instance, as retention
-- does (df.start allows that size), made ~10^8 row visits: minutes inside the housekeeping
-- thread, whose heartbeat then stopped. Partial indexes: leaves (about half the rows) name no
-- child, so df.start's inserts maintain them only for composite nodes.
CREATE INDEX nodes_left_node_idx ON df.nodes (instance_id, left_node) WHERE left_node IS NOT NULL;
CREATE INDEX nodes_right_node_idx ON df.nodes (instance_id, right_node) WHERE right_node IS NOT NULL;
