"""df.start and df.graph_nodes (sql/0.1.0/030_start.sql).

df.start writes as the caller through RLS, so most tests act as ordinary granted roles and check
what each role can see afterwards; "nothing was written" is always checked as the superuser, who
sees every row.
"""

from __future__ import annotations

import json
import re

import psycopg
import pytest
from psycopg import sql

from tests.support import ALICE, DAVE, error_of, nested_loops, start

ID_RE = re.compile(r"^[0-9a-f]{8}$")
SEQ2 = "'SELECT 1' ~> 'SELECT 2'"


def totals(db) -> tuple[int, int]:
    """(instances, nodes) across all roles."""
    return (
        db.connect()
        .execute("SELECT (SELECT count(*) FROM df.instances), (SELECT count(*) FROM df.nodes)")
        .fetchone()
    )


def nodes_of(db, instance_id: str) -> dict[str, dict]:
    with db.connect() as conn:
        conn.row_factory = psycopg.rows.dict_row
        rows = conn.execute(
            "SELECT id, node_type, query, result_name, left_node, right_node, status,"
            " submitted_by::text AS submitted_by, database FROM df.nodes WHERE instance_id = %s",
            (instance_id,),
        ).fetchall()
    return {r["id"]: r for r in rows}


def root_of(db, instance_id: str) -> str:
    return db.scalar("SELECT root_node FROM df.instances WHERE id = %s", (instance_id,))


# --- the happy path -------------------------------------------------------------------------------


def test_start_writes_one_instance_and_three_nodes_visible_only_to_owner(db):
    iid = db.scalar(f"SELECT df.start(({SEQ2}), 'my label')", role=ALICE)
    assert ID_RE.match(iid)
    with db.connect("dftui_alice") as conn:
        inst = conn.execute(
            "SELECT label, status, submitted_by::text, database, root_node FROM df.instances"
        ).fetchall()
        assert inst == [("my label", "pending", "dftui_alice", None, inst[0][4])]
        assert conn.execute("SELECT count(*) FROM df.nodes").fetchone()[0] == 3
    with db.connect("dftui_bob") as conn:
        assert conn.execute("SELECT count(*) FROM df.instances").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM df.nodes").fetchone()[0] == 0
    assert totals(db) == (1, 3)

    nodes = nodes_of(db, iid)
    root = nodes[root_of(db, iid)]
    assert root["node_type"] == "THEN" and root["query"] is None
    assert nodes[root["left_node"]]["query"] == "SELECT 1"
    assert nodes[root["right_node"]]["query"] == "SELECT 2"
    assert all(ID_RE.match(n) for n in nodes)
    assert {n["submitted_by"] for n in nodes.values()} == {"dftui_alice"}
    # df.start activates the graph at once (first leaves queued); nothing has completed yet.
    assert {n["status"] for n in nodes.values()} <= {"pending", "running"}


def test_quoted_role_and_plain_sql(db):
    iid = db.scalar("SELECT df.start('SELECT 42')", role="Quoted Role")
    assert db.scalar("SELECT submitted_by::text FROM df.instances WHERE id = %s", (iid,)) == (
        '"Quoted Role"'
    )
    (node,) = nodes_of(db, iid).values()
    assert (node["node_type"], node["query"]) == ("SQL", "SELECT 42")
    assert db.scalar("SELECT count(*) FROM df.instances", role="Quoted Role") == 1


def test_set_role_and_security_definer_record_current_user(db):
    with db.connect() as conn:
        conn.execute("SET ROLE dftui_alice")
        iid = conn.execute("SELECT df.start('SELECT 1')").fetchone()[0]
    assert db.scalar("SELECT submitted_by::text FROM df.instances WHERE id = %s", (iid,)) == (
        "dftui_alice"
    )
    with db.connect() as conn:
        conn.execute(
            "CREATE FUNCTION public.start_as_owner() RETURNS text LANGUAGE sql SECURITY DEFINER"
            " SET search_path = pg_catalog AS $$ SELECT df.start('SELECT 2') $$"
        )
        conn.execute("ALTER FUNCTION public.start_as_owner() OWNER TO dftui_bob")
        conn.execute("GRANT EXECUTE ON FUNCTION public.start_as_owner() TO dftui_alice")
    iid = db.scalar("SELECT public.start_as_owner()", role=ALICE)
    assert db.scalar("SELECT submitted_by::text FROM df.instances WHERE id = %s", (iid,)) == (
        "dftui_bob"
    )


