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

-- ---------------------------------------------------------------------------------------------
-- Visibility and the health views (unchanged since 0.1.0)
-- ---------------------------------------------------------------------------------------------

-- (df_internal.visible, which these views filter by, is in 01_visibility.sql.)

-- Instances that look stuck: a step running longer than pg_durable.stuck_after (default 10 min),
-- or work that has been due for over a minute while no engine has sent a heartbeat for 30 s.
CREATE OR REPLACE VIEW df.stuck_instances WITH (security_barrier = true) AS
SELECT i.id AS instance_id, i.label, i.submitted_by, m.node_id, n.node_type,
       'step running since ' || to_char(m.started_at, 'YYYY-MM-DD HH24:MI:SS TZ') AS reason,
       m.started_at AS since
  FROM df_internal.node_meta m
  JOIN df.instances i ON i.id = m.instance_id AND i.status IN ('pending', 'running')
  JOIN df.nodes n ON n.instance_id = m.instance_id AND n.id = m.node_id
 WHERE n.status = 'running'
   AND n.node_type IN ('SQL', 'HTTP', 'HTTP_MULTIPART')
   AND m.started_at < now() - COALESCE(NULLIF(current_setting('pg_durable.stuck_after', true), '')::interval,
                                       interval '10 minutes')
   AND NOT EXISTS (SELECT 1 FROM df_internal.tasks t
                    WHERE t.instance_id = m.instance_id AND t.node_id = m.node_id
                      AND t.phase = 'waiting')
   AND df_internal.visible(i.submitted_by)
UNION ALL
SELECT i.id, i.label, i.submitted_by, t.node_id, n.node_type,
       'due since ' || to_char(t.run_at, 'YYYY-MM-DD HH24:MI:SS TZ') || ' and no engine is alive',
       t.run_at
  FROM df_internal.tasks t
  JOIN df.instances i ON i.id = t.instance_id
  LEFT JOIN df.nodes n ON n.instance_id = t.instance_id AND n.id = t.node_id
 WHERE t.run_at < now() - interval '1 minute'
   AND NOT EXISTS (SELECT 1 FROM df_internal.engines e
                    WHERE e.stopped_at IS NULL AND e.heartbeat_at > now() - interval '30 seconds')
   AND df_internal.visible(i.submitted_by);

-- Finished step attempts per 10-second bucket over the last 15 minutes (throughput sparkline).
CREATE OR REPLACE VIEW df.step_rate WITH (security_barrier = true) AS
SELECT to_timestamp(floor(extract(epoch FROM a.finished_at) / 10) * 10) AS bucket,
       count(*) AS steps,
       count(*) FILTER (WHERE a.status = 'failed') AS failed
  FROM df_internal.node_attempts a
  JOIN df.instances i ON i.id = a.instance_id
 WHERE a.finished_at > now() - interval '15 minutes'
   AND df_internal.visible(i.submitted_by)
 GROUP BY 1;

-- Queue depth: runnable now vs waiting, visible to the caller. A due task a worker is executing
-- right now stays in the queue until its batch commits; it is not ready work waiting for a
-- worker, so it is counted as `running` (its batch's keys are in df_internal.inflight, as for
-- df.instance_runtime.step_running), not in `runnable`/`oldest_due` — a long step read as a
-- growing "oldest ready" age on the console's health line. (`running` appended last: views may
-- only gain columns at the end.)
CREATE OR REPLACE VIEW df.queue_depth WITH (security_barrier = true) AS
WITH executing AS (
    SELECT DISTINCT k.i, k.n, k.g
      FROM df_internal.inflight f
     CROSS JOIN LATERAL unnest(f.instance_ids, f.node_ids, f.gens) AS k(i, n, g)
)
SELECT count(*) FILTER (WHERE t.run_at <= now() AND t.phase <> 'waiting' AND x.i IS NULL)
           AS runnable,
       count(*) FILTER (WHERE t.run_at > now() OR t.phase = 'waiting') AS waiting,
       min(t.run_at) FILTER (WHERE t.run_at <= now() AND t.phase <> 'waiting' AND x.i IS NULL)
           AS oldest_due,
       count(*) FILTER (WHERE t.run_at <= now() AND t.phase <> 'waiting' AND x.i IS NOT NULL)
           AS running
  FROM df_internal.tasks t
  JOIN df.instances i ON i.id = t.instance_id
  LEFT JOIN executing x ON x.i = t.instance_id AND x.n = t.node_id AND x.g = t.gen
 WHERE df_internal.visible(i.submitted_by);
