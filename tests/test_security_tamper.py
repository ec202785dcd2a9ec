"""Attacks through the tables: forging identity with direct DML, tampering with an instance after
df.start, hand-made graphs that bypass df.start's validation, and submitters whose standing
changes (dropped, NOLOGIN, superuser) while their instance is in flight.

Identity and graph are frozen when the instance starts; whatever a user writes afterwards must
neither change what runs nor as whom, nor wedge the engine for everybody else.
"""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.support import (
    ALICE,
    BOB,
    assert_no_escalation,
    counters,
    engine_in_mode,
    errors,
    node_rows,
    root_result,
    start,
    wait_for,
    wait_terminal,
)


def counts(db) -> tuple[int, int, int]:
    with db.connect() as conn:
        return conn.execute("SELECT (SELECT count(*) FROM df.instances), (SELECT count(*) FROM df.nodes), "
                            "(SELECT count(*) FROM df_internal.tasks)").fetchone()


# -- forging identity -----------------------------------------------------------------------------

FORGERIES = [
    # another role's name on a new instance / node
    "INSERT INTO df.nodes (id, instance_id, node_type, query, submitted_by) "
    "VALUES ('0000000a', 'aaaaaaaa', 'SQL', 'SELECT 1', 'dftui_bob')",
    "INSERT INTO df.nodes (id, instance_id, node_type, query, submitted_by) "
    "VALUES ('0000000a', 'aaaaaaaa', 'SQL', 'SELECT 1', 'postgres')",
    "INSERT INTO df.instances (id, root_node, submitted_by) VALUES ('aaaaaaaa', '0000000a', 'dftui_bob')",
    # columns that are never granted
    "INSERT INTO df.instances (id, root_node, submitted_by, status) "
    "VALUES ('aaaaaaaa', '0000000a', 'dftui_alice', 'completed')",
    "INSERT INTO df.nodes (id, instance_id, node_type, query, submitted_by, status, result) "
    "VALUES ('0000000a', 'aaaaaaaa', 'SQL', 'SELECT 1', 'dftui_alice', 'completed', '1')",
]


def test_direct_dml_cannot_forge_identity(db, attacker):
    before = counts(db)
    with db.connect(ALICE) as conn:
        for stmt in FORGERIES:
            with pytest.raises((psycopg.errors.InsufficientPrivilege, psycopg.errors.CheckViolation)):
                conn.execute(stmt)
    assert counts(db) == before


def test_own_instance_cannot_be_rewritten_after_start(db, eng1):
    with db.connect(ALICE) as conn:
        iid = conn.execute("SELECT df.start(df.wait_for_signal('go') ~> 'SELECT current_user::text AS who')"
                           ).fetchone()[0]
    wait_for(lambda: db.scalar("SELECT phase FROM df_internal.tasks WHERE instance_id = %s", (iid,)) == "waiting",
             what="signal wait parked")
    nodes = {n["node_type"]: n["id"] for n in node_rows(db, iid)}
    with db.connect(ALICE) as conn:
        for stmt, params in [
            ("UPDATE df.nodes SET query = 'SELECT evil.witness(''rewritten'')' WHERE instance_id = %s", (iid,)),
            ("UPDATE df.nodes SET status = 'completed' WHERE instance_id = %s", (iid,)),
            ("DELETE FROM df.nodes WHERE instance_id = %s", (iid,)),
            ("UPDATE df.instances SET submitted_by = 'dftui_bob' WHERE id = %s", (iid,)),
            ("UPDATE df.instances SET root_node = %s WHERE id = %s", (nodes["SQL"], iid)),
            ("UPDATE df.instances SET completed_at = now() WHERE id = %s", (iid,)),
            ("DELETE FROM df.instances WHERE id = %s", (iid,)),
            ("TRUNCATE df.nodes", None),
        ]:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(stmt, params)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="only df.cancel"):
            conn.execute("UPDATE df.instances SET status = 'completed' WHERE id = %s", (iid,))
        # An extra node can be inserted (column grants allow it), but nothing refers to it.
        conn.execute("INSERT INTO df.nodes (id, instance_id, node_type, query, submitted_by) "
                     "VALUES ('0000ffff', %s, 'SQL', 'SELECT evil.witness(''extra node'')', 'dftui_alice')",
                     (iid,))
        conn.execute("SELECT df.signal(%s, 'go')", (iid,))
    assert wait_terminal(db, iid) == "completed", errors(db, iid)
    assert root_result(db, iid)["rows"] == [{"who": ALICE}]
    assert db.scalar("SELECT status FROM df.nodes WHERE instance_id = %s AND id = '0000ffff'", (iid,)) == "pending"
    assert counters(db) == (0, 0)


