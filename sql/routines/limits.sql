-- Size limits on user-supplied names, checked where they enter (issue 18). Each of these values
-- is a key of a btree index, whose entries PostgreSQL caps at about 2.7 kB: beyond that an insert
-- fails with "index row requires N bytes, maximum size is 2704", which names neither the value
-- nor a fix. So they are refused first, naming the value and its limit (1024 bytes): labels
-- (df.start, df.start_in_new_transaction, hand-made instances), var names (df.setvar), signal
-- names (df.signal) and result names (df.as / |=>, stored with their node by df.start).
-- The WHEN clauses keep the check free for ordinary values: the function only runs to refuse.
-- Routines are re-applied on every install and upgrade (engine/schema.py): idempotent, qualified.

-- TG_ARGV: what the value is (for the message), the column holding it.
CREATE OR REPLACE FUNCTION df_internal.refuse_long_name() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    size integer := octet_length(to_jsonb(NEW) ->> TG_ARGV[1]);
BEGIN
    RAISE EXCEPTION '% is too long: % bytes, the limit is 1024 bytes', TG_ARGV[0], size
        USING ERRCODE = 'string_data_right_truncation',
              HINT = 'Use a shorter value (it is an index key).';
END $$;

CREATE OR REPLACE TRIGGER instances_label_limit BEFORE INSERT OR UPDATE OF label ON df.instances
    FOR EACH ROW WHEN (octet_length(NEW.label) > 1024)
    EXECUTE FUNCTION df_internal.refuse_long_name('the instance label', 'label');
CREATE OR REPLACE TRIGGER vars_name_limit BEFORE INSERT OR UPDATE OF name ON df.vars
    FOR EACH ROW WHEN (octet_length(NEW.name) > 1024)
    EXECUTE FUNCTION df_internal.refuse_long_name('the var name', 'name');
CREATE OR REPLACE TRIGGER signals_name_limit BEFORE INSERT OR UPDATE OF name ON df_internal.signals
    FOR EACH ROW WHEN (octet_length(NEW.name) > 1024)
    EXECUTE FUNCTION df_internal.refuse_long_name('the signal name', 'name');
CREATE OR REPLACE TRIGGER nodes_result_name_limit BEFORE INSERT OR UPDATE OF result_name ON df.nodes
    FOR EACH ROW WHEN (octet_length(NEW.result_name) > 1024)
    EXECUTE FUNCTION df_internal.refuse_long_name('the result name', 'result_name');
