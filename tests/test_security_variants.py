"""Issue 13, round three: variants of every attack class, aimed at the engine's own surface.

Each test fails if its route works, in both engine modes (`mode`). Availability tests start the
attack, then require the victim's (bob's) work to complete while the attack is held: "stalled"
means it does not finish within wait_terminal's deadline.
"""

from __future__ import annotations

import time

import psycopg
import pytest
from psycopg import sql

from engine.pacing import BUSY_BUDGET
from tests.support import (
    ALICE,
    BOB,
    CAROL,
    ENGINE_ROLE,
    engine_in_mode,
    errors,
    node_rows,
    root_result,
    running_engine,
    setup_engine_owner,
    wait_terminal,
)

LOCK_MODES = ["ACCESS EXCLUSIVE", "EXCLUSIVE", "SHARE ROW EXCLUSIVE", "SHARE",
              "SHARE UPDATE EXCLUSIVE", "ROW EXCLUSIVE", "ROW SHARE", "ACCESS SHARE"]


def _take_strongest_locks(conn: psycopg.Connection) -> dict[str, str]:
    """In `conn`'s open transaction, the strongest lock the role can take on every relation of
    the df schemas (and df_exec); returns {relation: mode} for those it got."""
    held: dict[str, str] = {}
    relations = [r[0] for r in conn.execute(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname IN ('df', 'df_internal', 'df_exec') AND c.relkind IN ('r', 'v', 'p', 'm', 'S') "
        "ORDER BY 1").fetchall()]
    conn.commit()
    for rel in relations:
        for lock in LOCK_MODES:
            conn.execute("SAVEPOINT try_lock")
            try:
                conn.execute(f"LOCK TABLE {rel} IN {lock} MODE NOWAIT")
            except psycopg.Error:
                conn.execute("ROLLBACK TO SAVEPOINT try_lock")
                continue
            conn.execute("RELEASE SAVEPOINT try_lock")
            held[rel] = lock
            break
    return held


@pytest.mark.parametrize("holder", [ALICE, CAROL])
def test_table_locks_any_role_can_take_stall_no_other_role(db, mode, holder):
    """The holder takes the strongest lock it is allowed on every df relation (pg_durable's
    grants let a granted role take ACCESS EXCLUSIVE on df.vars) and keeps the transaction open.
    bob's df.start, df.getvar, var snapshot and steps all go on: was a stall of every df.start
    while df.vars was locked (docs/security.md, residual of round two)."""
    with db.connect(BOB) as conn:
        conn.execute("SELECT df.setvar('colour', 'blue')")
    # (the owner-mode setup changes table ownership: done before the locks are taken)
    dsn = setup_engine_owner(db) if mode == "owner" else db.dsn()
    with db.connect(holder, autocommit=False) as locker:
        held = _take_strongest_locks(locker)
        if holder == ALICE:
            assert held.get("df.vars") == "ACCESS EXCLUSIVE", held  # the attack is really on
        with running_engine(dsn, concurrency=2, install=False):
            with db.connect(BOB) as conn:
                conn.execute("SET lock_timeout = '20s'")  # a stall fails the test, not hangs it
                assert conn.execute("SELECT df.getvar('colour')").fetchone()[0] == "blue"
                iid = conn.execute(
                    "SELECT df.start('SELECT ''{colour}'' AS c, df.getvar(''colour'') AS g' "
                    "~> df.sleep(0) ~> 'SELECT 2 AS b')").fetchone()[0]
            assert wait_terminal(db, iid, timeout=60) == "completed", errors(db, iid)
            first = [n for n in node_rows(db, iid) if "getvar" in (n["query"] or "")]
            assert first and first[0]["result"]["rows"] == [{"c": "blue", "g": "blue"}], first
        locker.rollback()


