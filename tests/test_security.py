"""Attacks on execution identity: no step may run anything with privileges other than its
submitter's, now or later (commit time, the engine's own statements, another role's step).

Every workflow is submitted by an ordinary granted role (dftui_alice) through df.start and run by
a real in-process engine, once connected as a superuser and once in least-privilege mode (a
non-superuser role owning the df schemas, engine/privileges.py). Each test fails if its attack
works; `evil.witness` (tests/support/attack.py) records who really ran the attacker's code.
"""

from __future__ import annotations

import re

import psycopg
import pytest

from tests.support import (
    ALICE,
    BOB,
    ENGINE_ROLE,
    assert_no_escalation,
    counters,
    engine_in_mode,
    engine_user,
    errors,
    root_result,
    start,
    wait_terminal,
)


def start_many(db, role: str, exprs: dict[str, str]) -> dict[str, str]:
    """Start several workflows in one transaction, so none runs before all are submitted."""
    with db.connect(role, autocommit=False) as conn:
        ids = {name: conn.execute(f"SELECT df.start({expr})").fetchone()[0]
               for name, expr in exprs.items()}
        conn.commit()
    return ids




def alice_sql(db, statement: str) -> None:
    with db.connect(ALICE) as conn:
        conn.execute(statement)


# -- 1. changing identity inside a step ---------------------------------------------------------

IDENTITY_CHANGES = [
    "RESET ROLE",
    "SET ROLE postgres",
    "SET LOCAL ROLE postgres",
    "SET SESSION AUTHORIZATION postgres",
    "SET SESSION AUTHORIZATION DEFAULT",
    "RESET SESSION AUTHORIZATION",
    "RESET ALL",
    "SELECT set_config(''role'', ''postgres'', false)",
    "SELECT set_config(''role'', ''none'', true)",
    "SELECT set_config(''session_authorization'', ''postgres'', false)",
    "DO $$ BEGIN EXECUTE ''SET ROLE postgres''; END $$",
    "DO $$ BEGIN RESET ROLE; END $$",
]


def test_step_cannot_change_identity(db, eng):
    ids = {attack: start(db, ALICE, f"'{attack}' ~> 'SELECT current_user::text AS who, "
                                    "evil.witness(''after'')'")
           for attack in IDENTITY_CHANGES}
    for attack, iid in ids.items():
        status = wait_terminal(db, iid)
        if status == "completed":
            # Harmless variants (RESET ALL) may succeed; the next step is still alice.
            assert root_result(db, iid)["rows"][0]["who"] == ALICE, attack
        else:
            assert status == "failed", attack
            assert "security-definer" in errors(db, iid) or "permission denied" in errors(db, iid), attack
    assert_no_escalation(db)


def test_current_user_is_the_submitter_in_every_step_kind(db, eng, mode):
    iid = start(db, ALICE, """'SELECT current_user::text AS u' |=> 'a'
        ~> ('SELECT current_user::text AS u' & 'SELECT current_user::text AS u')
        ~> @> ('SELECT current_user::text = ''dftui_alice'' AS ok' ?> df.break('"loop"') !> 'SELECT 1')
        ~> 'SELECT current_user::text AS u, session_user::text AS s, $a.u AS first'""")
    assert wait_terminal(db, iid) == "completed", errors(db, iid)
    row = root_result(db, iid)["rows"][0]
    assert row["u"] == ALICE and row["first"] == ALICE
    assert row["s"] == engine_user(mode, db)
    assert_no_escalation(db)


# -- 2. code that would run at commit time -----------------------------------------------------

COMMIT_TIME_SETUP = """
CREATE TABLE evil.t (x int);
CREATE TABLE evil.t2 (x int);
CREATE FUNCTION evil.late() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM evil.witness(TG_TABLE_NAME || ' deferred trigger');
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER t_late AFTER INSERT ON evil.t
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION evil.late();
CREATE CONSTRAINT TRIGGER t2_late AFTER INSERT ON evil.t2
    DEFERRABLE INITIALLY IMMEDIATE FOR EACH ROW EXECUTE FUNCTION evil.late();

CREATE FUNCTION evil.key(x int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM evil.witness_quiet(x);
    RETURN x;
END $$;
CREATE TABLE evil.ex (x int, EXCLUDE USING btree (evil.key(x) WITH =) DEFERRABLE INITIALLY DEFERRED);
INSERT INTO evil.ex VALUES (1);
CREATE TABLE evil.uq (x int UNIQUE DEFERRABLE INITIALLY DEFERRED);
CREATE INDEX ON evil.uq (evil.key(x));
INSERT INTO evil.uq VALUES (1), (2);
"""