def test_identity_is_frozen_at_start(db, eng1):
    """A privileged role rewriting submitted_by after the engine took the instance up never makes
    anything run as the new name: as pg_durable (which runs on the graph it loaded), the rewrite
    changes nothing and the steps run as the submitter. (Before pickup the instance fails, as
    pg_durable's load refuses it: test_security_identity.py has both.)"""
    iid = start(db, ALICE, "df.wait_for_signal('go') ~> 'SELECT evil.witness(''after tamper'') AS w'")
    wait_for(lambda: db.scalar("SELECT phase FROM df_internal.tasks WHERE instance_id = %s", (iid,)) == "waiting",
             what="signal wait parked")
    with db.connect(autocommit=False) as conn:
        conn.execute("SET CONSTRAINTS ALL DEFERRED")
        conn.execute("UPDATE df.nodes SET submitted_by = 'postgres' WHERE instance_id = %s", (iid,))
        conn.execute("UPDATE df.instances SET submitted_by = 'postgres' WHERE id = %s", (iid,))
        conn.commit()
    with db.connect() as conn:
        conn.execute("SELECT df.signal(%s, 'go')", (iid,))
    assert wait_terminal(db, iid) == "completed", errors(db, iid)
    assert not [n for n in node_rows(db, iid) if n["status"] == "failed"]
    assert_no_escalation(db)
    assert counters(db) == (0, 1), "the step ran as someone else, or not at all"


# -- graphs that bypass df.start's validation ---------------------------------------------------

def _direct_instance(conn: psycopg.Connection, iid: str, nodes: list[tuple]) -> None:
    """Insert a hand-made graph the way df.start would, but without its validation."""
    for node_id, node_type, query, left, right in nodes:
        conn.execute("INSERT INTO df.nodes (id, instance_id, node_type, query, left_node, right_node, "
                     "submitted_by) VALUES (%s, %s, %s, %s, %s, %s, quote_ident(current_user)::regrole)",
                     (node_id, iid, node_type, query, left, right))
    conn.execute("INSERT INTO df.instances (id, root_node, submitted_by) "
                 "VALUES (%s, %s, quote_ident(current_user)::regrole)", (iid, nodes[0][0]))


HOSTILE_GRAPHS = {
    "IF with a config that is not JSON": [
        ("000000a1", "IF", "not json", "000000a2", "000000a3"),
        ("000000a2", "SQL", "SELECT 1", None, None), ("000000a3", "SQL", "SELECT 2", None, None)],
    "SLEEP that is not a number": [("000000b1", "SLEEP", "forever", None, None)],
    "SLEEP deep in the graph": [
        ("000000c1", "THEN", None, "000000c2", "000000c3"),
        ("000000c2", "SQL", "SELECT 1", None, None), ("000000c3", "SLEEP", "1e999", None, None)],
    "SIGNAL config that is not JSON": [("000000d1", "SIGNAL", "{{{", None, None)],
    "HTTP config of the wrong shape": [("000000e1", "HTTP", '{"url": 5, "headers": [1], '
                                                            '"timeout_seconds": "soon"}', None, None)],
    "a node that is its own child": [
        ("000000f1", "THEN", None, "000000f1", "000000f2"), ("000000f2", "SQL", "SELECT 1", None, None)],
    "a cycle through two nodes": [
        ("000000a4", "THEN", None, "000000a5", "000000a6"),
        ("000000a5", "THEN", None, "000000a4", "000000a6"), ("000000a6", "SQL", "SELECT 1", None, None)],
    "shared children (exponential unfolding)": [
        (f"0000{i:04x}", "THEN", None, f"0000{i + 1:04x}", f"0000{i + 1:04x}") for i in range(40)
    ] + [("00000028", "SQL", "SELECT 1", None, None)],
    "JOIN extras pointing nowhere": [
        ("000000b4", "JOIN", '{"extra_nodes": ["ffffffff"]}', "000000b5", "000000b6"),
        ("000000b5", "SQL", "SELECT 1", None, None), ("000000b6", "SQL", "SELECT 2", None, None)],
    "LOOP condition that is the loop itself": [
        ("000000b7", "LOOP", '{"condition_node": "000000b7"}', "000000b8", None),
        ("000000b8", "SQL", "SELECT 1", None, None)],
}