def test_the_lock_free_copy_of_vars_follows_every_write(db):
    """df.getvar and df.start's snapshot read df_internal.var_values: every way of writing
    df.vars (setvar, direct INSERT/UPDATE/DELETE, rename, clearvars) must show there, per role."""
    with db.connect(ALICE) as conn:
        conn.execute("SELECT df.setvar('a', '1')")
        conn.execute("SELECT df.setvar('a', '2')")
        conn.execute("INSERT INTO df.vars (name, value) VALUES ('b', 'x')")
        conn.execute("UPDATE df.vars SET name = 'c' WHERE name = 'b'")
        conn.execute("INSERT INTO df.vars (name, value) VALUES ('d', 'y') "
                     "ON CONFLICT (owner, name) DO UPDATE SET value = 'z'")
        conn.execute("INSERT INTO df.vars (name, value) VALUES ('d', 'y') "
                     "ON CONFLICT (owner, name) DO UPDATE SET value = 'z'")
    with db.connect(BOB) as conn:
        conn.execute("SELECT df.setvar('a', 'bob')")
        assert conn.execute("SELECT df.getvar('a')").fetchone()[0] == "bob"
        assert conn.execute("SELECT df.getvar('c')").fetchone()[0] is None
    with db.connect(ALICE) as conn:
        got = {k: conn.execute("SELECT df.getvar(%s)", (k,)).fetchone()[0] for k in "abcd"}
        assert got == {"a": "2", "b": None, "c": "x", "d": "z"}
        assert conn.execute("SELECT df.getvar(NULL)").fetchone()[0] is None
        conn.execute("DELETE FROM df.vars WHERE name = 'c'")
        assert conn.execute("SELECT df.getvar('c')").fetchone()[0] is None
        conn.execute("SELECT df.clearvars()")
        assert conn.execute("SELECT df.getvar('a')").fetchone()[0] is None
    with db.connect(BOB) as conn:
        assert conn.execute("SELECT df.getvar('a')").fetchone()[0] == "bob"
    copy = db.scalar("SELECT array_agg(owner::text || '=' || name || '=' || value ORDER BY 1) "
                     "FROM df_internal.var_values")
    real = db.scalar("SELECT array_agg(owner::text || '=' || name || '=' || value ORDER BY 1) "
                     "FROM df.vars")
    assert copy == real == ["dftui_bob=a=bob"]
    # and nobody reaches the copy itself
    with db.connect(ALICE) as conn:
        for statement in ("SELECT * FROM df_internal.var_values",
                          "SELECT * FROM df_internal.my_var_values",
                          "LOCK TABLE df_internal.var_values"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute(statement)


# -- the per-step timeout applies in every database ----------------------------------------------

@pytest.mark.parametrize("source", ["engine", "role", "workflow"])
def test_a_step_in_another_database_has_the_step_timeout(db, mode, other_database, source):
    """Was a residual: a cross-database step ran without the per-step statement_timeout, so one
    role could hold workers there for ever (past its cap's purpose). Every source of the
    timeout (engine default, a role's ceiling, df.step_timeout) applies there too."""
    overrides = {"concurrency": 2}
    if source == "engine":
        overrides["step_timeout"] = 1.0
    elif source == "role":
        with db.connect() as conn:
            conn.execute("SELECT df.set_role_limits(%s, step_timeout => '1s')", (ALICE,))
    if mode == "owner":
        setup_engine_owner(db)
        with db.connect() as conn:  # the grant above ran before the role existed, maybe
            conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                sql.Identifier(other_database.name), sql.Identifier(ENGINE_ROLE)))
    with engine_in_mode(db, mode, **overrides):
        with db.connect(ALICE) as conn:
            if source == "workflow":
                conn.execute("SET df.step_timeout = '1s'")
            iid = conn.execute("SELECT df.start('SELECT pg_sleep(120) AS slept', database => %s)",
                               (other_database.name,)).fetchone()[0]
        assert wait_terminal(db, iid, timeout=60) == "failed", errors(db, iid)
        assert "statement timeout" in errors(db, iid), errors(db, iid)
        # and a quick step there is not affected by what the slow one left
        with db.connect(ALICE) as conn:
            ok = conn.execute("SELECT df.start('SELECT current_database()::text AS d', database => %s)",
                              (other_database.name,)).fetchone()[0]
        assert wait_terminal(db, ok, timeout=60) == "completed", errors(db, ok)
        assert root_result(db, ok)["rows"] == [{"d": other_database.name}]


