"""Attacks on the engine's own surface (issue 13, classes 1, 2, 3 and 5): text a role controls
reaching the engine's SQL, the non-transactional path, what the engine trusts in another database,
and privileges that change while an instance runs.

Each test fails if its route works, in both engine modes (`mode`). `evil.witness`
(tests/support/attack.py) records who really ran the attacker's code.
"""

from __future__ import annotations

import threading

import psycopg
import pytest
from psycopg import sql

from engine import sqltext
from tests.support import (
    ALICE,
    BOB,
    ENGINE_ROLE,
    TestDB,
    assert_no_escalation,
    counters,
    engine_in_mode,
    errors,
    prepare_attacker,
    reset_attacker,
    root_result,
    start,
    wait_for,
    wait_terminal,
)


def alice_sql(db, *statements: str) -> None:
    with db.connect(ALICE) as conn:
        for statement in statements:
            conn.execute(statement)


# -- class 1: role-controlled text never becomes engine SQL ---------------------------------------

# search_path values a role can store for itself (set_config accepts them, then ALTER ROLE ...
# FROM CURRENT). Each tries to end the engine's statement and run evil.witness as the engine.
SEARCH_PATHS = [
    "$$,\"$$ AS $q$ BEGIN PERFORM evil.witness('path1'); END $q$; SELECT evil.witness('path2'); --\"",
    "evil,$$,public",
    "\"a\"\"b\",evil",
    "evil;SELECT/**/evil.witness('path3')",
    "'x',evil",
    "evil,pg_catalog,\"$user\"",
    "\"; SELECT evil.witness('path4'); --\"",
]


@pytest.mark.parametrize("path", SEARCH_PATHS)
def test_a_roles_search_path_is_data_never_sql(db, eng, path):
    """Stored with FROM CURRENT the value is exactly what the role wrote; the engine reads it
    for the trampoline's search_path and must apply it without splicing it into SQL."""
    with db.connect(ALICE) as conn:
        try:
            conn.execute("SELECT set_config('search_path', %s, false)", (path,))
        except psycopg.errors.InvalidParameterValue:
            pytest.skip("PostgreSQL rejects this value itself")
        conn.execute("ALTER ROLE dftui_alice SET search_path FROM CURRENT")
    try:
        iid = start(db, ALICE, "'SELECT current_user::text AS who'")
        assert wait_terminal(db, iid) == "completed", errors(db, iid)
        assert root_result(db, iid)["rows"] == [{"who": ALICE}]
        assert_no_escalation(db)
        # the setup ran as an ordinary transaction: no witness at all (not even as alice)
        assert counters(db) == (0, 0)
    finally:
        with db.connect() as conn:
            conn.execute("ALTER ROLE dftui_alice RESET search_path")


def test_a_valid_configured_search_path_still_applies(db, eng):
    alice_sql(db, "CREATE TABLE evil.only_here (v text)", "INSERT INTO evil.only_here VALUES ('found')",
              "ALTER ROLE dftui_alice SET search_path = evil, public")
    try:
        iid = start(db, ALICE, "'SELECT v FROM only_here'")
        assert wait_terminal(db, iid) == "completed", errors(db, iid)
        assert root_result(db, iid)["rows"] == [{"v": "found"}]
    finally:
        with db.connect() as conn:
            conn.execute("ALTER ROLE dftui_alice RESET search_path")


COLUMN_NAMES = [
    "a'b",
    "%s",
    "%(x)s",
    "100%",
    "x\\'; SELECT evil.witness('col') --",
    "', (SELECT evil.witness('col2')), '",
    "\\",
]


def test_result_column_names_are_bound_never_spliced(db, eng):
    cols = ", ".join(f"{i} AS {sql.Identifier(name).as_string(None)}"
                     for i, name in enumerate(COLUMN_NAMES))
    iid = start(db, ALICE, "%s", f"SELECT {cols}")
    assert wait_terminal(db, iid) == "completed", errors(db, iid)
    assert root_result(db, iid)["rows"] == [{name: i for i, name in enumerate(COLUMN_NAMES)}]
    assert_no_escalation(db)
    assert counters(db) == (0, 0)