def test_label_and_database_are_stored(db):
    iid = start(db, ALICE, "'SELECT 1', 'nightly', current_database()")
    row = (
        db.connect()
        .execute("SELECT label, database FROM df.instances WHERE id = %s", (iid,))
        .fetchone()
    )
    assert row == ("nightly", db.name)
    assert {n["database"] for n in nodes_of(db, iid).values()} == {db.name}


def test_seq_of_n_steps_stores_n_sql_rows_and_n_minus_1_then_rows(db):
    expr = " ~> ".join(f"'SELECT {i}'" for i in range(7))
    iid = start(db, ALICE, expr)
    types = sorted(n["node_type"] for n in nodes_of(db, iid).values())
    assert types == ["SQL"] * 7 + ["THEN"] * 6


def test_node_rows_follow_the_architecture_table(db):
    graph = (
        "df.if('SELECT true', df.join3('a', 'b', df.loop('body', 'cond')), df.if_rows('r', 'x', 'y'))"
        " ~> df.sleep(30) ~> df.wait_for_schedule('0 9 * * 1-5') ~> df.wait_for_signal('go', 60)"
        " ~> df.break('{\"k\": 1}') ~> df.race('p', 'q') |=> 'fin'"
    )
    iid = start(db, ALICE, graph)
    nodes = nodes_of(db, iid)
    by_type: dict[str, list[dict]] = {}
    for n in nodes.values():
        by_type.setdefault(n["node_type"], []).append(n)

    ifs = {("condition_node" in json.loads(n["query"])): n for n in by_type["IF"]}
    cond_if = ifs[True]
    assert nodes[json.loads(cond_if["query"])["condition_node"]]["query"] == "SELECT true"
    join = nodes[cond_if["left_node"]]
    assert join["node_type"] == "JOIN"
    (extra_id,) = json.loads(join["query"])["extra_nodes"]
    loop = nodes[extra_id]
    assert loop["node_type"] == "LOOP" and loop["right_node"] is None
    assert nodes[loop["left_node"]]["query"] == "body"
    assert nodes[json.loads(loop["query"])["condition_node"]]["query"] == "cond"
    assert json.loads(ifs[False]["query"]) == {"condition_type": "result_has_rows", "result_name": "r"}

    assert by_type["SLEEP"][0]["query"] == "30"
    assert by_type["WAIT_SCHEDULE"][0]["query"] == '{"cron_expr":"0 9 * * 1-5"}'
    assert json.loads(by_type["SIGNAL"][0]["query"]) == {"signal_name": "go", "timeout_seconds": 60}
    assert json.loads(by_type["BREAK"][0]["query"]) == {"break_value": '{"k": 1}'}
    assert nodes[root_of(db, iid)]["result_name"] == "fin"
    # every node is referenced exactly once (by a parent column or a parent's config)
    referenced = []
    for n in nodes.values():
        referenced += [n["left_node"], n["right_node"]]
        if n["node_type"] in ("IF", "LOOP", "JOIN") and n["query"]:
            cfg = json.loads(n["query"])
            referenced += [cfg.get("condition_node")] + cfg.get("extra_nodes", [])
    referenced = [r for r in referenced if r]
    assert sorted(referenced + [root_of(db, iid)]) == sorted(nodes)


def test_http_nodes_need_the_http_grant(db):
    env = db.scalar("SELECT df.http('https://example.com/hook', 'GET')", role="dftui_dave")
    iid = start(db, DAVE, "%s", env)
    (node,) = nodes_of(db, iid).values()
    assert json.loads(node["query"])["url"] == "https://example.com/hook"
    assert "does not have EXECUTE privilege" in error_of(
        db, "SELECT df.start(%s)", (env,), role=ALICE)
    with db.connect("dftui_dave") as conn:
        conn.execute("SET pg_durable.http_security = 'disabled'")
        with pytest.raises(psycopg.Error, match=r"df\.http\(\) is disabled"):
            conn.execute("SELECT df.start(%s)", (env,))
    assert totals(db) == (1, 1)