# -- session state a step leaves for the next role: dblink connections ----------------------------

def _dblink_schema(db) -> str | None:
    return db.scalar("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'dblink'")


def _bob_may_open_dblink(db) -> tuple[str, str]:
    """dblink's schema (the test is skipped without dblink) and a conninfo of this database as
    bob, whom dblink_connect_u is granted to: a stand-in for a password-authenticated
    dblink_connect, which ordinary roles may use."""
    schema = _dblink_schema(db)
    if schema is None:
        pytest.skip("dblink is not installed")
    with db.connect() as conn:
        for sig in ("text", "text, text"):
            conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {}.dblink_connect_u({}) TO dftui_bob").format(
                sql.Identifier(schema), sql.SQL(sig)))
    info = db.server.admin_conninfo
    return schema, f"host={info.get('host', '')} port={info.get('port', '')} dbname={db.name} user={BOB}"


def test_dblink_connections_a_step_opens_do_not_outlive_it(db, mode):
    """dblink keeps named and unnamed connections in the backend, outside any transaction: bob's
    step opened them on the engine's session, and alice's next step on that session used them —
    running SQL as bob. (dblink_connect_u granted to bob stands in for a password-authenticated
    dblink_connect, which ordinary roles may use.) The session reset closes them."""
    schema, target = _bob_may_open_dblink(db)
    with engine_in_mode(db, mode, concurrency=1):
        with db.connect(BOB) as conn:
            iid = conn.execute(
                "SELECT df.start(%s ~> %s)",
                (f"SELECT {schema}.dblink_connect_u('leak', '{target}') AS named, "
                 "pg_backend_pid() AS pid",
                 f"SELECT {schema}.dblink_connect_u('{target}') AS unnamed")).fetchone()[0]
        assert wait_terminal(db, iid) == "completed", errors(db, iid)
        with db.connect(ALICE) as conn:
            probes = {
                "list": conn.execute("SELECT df.start(%s)", (
                    f"SELECT coalesce({schema}.dblink_get_connections(), '{{}}')::text AS conns, "
                    "pg_backend_pid() AS pid",)).fetchone()[0],
                "named": conn.execute("SELECT df.start(%s)", (
                    f"SELECT u FROM {schema}.dblink('leak', 'SELECT current_user::text') AS t(u text)",
                )).fetchone()[0],
                "unnamed": conn.execute("SELECT df.start(%s)", (
                    f"SELECT u FROM {schema}.dblink('SELECT current_user::text') AS t(u text)",
                )).fetchone()[0],
            }
        assert wait_terminal(db, probes["list"]) == "completed", errors(db, probes["list"])
        bob_pid = [n for n in node_rows(db, iid) if "'leak'" in (n["query"] or "")][0]["result"]["rows"][0]["pid"]
        listed = root_result(db, probes["list"])["rows"][0]
        assert listed["pid"] == bob_pid, "not the same engine session: the test proves nothing"
        assert listed["conns"] == "{}", f"bob's dblink connection is still open: {listed}"
        for what in ("named", "unnamed"):
            assert wait_terminal(db, probes[what]) == "failed", (
                f"alice's step used bob's {what} dblink connection: {root_result(db, probes[what])}")


