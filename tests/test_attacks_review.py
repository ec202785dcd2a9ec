"""Independent white-box review of the engine and the df schema (issue 13): routes verified CLOSED.

Variants of the issue's classes that the existing attack suites do not try. Each test asserts the
safe outcome, so it fails if its route opens again. Execution tests run in both engine modes
(`mode`: superuser engine, least-privilege owner engine). Availability tests use bounded waits
for the victim's instance, never timing assertions.
"""

from __future__ import annotations

import contextlib
import time

import psycopg
import pytest
from psycopg import sql

from tests.support import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    ENGINE_ROLE,
    QUOTED,
    assert_no_escalation,
    engine_in_mode,
    errors,
    node_rows,
    root_result,
    start,
    wait_for,
    wait_terminal,
)


def cancel_everything(db) -> None:
    """Teardown: end every unfinished instance and interrupt whatever the engine still runs."""
    with db.connect() as conn:
        conn.execute("UPDATE df.instances SET status = 'cancelled' WHERE status IN ('pending', 'running')")
        conn.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
                     "WHERE application_name LIKE 'dftui engine%%' AND state = 'active' "
                     "AND pid <> pg_backend_pid() AND datname = current_database()")


def engine_sessions_running(db, marker: str) -> int:
    return db.scalar("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s "
                     "AND application_name LIKE 'dftui engine%%'", (f"%{marker}%",))


# -- class 1: role names are data -----------------------------------------------------------------

ODD_ROLES = [
    'x"; SELECT evil.witness(\'role\'); --',
    "q'uote$$dollar%s",
    "ünï-cødé ☃ role",
    "r" * 63,
]


@pytest.mark.parametrize("name", ODD_ROLES, ids=["quote-injection", "quote-dollar-percent",
                                                 "unicode", "63-bytes"])
def test_unusual_role_names_run_steps_as_themselves(db, attacker, mode, name):
    """A submitter whose name carries quotes, dollar quotes, psycopg placeholders, non-ASCII or
    the full 63 bytes: the engine makes its trampolines and runs its steps as exactly that
    role, and nothing in the name becomes SQL."""
    ident = sql.Identifier(name)
    with db.connect() as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident))
        conn.execute("SET client_min_messages = warning")
        conn.execute("SELECT df.grant_usage(%s)", (name,))
    try:
        with engine_in_mode(db, mode):
            if mode == "owner":
                with db.connect() as conn:
                    conn.execute(sql.SQL("GRANT {} TO {}").format(ident, sql.Identifier(ENGINE_ROLE)))
            iid = start(db, name, "'SELECT current_user::text AS me, session_user::text <> current_user::text AS definer'")
            assert wait_terminal(db, iid) == "completed", errors(db, iid)
            assert root_result(db, iid)["rows"] == [{"me": name, "definer": True}]
    finally:
        with db.connect() as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
            conn.execute(sql.SQL("DROP ROLE {}").format(ident))
    assert_no_escalation(db)


# -- class 4 variant: a BYPASSRLS role writes ANOTHER role's df.vars ----------------------------