def test_retry_policies_are_handed_to_the_engine(db):
    iid = db.scalar(
        "SELECT df.start_with_retry(df.retry_policy('SELECT 1', 3, 2, 30, ARRAY['40001']) ~> 'SELECT 2',"
        ' retry_policy => \'{"max_attempts": 5, "backoff_seconds": 0.5}\')',
        role=ALICE,
    )
    nodes = nodes_of(db, iid)
    first = next(n for n in nodes.values() if n["query"] == "SELECT 1")
    meta = db.scalar(
        "SELECT start_meta FROM df_internal.instance_state WHERE instance_id = %s", (iid,)
    )
    assert meta["node_retry_policies"] == {
        first["id"]: {
            "max_attempts": 3,
            "backoff_seconds": 2,
            "max_backoff_seconds": 30,
            "retry_on": ["40001"],
        }
    }
    assert meta["instance_retry_policy"] == {
        "max_attempts": 5,
        "backoff_seconds": 0.5,
        "max_backoff_seconds": 60,
        "retry_on": None,
    }
    # the setting does not leak to later statements
    assert db.scalar("SELECT coalesce(current_setting('df.start_meta', true), '')") == ""


# --- transactions ---------------------------------------------------------------------------------


def test_rolled_back_start_leaves_nothing(db):
    with db.connect("dftui_alice", autocommit=False) as conn:
        iid = conn.execute(f"SELECT df.start(({SEQ2}))").fetchone()[0]
        assert conn.execute("SELECT count(*) FROM df.instances").fetchone()[0] == 1
        conn.rollback()
    assert ID_RE.match(iid)
    assert totals(db) == (0, 0)
    assert db.scalar("SELECT count(*) FROM df_internal.tasks") == 0


def test_new_transaction_mode_survives_rollback(db):
    with db.connect("dftui_alice", autocommit=False) as conn:
        iid = conn.execute(
            f"SELECT df.start(({SEQ2}), 'independent', transaction_mode => 'new')"
        ).fetchone()[0]
        conn.rollback()
    assert ID_RE.match(iid)
    assert totals(db) == (1, 3)
    row = (
        db.connect("dftui_alice")
        .execute("SELECT label, submitted_by::text FROM df.instances WHERE id = %s", (iid,))
        .fetchone()
    )
    assert row == ("independent", "dftui_alice")


def test_new_transaction_mode_validates_first(db):
    msg = error_of(
        db, "SELECT df.start('{\"node_type\": \"NOPE\"}', transaction_mode => 'NEW')", role=ALICE)
    assert "Unknown node_type 'NOPE'" in msg
    assert totals(db) == (0, 0)


# --- refusals, in the documented order ------------------------------------------------------------


@pytest.fixture
def nologin_role(db):
    name = f"dftui_nologin_{db.name[-6:]}"
    with db.connect() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(name)))
        conn.execute("SET client_min_messages = warning")
        conn.execute("SELECT df.grant_usage(%s)", (name,))
    yield name
    with db.connect() as conn:
        conn.execute("SELECT df.revoke_usage(%s)", (name,))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def as_role_error(db, role: str, query: str) -> str:
    with db.connect() as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        with pytest.raises(psycopg.Error) as info:
            conn.execute(query)
    return str(info.value)


def test_nologin_role_is_refused_with_login_message(db, nologin_role):
    msg = as_role_error(db, nologin_role, "SELECT df.start('SELECT 1')")
    assert "LOGIN" in msg
    assert totals(db) == (0, 0)


def test_checks_run_in_the_documented_order(db, nologin_role):
    # mode before graph
    assert "invalid transaction_mode" in error_of(
        db, "SELECT df.start('{\"node_type\":\"X\"}', transaction_mode => 'later')", role=ALICE)
    # graph before database
    assert "Unknown node_type 'X'" in error_of(
        db, "SELECT df.start('{\"node_type\":\"X\"}', database => 'nope')", role=ALICE)
    # database before LOGIN
    assert 'database "nope" does not exist' in as_role_error(
        db, nologin_role, "SELECT df.start('SELECT 1', database => 'nope')"
    )
    # LOGIN before superuser
    with db.connect() as conn:
        conn.execute(f"CREATE ROLE su_nologin_{db.name[-6:]} SUPERUSER NOLOGIN")
    try:
        msg = as_role_error(db, f"su_nologin_{db.name[-6:]}", "SELECT df.start('SELECT 1')")
        assert "LOGIN" in msg and "enable_superuser_instances" not in msg
    finally:
        db.connect().execute(f"DROP ROLE su_nologin_{db.name[-6:]}")
    assert totals(db) == (0, 0)