def test_dblink_connections_of_a_batch_are_closed_before_its_next_batch(db, mode):
    """Between the steps of one batch (one role's tasks only) the engine leaves the dblink
    connections open and closes them before the batch commits (the close costs a caught error
    per call: issue 17). A batch that stops early — its first step outlasts the batch's time
    budget, so the tasks claimed behind it go back to the queue — must close them too: bob's
    task claimed with the step that opened them runs in a later batch of the same session and
    finds nothing, as does one claimed later. (A first claim takes two tasks, engine/pacing.py;
    the opener sleeps past the budget of a batch with no other worker idle.)"""
    schema, target = _bob_may_open_dblink(db)
    with db.connect(BOB) as conn:  # queued before the engine starts: one claim takes them all
        opener = conn.execute("SELECT df.start(%s)", (
            f"SELECT {schema}.dblink_connect_u('leak', '{target}') AS named, "
            f"{schema}.dblink_connect_u('{target}') AS unnamed, pg_backend_pid() AS pid, "
            f"pg_sleep({2 * BUSY_BUDGET}) AS outlasts_the_budget",)).fetchone()[0]
        lister = conn.execute("SELECT df.start(%s)", (
            f"SELECT coalesce({schema}.dblink_get_connections(), '{{}}')::text AS conns, "
            "pg_backend_pid() AS pid",)).fetchone()[0]
        unnamed = conn.execute("SELECT df.start(%s)", (
            f"SELECT u FROM {schema}.dblink('SELECT current_user::text') AS t(u text)",)).fetchone()[0]
    with engine_in_mode(db, mode, concurrency=1):
        for iid in (opener, lister, unnamed):
            wait_terminal(db, iid)
    assert db.scalar("SELECT status FROM df.instances WHERE id = %s", (opener,)) == "completed", \
        errors(db, opener)
    picked = db.scalar("SELECT count(DISTINCT picked_up_at) FROM df_internal.instance_pickups "
                       "WHERE instance_id IN (%s, %s)", (opener, lister))
    assert picked == 1, "the lister was not claimed with the opener: the test proves nothing"
    opened_in = root_result(db, opener)["rows"][0]["pid"]
    listed = root_result(db, lister)["rows"][0]
    assert listed["pid"] == opened_in, "not the same engine session: the test proves nothing"
    assert listed["conns"] == "{}", f"the named dblink connection outlived its batch: {listed}"
    assert wait_terminal(db, unnamed) == "failed", (
        f"the unnamed dblink connection outlived its batch: {root_result(db, unnamed)}")


# -- leaks: every df function PUBLIC may call, aimed at another role's instance ---------------------

_SECRET = "bobsecret"