def test_a_bypassrls_role_cannot_plant_sql_in_another_roles_vars(db, attacker, mode):
    """df.grant_usage grants table-wide INSERT/UPDATE/DELETE on df.vars; only the RLS policy keeps
    a role to its own rows. A BYPASSRLS role (the managed-service admin shape class 4 is about)
    rewrites bob's var (or inserts one in bob's name); bob's next df.start snapshots it and the
    engine splices it, raw as {name} substitution is, into bob's step: alice's SQL runs as bob
    (was open in both modes: the witness ran as dftui_bob; closed on main by 091a5ea). Safe
    outcome: the write is refused, or at least nothing of alice's runs as bob."""
    with db.connect(BOB) as conn:
        conn.execute("SELECT df.setvar('batch', '10')")
    with db.connect() as conn:
        conn.execute("ALTER ROLE dftui_alice BYPASSRLS")
    planted = "10) g WHERE evil.witness('as bob') --"
    with db.connect(ALICE) as conn:
        with contextlib.suppress(psycopg.Error):
            conn.execute("UPDATE df.vars SET value = %s WHERE owner = 'dftui_bob'::regrole "
                         "AND name = 'batch'", (planted,))
        with contextlib.suppress(psycopg.Error):
            conn.execute("INSERT INTO df.vars (name, value, owner) VALUES ('extra', %s, 'dftui_bob')",
                         (planted,))
    with db.connect() as conn:
        conn.execute("ALTER ROLE dftui_alice NOBYPASSRLS")
    with engine_in_mode(db, mode):
        iid = start(db, BOB, "'SELECT count(*) AS n FROM generate_series(1, {batch}) g'")
        wait_terminal(db, iid)
        iid2 = start(db, BOB, "'SELECT count(*) AS n FROM generate_series(1, {extra}) g'")
        wait_terminal(db, iid2)
    assert_no_escalation(db)
    assert db.scalar("SELECT value FROM df.vars WHERE owner = 'dftui_bob'::regrole AND name = 'batch'") == "10"
    assert not db.scalar("SELECT count(*) FROM df.vars WHERE owner = 'dftui_bob'::regrole "
                         "AND name = 'extra'")


# -- class 5/7: the dblink loopback helper, called directly ----------------------------------------

@pytest.mark.parametrize("as_role", ["postgres", BOB])
def test_the_new_transaction_helper_cannot_start_as_another_role(db, as_role):
    """df.start_in_new_transaction is SECURITY DEFINER and PUBLIC-executable: alice calls it
    directly naming postgres or bob as the loopback login. Refused before any connection."""
    with db.connect(ALICE) as conn, pytest.raises(psycopg.Error) as info:
        conn.execute("SELECT df.start_in_new_transaction('SELECT 1', NULL, NULL, NULL, %s)", (as_role,))
    assert info.value.sqlstate == "42501"
    assert not db.scalar("SELECT count(*) FROM df.instances")


# -- class 7: table locks a granted role could take -------------------------------------------------

@pytest.mark.parametrize("table", ["df.instances", "df.nodes", "df._step_marker"])
@pytest.mark.parametrize("lockmode", ["ROW EXCLUSIVE", "SHARE", "EXCLUSIVE", "ACCESS EXCLUSIVE"])
def test_granted_roles_cannot_take_strong_locks_on_engine_tables(db, table, lockmode):
    """Column-level INSERT/UPDATE grants do not allow LOCK TABLE beyond ACCESS SHARE, so a
    granted role cannot block the engine's writes to these tables (df.vars is another story,
    see the review report)."""
    with db.connect(BOB, autocommit=False) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"LOCK TABLE {table} IN {lockmode} MODE")
        conn.rollback()


# -- leaks: what other roles see of a running step ------------------------------------------------

def test_other_roles_see_nothing_of_a_running_step_in_pg_stat_activity(db, mode):
    """While bob's step runs, alice and carol read pg_stat_activity: the engine's backends show
    no query text, no timing (query_start, state), nothing of bob's step."""
    marker = "bob_secret_7f3a"
    with engine_in_mode(db, mode, concurrency=2):
        iid = start(db, BOB, f"'SELECT pg_sleep(3) AS {marker}'")
        wait_for(lambda: engine_sessions_running(db, marker) >= 1, 30, what="bob's step to run")
        for role in (ALICE, CAROL):
            with db.connect(role) as conn:
                rows = conn.execute(
                    "SELECT query, state, query_start, xact_start FROM pg_stat_activity "
                    "WHERE application_name LIKE 'dftui engine%%'").fetchall()
            assert rows, "the engine's sessions should at least be listed"
            for query, state, query_start, xact_start in rows:
                assert marker not in (query or "")
                assert state is None and query_start is None and xact_start is None
        assert wait_terminal(db, iid) == "completed", errors(db, iid)


# -- availability: table locks a granted role may take ------------------------------------------