COMMIT_TIME_ATTACKS = {
    "deferred constraint trigger": "INSERT INTO evil.t VALUES (1)",
    "constraint trigger deferred by the step": "DO $$ BEGIN SET CONSTRAINTS ALL DEFERRED; "
                                               "INSERT INTO evil.t2 VALUES (1); END $$",
    "deferred exclusion recheck": "WITH i AS (INSERT INTO evil.ex VALUES (1) RETURNING x) "
                                  "DELETE FROM evil.ex e USING i WHERE e.x = i.x AND e.ctid <> "
                                  "(SELECT max(ctid) FROM evil.ex)",
    "deferred unique recheck": "UPDATE evil.uq SET x = 3 - x",
    "holdable cursor": "DECLARE c CURSOR WITH HOLD FOR SELECT evil.witness(''cursor'') FROM "
                       "generate_series(1, 3)",
    "holdable cursor from plpgsql": "DO $$ BEGIN EXECUTE ''DECLARE c2 CURSOR WITH HOLD FOR SELECT "
                                    "evil.witness(''''cursor2'''') FROM generate_series(1, 3)''; END $$",
}


def test_nothing_runs_at_commit_time_as_the_engine(db, eng):
    alice_sql(db, COMMIT_TIME_SETUP)
    before = counters(db)[1]
    ids = {name: start(db, ALICE, f"'{attack}' ~> 'SELECT current_user::text AS who'")
           for name, attack in COMMIT_TIME_ATTACKS.items()}
    for name, iid in ids.items():
        status = wait_terminal(db, iid)
        assert status in ("completed", "failed"), name
        if status == "completed":
            assert root_result(db, iid)["rows"][0]["who"] == ALICE, name
    assert_no_escalation(db)
    # The deferred triggers really ran (as alice, inside the step).
    tags = {r[0] for r in db.connect().execute("SELECT tag FROM evil.log").fetchall()}
    assert {"t deferred trigger", "t2 deferred trigger"} <= tags
    assert counters(db)[1] > before
    # No cursor survived into the engine's session.
    assert not db.scalar("SELECT count(*) FROM evil.log WHERE tag LIKE 'cursor%%' AND who <> %s", (ALICE,))


# -- 3. user code in the engine's own statements -----------------------------------------------

SHADOW_SETUP = """
CREATE TYPE evil.mood AS ENUM ('happy', 'sad');
CREATE FUNCTION evil.mood_json(evil.mood) RETURNS json LANGUAGE plpgsql AS $$
BEGIN PERFORM evil.witness('cast to json'); RETURN '"hijacked"'::json; END $$;
CREATE FUNCTION evil.mood_jsonb(evil.mood) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN PERFORM evil.witness('cast to jsonb'); RETURN '"hijacked"'::jsonb; END $$;
CREATE FUNCTION evil.mood_text(evil.mood) RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM evil.witness('cast to text'); RETURN 'hijacked'; END $$;
CREATE CAST (evil.mood AS json) WITH FUNCTION evil.mood_json(evil.mood);
CREATE CAST (evil.mood AS jsonb) WITH FUNCTION evil.mood_jsonb(evil.mood);
CREATE CAST (evil.mood AS text) WITH FUNCTION evil.mood_text(evil.mood);
CREATE TYPE evil.span AS RANGE (subtype = int4);
CREATE FUNCTION evil.span_json(evil.span) RETURNS json LANGUAGE plpgsql AS $$
BEGIN PERFORM evil.witness('range cast'); RETURN '"hijacked"'::json; END $$;
CREATE CAST (evil.span AS json) WITH FUNCTION evil.span_json(evil.span);
CREATE TYPE evil.holder AS (m evil.mood);

CREATE DOMAIN evil.posint AS int CHECK (evil.witness_quiet(VALUE));
CREATE TYPE evil.pair AS (a evil.posint, b int);
"""