def _probe_calls(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """(signature, call) for every df.* function alice may execute: each text-like argument is
    bob's instance id (placeholder %(id)s), every other argument NULL of its type."""
    rows = conn.execute(
        """
        SELECT p.oid::regprocedure::text, p.proname, p.proretset,
               coalesce(array_agg(format_type(t.oid, NULL) ORDER BY a.ord)
                        FILTER (WHERE a.ord IS NOT NULL), '{}')
          FROM pg_proc p
          LEFT JOIN LATERAL unnest(p.proargtypes::oid[]) WITH ORDINALITY AS a(typ, ord) ON true
          LEFT JOIN pg_type t ON t.oid = a.typ
         WHERE p.pronamespace = 'df'::regnamespace AND p.prokind = 'f'
           AND p.prorettype <> 'trigger'::regtype
           AND has_function_privilege('dftui_alice', p.oid, 'EXECUTE')
         GROUP BY p.oid, p.proname, p.proretset
        """).fetchall()
    calls = []
    for signature, name, _retset, types in rows:
        if any(t in ("anyelement", "anyarray", "anycompatible", "\"any\"", "internal", "record")
               for t in types):
            continue
        args = ["%(id)s::" + t if t in ("text", "character varying", "name") else f"NULL::{t}"
                for t in types]
        calls.append((signature, f"SELECT pg_catalog.array_agg(x::text) FROM df.{name}({', '.join(args)}) x"))
    return calls


def test_no_public_df_function_reveals_or_touches_another_roles_instance(db, mode):
    """Every df function alice may execute, called with bob's instance id in each text argument
    (while bob's step runs, and while it waits for a signal): nothing of bob's instance appears
    in a result or an error, and bob's instance is not changed, cancelled or signalled."""
    with engine_in_mode(db, mode, concurrency=2):
        with db.connect(BOB) as conn:
            conn.execute("SELECT df.setvar('k', %s)", (_SECRET + "var",))
            victim = conn.execute(
                "SELECT df.start(%s ~> df.wait_for_signal('go') ~> 'SELECT 1 AS done', label => %s)",
                (f"SELECT '{_SECRET}query' AS s, pg_sleep(3) AS z", _SECRET + "label")).fetchone()[0]
        seen: list[str] = []
        with db.connect(ALICE) as conn:
            calls = _probe_calls(conn)
            assert len(calls) > 40, "the probe found too few functions to mean anything"
            for phase in ("running", "waiting"):
                if phase == "waiting":
                    for _ in range(200):
                        if db.scalar("SELECT count(*) FROM df.nodes WHERE instance_id = %s "
                                     "AND node_type = 'SIGNAL' AND status = 'running'", (victim,)):
                            break
                        time.sleep(0.1)
                for signature, call in calls:
                    try:
                        with conn.transaction():
                            row = conn.execute(call, {"id": victim}).fetchone()
                            seen.append(f"{signature} -> {row[0] if row else None}")
                    except psycopg.Error as exc:
                        seen.append(f"{signature} !! {exc.diag.message_primary} "
                                    f"{exc.diag.message_detail or ''} {exc.diag.message_hint or ''}")
        leaked = [s for s in seen if _SECRET in s]
        assert not leaked, f"bob's data reached alice: {leaked[:5]}"
        assert db.scalar("SELECT status FROM df.instances WHERE id = %s", (victim,)) == "running"
        assert db.scalar("SELECT count(*) FROM df_internal.signals WHERE instance_id = %s",
                         (victim,)) == 0, "alice signalled bob's instance"
        assert db.scalar("SELECT count(*) FROM df_internal.step_actions WHERE instance_id = %s",
                         (victim,)) == 0, "alice acted on bob's running step"
        with db.connect(BOB) as conn:
            conn.execute("SELECT df.signal(%s, 'go')", (victim,))
        assert wait_terminal(db, victim) == "completed", errors(db, victim)


# -- role-controlled text: role names the engine composes SQL with ---------------------------------

WEIRD_ROLE = "dftui_o'brien\"; DROP ROLE dftui_bob; -- ü"


def test_a_role_named_like_sql_runs_its_steps_as_itself(db, mode):
    """A submitter whose name is quotes, a statement terminator, a comment and non-ASCII: the
    engine makes its trampolines, runs its steps as it, and nothing else happens."""
    ident = sql.Identifier(WEIRD_ROLE)
    with db.connect() as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (WEIRD_ROLE,)).fetchone():
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident))
        conn.execute("SELECT df.grant_usage(%s)", (WEIRD_ROLE,))
    if mode == "owner":
        setup_engine_owner(db)
        with db.connect() as conn:
            conn.execute(sql.SQL("GRANT {} TO {}").format(ident, sql.Identifier(ENGINE_ROLE)))
    try:
        with engine_in_mode(db, mode, concurrency=2):
            with db.connect(WEIRD_ROLE) as conn:
                iid = conn.execute(
                    "SELECT df.start('SELECT current_user::text AS who' ~> df.sleep(0) "
                    "~> 'SELECT session_user::text <> current_user::text AS differs')").fetchone()[0]
            assert wait_terminal(db, iid) == "completed", errors(db, iid)
            who = [n for n in node_rows(db, iid) if "who" in (n["query"] or "")][0]["result"]
            assert who["rows"] == [{"who": WEIRD_ROLE}]
        assert db.scalar("SELECT count(*) FROM pg_roles WHERE rolname = %s", (BOB,)) == 1
    finally:
        with db.connect() as conn:
            conn.execute("SELECT df.revoke_usage(%s)", (WEIRD_ROLE,))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))