def test_a_granted_role_cannot_lock_df_vars_against_every_df_start(db):
    """pg_durable's grants give every df user table-wide UPDATE/DELETE on df.vars, which is
    what LOCK TABLE ... ACCESS EXCLUSIVE needs. While alice holds it, bob's df.start must not
    wait (was open: on_instance_insert snapshotted df.vars; closed on main by 80ad236, which
    snapshots an owner-only copy). Safe outcome: the lock is refused, or bob's df.start
    completes within its bounded statement_timeout."""
    with db.connect(ALICE, autocommit=False) as hog:
        try:
            hog.execute("LOCK TABLE df.vars IN ACCESS EXCLUSIVE MODE")
        except psycopg.errors.InsufficientPrivilege:
            return
        try:
            with db.connect(BOB) as conn:
                conn.execute("SET statement_timeout = '15s'")
                iid = conn.execute("SELECT df.start('SELECT 1 AS one')").fetchone()[0]
            assert iid
        finally:
            hog.rollback()


# -- fairness: the per-step timeout reaches steps in other databases -------------------------------

def test_a_step_in_another_database_obeys_the_step_timeout(db, mode, other_database):
    """A step in another database (SqlSteps.run_elsewhere) is bound by the same per-step
    statement_timeout as a local one (was open: it slept its full 300 s with --step-timeout 2 s;
    closed on main by 80ad236). Safe outcome: it fails with the step timeout."""
    try:
        with engine_in_mode(db, mode, concurrency=2, step_timeout=2.0):
            if mode == "owner":  # (the engine role exists now)
                with db.connect() as conn:
                    conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                        sql.Identifier(other_database.name), sql.Identifier(ENGINE_ROLE)))
            iid = start(db, ALICE, "'SELECT pg_sleep(300) AS slept', database => %s", other_database.name)
            try:
                assert wait_terminal(db, iid, 45) == "failed"
                assert "statement timeout" in errors(db, iid)
            finally:
                cancel_everything(db)
                with other_database.connect() as conn:
                    conn.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
                                 "WHERE application_name LIKE 'dftui engine%%' AND state = 'active' "
                                 "AND datname = current_database()")
    finally:
        cancel_everything(db)


# -- availability: signalling the engine's backends -------------------------------------------------

def test_no_role_can_cancel_or_terminate_the_engines_backends(db, attacker, mode):
    """alice, from her own session and from inside one of her steps, calls pg_cancel_backend /
    pg_terminate_backend on every engine backend while bob's step runs: refused (the backends
    belong to the engine's login role, which no submitter is a member of)."""
    with engine_in_mode(db, mode, concurrency=3):
        victim = start(db, BOB, "'SELECT pg_sleep(3) AS bob_step' ~> 'SELECT 1 AS after'")
        wait_for(lambda: engine_sessions_running(db, "bob_step") >= 1, 30, what="bob's step to run")
        kill = ("SELECT count(*) FILTER (WHERE ok) FROM (SELECT pg_catalog.pg_cancel_backend(pid) AS ok "
                "FROM pg_stat_activity WHERE application_name LIKE 'dftui engine%' "
                "AND pid <> pg_backend_pid() UNION ALL SELECT pg_catalog.pg_terminate_backend(pid) "
                "FROM pg_stat_activity WHERE application_name LIKE 'dftui engine%' "
                "AND pid <> pg_backend_pid()) x")
        with db.connect(ALICE) as conn, contextlib.suppress(psycopg.errors.InsufficientPrivilege):
            assert conn.execute(kill).fetchone()[0] == 0
        from_step = start(db, ALICE, "%s", kill)
        wait_terminal(db, from_step)
        assert wait_terminal(db, victim) == "completed", errors(db, victim)
        assert node_rows(db, victim)[0]["error"] is None
    assert_no_escalation(db)


# -- availability: a flood of forged wake-ups -----------------------------------------------------