RESULT_ENCODING_ATTACKS = {
    "enum with a cast to json": "SELECT ''happy''::evil.mood AS m",
    "array of that enum": "SELECT ARRAY[''sad''::evil.mood] AS a",
    "composite holding the enum": "SELECT ROW(''happy'')::evil.holder AS h",
    "range with a cast to json": "SELECT ''[1,3)''::evil.span AS r",
    "anonymous record": "SELECT ROW(''happy''::evil.mood) AS rec",
}


def test_result_encoding_never_runs_user_casts_as_the_engine(db, eng):
    """The engine turns result rows into JSON; to_jsonb() applies a type's cast to json, and
    the attacker owns that cast."""
    alice_sql(db, SHADOW_SETUP)
    ids = start_many(db, ALICE, {name: f"'{q}'" for name, q in RESULT_ENCODING_ATTACKS.items()})
    for name, iid in ids.items():
        assert wait_terminal(db, iid) in ("completed", "failed"), name
    assert_no_escalation(db)


PARSE_TIME_ATTACKS = {
    "array literal of a checked domain": "SELECT ''{1,2}''::evil.posint[] AS a",
    "composite literal with a checked domain": "SELECT ''(1,2)''::evil.pair AS p",
    "in a WHERE clause": "SELECT 1 AS x WHERE ''{3}''::evil.posint[] IS NOT NULL",
    "in an INSERT": "INSERT INTO evil.log (tag) SELECT ''{4}''::evil.posint[]::text",
}


def test_describing_a_step_runs_no_user_code_as_the_engine(db, eng):
    """The engine learns a step's result columns by preparing it; parse analysis runs the input
    functions of literals, which run domain CHECK constraints (user functions)."""
    alice_sql(db, SHADOW_SETUP)
    ids = start_many(db, ALICE, {name: f"'{q}'" for name, q in PARSE_TIME_ATTACKS.items()})
    for name, iid in ids.items():
        assert wait_terminal(db, iid) == "completed", (name, errors(db, iid))
    assert_no_escalation(db)
    assert counters(db)[1] > 0  # the checks ran, as alice


ENGINE_SHADOWS = """
CREATE DOMAIN evil.jsonb AS pg_catalog.jsonb CHECK (evil.witness_quiet(VALUE));
CREATE DOMAIN evil.json AS pg_catalog.json CHECK (evil.witness_quiet(VALUE));
CREATE DOMAIN evil.text AS pg_catalog.text CHECK (evil.witness_quiet(VALUE));
CREATE DOMAIN evil.float8 AS pg_catalog.float8 CHECK (evil.witness_quiet(VALUE));
CREATE DOMAIN evil.int4 AS pg_catalog.int4 CHECK (evil.witness_quiet(VALUE));
CREATE DOMAIN evil.int8 AS pg_catalog.int8 CHECK (evil.witness_quiet(VALUE));
CREATE DOMAIN evil.timestamptz AS pg_catalog.timestamptz CHECK (evil.witness_quiet(VALUE));
CREATE DOMAIN evil.varchar AS pg_catalog.varchar CHECK (evil.witness_quiet(VALUE));
CREATE DOMAIN evil.oid AS pg_catalog.oid CHECK (evil.witness_quiet(VALUE));
CREATE DOMAIN evil.regrole AS pg_catalog.regrole CHECK (evil.witness_quiet(VALUE));
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN PERFORM evil.witness('now()'); RETURN pg_catalog.now(); END $$;
CREATE FUNCTION evil.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN PERFORM evil.witness('clock_timestamp()'); RETURN pg_catalog.now(); END $$;
CREATE FUNCTION evil.count(anyelement) RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN PERFORM evil.witness('count'); RETURN 1; END $$;
CREATE FUNCTION evil.set_config(text, text, boolean) RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM evil.witness('set_config'); RETURN pg_catalog.set_config($1, $2, $3); END $$;
CREATE FUNCTION evil.current_setting(text, boolean) RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM evil.witness('current_setting'); RETURN pg_catalog.current_setting($1, $2); END $$;
CREATE FUNCTION evil.to_jsonb(anyelement) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN PERFORM evil.witness('to_jsonb'); RETURN pg_catalog.to_jsonb($1); END $$;
CREATE FUNCTION evil.jsonb_build_object(VARIADIC text[]) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN PERFORM evil.witness('jsonb_build_object'); RETURN '{}'::pg_catalog.jsonb; END $$;
CREATE FUNCTION evil.pg_notify(text, text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN PERFORM evil.witness('pg_notify'); END $$;
CREATE FUNCTION evil.text_eq(text, text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM evil.witness('= operator'); RETURN pg_catalog.texteq($1, $2); END $$;
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.text_eq);
CREATE FUNCTION evil.jsonb_cat(jsonb, jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN PERFORM evil.witness('|| operator'); RETURN pg_catalog.jsonb_concat($1, $2); END $$;
CREATE OPERATOR evil.|| (LEFTARG = jsonb, RIGHTARG = jsonb, FUNCTION = evil.jsonb_cat);
CREATE TABLE evil.tasks (x int);
CREATE TABLE evil.instances (x int);
CREATE TABLE evil.nodes (x int);
"""

