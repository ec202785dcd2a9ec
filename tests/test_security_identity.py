"""Identity is enforced, not assumed: issue 13 class 4 (rows forged by roles that skip RLS), the
superuser part of class 5, and issue 14's "tampered identity".

RLS is the first line only: superusers, the tables' owner and BYPASSRLS roles (common on managed
services) skip it. Whatever such a role writes into df.instances / df.nodes, nothing may ever run
as a role other than the one that really started the instance, and no SECURITY DEFINER
trampoline may ever be made for a superuser.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from tests.support import (
    ALICE,
    ENGINE_ROLE,
    assert_no_escalation,
    counters,
    engine_in_mode,
    engine_user,
    errors,
    node_rows,
    running_engine,
    setup_engine_owner,
    start,
    wait_for,
    wait_terminal,
)


def superuser_trampolines(db) -> int:
    return db.scalar(
        "SELECT count(*) FROM pg_catalog.pg_proc p "
        "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
        "JOIN pg_catalog.pg_roles r ON r.oid = p.proowner "
        "WHERE n.nspname = 'df_exec' AND r.rolsuper")


def exec_acl(db) -> str | None:
    return db.scalar("SELECT nspacl::text FROM pg_catalog.pg_namespace WHERE nspname = 'df_exec'")


def test_superuser_instance_makes_no_trampoline_and_leaves_df_exec_intact(db, attacker, mode, granted_roles):
    """A superuser's instance (superuser instances enabled in its own session only) is refused
    before any SECURITY DEFINER function is created for the superuser, df_exec's ACL is left as
    it was, and a least-privilege install afterwards still serves a role it has never seen."""
    (fresh_role,) = granted_roles(1)  # a role that exists only for this test
    with engine_in_mode(db, mode, concurrency=1):
        acl_before = exec_acl(db)
        with db.connect() as conn:
            conn.execute("SET pg_durable.enable_superuser_instances = on")
            iid = conn.execute("SELECT df.start('SELECT nextval(''evil.escalated'') AS n')").fetchone()[0]
        assert wait_terminal(db, iid) == "failed"
    assert "superuser" in errors(db, iid)
    assert counters(db) == (0, 0)
    assert superuser_trampolines(db) == 0, "a SECURITY DEFINER trampoline owned by a superuser exists"
    assert exec_acl(db) == acl_before
    # A least-privilege install made afterwards can still create trampolines for new roles.
    dsn = setup_engine_owner(db)
    with db.connect() as conn:
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(fresh_role), sql.Identifier(ENGINE_ROLE)))
    with running_engine(dsn, concurrency=1, install=False):
        ok = start(db, fresh_role, "'SELECT current_user::text AS who'")
        assert wait_terminal(db, ok) == "completed", errors(db, ok)
    assert superuser_trampolines(db) == 0


def test_setup_repairs_an_exec_schema_whose_owner_lost_create(db, granted_roles):
    """An older engine revoked CREATE on df_exec from its own owner (after a superuser's
    trampolines); the least-privilege setup gives the new owner its privileges back."""
    (fresh_role,) = granted_roles(1)  # a role that exists only for this test
    with db.connect() as conn:
        conn.execute("GRANT CREATE ON SCHEMA df_exec TO CURRENT_USER")
        conn.execute("REVOKE CREATE ON SCHEMA df_exec FROM CURRENT_USER")
    dsn = setup_engine_owner(db)
    assert db.scalar("SELECT has_schema_privilege(%s, 'df_exec', 'CREATE')", (ENGINE_ROLE,))
    with db.connect() as conn:
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(fresh_role), sql.Identifier(ENGINE_ROLE)))
    with running_engine(dsn, concurrency=1, install=False):
        ok = start(db, fresh_role, "'SELECT 1 AS one'")
        assert wait_terminal(db, ok) == "completed", errors(db, ok)


def test_alice_is_never_given_a_trampoline_once_she_is_a_superuser(db, attacker, mode):
    """ALTER ROLE alice SUPERUSER between start and execution: refused, and no trampoline is
    made for her while she is one."""
    with db.connect() as conn:
        conn.execute("ALTER ROLE dftui_alice SUPERUSER")
    try:
        with db.connect(ALICE) as conn:
            conn.execute("SET pg_durable.enable_superuser_instances = on")
            iid = conn.execute("SELECT df.start('SELECT nextval(''evil.as_alice'') AS n')").fetchone()[0]
        with engine_in_mode(db, mode, concurrency=1):
            assert wait_terminal(db, iid) == "failed"
        assert "superuser" in errors(db, iid)
        assert superuser_trampolines(db) == 0
        assert counters(db) == (0, 0)
    finally:
        with db.connect() as conn:
            conn.execute("ALTER ROLE dftui_alice NOSUPERUSER")




# -- rows forged or rewritten by roles that skip RLS (class 4, issue 14 "tampered identity") -------

def _forge_graph(conn, iid: str, node: str, who: str, query: str) -> None:
    conn.execute("INSERT INTO df.nodes (id, instance_id, node_type, query, submitted_by) "
                 "VALUES (%s, %s, 'SQL', %s, %s)", (node, iid, query, who))
    conn.execute("INSERT INTO df.instances (id, root_node, submitted_by) VALUES (%s, %s, %s)",
                 (iid, node, who))


def _counts(db) -> tuple[int, int, int]:
    with db.connect() as conn:
        return conn.execute("SELECT (SELECT count(*) FROM df.instances), (SELECT count(*) FROM df.nodes), "
                            "(SELECT count(*) FROM df_internal.instance_state)").fetchone()


@pytest.mark.parametrize("who", ["dftui_alice", "postgres"])
def test_rows_inserted_in_another_roles_name_by_a_bypassrls_role_are_refused(db, mallory, who):
    """A hand-made graph (instance + node, as df.start writes it) in another role's name, by a
    BYPASSRLS role: refused at INSERT, nothing stored."""
    before = _counts(db)
    with db.connect(mallory, autocommit=False) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="must be the inserting role"):
            _forge_graph(conn, "fa0000a1", "fa00000a", who, "SELECT evil.witness('forged insert')")
        conn.rollback()
        # the instance row alone (nodes later, as the deferred foreign keys allow)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="must be the inserting role"):
            conn.execute("INSERT INTO df.instances (id, root_node, submitted_by) VALUES "
                         "('fa0000a2', 'fa00000b', %s)", (who,))
        conn.rollback()
    assert _counts(db) == before
    assert counters(db) == (0, 0)


def test_rows_inserted_in_another_roles_name_by_the_owner_never_run(db, attacker, mode):
    """The tables' owner (the installing superuser, or the least-privilege engine role) may write
    rows in any name (history seeded or migrated from pg_durable), but such a pending instance
    runs nothing: it fails as soon as it is claimed, because the identity frozen for execution
    is the role that inserted it."""
    with engine_in_mode(db, mode, concurrency=1):
        owner = None if mode == "superuser" else ENGINE_ROLE
        with db.connect(owner, autocommit=False) as conn:
            _forge_graph(conn, "fc0000a1", "fc00000a", ALICE, "SELECT evil.witness('owner forgery') AS w")
            conn.commit()
        assert wait_terminal(db, "fc0000a1") == "failed"
    message = db.scalar("SELECT error FROM df_internal.instance_state WHERE instance_id = 'fc0000a1'")
    assert "is not the role that started it" in message
    assert db.scalar("SELECT submitted_by::text FROM df_internal.instance_state "
                     "WHERE instance_id = 'fc0000a1'") != ALICE
    assert counters(db) == (0, 0)
    assert db.scalar("SELECT count(*) FROM evil.log") == 0


def test_nodes_cannot_be_slipped_into_another_roles_instance(db, mallory):
    """Extra nodes in bob's name added to bob's instance by a BYPASSRLS role: refused."""
    iid = start(db, "dftui_bob", "df.wait_for_signal('go') ~> 'SELECT 1 AS one'")
    with db.connect(mallory) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("INSERT INTO df.nodes (id, instance_id, node_type, query, submitted_by) "
                     "VALUES ('fb00000a', %s, 'SQL', 'SELECT 1', 'dftui_bob')", (iid,))
    assert db.scalar("SELECT count(*) FROM df.nodes WHERE instance_id = %s AND id = 'fb00000a'", (iid,)) == 0


def _rewrite_identity(conn, iid: str, target: str) -> None:
    # both tables, as the composite foreign key (instance_id, submitted_by) requires
    conn.execute("UPDATE df.nodes SET submitted_by = %s WHERE instance_id = %s", (target, iid))
    conn.execute("UPDATE df.instances SET submitted_by = %s WHERE id = %s", (target, iid))


@pytest.mark.parametrize("target", ["dftui_alice", "postgres"])
@pytest.mark.parametrize("first", ["'SELECT 1 AS one'", "df.sleep(1)"])
def test_rewritten_submitted_by_before_pickup_fails_the_instance_and_runs_nothing(
        db, mallory, mode, target, first):
    """pg_durable lets a BYPASSRLS role's UPDATE of submitted_by through; made before its worker
    loaded the instance, the instance then fails (no node marked failed; its e2e test 17, test 3).
    dftui does the same when the rewrite precedes the instance's first claim — here in the very
    transaction of df.start, also when the first step is a timer (taken up by its first claim) — and
    nothing ever runs as the new name (nor as the old one)."""
    step = "SELECT evil.witness('tampered') AS w"
    with engine_in_mode(db, mode, concurrency=1):
        with db.connect(mallory, autocommit=False) as conn:
            iid = conn.execute(f"SELECT df.start({first} ~> %s)", (step,)).fetchone()[0]
            _rewrite_identity(conn, iid, target)
            conn.commit()
        assert wait_terminal(db, iid) == "failed"
    message = db.scalar("SELECT error FROM df_internal.instance_state WHERE instance_id = %s", (iid,))
    assert f"blocked instance {iid}" in message and "is not the role that started it" in message
    statuses = [n["status"] for n in node_rows(db, iid)]
    assert "failed" not in statuses, statuses
    assert counters(db) == (0, 0), "the tampered instance's step ran"
    assert db.scalar("SELECT count(*) FROM evil.log") == 0


@pytest.mark.parametrize("target", ["dftui_alice", "postgres"])
@pytest.mark.parametrize("first", ["df.wait_for_signal('go')", "df.sleep(2)"])
def test_rewritten_submitted_by_after_pickup_changes_nothing(db, mallory, mode, target, first):
    """Made after the engine took the instance up (a parked signal wait; a leading timer, which
    the engine parks at once since 86cc200), the rewrite changes nothing: as pg_durable, which
    runs on the graph it loaded (e2e test 17, tests 4 and 5), the instance completes, and every
    step runs as the identity frozen at its start — never as the rewritten name."""
    step = "SELECT evil.witness('after pickup') AS w"
    with engine_in_mode(db, mode, concurrency=1):
        if mode == "owner":  # a least-privilege engine runs steps only for roles granted to it
            with db.connect() as conn:
                conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(mallory),
                                                              sql.Identifier(ENGINE_ROLE)))
        with db.connect(mallory, autocommit=False) as conn:
            iid = conn.execute(f"SELECT df.start({first} ~> %s)", (step,)).fetchone()[0]
            conn.commit()
            wait_terminal_or_parked(db, iid)  # (taken up: the wait or the timer parked)
            _rewrite_identity(conn, iid, target)
            conn.commit()
        if "signal" in first:
            with db.connect() as conn:
                conn.execute("SELECT df.signal(%s, 'go')", (iid,))
        assert wait_terminal(db, iid) == "completed", db.scalar(
            "SELECT error FROM df_internal.instance_state WHERE instance_id = %s", (iid,))
    assert db.scalar("SELECT array_agg(who) FROM evil.log") == [mallory]
    assert db.scalar("SELECT submitted_by::text FROM df_internal.instance_state "
                     "WHERE instance_id = %s", (iid,)) == mallory


def wait_terminal_or_parked(db, iid: str) -> None:
    # (running once the engine parked the wait or the timer; a timer may even be over by now)
    wait_for(lambda: db.scalar("SELECT status FROM df.instances WHERE id = %s", (iid,))
             != "pending", what="the engine to take the instance up")


def test_the_frozen_identity_cannot_be_written_by_anyone_but_the_engine(db, mallory):
    """The copy the engine trusts lives where only the engine's owner writes."""
    iid = start(db, mallory, "'SELECT 1 AS one'")
    with db.connect(mallory) as conn:
        for stmt in ("UPDATE df_internal.instance_state SET submitted_by = 'postgres' WHERE instance_id = %s",
                     "SELECT df_internal.refuse_instance(%s, 'x')"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(stmt, (iid,))


# -- audit fields come from the server session (class 6) ----------------------------------------

def test_retry_and_signal_audit_cannot_be_forged(db, attacker):
    """requested_by / sent_by / cancelled_by name the role that made the request, whatever the
    client put into df.request, and even when it rewrites the hand-off from a RETURNING clause."""
    with engine_in_mode(db, "superuser", concurrency=1):
        iid = start(db, ALICE, "'SELECT 1/0'")
        assert wait_terminal(db, iid) == "failed"
        with db.connect(ALICE) as conn:
            # the client writes the request itself, naming bob as the requester
            conn.execute("SELECT set_config('df.request', %s, false)", (
                f'{{"op": "retry", "instance_id": "{iid}", "requested_by": "dftui_bob"}}',))
            conn.execute("UPDATE df.instances SET updated_at = now() WHERE id = %s", (iid,))
        assert wait_terminal(db, iid) == "failed"
        with db.connect(ALICE) as conn:
            bob = conn.execute("SELECT 'dftui_bob'::regrole::oid::text").fetchone()[0]
            conn.execute("SELECT set_config('df.request', %s, false)", (
                f'{{"op": "retry", "instance_id": "{iid}"}}',))
            # a RETURNING clause runs after the row is updated and before AFTER triggers fire
            conn.execute("UPDATE df.instances SET updated_at = now() WHERE id = %s "
                         "RETURNING set_config('df.requester', %s, true)", (iid, bob))
        assert wait_terminal(db, iid) == "failed"
        sig = start(db, ALICE, "df.wait_for_signal('go') ~> 'SELECT 1 AS one'")
        with db.connect(ALICE) as conn:
            conn.execute("SET pg_durable.signal_loopback = off")
            conn.execute("SELECT set_config('df.requester', %s, false)", (bob,))
            conn.execute("SELECT df.signal(%s, 'go')", (sig,))
            conn.execute("SELECT set_config('df.requester', %s, false)", (bob,))
            conn.execute("SELECT df.cancel(%s)", (start(db, ALICE, "df.wait_for_signal('never')"),))
    with db.connect(ALICE) as conn:
        who = [r[0] for r in conn.execute("SELECT requested_by::text FROM df.retry_history "
                                          "WHERE instance_id = %s", (iid,))]
    assert who == [ALICE, ALICE]
    assert db.scalar("SELECT array_agg(DISTINCT sent_by::text) FROM df_internal.signals") == [ALICE]
    assert db.scalar("SELECT array_agg(DISTINCT cancelled_by::text) FROM df_internal.instance_state "
                     "WHERE cancelled_by IS NOT NULL") == [ALICE]


# -- the hand-over of the inserting role between the row's triggers (class 4, variant) -----------

def _bob_or_engine(db, mode: str, target: str) -> str:
    return engine_user(mode, db) if target == "engine" else target


@pytest.mark.parametrize("target", ["dftui_bob", "engine"])
@pytest.mark.parametrize("first", ["SLEEP", "SQL"])
def test_the_inserting_role_cannot_be_rewritten_before_the_insert_trigger_reads_it(
        db, attacker, mode, target, first):
    """The identity frozen for an instance is the role that inserted it. It used to reach the
    AFTER INSERT trigger through a setting written by the BEFORE trigger; a data-modifying CTE
    lets the rest of the attacker's statement run between the two (AFTER triggers fire at the
    end of the whole statement), so `set_config('df.inserter', <bob's oid>)` there made bob the
    frozen identity of alice's instance — and with a forged df.start_meta and a leading timer
    (taken up at once) the steps ran as bob, or as the least-privilege engine role itself."""
    victim = _bob_or_engine(db, mode, target)
    step = "SELECT evil.witness('steered inserter') AS w"
    with engine_in_mode(db, mode, concurrency=1):
        with db.connect(ALICE, autocommit=False) as conn:
            victim_oid = conn.execute("SELECT %s::regrole::oid::text", (victim,)).fetchone()[0]
            conn.execute("SELECT set_config('df.start_meta', '{}', true)")
            nodes = [("5e000001", "THEN", None, "5e000002", "5e000003"),
                     ("5e000002", first, "1" if first == "SLEEP" else "SELECT 1 AS one", None, None),
                     ("5e000003", "SQL", step, None, None)]
            for node_id, node_type, query, left, right in nodes:
                conn.execute("INSERT INTO df.nodes (id, instance_id, node_type, query, left_node, "
                             "right_node, submitted_by) VALUES (%s, '5e0000aa', %s, %s, %s, %s, "
                             "'dftui_alice')", (node_id, node_type, query, left, right))
            conn.execute(
                "WITH ins AS (INSERT INTO df.instances (id, root_node, submitted_by) "
                "             VALUES ('5e0000aa', '5e000001', 'dftui_alice') RETURNING id) "
                "SELECT pg_catalog.set_config('df.inserter', %s, true) FROM ins", (victim_oid,))
            conn.commit()
        assert wait_terminal(db, "5e0000aa") == "completed", errors(db, "5e0000aa")
    frozen = db.scalar("SELECT submitted_by::text FROM df_internal.instance_state "
                       "WHERE instance_id = '5e0000aa'")
    assert_no_escalation(db)
    assert frozen == ALICE, f"alice's instance was frozen as {frozen}"
    assert db.scalar("SELECT array_agg(who) FROM evil.log") == [ALICE]  # it ran, as alice


@pytest.mark.parametrize("change", ["query", "node_type", "submitted_by", "status", "result",
                                    "delete node", "delete instance"])
def test_a_role_that_skips_rls_cannot_rewrite_or_delete_another_roles_nodes(db, mallory, mode, change):
    """The engine reads a step's SQL from df.nodes when it claims the step. A BYPASSRLS role
    with UPDATE on the table (as managed-service admin roles have) rewrote bob's pending node:
    its SQL then ran as bob; with DELETE it removed bob's nodes or instance. Every UPDATE or
    DELETE of another role's row is refused, nothing changed, and bob's instance completes with
    his own step."""
    with db.connect() as conn:
        conn.execute(sql.SQL("GRANT DELETE ON df.instances, df.nodes TO {}").format(sql.Identifier(mallory)))
    with engine_in_mode(db, mode, concurrency=1):
        iid = start(db, "dftui_bob", "df.wait_for_signal('go') ~> 'SELECT 42 AS answer'")
        wait_terminal_or_parked(db, iid)
        node = db.scalar("SELECT id FROM df.nodes WHERE instance_id = %s AND node_type = 'SQL'", (iid,))
        snapshot = ("SELECT jsonb_agg(to_jsonb(n) ORDER BY n.id) FROM df.nodes n WHERE instance_id = %s")
        before = db.scalar(snapshot, (iid,))
        if change == "delete node":
            stmt = sql.SQL("DELETE FROM df.nodes WHERE instance_id = %s AND id = %s")
            args: tuple = (iid, node)
        elif change == "delete instance":
            stmt = sql.SQL("DELETE FROM df.instances WHERE id = %s")
            args = (iid,)
        else:
            value = {"query": "SELECT evil.witness('rewritten node') AS w", "node_type": "SLEEP",
                     "submitted_by": mallory, "status": "completed", "result": '{"answer": 0}'}[change]
            stmt = sql.SQL("UPDATE df.nodes SET {} = %s WHERE instance_id = %s AND id = %s").format(
                sql.Identifier(change))
            args = (value, iid, node)
        with db.connect(mallory) as conn, pytest.raises(
                psycopg.errors.InsufficientPrivilege, match="not found or access denied"):
            conn.execute(stmt, args)
        assert db.scalar(snapshot, (iid,)) == before
        with db.connect("dftui_bob") as conn:
            conn.execute("SELECT df.signal(%s, 'go')", (iid,))
        assert wait_terminal(db, iid) == "completed", errors(db, iid)
    assert db.scalar("SELECT result -> 'rows' FROM df.nodes WHERE instance_id = %s AND id = %s",
                     (iid, node)) == [{"answer": 42}]
    assert_no_escalation(db)