def test_a_flood_of_notifications_stalls_nothing(db, mode):
    """carol (no df usage) sends 20,000 notifications on every engine channel while bob's
    two-step instance runs; it completes, and a later instance too (the listener survived)."""
    with engine_in_mode(db, mode, concurrency=2):
        victim = start(db, BOB, "'SELECT pg_sleep(1) AS a' ~> 'SELECT 2 AS b'")
        with db.connect(CAROL) as conn:
            conn.execute("SELECT pg_notify(c, g::text) FROM unnest(ARRAY['df_work', 'df_cancel', "
                         "'df_abandon', 'df_done']) c, generate_series(1, 5000) g")
        assert wait_terminal(db, victim, 90) == "completed", errors(db, victim)
        late = start(db, BOB, "'SELECT 3 AS c'")
        assert wait_terminal(db, late, 90) == "completed", errors(db, late)



# -- class 4 variant: a BYPASSRLS role acts on ANOTHER role's instance ----------------------------

def _as_bypassrls_alice(db, statements: list[tuple[str, tuple]]) -> list[str]:
    """Run each statement as alice with BYPASSRLS (each on its own, errors kept, not raised)."""
    outcomes = []
    with db.connect() as conn:
        conn.execute("ALTER ROLE dftui_alice BYPASSRLS")
    try:
        with db.connect(ALICE) as conn:
            for stmt, params in statements:
                try:
                    conn.execute(stmt, params)
                    outcomes.append("done")
                except psycopg.Error as exc:
                    outcomes.append(type(exc).__name__)
    finally:
        with db.connect() as conn:
            conn.execute("ALTER ROLE dftui_alice NOBYPASSRLS")
    return outcomes


def test_a_bypassrls_role_cannot_cancel_another_roles_instance(db, attacker, mode):
    """RLS was the only ownership check of df.cancel and of the status UPDATE; BYPASSRLS skips it.
    The instances trigger now applies RLS's rule to every role that is not privileged: alice's
    cancel is refused with a clear error and bob's instance completes."""
    with engine_in_mode(db, mode, concurrency=2):
        victim = start(db, BOB, "'SELECT pg_sleep(3) AS slept' ~> 'SELECT 1 AS after'")
        wait_for(lambda: db.scalar("SELECT status FROM df.instances WHERE id = %s", (victim,))
                 in ("pending", "running"), what="the victim to start")
        outcomes = _as_bypassrls_alice(db, [
            ("SELECT df.cancel(%s)", (victim,)),
            ("UPDATE df.instances SET status = 'cancelled' WHERE id = %s", (victim,)),
            ("UPDATE df.instances SET updated_at = now() WHERE id = %s", (victim,)),
        ])
        assert outcomes == ["InsufficientPrivilege"] * 3, outcomes
        assert wait_terminal(db, victim) == "completed", errors(db, victim)
        assert db.scalar("SELECT cancelled_by FROM df_internal.instance_state WHERE instance_id = %s",
                         (victim,)) is None


def test_a_bypassrls_role_cannot_signal_or_retry_another_roles_instance(db, attacker, mode):
    """df.signal and df.retry prove ownership with the same RLS-checked UPDATE as df.cancel: as
    BYPASSRLS, alice's signal must not reach bob's waiting instance and her retry must not restart
    his failed one. Bob's own signal still works afterwards."""
    with engine_in_mode(db, mode, concurrency=2):
        waiting = start(db, BOB, "df.wait_for_signal('go') ~> 'SELECT 1 AS after'")
        failed = start(db, BOB, "'SELECT 1/0 AS boom'")
        assert wait_terminal(db, failed) == "failed"
        wait_for(lambda: db.scalar("SELECT phase FROM df_internal.tasks WHERE instance_id = %s",
                                   (waiting,)) == "waiting", what="bob's signal wait to park")
        outcomes = _as_bypassrls_alice(db, [
            ("SELECT df.signal(%s, 'go')", (waiting,)),
            ("SELECT df.retry(%s)", (failed,)),
        ])
        assert outcomes == ["InsufficientPrivilege"] * 2, outcomes
        assert db.scalar("SELECT count(*) FROM df_internal.signals WHERE instance_id = %s", (waiting,)) == 0
        assert db.scalar("SELECT count(*) FROM df_internal.retries WHERE instance_id = %s", (failed,)) == 0
        assert db.scalar("SELECT status FROM df.instances WHERE id = %s", (failed,)) == "failed"
        with db.connect(BOB) as conn:
            conn.execute("SELECT df.signal(%s, 'go')", (waiting,))
        assert wait_terminal(db, waiting) == "completed", errors(db, waiting)


