-- 0.2.0, migration 0001: the record of the schema's history.
--
-- Release 0.1.0 (sql/0.1.0, frozen) recorded only its version in df_internal.schema_version.
-- From here on every migration (sql/migrations) is recorded once, with the checksum of the text
-- that was applied, so an installer or engine can tell a database that is older, newer, or was
-- installed from different files than its own; and the routines (sql/routines, re-applied on
-- every upgrade) are recorded by checksum so an unchanged upgrade re-creates nothing.

CREATE TABLE df_internal.schema_migrations (
    name        text        NOT NULL PRIMARY KEY,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    applied_by  name        NOT NULL DEFAULT session_user
);

CREATE TABLE df_internal.schema_routines (
    singleton   boolean     NOT NULL DEFAULT true PRIMARY KEY CHECK (singleton),
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

REVOKE ALL ON df_internal.schema_migrations, df_internal.schema_routines FROM PUBLIC;

-- 0.1.0's claim_tasks(text, integer, integer, integer) is what engines of 0.1.0 call; it is
-- re-defined in sql/routines/queue.sql to refuse them (they cannot drive this schema).