@pytest.mark.parametrize("forged_meta", [False, True], ids=["plain", "forged-start-meta"])
def test_hand_made_graphs_fail_cleanly_and_never_wedge_the_engine(db, eng1, forged_meta):
    """A granted role may INSERT df.instances / df.nodes directly (pg_durable's grants), which
    skips df.start's validation. Such instances must fail with a clear error (or the INSERT is
    refused); the engine (one worker here) must keep serving everybody else. `df.start_meta` is
    the hand-off setting df.start uses; the attacker can set it too."""
    ids = {}
    with db.connect(ALICE, autocommit=False) as conn:
        refused = []
        for n, (name, nodes) in enumerate(HOSTILE_GRAPHS.items()):
            iid = f"{0xbad00000 + n:08x}"
            conn.execute("SAVEPOINT g")
            conn.execute("SET CONSTRAINTS ALL DEFERRED")  # as in a fresh transaction
            try:
                if forged_meta:
                    conn.execute("SELECT set_config('df.start_meta', '{}', true)")
                conn.execute("SET LOCAL statement_timeout = '5s'")
                _direct_instance(conn, iid, nodes)
                conn.execute("SET CONSTRAINTS ALL IMMEDIATE")  # make the INSERTs' checks run here
            except psycopg.Error as exc:
                # With a forged hand-off the graph is activated in the attacker's own INSERT: a
                # cycle may then burn that session's time until its statement_timeout. That is
                # the attacker's own session; what matters is that the engine is unaffected.
                assert forged_meta or not isinstance(exc, psycopg.errors.QueryCanceled), name
                conn.execute("ROLLBACK TO SAVEPOINT g")
                refused.append(name)
                continue
            conn.execute("RELEASE SAVEPOINT g")
            ids[name] = iid
        conn.commit()
    if not forged_meta:
        assert refused == [], "rows the grants allow should be accepted (the engine must cope)"
    bobs = [start(db, BOB, "'SELECT 1 AS ok'") for _ in range(2)]
    for iid in bobs:
        assert wait_terminal(db, iid, 120) == "completed", errors(db, iid)
    for name, iid in ids.items():
        assert wait_terminal(db, iid, 120) == "failed", name
        assert db.scalar("SELECT count(*) FROM df_internal.tasks WHERE instance_id = %s", (iid,)) == 0, name
    assert_no_escalation(db)


@pytest.mark.parametrize("meta", [
    {"node_retry_policies": {"000000a1": {"max_attempts": "many"}}},
    {"instance_retry_policy": {"max_attempts": 10 ** 12, "backoff_seconds": -1}},
    {"node_retry_policies": ["not", "an", "object"]},
    "not an object",
])
def test_forged_start_meta_policies_are_validated(db, attacker, meta):
    """df.start hands retry policies to the insert trigger through df.start_meta; a role
    inserting rows by hand can set that too. A bad policy must be refused, not trusted."""
    before = counts(db)
    with db.connect(ALICE, autocommit=False) as conn:
        conn.execute("SELECT set_config('df.start_meta', %s, true)", (json.dumps(meta),))
        with pytest.raises(psycopg.Error, match="(?i)retry|policy|max_attempts|df.start_meta|backoff"):
            _direct_instance(conn, "bad0ffee", [("000000a1", "SQL", "SELECT 1", None, None)])
        conn.rollback()
    assert counts(db) == before


# -- submitters whose standing changes mid-flight -----------------------------------------------