# -- a database the attacker owns ---------------------------------------------------------------

@pytest.fixture
def alice_database(db, attacker):
    """A database owned by alice (she may configure it and create schemas in it), with the
    attacker's witness toolbox installed."""
    name = f"{db.name}_alice"
    with db.connect() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER dftui_alice").format(sql.Identifier(name)))
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ENGINE_ROLE,)).fetchone():
            conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                sql.Identifier(name), sql.Identifier(ENGINE_ROLE)))
    other = TestDB(db.server, name)
    prepare_attacker(other)
    yield other
    reset_attacker(db)
    with db.connect() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_database_settings_of_a_step_database_do_not_reach_the_engine(db, mode, alice_database):
    """The owner of a database an instance names controls ALTER DATABASE ... SET: a role,
    a search_path and string-quoting rules for every session there, the engine's included."""
    with alice_database.connect(ALICE) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET standard_conforming_strings = off").format(
            sql.Identifier(alice_database.name)))
        conn.execute(sql.SQL("ALTER DATABASE {} SET search_path = evil, public").format(
            sql.Identifier(alice_database.name)))
        conn.execute(sql.SQL("ALTER DATABASE {} SET role = dftui_alice").format(
            sql.Identifier(alice_database.name)))
    name = "x\\'; SELECT evil.witness('scs') --"
    with engine_in_mode(db, mode):
        with db.connect(ALICE) as conn:
            iid = conn.execute("SELECT df.start(%s, database => %s)",
                               (f"SELECT current_user::text AS {sql.Identifier(name).as_string(None)}",
                                alice_database.name)).fetchone()[0]
        assert wait_terminal(db, iid) == "completed", errors(db, iid)
        assert root_result(db, iid)["rows"] == [{name: ALICE}]
    owner = alice_database.scalar("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'df_exec'")
    assert owner != ALICE
    assert_no_escalation(alice_database)
    assert counters(alice_database)[0] == 0


# -- class 3: the engine trusts only what it owns ------------------------------------------------

FOREIGN_EXEC = {
    "owned by the database owner": ["CREATE SCHEMA df_exec"],
    "engine-made but granted to others": None,  # set up by the superuser below
}


