-- The queue's engine API: claiming due tasks.
--
-- Routines are re-applied on every install and upgrade (engine/schema.py): keep every
-- statement idempotent (CREATE OR REPLACE) and schema-qualified.

-- Claim up to p_limit due tasks, row-locked until the caller's transaction ends. The engine runs
-- them one after another in that transaction, each behind its own savepoint, and commits them
-- together: one queue scan and one commit for many steps, each still exactly-once. The due tasks
-- of one instance (parallel branches of a JOIN; never under a RACE, see race_above) are claimed
-- together and returned next to each other: their checkpoints share the batch's transaction, so they take the instance's
-- lock (df_internal.lock_instance) once and commit once, instead of each branch queueing for
-- that lock behind a sibling's commit in another worker. (Batches only form when every worker of
-- the engine is busy, and stop taking on tasks after 50 ms, so an idle engine still runs each
-- branch on a worker of its own.) An HTTP step (a network wait) is only ever claimed alone. Candidates are
-- read without locks and locked one by one (FOR UPDATE SKIP LOCKED on the key), so a task this
-- call passes over is never held. Stale tasks (generation fenced, instance terminal) are deleted
-- on the way. A due 'start' task of a hand-made instance is processed inline (the instance is
-- started, its first leaves queued) and reported as kind 'started'. No rows: nothing is due.
-- p_level is the schema level the calling engine drives (engine/schema.py): an engine of another
-- level is refused, so one left running across an upgrade stops instead of misreading state.
-- Whether a RACE is an ancestor of any of these nodes of an instance (walking node_meta's parent
-- links up to the root, by primary key). claim_tasks asks it only when a second task of an
-- instance is a candidate for the same batch.
CREATE OR REPLACE FUNCTION df_internal.race_above(p_instance varchar, p_nodes varchar[])
RETURNS boolean LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH RECURSIVE up(node_id) AS (
        SELECT m.parent_id FROM df_internal.node_meta m
         WHERE m.instance_id = p_instance AND m.node_id = ANY (p_nodes) AND m.parent_id IS NOT NULL
        UNION
        SELECT m.parent_id FROM up JOIN df_internal.node_meta m
            ON m.instance_id = p_instance AND m.node_id = up.node_id
         WHERE m.parent_id IS NOT NULL)
    SELECT EXISTS (SELECT 1 FROM up JOIN df.nodes n ON n.instance_id = p_instance AND n.id = up.node_id
                    WHERE n.node_type = 'RACE')
$$;

CREATE OR REPLACE FUNCTION df_internal.claim_tasks(p_level text, p_engine text,
                                                   p_limit integer DEFAULT 1,
                                                   p_slice integer DEFAULT 0,
                                                   p_slices integer DEFAULT 1)
RETURNS TABLE (instance_id varchar, node_id varchar, gen integer, kind text, phase text,
               deadline timestamptz, node_type text, query text, result_name text,
               submitted_by regrole, role_oid oid, database text, vars jsonb,
               named_results jsonb, label text, attempts integer, retry_policy jsonb,
               role_name name, role_can_login boolean, role_is_super boolean,
               superuser_allowed boolean, more boolean)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    c record;
    t df_internal.tasks%ROWTYPE;
    verdict text;
    want integer := GREATEST(COALESCE(p_limit, 1), 1);
    insts varchar[] := '{}';   -- the claimed tasks, in claim order
    nodes varchar[] := '{}';
    started text[] := '{}';
    lone boolean := false;
    slices integer := GREATEST(COALESCE(p_slices, 1), 1);
    slotted oid[] := '{}';     -- roles this claim holds a running-step slot of
    capped_out oid[] := '{}';  -- roles whose slots are all taken (skipped for this claim)
    pass integer;
    rescan boolean;
    resume_at timestamptz := '-infinity';  -- where a restarted scan picks up (see below)
    batch_role oid;            -- the one role whose tasks this claim takes (see below)
    other_roles boolean := false;  -- due tasks of other roles were passed over
    raced boolean := false;    -- tasks of an instance under a RACE were left for other workers