# -- availability: retention -------------------------------------------------------------------

def test_a_row_lock_on_ones_own_finished_instance_does_not_stop_retention(db, mode):
    """Housekeeping deletes finished instances older than --retention-days, 500 per statement.
    alice holds FOR UPDATE on one of her own finished instances (UPDATE(status) is granted); the
    DELETE used to wait for it (lock_timeout 5 s) and fail on every pass, so nobody's history was
    ever purged. It now deletes only rows it can lock (SKIP LOCKED): bob's finished instance goes
    while alice holds her lock, and hers once she lets go."""
    with engine_in_mode(db, mode, concurrency=2, retention_days=0.00002, reconcile_interval=1.0):
        mine = start(db, ALICE, "'SELECT 1 AS a'")
        assert wait_terminal(db, mine) == "completed"
        with db.connect(ALICE, autocommit=False) as hog:
            assert hog.execute("SELECT id FROM df.instances WHERE id = %s FOR UPDATE", (mine,)).fetchone()
            victim = start(db, BOB, "'SELECT 2 AS b'")
            assert wait_terminal(db, victim) == "completed"
            wait_for(lambda: not db.scalar("SELECT count(*) FROM df.instances WHERE id = %s", (victim,)),
                     60, what="bob's finished instance to be purged by retention")
            assert db.scalar("SELECT count(*) FROM df.instances WHERE id = %s", (mine,)) == 1
            hog.rollback()
        wait_for(lambda: not db.scalar("SELECT count(*) FROM df.instances WHERE id = %s", (mine,)),
                 60, what="alice's instance to be purged once unlocked")


# -- availability: hand-made graphs validated inside the claim ----------------------------------