@pytest.mark.parametrize("variant", list(FOREIGN_EXEC))
def test_a_df_exec_schema_the_engine_does_not_own_is_refused(db, mode, alice_database, variant):
    alice_oid = db.scalar("SELECT oid FROM pg_roles WHERE rolname = %s", (ALICE,))
    if FOREIGN_EXEC[variant]:
        # alice prepares "trampolines" that run as whoever calls them
        with alice_database.connect(ALICE) as conn:
            for statement in FOREIGN_EXEC[variant]:
                conn.execute(statement)
            for fn, ret in (("step", "SETOF record"), ("exec", "bigint"), ("rows", "SETOF jsonb"),
                            ("describe", "void")):
                conn.execute(f"CREATE FUNCTION df_exec.{fn}_{alice_oid}(q text) RETURNS {ret} "
                             "LANGUAGE plpgsql AS $$ BEGIN PERFORM evil.witness('fake'); END $$")
            conn.execute("GRANT USAGE ON SCHEMA df_exec TO PUBLIC")
            conn.execute("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA df_exec TO PUBLIC")
    else:
        with alice_database.connect() as conn:
            conn.execute("CREATE SCHEMA df_exec")
            if mode == "owner":
                conn.execute(f"ALTER SCHEMA df_exec OWNER TO {ENGINE_ROLE}")
            conn.execute("GRANT USAGE, CREATE ON SCHEMA df_exec TO dftui_alice")
    with engine_in_mode(db, mode):
        with db.connect(ALICE) as conn:
            iid = conn.execute("SELECT df.start('SELECT 1 AS x', database => %s)",
                               (alice_database.name,)).fetchone()[0]
        assert wait_terminal(db, iid) == "failed"
        assert "df_exec" in errors(db, iid) and "refusing" in errors(db, iid), errors(db, iid)
        # the engine created nothing in it
        made = alice_database.scalar(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'df_exec' AND p.proowner <> 'dftui_alice'::regrole")
        assert made == 0
        # the engine goes on serving the rest
        ok = start(db, BOB, "'SELECT 1 AS ok'")
        assert wait_terminal(db, ok) == "completed"
    assert counters(alice_database)[0] == 0
    assert_no_escalation(alice_database)


# A step in alice's database leaves a temporary sequence that a default on her own table depends
# on, and a session-level search_path that puts her schema before pg_catalog; `evil.oid` is a
# domain whose CHECK is the witness, so any engine statement naming the type `oid` on that
# session runs it as the engine.
_POISON_STEP = """DO $p$ BEGIN
    CREATE TEMP SEQUENCE leftover;
    ALTER TABLE evil.held ALTER COLUMN c SET DEFAULT pg_catalog.nextval('pg_temp.leftover');
    PERFORM pg_catalog.set_config('search_path', 'evil, pg_catalog', false);
    PERFORM pg_catalog.pg_sleep(1.5);
END $p$"""


def test_a_step_in_another_database_cannot_leave_state_for_the_engines_next_statement(
        db, mode, alice_database):
    """The engine's session in another database is wiped after each step. The wipe was a
    separate statement after the step's COMMIT: alice (owning the database, so its
    lock_timeout) holds a lock DISCARD TEMP needs (dropping her committed temporary sequence
    drops her table's default), the wipe fails as a whole, RESET ALL with it, and the step's
    search_path stays on the engine's session for its next statement there."""
    with alice_database.connect(ALICE) as conn:
        conn.execute("CREATE TABLE evil.held (c bigint)")
        conn.execute("CREATE DOMAIN evil.oid AS pg_catalog.oid CHECK (evil.witness('oid'))")
        conn.execute(sql.SQL("ALTER DATABASE {} SET lock_timeout = '200ms'").format(
            sql.Identifier(alice_database.name)))
    holder = psycopg.connect(alice_database.server.conninfo(alice_database.name, ALICE))
    try:
        holder.execute("SET lock_timeout = 0")

        def hold_the_table() -> None:  # queued behind the step's lock, granted at its commit
            holder.execute("LOCK TABLE evil.held IN ACCESS SHARE MODE")

        with engine_in_mode(db, mode, concurrency=1):
            with db.connect(ALICE) as conn:
                first = conn.execute("SELECT df.start(%s, database => %s)",
                                     (_POISON_STEP, alice_database.name)).fetchone()[0]
            wait_for(lambda: alice_database.scalar(
                "SELECT count(*) FROM pg_locks WHERE relation = 'evil.held'::regclass "
                "AND mode = 'AccessExclusiveLock' AND granted"), 30, what="the step's lock")
            locker = threading.Thread(target=hold_the_table)
            locker.start()
            assert wait_terminal(db, first) == "completed", errors(db, first)
            locker.join(30)
            holder.rollback()
            # the engine's next statements in that database (same worker, same session)
            with db.connect(ALICE) as conn:
                second = conn.execute("SELECT df.start('SELECT 1 AS x', database => %s)",
                                      (alice_database.name,)).fetchone()[0]
            assert wait_terminal(db, second) == "completed", errors(db, second)
    finally:
        holder.close()
    ran = alice_database.scalar("SELECT string_agg(tag || ' as ' || who, ', ') FROM evil.log")
    assert counters(alice_database)[0] == 0, ran
    assert_no_escalation(alice_database)


# -- class 2: statements that cannot run in a transaction block ----------------------------------

NON_TRANSACTIONAL_SETUP = """
CREATE TABLE evil.big (x int);
INSERT INTO evil.big SELECT g FROM generate_series(1, 20) g;
CREATE FUNCTION evil.idx(x int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    BEGIN
        EXECUTE 'RESET ROLE';
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
    PERFORM evil.witness_quiet(x);
    RETURN x;
END $$;
CREATE TYPE evil.mood AS ENUM ('ok');
CREATE TABLE evil.conv (v text);
INSERT INTO evil.conv VALUES ('1');
CREATE FUNCTION evil.to_int(v text) RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        EXECUTE 'RESET ROLE';
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
    PERFORM evil.witness('cast');
    RETURN v::int;
END $$;
"""

REFUSED = {
    "vacuum": "VACUUM evil.big",
    "vacuum after a comment": "/* maintenance */ VACUUM (ANALYZE) evil.big",
    "vacuum after a line comment": "-- nightly\nvacuum evil.big",
    "vacuum as a second statement": "SELECT 1; VACUUM evil.big",
    "create index concurrently": "CREATE INDEX CONCURRENTLY big_i ON evil.big (evil.idx(x))",
    "unique index concurrently": "create unique index concurrently big_u ON evil.big (evil.idx(x))",
    "reindex concurrently": "REINDEX (VERBOSE) TABLE CONCURRENTLY evil.big",
    "drop index concurrently": "DROP INDEX CONCURRENTLY IF EXISTS evil.nothing",
    "alter system": "ALTER SYSTEM SET work_mem = '1MB'",
    "create database": "CREATE DATABASE dftui_never",
    "transaction control": "COMMIT",
}

# Look like a refused kind to a regex over raw text, but are ordinary transactional statements:
# they must run, through the trampoline, as alice (user code inside cannot RESET ROLE there).
ALLOWED = {
    "keyword in a comment": "ALTER TABLE evil.conv ALTER COLUMN v TYPE int USING evil.to_int(v) "
                            "/* ADD VALUE ... CONCURRENTLY */",
    "add value": "ALTER TYPE evil.mood ADD VALUE IF NOT EXISTS 'meh'",
    "keyword in a string": "SELECT 'VACUUM evil.big' AS v",
    "keyword in a dollar quote": "SELECT $x$CREATE INDEX CONCURRENTLY$x$ AS v",
    "keyword as a quoted identifier": "SELECT 1 AS \"VACUUM\"",
    "nested comment": "/* outer /* VACUUM */ still a comment */ SELECT evil.witness('nested') AS v",
}


def test_non_transactional_statements_are_refused_and_never_run(db, eng):
    alice_sql(db, NON_TRANSACTIONAL_SETUP)
    with db.connect(ALICE, autocommit=False) as conn:
        ids = {name: conn.execute("SELECT df.start(df.retry_policy(%s, 3, 0.1))", (text,)).fetchone()[0]
               for name, text in REFUSED.items()}
        conn.commit()
    for name, iid in ids.items():
        assert wait_terminal(db, iid) == "failed", name
        assert "cannot run as a workflow step" in errors(db, iid), (name, errors(db, iid))
        attempts = db.scalar("SELECT count(*) FROM df_internal.node_attempts WHERE instance_id = %s",
                             (iid,))
        assert attempts == 1, f"{name}: a refused statement must not be retried"
    # nothing of it ran: no index, no new database, no user code at all
    assert not db.scalar("SELECT count(*) FROM pg_indexes WHERE schemaname = 'evil'")
    assert not db.scalar("SELECT count(*) FROM pg_database WHERE datname = 'dftui_never'")
    assert counters(db) == (0, 0)


def test_disguised_statements_run_through_the_trampoline_as_the_submitter(db, eng):
    alice_sql(db, NON_TRANSACTIONAL_SETUP)
    with db.connect(ALICE, autocommit=False) as conn:
        ids = {name: conn.execute("SELECT df.start(%s)", (text,)).fetchone()[0]
               for name, text in ALLOWED.items()}
        conn.commit()
    for name, iid in ids.items():
        assert wait_terminal(db, iid) == "completed", (name, errors(db, iid))
    assert db.scalar("SELECT data_type FROM information_schema.columns "
                     "WHERE table_schema = 'evil' AND table_name = 'conv'") == "integer"
    assert_no_escalation(db)
    assert counters(db)[1] >= 2  # the cast and the nested-comment step ran, as alice


@pytest.mark.parametrize("text, kind", [
    ("VACUUM", "VACUUM"),
    ("  vacuum full t", "VACUUM"),
    ("/* a /* nested */ comment */ VACUUM t", "VACUUM"),
    ("select 1; -- x\n VACUUM t", "VACUUM"),
    ("CREATE UNIQUE INDEX CONCURRENTLY i ON t (x)", "CREATE INDEX CONCURRENTLY"),
    ("REINDEX INDEX CONCURRENTLY i", "REINDEX CONCURRENTLY"),
    ("REINDEX DATABASE d", "REINDEX DATABASE"),
    ("SELECT 'x'; START TRANSACTION", "transaction control (START)"),
    ("SELECT 'VACUUM'", None),
    ("SELECT E'\\' ; VACUUM'", None),
    ("SELECT $$; VACUUM $$", None),
    ("SELECT $tag$ $$ ; VACUUM $tag$", None),
    ("SELECT \"; VACUUM\"", None),
    ("/* VACUUM */ SELECT 1", None),
    ("-- VACUUM\nSELECT 1", None),
    ("/* /* */ VACUUM */ SELECT 1", None),
    ("CREATE RULE r AS ON INSERT TO t DO ALSO (SELECT 1; VACUUM)", None),
    ("ALTER TYPE t /* ADD VALUE */ RENAME TO u", None),
    ("SELECT $1", None),
    ("/* unterminated VACUUM", None),  # left to PostgreSQL (a syntax error)
])
def test_the_statement_classifier_is_a_lexer(text, kind):
    assert sqltext.refused_statement(text) == kind


@pytest.mark.parametrize("text, rowless", [
    ("INSERT INTO t VALUES (1)", True),
    ("insert into t values ('RETURNING')", True),
    ("INSERT INTO t VALUES (1) /* RETURNING */", True),
    ("INSERT INTO t VALUES (1) RETURNING x", False),
    ("UPDATE t SET \"returning\" = 1", True),
    ("/* x */ INSERT INTO t VALUES (1)", True),
    ("SELECT 1", False),
    ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", False),
])
def test_rowless_statements_are_recognised_on_tokens(text, rowless):
    assert sqltext.returns_no_rows(text) is rowless


# -- class 5: privileges re-checked for every step of a running instance ------------------------

def _parked(db, iid: str) -> None:
    wait_for(lambda: db.scalar("SELECT phase FROM df_internal.tasks WHERE instance_id = %s",
                               (iid,)) == "waiting", what="signal wait parked")


REVOCATIONS = {
    "connect": ("REVOKE CONNECT ON DATABASE {db} FROM PUBLIC",
                "GRANT CONNECT ON DATABASE {db} TO PUBLIC", "CONNECT"),
    "usage": ("SELECT df.revoke_usage('dftui_alice')", "SELECT df.grant_usage('dftui_alice')",
              "USAGE on schema df"),
}


@pytest.mark.parametrize("what", list(REVOCATIONS))
def test_revoking_a_privilege_mid_instance_fails_its_next_step(db, attacker, mode, what):
    revoke, regrant, message = REVOCATIONS[what]
    ident = sql.Identifier(db.name).as_string(None)
    with engine_in_mode(db, mode, concurrency=1):
        if mode == "owner":
            with db.connect() as conn:  # the engine role keeps its own CONNECT
                conn.execute(f"GRANT CONNECT ON DATABASE {ident} TO {ENGINE_ROLE}")
        iid = start(db, ALICE, "'SELECT 1 AS first' ~> df.wait_for_signal('go') ~> "
                               "df.retry_policy('SELECT evil.witness(''after'') AS w', 3, 0.1)")
        _parked(db, iid)
        try:
            with db.connect() as conn:
                conn.execute(revoke.format(db=ident))
                conn.execute("SELECT df.signal(%s, 'go')", (iid,))
            assert wait_terminal(db, iid) == "failed"
            assert message in errors(db, iid), errors(db, iid)
            attempts = db.scalar("SELECT count(*) FROM df_internal.node_attempts "
                                 "WHERE instance_id = %s AND status <> 'completed'", (iid,))
            assert attempts == 1, "a privilege failure must not be retried"
        finally:
            with db.connect() as conn:
                conn.execute(regrant.format(db=ident))
        # others are unaffected, and alice works again once re-granted
        for role in (BOB, ALICE):
            ok = start(db, role, "'SELECT 1 AS ok'")
            assert wait_terminal(db, ok) == "completed", errors(db, ok)
    assert counters(db) == (0, 0)


def test_a_step_in_another_database_needs_connect_there_at_every_step(db, attacker, mode):
    name = f"{db.name}_other"
    ident = sql.Identifier(name)
    with db.connect() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
        if mode == "owner":
            conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(ident, sql.Identifier(ENGINE_ROLE)))
    try:
        with engine_in_mode(db, mode, concurrency=1):
            with db.connect(ALICE) as conn:
                iid = conn.execute(
                    "SELECT df.start('SELECT 1 AS a' ~> df.wait_for_signal('go') ~> 'SELECT 2 AS b', "
                    "database => %s)", (name,)).fetchone()[0]
            _parked(db, iid)
            with db.connect() as conn:
                conn.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(ident))
                if mode == "owner":
                    conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                        ident, sql.Identifier(ENGINE_ROLE)))
                conn.execute("SELECT df.signal(%s, 'go')", (iid,))
            assert wait_terminal(db, iid) == "failed"
            assert "CONNECT" in errors(db, iid), errors(db, iid)
    finally:
        with db.connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