@pytest.fixture
def temp_role(db):
    name = "dftui_temp_submitter"
    with db.connect() as conn:
        conn.execute(f"DROP OWNED BY {name}") if conn.execute(
            "SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone() else None
        conn.execute(f"DROP ROLE IF EXISTS {name}")
        conn.execute(f"CREATE ROLE {name} LOGIN")
        conn.execute("SELECT df.grant_usage(%s)", (name,))
    yield name
    with db.connect() as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone():
            conn.execute(f"DROP OWNED BY {name}")
            conn.execute(f"DROP ROLE {name}")


def _parked(db, iid: str) -> None:
    wait_for(lambda: db.scalar("SELECT phase FROM df_internal.tasks WHERE instance_id = %s", (iid,)) == "waiting",
             what="signal wait parked")


@pytest.mark.parametrize("change", ["drop", "nologin"])
def test_submitter_dropped_or_stripped_of_login_fails_next_node_promptly(db, attacker, mode, temp_role,
                                                                         change):
    with engine_in_mode(db, mode, concurrency=1) as eng:
        if mode == "owner":
            with db.connect() as conn:
                conn.execute(f"GRANT {temp_role} TO dftui_engine_owner")
        warm = start(db, temp_role, "'SELECT 1'")  # the role's trampolines exist from here on
        assert wait_terminal(db, warm) == "completed", errors(db, warm)
        iid = start(db, temp_role, "df.wait_for_signal('go') ~> "
                                   "df.retry_policy('SELECT nextval(''evil.escalated'')', 5, 0.1)")
        _parked(db, iid)
        with db.connect() as conn:
            if change == "drop":
                conn.execute(f"DROP OWNED BY {temp_role}")
                conn.execute(f"DROP ROLE {temp_role}")
            else:
                conn.execute(f"ALTER ROLE {temp_role} NOLOGIN")
            conn.execute("SELECT df.signal(%s, 'go')", (iid,))
        assert wait_terminal(db, iid) == "failed"
        message = errors(db, iid)
        assert ("no longer exists" in message) if change == "drop" else ("LOGIN" in message), message
        attempts = db.scalar("SELECT count(*) FROM df_internal.node_attempts WHERE instance_id = %s "
                             "AND status <> 'completed'", (iid,))
        assert attempts == 1, "an identity failure must not be retried"
        # the engine goes on serving others
        ok = start(db, BOB, "'SELECT 1 AS ok'")
        assert wait_terminal(db, ok) == "completed"
        assert eng.steps_done > 0
    assert counters(db) == (0, 0)


def test_nologin_role_cannot_submit_even_by_direct_insert(db, eng1):
    with db.connect() as conn:
        conn.execute("DROP ROLE IF EXISTS dftui_nologin_group")
        conn.execute("CREATE ROLE dftui_nologin_group NOLOGIN")
        conn.execute("SELECT df.grant_usage('dftui_nologin_group')")
        conn.execute("GRANT dftui_nologin_group TO dftui_alice")
    try:
        with db.connect(ALICE) as conn:
            conn.execute("SET ROLE dftui_nologin_group")
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="LOGIN"):
                conn.execute("SELECT df.start('SELECT 1')")
        with db.connect(ALICE, autocommit=False) as conn:
            conn.execute("SET ROLE dftui_nologin_group")
            _direct_instance(conn, "0dd00001", [("0dd0000a", "SQL", "SELECT nextval('evil.escalated')",
                                                 None, None)])
            conn.commit()
        assert wait_terminal(db, "0dd00001") == "failed"
        assert "LOGIN" in errors(db, "0dd00001")
        assert counters(db) == (0, 0)
    finally:
        with db.connect() as conn:
            conn.execute("DELETE FROM df.instances WHERE submitted_by = 'dftui_nologin_group'::regrole")
            conn.execute("DROP OWNED BY dftui_nologin_group")
            conn.execute("DROP ROLE dftui_nologin_group")


def test_superuser_instance_is_rechecked_at_execution(db, eng1):
    with db.connect() as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="superuser"):
            conn.execute("SELECT df.start('SELECT 1')")
        conn.execute("SET pg_durable.enable_superuser_instances = on")
        iid = conn.execute("SELECT df.start('SELECT nextval(''evil.escalated'')')").fetchone()[0]
    assert wait_terminal(db, iid) == "failed"
    # failed as an instance before anything ran (pg_durable's worker-side guard)
    assert "is a superuser, but pg_durable.enable_superuser_instances is off" in db.scalar(
        "SELECT error FROM df_internal.instance_state WHERE instance_id = %s", (iid,))
    assert counters(db) == (0, 0)


def test_a_held_instance_row_lock_does_not_stall_the_engine(db, attacker):
    """Alice holds her own sleeping instance's row FOR UPDATE on a one-worker engine: the worker
    never waits for it, her instance completes (df.status
    says so before the row does) and bob's runs meanwhile."""
    with engine_in_mode(db, "superuser", concurrency=1):
        iid = start(db, ALICE, "df.sleep(1) ~> 'SELECT 1 AS x'")
        holder = db.connect(ALICE, autocommit=False)
        try:
            holder.execute("SELECT 1 FROM df.instances WHERE id = %s FOR UPDATE", (iid,))
            other = start(db, BOB, "'SELECT 2 AS y'")
            assert wait_terminal(db, other, 15) == "completed"
            wait_for(lambda: db.scalar("SELECT df.status(%s)", (iid,)) == "completed", 30,
                     what="alice's held instance to complete")
        finally:
            holder.rollback()
            holder.close()
        wait_for(lambda: db.scalar("SELECT status FROM df.instances WHERE id = %s", (iid,)) == "completed",
                 30, what="the row to be published")