def _insert_chain(conn: psycopg.Connection, iid: str, length: int) -> None:
    """A hand-made instance (the grants allow direct INSERT) whose graph is one THEN chain of
    `length` THEN nodes and length + 1 SQL leaves; without df.start_meta its validation happens
    in the engine's claim (start_instance)."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO df.nodes (id, instance_id, node_type, left_node, right_node, submitted_by) "
            "SELECT 't' || g, %(i)s, 'THEN', 's' || g, "
            "       CASE WHEN g = %(n)s THEN 'end' ELSE 't' || (g + 1) END, current_user::regrole "
            "  FROM generate_series(1, %(n)s) g", {"i": iid, "n": length})
        conn.execute(
            "INSERT INTO df.nodes (id, instance_id, node_type, query, submitted_by) "
            "SELECT 's' || g, %(i)s, 'SQL', 'SELECT 1', current_user::regrole "
            "  FROM generate_series(1, %(n)s) g "
            "UNION ALL SELECT 'end', %(i)s, 'SQL', 'SELECT 1', current_user::regrole",
            {"i": iid, "n": length})
        conn.execute("INSERT INTO df.instances (id, root_node, submitted_by) "
                     "VALUES (%s, 't1', current_user::regrole)", (iid,))


def test_hand_made_long_graphs_cannot_hold_every_worker(db, mode):
    """check_graph walked the tree with a recursive CTE that rescanned every edge per level
    (quadratic: 19 s for 8,000 nodes) and only then compared the count with the 10,000-node
    limit, inside the claim. Three hand-made 32,001-node chains held both workers for many
    minutes. Now the instance's rows are counted first: they are refused at once, with the
    limit's message, and bob's instance completes."""
    chains = [f"c00000{n:02d}" for n in range(3)]
    with db.connect(ALICE) as conn:
        for iid in chains:
            _insert_chain(conn, iid, 16000)
    try:
        with engine_in_mode(db, mode, concurrency=2):
            victim = start(db, BOB, "'SELECT 42 AS answer'")
            assert wait_terminal(db, victim, 90) == "completed", errors(db, victim)
            for iid in chains:
                assert wait_terminal(db, iid, 90) == "failed"
                assert "exceeds maximum node count of 10000 (32001 nodes)" in errors(db, iid)
    finally:
        cancel_everything(db)


def test_the_graph_check_walks_a_chain_at_the_node_limit_and_refuses_one_past_it(db):
    """The linear walk still sees the whole tree: a hand-made chain of exactly 10,000 nodes is
    valid, one of 10,001 rows is refused, and an invalid leaf at the far end of a long chain is
    still found (the walk reaches the last level)."""
    with db.connect(ALICE) as conn:
        _insert_chain(conn, "c1000000", 4999)          # 4,999 THEN + 5,000 leaves + 'end'
        _insert_chain(conn, "c1000001", 5000)          # 10,001 rows
        _insert_chain(conn, "c1000002", 3000)
    with db.connect() as conn:
        conn.execute("UPDATE df.nodes SET query = ' ; ' WHERE instance_id = 'c1000002' AND id = 'end'")
        conn.execute("SELECT df_internal.check_graph('c1000000')")
        with pytest.raises(psycopg.Error, match=r"maximum node count of 10000 \(10001 nodes\)"):
            conn.execute("SELECT df_internal.check_graph('c1000001')")
        with pytest.raises(psycopg.Error, match=r"invalid node configuration: end \(SQL\)"):
            conn.execute("SELECT df_internal.check_graph('c1000002')")


# -- fairness: the per-step statement_timeout covers describing the step ------------------------

def test_describing_a_step_obeys_the_step_timeout(db, attacker, mode):
    """The engine describes a step (describe_<oid>: planning, which folds IMMUTABLE functions
    with constant arguments) before running it; the step's statement_timeout was only set for
    the run, so a step whose planning sleeps escaped --step-timeout. The timeout now covers
    the describe too: the step fails with it."""
    with db.connect(ALICE) as conn:
        conn.execute("CREATE FUNCTION evil.slow_plan(s float8) RETURNS int LANGUAGE plpgsql "
                     "IMMUTABLE AS $$ BEGIN PERFORM pg_sleep(s); RETURN 1; END $$")
    try:
        with engine_in_mode(db, mode, concurrency=2, step_timeout=2.0):
            iid = start(db, ALICE, "'SELECT evil.slow_plan(300) AS x'")
            try:
                assert wait_terminal(db, iid, 45) == "failed"
                assert "statement timeout" in errors(db, iid)
            finally:
                cancel_everything(db)
    finally:
        cancel_everything(db)


# -- availability: a batch couples one role's long step to other roles' tasks -------------------

def test_a_batch_does_not_hold_another_roles_task_behind_a_long_step(db, mode):
    """When no worker is idle, a worker claims a batch and runs it in one transaction, every
    task row-locked and every checkpoint uncommitted until it commits; the time budget is only
    checked between steps. alice's long step claimed in a batch with bob's tasks held them for
    the whole step. A batch now holds one role's tasks only: bob's instances complete while
    alice's step runs."""
    with engine_in_mode(db, mode, concurrency=2):
        # keep both workers busy (two other roles, within their caps), the second one longer
        # (long enough for both to be seen running together on a loaded machine)
        start(db, DAVE, "'SELECT pg_sleep(6) AS busy1'")
        start(db, QUOTED, "'SELECT pg_sleep(15) AS busy2'")
        wait_for(lambda: engine_sessions_running(db, "AS busy") >= 2, 30, what="both workers to be busy")
        hog = start(db, ALICE, "'SELECT pg_sleep(300) AS hog'")
        time.sleep(0.2)  # (only orders the two run_at values; asserts nothing)
        # several victims: whichever side of alice's task a batch would put them on, they
        # would wait for her step, locked behind it or with their checkpoint uncommitted
        victims = [start(db, BOB, "'SELECT 42 AS answer'") for _ in range(6)]
        try:
            wait_for(lambda: engine_sessions_running(db, "AS hog") >= 1, 60, what="alice's long step to run")
            for victim in victims:
                assert wait_terminal(db, victim, 60) == "completed", errors(db, victim)
        finally:
            cancel_everything(db)
        assert db.scalar("SELECT status FROM df.instances WHERE id = %s", (hog,)) in (
            "cancelled", "failed", "completed")