def test_superuser_is_refused_unless_enabled(db):
    assert "enable_superuser_instances" in error_of(db, "SELECT df.start('SELECT 1')", role=None)
    assert totals(db) == (0, 0)
    with db.connect() as conn:
        conn.execute("SET pg_durable.enable_superuser_instances = on")
        iid = conn.execute("SELECT df.start('SELECT 1')").fetchone()[0]
    assert db.scalar("SELECT submitted_by::text FROM df.instances WHERE id = %s", (iid,)) == (
        "postgres"
    )


def test_unknown_database(db):
    assert 'database "no_such_db" does not exist' in error_of(
        db, "SELECT df.start('SELECT 1', database => 'no_such_db')", role=ALICE)
    assert totals(db) == (0, 0)


def test_ungranted_role_cannot_start(db):
    assert "permission denied" in error_of(db, "SELECT df.start('SELECT 1')", role="dftui_carol")


VALIDATION_CASES = [
    ('\'{"node_type": "FOO"}\'', "Unknown node_type 'FOO'"),
    (
        '\'{"node_type":"THEN","left_node":{"node_type":"SQL","query":"a"},'
        '"right_node":{"node_type":"BOGUS"}}\'',
        "root.right: Unknown node_type 'BOGUS'",
    ),
    (
        '\'{"node_type":"IF","query":"{\\"condition_node\\":{}}",'
        '"left_node":{"node_type":"SQL","query":"a"},'
        '"right_node":{"node_type":"SQL","query":"b"}}\'',
        "condition_node in IF must be a first-class Durofut field",
    ),
    (
        '\'{"node_type":"JOIN","query":"{\\"extra_nodes\\":[]}",'
        '"left_node":{"node_type":"SQL","query":"a"},'
        '"right_node":{"node_type":"SQL","query":"b"}}\'',
        "extra_nodes in JOIN must be a first-class Durofut field",
    ),
    (
        '\'{"node_type":"JOIN","extra_nodes":["x"],'
        '"left_node":{"node_type":"SQL","query":"a"},'
        '"right_node":{"node_type":"SQL","query":"b"}}\'',
        "extra_nodes entries must be Durofut JSON objects",
    ),
    (
        '\'{"node_type":"IF","query":"not json",'
        '"condition_node":{"node_type":"SQL","query":"c"},'
        '"left_node":{"node_type":"SQL","query":"a"},'
        '"right_node":{"node_type":"SQL","query":"b"}}\'',
        "query in IF must be valid JSON config",
    ),
    (
        '\'{"node_type":"IF","left_node":{"node_type":"SQL","query":"a"},'
        '"right_node":{"node_type":"SQL","query":"b"}}\'',
        "IF nodes need a condition_node",
    ),
    (
        '\'{"node_type":"THEN","left_node":{"node_type":"SQL","query":"a"}}\'',
        "need both left_node and right_node",
    ),
    ('\'{"node_type":"LOOP"}\'', "LOOP nodes need a body"),
    ('\'{"node_type":"SQL"}\'', "SQL nodes need a non-empty query"),
    (
        '\'{"node_type":"SQL","query":"x","left_node":{"node_type":"SQL","query":"y"}}\'',
        "take no child nodes",
    ),
    ('\'{"node_type":"SQL","query":"x","result_name":"no-way"}\'', "not a valid identifier"),
    ('\'{"node_type":"SLEEP","query":"-5"}\'', "must be non-negative"),
    ('\'{"node_type":"SLEEP","query":"soon"}\'', "whole number of seconds"),
    ('\'{"node_type":"WAIT_SCHEDULE","query":"61 * * * *"}\'', "Invalid cron expression"),
    ('\'{"node_type":"WAIT_SCHEDULE","query":"* * *"}\'', "expected 5 fields"),
    ('\'{"node_type":"SIGNAL","query":"x"}\'', "SIGNAL nodes need"),
    (
        '\'{"node_type":"SQL","query":"x","retry_policy":{"max_attempts":0}}\'',
        "max_attempts must be at least 1",
    ),
    ("'c' ?> 't'", "must be followed by"),
    ("NULL", "must not be NULL"),
    ("'SELECT 1', E'tab\\there'", "control characters"),
]


@pytest.mark.parametrize(("args", "fragment"), VALIDATION_CASES)
def test_validation_errors_write_nothing(db, args, fragment):
    msg = error_of(db, f"SELECT df.start({args})", role=ALICE)
    assert fragment in msg
    assert totals(db) == (0, 0)