# -- class 4: vars forged by a role that skips RLS ----------------------------------------------


def test_another_roles_vars_cannot_be_written_by_a_role_that_skips_rls(db, mode, bypassrls_role):
    """`{name}` puts a var's value raw into its owner's step SQL, which runs as the owner: a
    BYPASSRLS role writing bob's vars would run SQL as bob. Every write of another role's var
    row (insert, update of value or owner, delete) is refused; its own vars still work."""
    with db.connect(BOB) as conn:
        conn.execute("SELECT df.setvar('t', 'bob_table')")
    inject = "1 AS x; SELECT 1"  # what a forged value would splice into bob's step
    with db.connect(bypassrls_role) as conn:
        attempts = {
            "insert": ("INSERT INTO df.vars (name, value, owner) VALUES ('x', %s, %s::regrole)",
                       (inject, BOB)),
            "update": ("UPDATE df.vars SET value = %s WHERE owner = %s::regrole", (inject, BOB)),
            "take over": ("UPDATE df.vars SET owner = %s::regrole WHERE owner = %s::regrole",
                          (bypassrls_role, BOB)),
            "give away": ("INSERT INTO df.vars (name, value) VALUES ('g', %s)", (inject,)),
            "delete": ("DELETE FROM df.vars WHERE owner = %s::regrole", (BOB,)),
        }
        assert conn.execute("SELECT count(*) FROM df.vars WHERE owner = %s::regrole",
                            (BOB,)).fetchone()[0] == 1, "the role does not skip RLS: proves nothing"
        for what, (statement, params) in attempts.items():
            if what == "give away":
                conn.execute(statement, params)  # its own var: allowed
                with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                    conn.execute("UPDATE df.vars SET owner = %s::regrole WHERE name = 'g'", (BOB,))
                continue
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute(statement, params)
        assert conn.execute("SELECT df.getvar('g')").fetchone()[0] == inject
    assert db.scalar("SELECT array_agg(name || '=' || value) FROM df.vars WHERE owner = %s::regrole",
                     (BOB,)) == ["t=bob_table"]
    with engine_in_mode(db, mode, concurrency=1):
        with db.connect(BOB) as conn:
            iid = conn.execute("SELECT df.start('SELECT ''{t}'' AS t')").fetchone()[0]
        assert wait_terminal(db, iid) == "completed", errors(db, iid)
        assert root_result(db, iid)["rows"] == [{"t": "bob_table"}]


# -- objects an attacker creates that engine SQL could resolve --------------------------------------

def test_every_df_function_pins_its_search_path(db):
    """Every function of df and df_internal — SECURITY DEFINER ones above all, but also those the
    engine calls inside a step's transaction — runs with search_path pg_catalog first and
    pg_temp last, so no object a role creates (in public, in its own schema, in pg_temp) is
    resolved by them; BEGIN ATOMIC bodies are resolved when created."""
    rows = db.connect().execute(
        """
        SELECT p.oid::regprocedure::text, p.prosecdef,
               (SELECT c FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%%')
          FROM pg_proc p
         WHERE p.pronamespace IN ('df'::regnamespace, 'df_internal'::regnamespace)
           AND p.prolang NOT IN (SELECT oid FROM pg_language WHERE lanname IN ('c', 'internal'))
           AND p.prosqlbody IS NULL
        """).fetchall()
    assert len(rows) > 50
    # df_internal.visible: an invoker SQL function inlined into the df views (a SET clause
    # would stop the inlining); every name in it is qualified, operators included.
    rows = [r for r in rows if r[0] != "df_internal.visible(regrole)"]
    bad = []
    for signature, definer, path in rows:
        parts = [x.strip() for x in (path or "").removeprefix("search_path=").split(",")]
        if parts[0] != "pg_catalog" or parts[-1] != "pg_temp":
            bad.append((signature, definer, path))
    definers = [b for b in bad if b[1]]
    assert not definers, f"SECURITY DEFINER functions without a pinned search_path: {definers}"
    assert not bad, f"functions without a pinned search_path: {bad}"


