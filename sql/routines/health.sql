-- Health views whose definition changed since 0.1.0 (they read pg_durable's node configs:
-- SIGNAL {"signal_name"}, WAIT_SCHEDULE {"cron_expr"}, and 0.1.0's).
--
-- Routines are re-applied on every install and upgrade (engine/schema.py): keep every statement
-- idempotent (CREATE OR REPLACE) and schema-qualified.

-- What each waiting instance waits for: a signal (name, deadline), a timer (due time), a cron
-- schedule (next fire), a retry backoff, or a LOOP's next iteration.
CREATE OR REPLACE VIEW df.waiting_instances WITH (security_barrier = true) AS
SELECT i.id AS instance_id, i.label, i.submitted_by, t.node_id, n.node_type,
       CASE
           WHEN t.kind = 'iterate' THEN 'loop iteration'
           WHEN n.node_type = 'SIGNAL' THEN 'signal'
           WHEN n.node_type = 'SLEEP' THEN 'timer'
           WHEN n.node_type = 'WAIT_SCHEDULE' THEN 'schedule'
           WHEN n.status_details ? 'retrying' THEN 'retry backoff'
           ELSE 'queued'
       END AS waiting_for,
       CASE WHEN n.node_type = 'SIGNAL'
                THEN coalesce(n.query::jsonb ->> 'signal_name', n.query::jsonb ->> 'name')
            WHEN n.node_type = 'WAIT_SCHEDULE' AND ltrim(n.query) LIKE '{%'
                THEN n.query::jsonb ->> 'cron_expr'
            WHEN n.node_type = 'WAIT_SCHEDULE' THEN n.query END AS detail,
       NULLIF(t.run_at, 'infinity') AS due_at,
       t.deadline,
       t.created_at AS waiting_since
  FROM df_internal.tasks t
  JOIN df.instances i ON i.id = t.instance_id
  LEFT JOIN df.nodes n ON n.instance_id = t.instance_id AND n.id = t.node_id
 WHERE (t.run_at > now() OR t.phase = 'waiting')
   AND df_internal.visible(i.submitted_by);