def test_identity_failures_are_reported_in_a_readable_way(db, eng):
    """(A guard for the messages above: one line, names the role, no SQL or traceback.)"""
    iid = start(db, ALICE, "'VACUUM'")
    assert wait_terminal(db, iid) == "failed"
    message = errors(db, iid)
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith("VACUUM cannot run as a workflow step")


# -- code queued for the engine's COMMIT by code the step's own flush runs ------------------------

REARM_SETUP = """
CREATE TABLE evil.late_t (x int);
CREATE FUNCTION evil.late_fire() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM evil.witness('re-deferred trigger');
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER late_t_fire AFTER INSERT ON evil.late_t
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION evil.late_fire();
CREATE TABLE evil.relay (x int);
CREATE FUNCTION evil.rearm() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SET CONSTRAINTS ALL DEFERRED;
    INSERT INTO evil.late_t VALUES (NEW.x);
    IF NEW.x < 4 THEN  -- a chain: each link re-arms the next
        INSERT INTO evil.relay VALUES (NEW.x + 1);
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER relay_rearm AFTER INSERT ON evil.relay
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION evil.rearm();
"""


# alice's `=` on numeric, first on her search_path: the flush's own loop must not use it
SHADOWED_EQ = """
CREATE FUNCTION evil.always(numeric, numeric) RETURNS boolean LANGUAGE sql AS 'SELECT true';
CREATE OPERATOR evil.= (LEFTARG = numeric, RIGHTARG = numeric, FUNCTION = evil.always);
ALTER ROLE dftui_alice SET search_path = evil, pg_catalog;
"""