# -- availability: a backlog deeper than the claim's window ------------------------------------------

def test_a_role_flooding_more_tasks_than_a_claim_looks_at_cannot_starve_another(db, mode):
    """alice queues more long steps than a claim's candidate window (1,000 rows at the head of
    the queue) while her running-step cap is reached: the window held only her tasks, so no
    claim ever reached bob's, queued after them — bob waited for her whole backlog. bob's
    instance must complete while alice's backlog is still there."""
    flood = 1100
    with db.connect(ALICE) as conn:
        conn.execute("SELECT df.start('SELECT pg_sleep(30) AS slept') FROM generate_series(1, %s)",
                     (flood,))
    with engine_in_mode(db, mode, concurrency=2, step_timeout=40.0):
        # (alice's first step holds her only slot: workers - 1 = 1)
        iid = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if db.scalar("SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s AND state = 'active' "
                         "AND application_name LIKE 'dftui engine%%'", ("%pg_sleep(30)%",)):
                break
            time.sleep(0.1)
        with db.connect(BOB) as conn:
            iid = conn.execute("SELECT df.start('SELECT 1 AS ok')").fetchone()[0]
        assert wait_terminal(db, iid, timeout=25) == "completed", errors(db, iid)
        pending = db.scalar("SELECT count(*) FROM df.instances WHERE submitted_by = %s::regrole "
                            "AND status IN ('pending', 'running')", (ALICE,))
        assert pending >= flood - 2, "alice's backlog drained first: the test proves nothing"


def test_a_role_that_skips_rls_cannot_signal_cancel_or_retry_another_roles_instance(
        db, mode, bypassrls_role):
    """df.cancel / df.signal / df.retry prove ownership with an RLS-checked UPDATE of the
    instance row; a BYPASSRLS role skipped that check, so it could cancel bob's work, retry it,
    or send it forged signals (whose data steers bob's workflow). All refused, nothing changed."""
    with engine_in_mode(db, mode, concurrency=2):
        with db.connect(BOB) as conn:
            waiting = conn.execute("SELECT df.start(df.wait_for_signal('go') ~> 'SELECT 1 AS done')"
                                   ).fetchone()[0]
            failed = conn.execute("SELECT df.start('SELECT 1/0')").fetchone()[0]
        assert wait_terminal(db, failed) == "failed"
        for _ in range(200):
            if db.scalar("SELECT count(*) FROM df.nodes WHERE instance_id = %s AND node_type = 'SIGNAL' "
                         "AND status = 'running'", (waiting,)):
                break
            time.sleep(0.1)
        with db.connect(bypassrls_role) as conn:
            assert conn.execute("SELECT count(*) FROM df.instances WHERE id = %s",
                                (waiting,)).fetchone()[0] == 1, "the role does not skip RLS"
            for call, iid in (("SELECT df.signal(%s, 'go', '{\"forged\": true}')", waiting),
                              ("SELECT df.cancel(%s)", waiting),
                              ("SELECT df.retry(%s)", failed),
                              ("UPDATE df.instances SET status = 'cancelled' WHERE id = %s", waiting),
                              ("UPDATE df.instances SET updated_at = now() WHERE id = %s", waiting)):
                with pytest.raises(psycopg.Error), conn.transaction():
                    conn.execute(call, (iid,))
        assert db.scalar("SELECT count(*) FROM df_internal.signals WHERE instance_id = %s", (waiting,)) == 0
        assert db.scalar("SELECT status FROM df.instances WHERE id = %s", (waiting,)) == "running"
        assert db.scalar("SELECT status FROM df.instances WHERE id = %s", (failed,)) == "failed"
        with db.connect(BOB) as conn:
            conn.execute("SELECT df.signal(%s, 'go')", (waiting,))
        assert wait_terminal(db, waiting) == "completed", errors(db, waiting)