SESSION_SHADOWING = """DO $$
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_temp, evil, pg_catalog', false);
    CREATE DOMAIN pg_temp.jsonb AS pg_catalog.jsonb CHECK (evil.witness_quiet(VALUE));
    CREATE TEMP TABLE tasks (x int);
    CREATE TEMP TABLE instances (x int);
    CREATE TEMP TABLE node_meta (x int);
    CREATE FUNCTION pg_temp.complete_task(text, text, int, jsonb, jsonb, text, text, timestamptz)
        RETURNS boolean LANGUAGE plpgsql AS $f$ BEGIN PERFORM evil.witness('temp fn'); RETURN true; END $f$;
END $$"""


def test_step_search_path_and_shadowing_objects_never_reach_the_engine(db, eng1):
    """A plain SET search_path outlives the trampoline's SET clause: the engine's remaining
    statements (checkpoint, next claim) must not resolve names through it."""
    alice_sql(db, SHADOW_SETUP + ENGINE_SHADOWS)
    shadow = SESSION_SHADOWING.replace("'", "''")
    iid = start(db, ALICE, f"'{shadow}' ~> 'SELECT current_setting(''search_path'') AS sp, 1 AS x' "
                           "~> df.sleep(1) ~> 'SELECT ''{\"a\":1}''::pg_catalog.jsonb AS j'")
    follow = start(db, BOB, "df.sleep(1) ~> 'SELECT 2 AS x'")
    assert wait_terminal(db, iid) == "completed", errors(db, iid)
    assert wait_terminal(db, follow) == "completed", errors(db, follow)
    assert root_result(db, iid)["rows"] == [{"j": {"a": 1}}]
    assert_no_escalation(db)


def test_alter_role_search_path_of_the_submitter_is_harmless(db, mode, attacker):
    """A role may ALTER ROLE itself SET search_path; the engine reads it for the trampoline."""
    alice_sql(db, SHADOW_SETUP + ENGINE_SHADOWS)
    alice_sql(db, "ALTER ROLE dftui_alice SET search_path = evil, pg_catalog, public")
    try:
        with engine_in_mode(db, mode, concurrency=1):
            iid = start(db, ALICE, "'SELECT now() IS NOT NULL AS ok, ''{}''::jsonb IS NOT NULL AS j' "
                                   "~> 'SELECT 1 AS x'")
            follow = start(db, BOB, "'SELECT now() IS NOT NULL AS ok'")
            assert wait_terminal(db, iid) == "completed", errors(db, iid)
            assert wait_terminal(db, follow) == "completed", errors(db, follow)
        # alice's own step did call her now() (her search_path), as alice; nobody else did.
        assert_no_escalation(db)
    finally:
        with db.connect() as conn:
            conn.execute("ALTER ROLE dftui_alice RESET search_path")


