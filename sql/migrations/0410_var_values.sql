-- A copy of df.vars that only the df owner can lock (issue 13, availability).
--
-- pg_durable's grants give every user SELECT, INSERT, UPDATE, DELETE on df.vars, and table-level
-- UPDATE or DELETE lets a session `LOCK TABLE df.vars IN ACCESS EXCLUSIVE MODE`: while one role
-- held that lock, every other role's df.start (which snapshots the submitter's vars) and
-- df.getvar waited. Those readers now read df_internal.var_values, kept equal to df.vars by
-- triggers in the writer's own transaction (sql/routines/vars.sql); nobody but its owner can
-- lock it. df.vars stays the table users write and read, as in pg_durable.
CREATE TABLE df_internal.var_values (
    owner  regrole NOT NULL,
    name   text    NOT NULL,
    value  text,
    PRIMARY KEY (owner, name)
);
INSERT INTO df_internal.var_values (owner, name, value)
SELECT v.owner, v.name, v.value FROM df.vars v;

-- No task can be 'leased' any more (non-transactional statements are refused, see
-- docs/architecture.md); a task an engine of release 0.1.0 leased before the upgrade runs again
-- from its first pass, where it is refused with the reason.
UPDATE df_internal.tasks SET phase = 'start' WHERE phase = 'leased';
-- (and the key of that lease, which only df_internal.triage still named)
DROP FUNCTION IF EXISTS df_internal.lease_key(varchar, varchar);