@pytest.mark.parametrize("shadowed", [False, True], ids=["plain", "shadowed ="])
def test_a_trigger_fired_by_the_steps_flush_cannot_defer_code_to_the_engines_commit(db, mode, attacker,
                                                                                   shadowed):
    """The trampoline fires the step's deferred triggers as the submitter (SET CONSTRAINTS ALL
    IMMEDIATE) before returning; a trigger fired there defers the constraints again and queues
    another deferred event (a chain of them), which fired at the engine's COMMIT, as the engine
    (PostgreSQL 15: `re-deferred trigger as postgres`)."""
    alice_sql(db, REARM_SETUP)
    if shadowed:
        alice_sql(db, SHADOWED_EQ)
    try:
        with engine_in_mode(db, mode):
            iid = start(db, ALICE, "'INSERT INTO evil.relay VALUES (1)' ~> 'SELECT current_user::text AS who'")
            status = wait_terminal(db, iid)
    finally:
        with db.connect() as conn:
            conn.execute("ALTER ROLE dftui_alice RESET search_path")
    ran = db.scalar("SELECT string_agg(DISTINCT tag || ' as ' || who, ', ') FROM evil.log")
    assert counters(db)[0] == 0, ran
    assert_no_escalation(db)
    assert status == "completed", errors(db, iid)
    # the whole chain ran, inside the step, as alice
    assert ran == "re-deferred trigger as dftui_alice", ran
    assert db.scalar("SELECT count(*) FROM evil.log") == 4