def test_a_malformed_instance_retry_policy_writes_nothing(db):
    msg = error_of(
        db, "SELECT df.start_with_retry('SELECT 1', retry_policy => '{\"max_attempts\": \"x\"}')",
        role=ALICE)
    assert "invalid retry_policy" in msg
    assert totals(db) == (0, 0)


def test_invalid_graph_message_names_the_node(db):
    # (an unknown root type is pg_durable's strict parse of the root: no path; below the root
    # its graph walk names the node)
    msg = error_of(db, 'SELECT df.start(\'{"node_type": "FOO"}\')', role=ALICE, primary=True)
    assert msg == ("Invalid durable function: Unknown node_type 'FOO'. Valid types: SQL, THEN, IF, "
                   "JOIN, LOOP, BREAK, RACE, SLEEP, WAIT_SCHEDULE, HTTP, HTTP_MULTIPART, SIGNAL")
    msg = error_of(db, 'SELECT df.start(\'{"node_type": "THEN", "left_node": {"node_type": "SQL", '
                   '"query": "SELECT 1"}, "right_node": {"node_type": "FOO"}}\')', role=ALICE)
    assert msg.startswith("Invalid durable function graph: root.right: Unknown node_type 'FOO'")


# --- limits ---------------------------------------------------------------------------------------


def balanced_join(leaves: int) -> str:
    if leaves == 1:
        return '{"node_type":"SQL","query":"SELECT 1"}'
    half = leaves // 2
    return (
        f'{{"node_type":"JOIN","left_node":{balanced_join(half)},'
        f'"right_node":{balanced_join(leaves - half)}}}'
    )


def test_depth_limit_is_256(db):
    iid = start(db, ALICE, "%s", nested_loops(256))
    assert len(nodes_of(db, iid)) == 257
    msg = error_of(db, "SELECT df.start(%s)", (nested_loops(257),), role=ALICE)
    assert "maximum nesting depth of 256" in msg
    assert totals(db) == (1, 257)


def test_absurd_nesting_is_a_depth_error_not_a_crash(db):
    msg = error_of(db, "SELECT df.start(%s)", (nested_loops(20000),), role=ALICE)
    assert "maximum nesting depth of 256" in msg


def test_node_limit_is_10000(db):
    ten_thousand = '{"node_type":"LOOP","left_node":' + balanced_join(5000) + "}"  # 1 + 9999
    iid = start(db, ALICE, "%s", ten_thousand)
    assert db.scalar("SELECT count(*) FROM df.nodes WHERE instance_id = %s", (iid,)) == 10000
    msg = error_of(db, "SELECT df.start(%s)", (balanced_join(5001),), role=ALICE)  # 10001 nodes
    assert "maximum node count of 10000" in msg
    assert totals(db) == (1, 10000)


# --- df.graph_nodes on its own --------------------------------------------------------------------


def test_graph_nodes_preorder_slots_and_parents(db):
    with db.connect("dftui_alice") as conn:
        rows = conn.execute(
            "SELECT node_id, parent_id, slot, depth, node_type FROM df.graph_nodes("
            "df.if('c', 't', 'e') ~> df.loop('b', 'w'))"
        ).fetchall()
    assert [(r[2], r[3], r[4]) for r in rows] == [
        ("root", 0, "THEN"),
        ("left", 1, "IF"),
        ("left", 2, "SQL"),
        ("right", 2, "SQL"),
        ("condition", 2, "SQL"),
        ("right", 1, "LOOP"),
        ("body", 2, "SQL"),
        ("loop_condition", 2, "SQL"),
    ]
    ids = [r[0] for r in rows]
    assert len(set(ids)) == len(ids)
    assert rows[0][1] is None and rows[2][1] == ids[1] and rows[7][1] == ids[5]
    assert totals(db) == (0, 0)


def test_longest_left_nested_chain_fits_the_depth_limit(db):
    # a ~> b ~> c ... nests to the left, so 257 steps put the first leaf at depth 256.
    iid = start(db, ALICE, " ~> ".join(f"'SELECT {i}'" for i in range(257)))
    assert db.scalar("SELECT count(*) FROM df.nodes WHERE instance_id = %s", (iid,)) == 257 + 256
    msg = error_of(
        db, "SELECT df.start(" + " ~> ".join(f"'SELECT {i}'" for i in range(258)) + ")", role=ALICE)
    assert "maximum nesting depth of 256" in msg