def test_functions_and_operators_in_public_are_not_called_by_the_engine(db, mode, attacker):
    with db.connect() as conn:
        conn.execute("GRANT CREATE ON SCHEMA public TO dftui_alice")
    alice_sql(db, ENGINE_SHADOWS.replace("evil.", "public.").replace("public.witness", "evil.witness")
              .replace("CHECK (public.", "CHECK (evil."))
    with engine_in_mode(db, mode, concurrency=1):
        ids = [start(db, ALICE, "'SELECT 1 AS x' ~> df.sleep(1) ~> 'SELECT 2 AS y'"),
               start(db, BOB, "'SELECT now() IS NOT NULL AS ok, ''a''::text = ''a''::text AS eq, "
                              "(SELECT count(*) FROM generate_series(1, 3)) AS n' ~> df.sleep(1)"),
               start(db, BOB, "df.wait_for_signal('go', 1) ~> ('SELECT 1' & 'SELECT 2')")]
        for iid in ids:
            assert wait_terminal(db, iid) == "completed", errors(db, iid)
    assert_no_escalation(db)
    assert counters(db)[1] == 0 and not db.scalar("SELECT count(*) FROM evil.log")


# -- 4. state left in the session for the next step --------------------------------------------

PROBE = ("SELECT pg_backend_pid() AS pid, current_setting(''search_path'') AS sp, "
         "current_setting(''statement_timeout'') AS st, current_setting(''lock_timeout'') AS lt, "
         "current_setting(''TimeZone'') AS tz, current_setting(''DateStyle'') AS ds, "
         "current_setting(''application_name'') AS app, current_setting(''evil.flag'', true) AS flag, "
         "current_setting(''default_transaction_read_only'') AS dro, "
         "current_setting(''transaction_read_only'') AS ro, "
         "current_setting(''default_transaction_isolation'') AS iso, "
         "current_setting(''pg_durable.enable_superuser_instances'', true) AS su, "
         "current_setting(''row_security'') AS rls, current_setting(''synchronous_commit'') AS sc, "
         "to_regclass(''pg_temp.items'') IS NULL AS no_temp, "
         "(SELECT count(*) FROM pg_prepared_statements) AS prepared, "
         "(SELECT count(*) FROM pg_locks WHERE locktype = ''advisory'' AND pid = pg_backend_pid()) AS advisory, "
         "(SELECT count(*) FROM pg_listening_channels()) AS listening, "
         "(SELECT count(*) FROM pg_cursors) AS cursors")

POLLUTE = """DO $$
BEGIN
    PERFORM set_config('search_path', 'evil, pg_catalog', false);
    SET statement_timeout = '98765s';
    SET lock_timeout = '1234ms';
    SET TIME ZONE 'Pacific/Chatham';
    SET DateStyle = 'SQL, DMY';
    SET application_name = 'evil';
    SET evil.flag = 'x';
    SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY;
    SET default_transaction_isolation = 'serializable';
    SET pg_durable.enable_superuser_instances = on;
    SET row_security = off;
    SET synchronous_commit = off;
    CREATE TEMP TABLE items (x int);
    EXECUTE 'PREPARE evil_p AS SELECT 1';
    PERFORM pg_advisory_lock(4242);
    LISTEN evil_channel;
    EXECUTE 'DECLARE evil_c CURSOR WITH HOLD FOR SELECT 1';
END $$"""


def test_session_state_does_not_leak_to_the_next_role(db, eng1):
    baseline = start(db, BOB, f"'{PROBE}'")
    assert wait_terminal(db, baseline) == "completed", errors(db, baseline)
    pollute = start(db, ALICE, "'" + POLLUTE.replace("'", "''") + "'")
    assert wait_terminal(db, pollute) == "completed", errors(db, pollute)
    # The same worker connection now serves bob, and a superuser instance started while
    # enable_superuser_instances was on only in the submitter's session.
    after = start(db, BOB, f"'{PROBE}'")
    with db.connect() as conn:
        conn.execute("SET pg_durable.enable_superuser_instances = on")
        su = conn.execute("SELECT df.start('SELECT nextval(''evil.escalated'')')").fetchone()[0]
    assert wait_terminal(db, after) == "completed", errors(db, after)
    assert wait_terminal(db, su) == "failed"
    assert "superuser" in errors(db, su)
    first, second = root_result(db, baseline)["rows"][0], root_result(db, after)["rows"][0]
    assert first["pid"] == second["pid"], "the test needs both steps on one connection"
    # A placeholder GUC, once created, reads as '' after RESET instead of NULL: same thing.
    assert {k: v or "" for k, v in second.items()} == {k: v or "" for k, v in first.items()}
    assert_no_escalation(db)