def test_a_batch_takes_the_tasks_of_one_role_only(db):
    """The claim itself (no engine running): with due tasks of alice and bob interleaved, one
    claim of up to 16 returns one role's tasks, and the next claim the other's."""
    for _ in range(4):
        start(db, ALICE, "'SELECT 1 AS a'")
        start(db, BOB, "'SELECT 2 AS b'")
    level = db.scalar("SELECT df_internal.schema_level()")
    claim = ("SELECT submitted_by::text FROM df_internal.claim_tasks(%s, 'test', 16) "
             "WHERE kind <> 'started'")
    with db.connect(autocommit=False) as first, db.connect(autocommit=False) as second:
        roles = [r[0] for r in first.execute(claim, (level,))]
        assert len(roles) == 4 and len(set(roles)) == 1, roles
        other = [r[0] for r in second.execute(claim, (level,))]  # (skips first's locked rows)
        assert len(other) == 4 and set(other) == {ALICE, BOB} - set(roles), other
        first.rollback()
        second.rollback()


def test_retention_of_instances_at_the_node_limit_is_prompt(db, mode):
    """df.nodes' self-referencing foreign keys (left_node, right_node; ON DELETE CASCADE) had
    no index: deleting a node looked up its referrers by scanning every node of the instance,
    so retention deleting a 10,000-node instance made ~10^8 row visits (minutes in the
    housekeeping thread, heartbeat stopped). Migration 0420 indexes them: two finished
    instances at the node limit are purged within a bounded wait, and bob's with them."""
    big = ["c2000000", "c2000001"]
    with db.connect(ALICE) as conn:
        for iid in big:
            _insert_chain(conn, iid, 4999)
    with db.connect() as conn:
        conn.execute("DELETE FROM df_internal.tasks WHERE instance_id = ANY (%s)", (big,))
        conn.execute("UPDATE df.instances SET status = 'cancelled' WHERE id = ANY (%s)", (big,))
    with engine_in_mode(db, mode, concurrency=2, retention_days=0.00002, reconcile_interval=1.0):
        victim = start(db, BOB, "'SELECT 2 AS b'")
        assert wait_terminal(db, victim) == "completed"
        wait_for(lambda: not db.scalar("SELECT count(*) FROM df.instances WHERE id = ANY (%s)",
                                       ([*big, victim],)),
                 90, what="the finished instances to be purged by retention")
        assert not db.scalar("SELECT count(*) FROM df.nodes WHERE instance_id = ANY (%s)", (big,))


# -- availability: the claim's candidate window (verified closed after f22062d) -----------------

def test_a_flood_of_capped_tasks_cannot_hide_another_roles_work(db, mode):
    """claim_tasks reads the 1000 oldest due tasks (of the worker's slice in pass 1, of all in
    pass 2). alice (cap: 1 of 2 workers) queues 2600 long steps, more than 1000 in each worker's
    slice; her capped-out tasks used to be skipped only after the window was cut, so every
    claim saw only hers and bob's task was never looked at. Safe outcome: bob's instance
    completes while alice's backlog waits."""
    with db.connect(ALICE) as conn, conn.transaction():
        for _ in range(2600):
            conn.execute("SELECT df.start('SELECT pg_sleep(300) AS hog')")
    try:
        with engine_in_mode(db, mode, concurrency=2):
            wait_for(lambda: engine_sessions_running(db, "pg_sleep(300)") >= 1, 60,
                     what="alice's first step to run")
            victim = start(db, BOB, "'SELECT 42 AS answer'")
            try:
                assert wait_terminal(db, victim, 90) == "completed", errors(db, victim)
            finally:
                cancel_everything(db)
    finally:
        cancel_everything(db)