BEGIN
    IF p_level IS DISTINCT FROM df_internal.schema_level() THEN
        RAISE EXCEPTION 'dftui engine schema level mismatch: the engine drives %, the df schema is at %',
                        p_level, df_internal.schema_level()
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'Stop this engine and run the dftui version that matches the schema.';
    END IF;
    -- Concurrent claimers all start at the head of the queue. Each first looks at its own slice
    -- of it (instances hashed over p_slices, the engine's workers), so they do not queue up on
    -- one another's row locks, then, if its batch is not full, at everything.
    -- A role found capped out is filtered out of the rest of the scan: the scan is restarted
    -- with the role in its filter, from where it stopped (run_at of the row that revealed it;
    -- rows before it were already looked at). Filtered in the scan, before its 1,000-row window
    -- is cut, so capped roles' backlogs never fill the window, however many such roles there
    -- are (issue 13: with a fixed number of restarts, five colluding roles at their caps hid
    -- every other role's task behind their backlogs). It terminates: each restart adds a role to
    -- capped_out, and a role is capped out only while its cap's slots are held by running
    -- claims, so there are never more such roles than workers in all engines. Rows of capped
    -- roles are walked by the index scan, not one by one in PL/pgSQL (issue 17). Nothing taken
    -- yet in pass 1 when that happens: straight to pass 2, which looks at the head of the whole
    -- queue for other roles' tasks. Pass 3, only when pass 2 found nothing and some role was
    -- capped out: that role's light tasks (timers, signals, loop iterations), without a slot —
    -- the worker is not needed by anyone else, and a role at its cap still has its timers fire.
    pass := CASE WHEN slices > 1 THEN 1 ELSE 2 END;
    WHILE pass <= 3 LOOP
        rescan := false;
        FOR c IN
            SELECT q.* FROM (
            SELECT x.instance_id, x.node_id, x.run_at,
                   y.node_type IN ('HTTP', 'HTTP_MULTIPART')
                   -- a suspect of an engine death is claimed alone too (see reap_inflight)
                   OR x.suspect AS http,
                   -- work that can occupy a worker for long: steps, and the start of a
                   -- hand-made instance (its graph is validated and activated inside the claim:
                   -- up to 10,000 nodes). Every task counts against its role's running-step cap
                   -- (a timer firing, a signal taken, a loop's next iteration too: a role's
                   -- thousands of due df.sleep(0) leaves, uncapped, took every worker in queue
                   -- order and other roles waited behind the whole backlog); only light tasks
                   -- of a capped-out role may still run, on a worker no other role needs (pass 3)
                   (x.kind = 'run' AND y.node_type IN ('SQL', 'HTTP', 'HTTP_MULTIPART'))
                   OR x.kind = 'start' AS heavy,
                   -- (node type and role are on the row when the interpreter queued it, see
                   -- migration 0470; looked up only when not, COALESCE evaluating lazily)
                   COALESCE(x.role_oid, (SELECT s.submitted_by::oid FROM df_internal.instance_state s
                                          WHERE s.instance_id = x.instance_id)) AS role_oid
              FROM df_internal.tasks x
              -- per-row subqueries, so the plan keeps walking the run_at index
              CROSS JOIN LATERAL (SELECT COALESCE(x.node_type,
                                                  (SELECT n.node_type FROM df.nodes n
                                                    WHERE n.instance_id = x.instance_id
                                                      AND n.id = x.node_id), '') AS node_type) y
             WHERE x.run_at <= now() AND x.run_at >= resume_at
               AND (pass >= 2 OR (hashtext(x.instance_id) & 2147483647) % slices = p_slice)
               -- a capped-out role's tasks are left out *before* the window is cut: filtered
               -- after it, a role with more due tasks than the window (1,000) filled it and
               -- hid every other role's task behind its backlog (issue 13, availability)
               AND (cardinality(capped_out) = 0
                    OR NOT ((pass < 3
                             OR (x.kind = 'run' AND y.node_type IN ('SQL', 'HTTP', 'HTTP_MULTIPART'))
                             OR x.kind = 'start')
                            AND COALESCE(x.role_oid, (SELECT s.submitted_by::oid
                                                        FROM df_internal.instance_state s
                                                       WHERE s.instance_id = x.instance_id))
                                = ANY (capped_out)))
             ORDER BY x.run_at
             LIMIT 1000) q
        LOOP
            -- (a start processed here is work done: it counts, so one claim starts at most
            -- `want` hand-made instances, not every one in its window)
            EXIT WHEN cardinality(insts) + cardinality(started) >= want OR lone;
            CONTINUE WHEN c.http AND cardinality(insts) > 0;
            -- (pass 2 meets pass 1's candidates again: a task this claim holds is not taken twice)
            CONTINUE WHEN c.instance_id = ANY (insts) AND EXISTS (
                SELECT 1 FROM unnest(insts, nodes) AS h(i, n)
                 WHERE h.i = c.instance_id AND h.n = c.node_id);
            -- A batch holds the tasks of one role only: they stay row-locked, their checkpoints
            -- uncommitted, until the batch's transaction ends, and the time budget is checked
            -- only between steps, so one role's long step would hold another role's tasks
            -- claimed with it (issue 13, availability). Tasks of one role batch just as well.
            IF batch_role IS NOT NULL AND c.role_oid IS DISTINCT FROM batch_role THEN
                other_roles := true;  -- (reported as "more": another worker is woken for them)
                CONTINUE;
            END IF;
            -- Under a RACE, an instance's tasks never share a batch: the batch runs its steps one
            -- after another, so a branch claimed behind a slow rival (or behind a step whose
            -- checkpoint already holds the instance's lock) could not finish until the rival did,
            -- and the slow branch would win the race (pg_durable e2e 56: a loop whose body races
            -- 'SELECT 1' against pg_sleep(30) never ended on a busy engine). Left for another
            -- worker ("more" below wakes one); the branches then run in parallel.
            IF c.instance_id = ANY (insts) AND df_internal.race_above(c.instance_id,
                    c.node_id || ARRAY(SELECT h.n FROM unnest(insts, nodes) AS h(i, n)
                                        WHERE h.i = c.instance_id)) THEN
                raced := true;
                CONTINUE;
            END IF;
            -- Fairness: a worker-occupying step runs only in one of its role's slots (a row
            -- lock held until this transaction ends, i.e. while the step runs), at most
            -- role_cap of them at once across every engine; a role without slot rows (none
            -- made yet) is not held back. Taken before the task so a capped task stays free.
            -- (Pass 3: nothing of any other role was due; a light task of a capped-out role
            -- runs without a slot, so a role at its cap still has its timers fire, e.g. the
            -- timeout branch of a RACE against its own long step.)
            IF c.role_oid IS NOT NULL AND NOT (c.role_oid = ANY (slotted))
               AND NOT (pass = 3 AND NOT c.heavy AND c.role_oid = ANY (capped_out)) THEN
                CONTINUE WHEN c.role_oid = ANY (capped_out);
                PERFORM 1 FROM df_internal.role_slots rs
                  WHERE rs.role_oid = c.role_oid
                    AND rs.slot < df_internal.role_cap(c.role_oid, p_engine)
                  ORDER BY rs.slot LIMIT 1 FOR UPDATE SKIP LOCKED;
                IF FOUND OR NOT EXISTS (SELECT 1 FROM df_internal.role_slots rs
                                         WHERE rs.role_oid = c.role_oid) THEN
                    slotted := slotted || c.role_oid;
                ELSE
                    capped_out := capped_out || c.role_oid;
                    IF pass = 1 AND cardinality(insts) = 0 THEN
                        EXIT;  -- (to pass 2)
                    END IF;
                    resume_at := c.run_at;
                    rescan := true;
                    EXIT;
                END IF;
            END IF;
            SELECT * INTO t FROM df_internal.tasks x
             WHERE x.instance_id = c.instance_id AND x.node_id = c.node_id AND x.run_at <= now()
             FOR UPDATE SKIP LOCKED;
            CONTINUE WHEN NOT FOUND;
            batch_role := c.role_oid;
            verdict := df_internal.triage(t);
            -- (a refused instance was failed inside this claim, a postponed task moved on:
            -- reported like a started one, so the engine commits the claim instead of rolling
            -- the change back)
            IF verdict IN ('started', 'refused', 'postponed') THEN
                started := started || t.instance_id::text;
            ELSIF verdict = 'ok' THEN
                insts := insts || t.instance_id;
                nodes := nodes || t.node_id;
                lone := c.http;
            END IF;
        END LOOP;
        EXIT WHEN cardinality(insts) + cardinality(started) >= want OR lone;
        IF NOT rescan THEN
            pass := pass + 1;
            resume_at := '-infinity';
            -- pass 3 only when pass 2 found nothing to do and some role was capped out
            EXIT WHEN pass = 3 AND (cardinality(insts) + cardinality(started) > 0
                                    OR cardinality(capped_out) = 0);
        END IF;
    END LOOP;

    RETURN QUERY
    SELECT s.id::varchar, NULL::varchar, NULL::integer, 'started'::text, NULL::text,
           NULL::timestamptz, NULL::text, NULL::text, NULL::text, NULL::regrole,
           NULL::oid, NULL::text, NULL::jsonb, NULL::jsonb, NULL::text, NULL::integer,
           NULL::jsonb, NULL::name, NULL::boolean, NULL::boolean, NULL::boolean, true
      FROM unnest(started) AS s(id);
    RETURN QUERY
    SELECT t2.instance_id, t2.node_id, t2.gen, t2.kind, t2.phase, t2.deadline,
           n.node_type, n.query, n.result_name,
           s.submitted_by, s.submitted_by::oid, s.database, s.vars,
           COALESCE((SELECT jsonb_object_agg(nr.name, jsonb_build_object('result', nr.result,
                                                                           'columns', nr.columns))
                       FROM df_internal.named_results nr
                      WHERE nr.instance_id = t2.instance_id), '{}'),
           i.label, COALESCE(m.attempts, 0), COALESCE(m.retry_policy, s.retry_policy),
           -- "may log in" as PostgreSQL decides at login: LOGIN, a VALID UNTIL not passed, a
           -- CONNECTION LIMIT other than 0 (which a superuser ignores) — an administrator's
           -- lock-out stops the role's next step, as it stops pg_durable's next login as it
           r.rolname,
           r.rolcanlogin AND (r.rolvaliduntil IS NULL OR r.rolvaliduntil > pg_catalog.now())
               AND (r.rolconnlimit <> 0 OR r.rolsuper),
           r.rolsuper,
           COALESCE(current_setting('pg_durable.enable_superuser_instances', true), '')
               IN ('on', 'true', '1', 'yes'),
           -- "more may be due" (the batch is full, an HTTP step was taken alone, or other roles'
           -- due tasks or an instance's rival RACE branches were left for other claims): the engine
           -- chain-wakes another worker. (An EXISTS probe here walked the queue's dead tuples.)
           cardinality(insts) >= want OR lone OR other_roles OR raced
      FROM unnest(insts, nodes) WITH ORDINALITY AS k(instance_id, node_id, ord)
      JOIN df_internal.tasks t2 ON t2.instance_id = k.instance_id AND t2.node_id = k.node_id
      JOIN df_internal.instance_state s ON s.instance_id = t2.instance_id
      JOIN df.instances i ON i.id = t2.instance_id
      LEFT JOIN df.nodes n ON n.instance_id = t2.instance_id AND n.id = t2.node_id
      LEFT JOIN df_internal.node_meta m ON m.instance_id = t2.instance_id AND m.node_id = t2.node_id
      LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.submitted_by::oid
     -- an instance's tasks next to each other, in the order their first one was claimed
     ORDER BY pg_catalog.min(k.ord) OVER (PARTITION BY k.instance_id), k.ord;
END $$;

-- Engines of release 0.1.0 call this signature. They cannot drive a newer schema: say so in the
-- log line they write for every failed claim (they then retry with backoff, never touching state).
CREATE OR REPLACE FUNCTION df_internal.claim_tasks(p_engine text, p_limit integer DEFAULT 1,
                                                   p_slice integer DEFAULT 0,
                                                   p_slices integer DEFAULT 1)
RETURNS TABLE (instance_id varchar, node_id varchar, gen integer, kind text, phase text,
               deadline timestamptz, node_type text, query text, result_name text,
               submitted_by regrole, role_oid oid, database text, vars jsonb,
               named_results jsonb, label text, attempts integer, retry_policy jsonb,
               role_name name, role_can_login boolean, role_is_super boolean,
               superuser_allowed boolean, more boolean)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'dftui engine schema level mismatch: this engine (dftui 0.1.0) is older than the df schema (%); stop it and upgrade dftui',
                    df_internal.schema_level()
          USING ERRCODE = 'object_not_in_prerequisite_state';
END $$;

-- What to do with a locked task: 'ok' (run it), 'stale' (deleted: its generation was fenced or its
-- instance ended), 'started' (a hand-made instance's start task, processed here), 'refused' (its
-- instance was failed here, see below) or 'postponed' (its instance row is locked by someone
-- else: tried again in a few seconds, never waited for). (No task is 'leased' any more: migration 0410.) An
-- instance whose recorded identity is not the one
-- frozen at its start, or is a superuser while superuser instances are off, is failed here,
-- before anything of it runs and before the engine prepares anything for its role
-- (df_internal.identity_verdict).
CREATE OR REPLACE FUNCTION df_internal.triage(t df_internal.tasks) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    inst_status text;
    cur_gen integer;
    suspect boolean;
    reason text;
    loaded boolean;
BEGIN
    -- (one lookup: the suspicion is cheap, the verdict only computed when there is one; the
    -- node's live generation comes with it)
    SELECT df_internal.effective_status(i.status, s.unpublished_status),
           i.submitted_by IS DISTINCT FROM s.submitted_by OR COALESCE(r.rolsuper, false),
           EXISTS (SELECT 1 FROM df_internal.instance_pickups p WHERE p.instance_id = i.id),
           m.gen
      INTO inst_status, suspect, loaded, cur_gen
      FROM df.instances i
      LEFT JOIN df_internal.instance_state s ON s.instance_id = i.id
      LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.submitted_by::oid
      LEFT JOIN df_internal.node_meta m ON m.instance_id = i.id AND m.node_id = t.node_id
     WHERE i.id = t.instance_id;
    IF suspect AND inst_status IN ('pending', 'running') THEN
        reason := df_internal.identity_verdict(t.instance_id);
        IF reason IS NOT NULL THEN
            -- Failing it writes the instance row, which a role that may rewrite submitted_by can
            -- also hold FOR UPDATE: the claim never waits for that (it would for ever: a claim
            -- has no lock_timeout of its own), the task is postponed instead.
            IF NOT df_internal.try_lock_instance(t.instance_id) THEN
                UPDATE df_internal.tasks x SET run_at = now() + interval '5 seconds'
                 WHERE x.instance_id = t.instance_id AND x.node_id = t.node_id;
                RETURN 'postponed';
            END IF;
            PERFORM df_internal.refuse_instance(t.instance_id, reason);
            RETURN 'refused';
        END IF;
    END IF;
    -- The first claim takes the instance up (pg_durable loads its graph once): from now on a
    -- rewrite of submitted_by changes nothing (identity_verdict). Once per instance (twice at
    -- most when two workers claim two of its branches at once: no unique key to wait on).
    IF NOT loaded AND inst_status IN ('pending', 'running') THEN
        INSERT INTO df_internal.instance_pickups (instance_id) VALUES (t.instance_id);
    END IF;
    IF t.kind = 'start' THEN
        IF inst_status = 'pending' THEN
            PERFORM df_internal.start_instance(t.instance_id);
            RETURN 'started';
        END IF;
    ELSE
        IF inst_status IN ('pending', 'running') AND cur_gen = t.gen THEN
            RETURN 'ok';
        END IF;
    END IF;
    DELETE FROM df_internal.tasks x WHERE x.instance_id = t.instance_id AND x.node_id = t.node_id;
    RETURN 'stale';
END $$;