def test_engine_bookkeeping_survives_a_poisoned_transaction(db, eng1):
    """GUCs a step sets for the rest of the transaction must not wedge the engine or let the
    step forge df.* requests; other roles' work goes on."""
    attacks = [
        "SELECT set_config(''transaction_read_only'', ''on'', false)",
        "SELECT set_config(''df.request'', ''{\"op\":\"retry\",\"instance_id\":\"{sys_instance_id}\"}'', false)",
        "SELECT set_config(''df.retrying'', ''{sys_instance_id}'', false)",
        "SELECT set_config(''df.in_workflow'', ''false'', false)",
        "SELECT set_config(''lock_timeout'', ''1'', true), set_config(''statement_timeout'', ''60s'', true)",
    ]
    ids = [start(db, ALICE, f"'{a}' ~> 'SELECT 1 AS after'") for a in attacks]
    bobs = [start(db, BOB, "'SELECT 2 AS bob'") for _ in range(3)]
    for iid in bobs:
        assert wait_terminal(db, iid, 90) == "completed", errors(db, iid)
    for iid in ids:
        assert wait_terminal(db, iid, 90) in ("completed", "failed")
    assert_no_escalation(db)


# -- 5. engine internals are out of reach -------------------------------------------------------

INTERNAL_PROBES = [
    "SELECT count(*) FROM df_internal.tasks",
    "SELECT count(*) FROM df_internal.instance_state",
    "SELECT count(*) FROM df_internal.node_meta",
    "SELECT count(*) FROM df_internal.signals",
    "SELECT count(*) FROM df_internal.engines",
    "SELECT df_internal.complete_task('00000000', '00000000', 0, NULL, NULL, NULL, 'x', now())",
    "SELECT df_internal.claim_tasks('x', 1)",
    "SELECT df_internal.claim_tasks('0001_schema_migrations', 'x', 1)",
    "SELECT df_internal.is_privileged()",
    "UPDATE df_internal.instance_state SET submitted_by = 'postgres'::regrole",
    "INSERT INTO df_internal.tasks (instance_id, node_id, gen) VALUES ('00000000', '00000000', 0)",
]


def _exec_probes(role_oid: int) -> list[str]:
    return [f"SELECT * FROM df_exec.step_{role_oid}('SELECT 1') AS t(x int)",
            f"SELECT df_exec.exec_{role_oid}('SELECT 1')",
            f"CREATE OR REPLACE FUNCTION df_exec.step_{role_oid}(q text) RETURNS SETOF record "
            "LANGUAGE sql AS 'SELECT 1'"]


def test_internals_are_unreachable_directly_and_from_a_step(db, eng):
    warm = start(db, ALICE, "'SELECT 1'")  # make sure alice's trampolines exist
    assert wait_terminal(db, warm) == "completed"
    alice_oid = db.scalar("SELECT oid FROM pg_roles WHERE rolname = %s", (ALICE,))
    bob_oid = db.scalar("SELECT oid FROM pg_roles WHERE rolname = %s", (BOB,))
    probes = INTERNAL_PROBES + _exec_probes(alice_oid) + _exec_probes(bob_oid)
    with db.connect(ALICE) as conn:
        for probe in probes:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(probe)
    ids = start_many(db, ALICE, {p: "'" + p.replace("'", "''") + "'" for p in probes})
    for probe, iid in ids.items():
        assert wait_terminal(db, iid) == "failed", probe
        assert re.search("permission denied|does not exist", errors(db, iid)), (probe, errors(db, iid))
    assert_no_escalation(db)


def test_trampoline_ownership_cannot_be_hijacked(db, eng):
    """alice owns her trampolines; REASSIGN OWNED BY needs no schema access. If she hands them
    to another role, her steps must not run as that role."""
    with db.connect() as conn:
        conn.execute("DROP ROLE IF EXISTS dftui_alice_group")
        conn.execute("CREATE ROLE dftui_alice_group NOLOGIN")
        conn.execute("GRANT dftui_alice_group TO dftui_alice")
        # the group may own alice's schema too (REASSIGN moves everything she owns)
        conn.execute(f'GRANT CREATE ON DATABASE "{db.name}" TO dftui_alice_group')
        # (the `eng` fixture gives alice her schema evil: let the group take what is in it, so
        # that only df_exec can refuse the REASSIGN — else which refusal comes first depends
        # on the order PostgreSQL visits alice's objects)
        conn.execute("GRANT CREATE ON SCHEMA evil TO dftui_alice_group")
    try:
        warm = start(db, ALICE, "'SELECT 1'")
        assert wait_terminal(db, warm) == "completed"
        with db.connect(ALICE) as conn:
            try:
                conn.execute("REASSIGN OWNED BY dftui_alice TO dftui_alice_group")
            except psycopg.errors.InsufficientPrivilege as exc:
                # Refused: the group has no CREATE on df_exec (the engine grants it to the
                # owner only while it hands the trampoline over).
                assert "df_exec" in str(exc)
        iid = start(db, ALICE, "'SELECT current_user::text AS who'")
        status = wait_terminal(db, iid)
        if status == "completed":
            assert root_result(db, iid)["rows"][0]["who"] == ALICE
    finally:
        with db.connect() as conn:
            conn.execute("REASSIGN OWNED BY dftui_alice_group TO dftui_alice")
            conn.execute("DROP OWNED BY dftui_alice_group")  # also revokes its database grant
            conn.execute("DROP ROLE dftui_alice_group")


def test_trampolines_handed_to_another_owner_refuse_to_run(db, eng):
    """An administrator's `REASSIGN OWNED BY alice TO postgres` (or ALTER FUNCTION ... OWNER)
    moves alice's trampolines to a superuser while the engine keeps them cached: her next step
    must not run as the new owner."""
    warm = start(db, ALICE, "'SELECT 1'")
    assert wait_terminal(db, warm) == "completed"
    with db.connect() as conn:
        fns = [r[0] for r in conn.execute(
            "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'df_exec' AND p.proowner = %s::regrole", (ALICE,)).fetchall()]
        assert fns
        for fn in fns:
            conn.execute(f"ALTER FUNCTION {fn} OWNER TO postgres")
    ids = start_many(db, ALICE, {
        "rows": "'SELECT current_user::text AS who, evil.witness(''moved'') AS w'",
        "no rows": "'INSERT INTO evil.log (tag, who) SELECT ''moved'', current_user::text'",
        "pseudo": "'SELECT ROW(current_user::text, evil.witness(''moved2''))'",
    })
    for name, iid in ids.items():
        status = wait_terminal(db, iid)
        if status == "completed" and name == "rows":
            assert root_result(db, iid)["rows"][0]["who"] == ALICE
    assert_no_escalation(db)


# -- 6. df.* helpers that act on behalf of "the session" ----------------------------------------

def test_loopback_helpers_cannot_act_as_the_engine_or_another_role(db, eng, mode, request):
    """Inside a step, session_user is the engine. Helpers that trust session_user's role
    memberships (the dblink loopbacks) must not let the step act as another role. (In
    least-privilege mode the helpers are owned by a non-superuser and dblink refuses to open
    password-less sessions for them.)"""
    with db.connect(BOB) as conn:
        victim = conn.execute("SELECT df.start(df.wait_for_signal('go', 600))").fetchone()[0]
    attacks = {
        "signal bob's instance": f"SELECT df.signal_loopback(''dftui_bob'', ''{victim}'', ''go'', ''{{}}'')",
        "signal as postgres": f"SELECT df.signal_loopback(''postgres'', ''{victim}'', ''go'', ''{{}}'')",
        "start as bob": "SELECT df.start_in_new_transaction(''SELECT evil.witness(''''as bob'''')'', NULL, "
                        "NULL, NULL, ''dftui_bob'')",
        "start as postgres": "SELECT df.start_in_new_transaction(''SELECT 1'', NULL, NULL, NULL, ''postgres'')",
        "df.signal with the workflow flag cleared": "SELECT set_config(''df.in_workflow'', ''false'', false), "
                                                    f"df.signal(''{victim}'', ''go'')",
    }
    ids = start_many(db, ALICE, {name: f"'{q}'" for name, q in attacks.items()})
    for name, iid in ids.items():
        assert wait_terminal(db, iid) in ("completed", "failed"), name
    assert db.scalar("SELECT status FROM df.instances WHERE id = %s", (victim,)) == "running"
    assert not db.scalar("SELECT count(*) FROM df_internal.signals WHERE instance_id = %s", (victim,))
    others = db.scalar("SELECT array_agg(DISTINCT submitted_by::text) FROM df.instances "
                       "WHERE submitted_by::text <> ALL(%s)", ([ALICE, BOB],))
    assert not others, f"a step started instances as {others}"
    assert db.scalar("SELECT count(*) FROM df.instances WHERE submitted_by = 'dftui_bob'::regrole") == 1
    assert_no_escalation(db)


# -- 7. other databases and non-transactional statements ----------------------------------------

@pytest.fixture
def locked_database(db):
    """A database alice may not connect to (REVOKE CONNECT FROM PUBLIC)."""
    name = f"{db.name}_locked"
    with db.connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        conn.execute(f'REVOKE CONNECT ON DATABASE "{name}" FROM PUBLIC')
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ENGINE_ROLE,)).fetchone():
            conn.execute(f'GRANT CONNECT ON DATABASE "{name}" TO {ENGINE_ROLE}')
    yield name
    with db.connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_steps_cannot_reach_a_database_the_submitter_cannot_connect_to(db, eng, locked_database):
    with db.connect(ALICE) as conn:
        with pytest.raises(psycopg.errors.OperationalError):
            psycopg.connect(db.server.conninfo(locked_database, ALICE)).close()
        try:
            iid = conn.execute("SELECT df.start('SELECT current_database()::text AS db', database => %s)",
                               (locked_database,)).fetchone()[0]
        except psycopg.errors.InsufficientPrivilege:
            return  # refused at start: fine
    assert wait_terminal(db, iid) == "failed"
    with psycopg.connect(db.server.conninfo(locked_database), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'df_exec'").fetchone()[0] == 0


NON_TRANSACTIONAL_SETUP = """
CREATE TABLE evil.big (x int);
INSERT INTO evil.big SELECT g FROM generate_series(1, 50) g;
CREATE FUNCTION evil.idx(x int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM evil.witness_quiet(x);
    BEGIN
        EXECUTE 'RESET ROLE';     -- refused in a security-restricted operation
        PERFORM pg_catalog.nextval('evil.escalated');
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
    RETURN x;
END $$;
CREATE INDEX big_idx ON evil.big (evil.idx(x));
"""


def test_non_transactional_steps_run_as_the_submitter_only(db, eng):
    """VACUUM / CREATE INDEX CONCURRENTLY cannot run in a function, and outside the trampoline
    user code they reach (index expressions) could get the engine's identity: they are refused.
    (Variants: tests/test_security_engine_surface.py.)"""
    alice_sql(db, NON_TRANSACTIONAL_SETUP)
    ids = start_many(db, ALICE, {
        "vacuum analyze": "'VACUUM (ANALYZE) evil.big'",
        "create index concurrently": "'CREATE INDEX CONCURRENTLY big_idx2 ON evil.big (evil.idx(x + 1))'",
        "reindex concurrently": "'REINDEX INDEX CONCURRENTLY evil.big_idx'",
        "smuggled second statement": "'VACUUM evil.big; RESET ROLE; ALTER ROLE dftui_alice SUPERUSER'",
    })
    for name, iid in ids.items():
        assert wait_terminal(db, iid) == "failed", name
        assert "cannot run as a workflow step" in errors(db, iid), name
    assert_no_escalation(db)
    assert counters(db)[1] > 0
