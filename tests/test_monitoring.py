"""Monitoring: df.list_instances (keyset paging, caps, cursors), instance_info/executions/nodes
(with inferred status), the security_barrier views over engine state, metrics.

Graphs are inserted directly (as df.start would store them) with hand-set node states, so the
inference rules are tested without running an engine.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql

from tests.support import ALICE, error_of

NOT_FOUND = "Instance not found or access denied"


@dataclass
class N:
    """A node row to insert: id, type, query, children, status, result."""

    id: str
    type: str = "SQL"
    query: str | None = "SELECT 1"
    left: str | None = None
    right: str | None = None
    status: str = "pending"
    result: object = None


def make_graph(db, owner: str, nodes: list[N], status: str = "running", label: str | None = None) -> str:
    """Insert an instance whose root is nodes[0]; return its id. Node ids get a per-instance
    prefix-free form (they only need to be unique within the instance)."""
    iid = secrets.token_hex(4)
    with db.connect(autocommit=False) as conn:
        for n in nodes:
            result = None if n.result is None else json.dumps(n.result)
            conn.execute(
                "INSERT INTO df.nodes (id, instance_id, node_type, query, left_node, right_node,"
                " status, result, error, submitted_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s,"
                " CASE WHEN %s = 'failed' THEN %s::jsonb #>> '{}' END, quote_ident(%s)::regrole)",
                (n.id, iid, n.type, n.query, n.left, n.right, n.status, result, n.status, result, owner),
            )
        conn.execute(
            "INSERT INTO df.instances (id, label, root_node, status, submitted_by, completed_at)"
            " VALUES (%s, %s, %s, %s, quote_ident(%s)::regrole,"
            " CASE WHEN %s = 'completed' THEN now() END)",
            (iid, label, nodes[0].id, status, owner, status),
        )
        conn.execute("SELECT df_internal.build_node_meta(%s)", (iid,))
        conn.commit()
    return iid


def simple(db, owner: str, status: str = "running", label: str | None = None) -> str:
    node_status = {"completed": "completed", "failed": "failed"}.get(status, "running")
    result = {"rows": [{"x": 1}], "row_count": 1} if status == "completed" else (
        "boom: division by zero" if status == "failed" else None)
    return make_graph(db, owner, [N("aaaa0001", status=node_status, result=result)], status, label)


def bulk_instances(db, count: int, owner: str = "dftui_alice", *, with_nodes: bool = True,
                   label_every: int = 0) -> None:
    """Insert `count` instances fast (set-based). Three instances share each created_at so the
    id tie-break is exercised."""
    with db.connect(autocommit=False) as conn:
        conn.execute("SET LOCAL session_replication_role = replica")  # skip triggers (no engine)
        if with_nodes:
            conn.execute(
                "INSERT INTO df.nodes (id, instance_id, node_type, query, submitted_by)"
                " SELECT 'aaaa0001', lpad(to_hex(g), 8, '0'), 'SQL', 'SELECT 1', quote_ident(%s)::regrole"
                " FROM generate_series(1, %s) g",
                (owner, count),
            )
        conn.execute(
            "INSERT INTO df.instances (id, label, root_node, status, submitted_by, created_at)"
            " SELECT lpad(to_hex(g), 8, '0'),"
            "        CASE WHEN %s > 0 AND g %% %s = 0 THEN 'tagged' END,"
            "        'aaaa0001', (ARRAY['running','completed','failed'])[1 + g %% 3],"
            "        quote_ident(%s)::regrole,"
            "        timestamptz '2024-01-01 00:00:00+00' + ((g / 3) * interval '1 second')"
            " FROM generate_series(1, %s) g",
            (label_every, max(label_every, 1), owner, count),
        )
        conn.execute(
            "INSERT INTO df_internal.instance_state (instance_id, submitted_by)"
            " SELECT lpad(to_hex(g), 8, '0'), quote_ident(%s)::regrole FROM generate_series(1, %s) g",
            (owner, count),
        )
        conn.commit()
    with db.connect() as conn:
        conn.execute("ANALYZE df.instances")
        conn.execute("ANALYZE df_internal.instance_state")


def page_all(db, role: str | None, limit: int, status: str | None = None,
             label: str | None = None) -> list[str]:
    ids: list[str] = []
    cursor = None
    with db.connect(role) as conn:
        for _ in range(10_000):
            rows = conn.execute(
                "SELECT instance_id, next_cursor FROM df.list_instances(%s, %s, %s, %s)",
                (status, limit, label, cursor),
            ).fetchall()
            ids.extend(r[0] for r in rows)
            assert len(rows) <= limit
            if not rows or rows[-1][1] is None:
                break
            assert all(r[1] is not None for r in rows)
            cursor = rows[-1][1]
    return ids


# --- list_instances ---------------------------------------------------------------------------


def test_list_instances_pagination_over_2500(db) -> None:
    bulk_instances(db, 2500, label_every=7)
    bulk_instances_bob = make_graph(db, "dftui_bob", [N("bbbb0001")])
    with db.connect() as conn:
        expected = [r[0] for r in conn.execute(
            "SELECT id FROM df.instances WHERE submitted_by = 'dftui_alice'::regrole"
            " ORDER BY created_at DESC, id")]
        expected_running = [r[0] for r in conn.execute(
            "SELECT id FROM df.instances WHERE submitted_by = 'dftui_alice'::regrole"
            " AND status = 'running' ORDER BY created_at DESC, id")]
        expected_tagged = [r[0] for r in conn.execute(
            "SELECT id FROM df.instances WHERE label = 'tagged' ORDER BY created_at DESC, id")]
    assert len(expected) == 2500
    assert page_all(db, "dftui_alice", 1000) == expected
    assert page_all(db, "dftui_alice", 333) == expected
    assert page_all(db, "dftui_alice", 100, status="running") == expected_running
    assert page_all(db, "dftui_alice", 50, label="tagged") == expected_tagged
    # Bob sees only his own; the superuser sees everybody's.
    assert page_all(db, "dftui_bob", 10) == [bulk_instances_bob]
    assert len(page_all(db, None, 1000)) == 2501


def test_list_instances_short_form_and_columns(db) -> None:
    done = simple(db, "dftui_alice", "completed", label="nightly")
    failed = simple(db, "dftui_alice", "failed")
    cancelled = simple(db, "dftui_alice", "running")
    db.scalar("SELECT df.cancel(%s, 'stop it')", (cancelled,), role=ALICE)
    simple(db, "dftui_bob", "running")
    with db.connect("dftui_alice") as conn:
        rows = {r[0]: r for r in conn.execute("SELECT * FROM df.list_instances()")}
        assert set(rows) == {done, failed, cancelled}
        assert rows[done][1:5] == ("nightly", "durable_function", "completed", 1)
        # output is text, as pg_durable's: the result's JSON, the error and the reason unquoted
        assert json.loads(rows[done][5]) == {"rows": [{"x": 1}], "row_count": 1}
        assert rows[failed][3] == "failed" and rows[failed][5] == "boom: division by zero"
        assert rows[cancelled][3] == "cancelled" and rows[cancelled][5] == "stop it"
        assert [r[0] for r in conn.execute("SELECT * FROM df.list_instances('failed', 10)")] == [failed]
        assert conn.execute("SELECT count(*) FROM df.list_instances(NULL, 2)").fetchone()[0] == 2


def test_list_instances_limit_cap(db) -> None:
    msg = error_of(db, "SELECT * FROM df.list_instances(NULL, 1001)", role=ALICE, primary=True)
    assert msg.startswith(
        "df.list_instances: limit_count (1001) exceeds pg_durable.list_instances_max_limit (1000); ")
    with db.connect("dftui_alice") as conn:
        assert conn.execute("SELECT count(*) FROM df.list_instances(NULL, 1000)").fetchone()[0] == 0
        # a superuser-only setting in pg_durable: an ordinary role's SET changes nothing
        conn.execute("SET pg_durable.list_instances_max_limit = 100000")
        with pytest.raises(psycopg.Error, match=r"exceeds pg_durable.list_instances_max_limit \(1000\)"):
            conn.execute("SELECT * FROM df.list_instances(NULL, 1001)")
        conn.execute("SET pg_durable.list_instances_max_limit = 5")
        conn.execute("SELECT * FROM df.list_instances(NULL, 6, NULL, NULL)")
    database = sql.Identifier(db.name)
    with db.connect() as conn:  # an administrator's value counts
        conn.execute(sql.SQL("ALTER DATABASE {} SET pg_durable.list_instances_max_limit = 5").format(database))
    with db.connect("dftui_alice") as conn, pytest.raises(
            psycopg.Error, match=r"limit_count \(6\) exceeds pg_durable.list_instances_max_limit \(5\)"):
        conn.execute("SELECT * FROM df.list_instances(NULL, 6, NULL, NULL)")
    with db.connect() as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET pg_durable.list_instances_max_limit = 'lots'").format(database))
    with db.connect("dftui_alice") as conn, pytest.raises(psycopg.Error, match="must be a positive integer"):
        conn.execute("SELECT * FROM df.list_instances()")
    with db.connect() as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} RESET pg_durable.list_instances_max_limit").format(database))
    assert "at least 1" in error_of(db, "SELECT * FROM df.list_instances(NULL, 0)", role=ALICE)


@pytest.mark.parametrize(
    "cursor",
    [
        "zz",
        "abc",
        "v1|2024-01-01T00:00:00Z|0000000a",  # not hex
        b"v2|2024-01-01T00:00:00.000000Z|0000000a".hex(),
        b"v1|yesterday|0000000a".hex(),
        b"v1|2024-01-01T00:00:00Z|XYZ".hex(),
        b"v1|2024-13-45T00:00:00Z|0000000a".hex(),
        b"v1|2024-01-01T00:00:00Z".hex(),
        "ff",
    ],
)
def test_malformed_cursor_raises(db, cursor: str) -> None:
    msg = error_of(
        db, "SELECT * FROM df.list_instances(NULL, 10, NULL, %s)", (cursor,),
        role=ALICE, primary=True)
    assert msg.splitlines()[0] == "df.list_instances: invalid after_cursor"  # pg_durable's text


def test_well_formed_cursor_without_fraction(db) -> None:
    bulk_instances(db, 6)
    cursor = b"v1|2024-01-01T00:00:01Z|00000003".hex()
    with db.connect("dftui_alice") as conn:
        ids = [r[0] for r in conn.execute(
            "SELECT instance_id FROM df.list_instances(NULL, 10, NULL, %s)", (cursor,))]
    # created_at DESC, id ASC after (00:00:01, 00000003): 00000004, 00000005 share 00:00:01.
    assert ids == ["00000004", "00000005", "00000001", "00000002"]


def test_next_cursor_is_pg_durable_s_page_token(db) -> None:
    """As pg_durable (src/monitoring.rs): one token per page, on every row, NULL on the last
    page; the hex of 'v1|<created_at as YYYY-MM-DD"T"HH24:MI:SS.USOF>|<id>' of the page's last
    row, so a cursor pg_durable issued pages here too."""
    bulk_instances(db, 5)
    with db.connect("dftui_alice") as conn:
        conn.execute("SET TimeZone = 'Asia/Kolkata'")  # OF renders +05:30, as pg_durable's
        first = conn.execute("SELECT instance_id, next_cursor FROM df.list_instances(NULL, 2, NULL)"
                             ).fetchall()
        assert len(first) == 2 and len({r[1] for r in first}) == 1
        last_id = first[-1][0]
        created = conn.execute("SELECT to_char(created_at, 'YYYY-MM-DD\"T\"HH24:MI:SS.USOF')"
                               " FROM df.instances WHERE id = %s", (last_id,)).fetchone()[0]
        assert bytes.fromhex(first[0][1]).decode() == f"v1|{created}|{last_id}"
        assert created.endswith("+05:30")
        second = conn.execute("SELECT instance_id, next_cursor FROM df.list_instances(NULL, 2,"
                              " NULL, %s)", (first[0][1],)).fetchall()
        assert len(second) == 2 and len({r[1] for r in second}) == 1 and second[0][1] is not None
        third = conn.execute("SELECT instance_id, next_cursor FROM df.list_instances(NULL, 2,"
                             " NULL, %s)", (second[0][1],)).fetchall()
        assert [r[1] for r in third] == [None]  # the last page
        ordered = [r[0] for r in conn.execute("SELECT instance_id FROM df.list_instances(NULL, 10)")]
        assert [r[0] for r in first + second + third] == ordered
        # pg_durable's own rendering in UTC (+00) is accepted too
        conn.execute("SET TimeZone = 'UTC'")
        utc = conn.execute("SELECT to_char(created_at, 'YYYY-MM-DD\"T\"HH24:MI:SS.USOF')"
                           " FROM df.instances WHERE id = %s", (last_id,)).fetchone()[0]
        token = f"v1|{utc}|{last_id}".encode().hex()
        assert [r[0] for r in conn.execute("SELECT instance_id FROM df.list_instances(NULL, 2,"
                                           " NULL, %s)", (token,))] == [r[0] for r in second]


def test_a_status_that_matches_nothing_returns_no_rows(db) -> None:
    """As pg_durable: the filter is compared exactly; no error for an unknown status."""
    simple(db, "dftui_alice", "completed")
    with db.connect("dftui_alice") as conn:
        for status in ("done", "Completed", ""):
            assert conn.execute("SELECT * FROM df.list_instances(%s)", (status,)).fetchall() == []
            assert conn.execute("SELECT * FROM df.list_instances(%s, 10, NULL)", (status,)).fetchall() == []
        assert len(conn.execute("SELECT * FROM df.list_instances('completed')").fetchall()) == 1


def test_list_instances_uses_indexes_at_a_million_rows(db) -> None:
    """No sequential scan of df.instances for first pages, deep pages and filtered pages, as a
    granted role and as the superuser (counted in the caller's own transaction)."""
    bulk_instances(db, 1_000_000, with_nodes=False, label_every=1000)
    deep = b"v1|2024-01-02T12:00:00Z|00000000".hex()
    calls = [
        ("SELECT count(*) FROM df.list_instances(NULL, 1000, NULL, NULL)", ()),
        ("SELECT count(*) FROM df.list_instances(NULL, 100, NULL, %s)", (deep,)),
        ("SELECT count(*) FROM df.list_instances('failed', 100, NULL, %s)", (deep,)),
        ("SELECT count(*) FROM df.list_instances(NULL, 100, 'tagged', %s)", (deep,)),
        ("SELECT count(*) FROM df.list_instances('running', 100)", ()),
    ]
    for role in ["dftui_alice", None]:
        for query, params in calls:
            with db.connect(role, autocommit=False) as conn:
                assert conn.execute(query, params).fetchone()[0] > 0
                scans = dict(conn.execute(
                    "SELECT schemaname || '.' || relname, array[seq_scan, idx_scan]"
                    " FROM pg_stat_xact_user_tables WHERE (schemaname, relname) IN"
                    " (('df', 'instances'), ('df_internal', 'instance_state'))").fetchall())
                conn.rollback()
            assert scans["df.instances"][0] == 0, (role, query, scans)
            assert scans["df.instances"][1] > 0, (role, query, scans)
            assert scans["df_internal.instance_state"][0] == 0, (role, query, scans)
            assert scans["df_internal.instance_state"][1] > 0, (role, query, scans)


# --- one instance -----------------------------------------------------------------------------


def test_instance_info(db) -> None:
    done = simple(db, "dftui_alice", "completed", label="lbl")
    failed = simple(db, "dftui_alice", "failed")
    with db.connect("dftui_alice") as conn:
        row = conn.execute("SELECT * FROM df.instance_info(%s)", (done,)).fetchone()
        version = conn.execute("SELECT df.version()").fetchone()[0]
        assert row[:6] == (done, "lbl", "durable_function", version, 1, "completed")
        assert json.loads(row[6]) == {"rows": [{"x": 1}], "row_count": 1}
        row = conn.execute("SELECT status, output FROM df.instance_info(%s)", (failed,)).fetchone()
        assert row == ("failed", "boom: division by zero")
    bobs = simple(db, "dftui_bob")
    # As pg_durable: an id the caller cannot see (another role's, or unknown) gives no rows.
    with db.connect("dftui_alice") as conn:
        assert conn.execute("SELECT * FROM df.instance_info(%s)", (bobs,)).fetchall() == []
        assert conn.execute("SELECT * FROM df.instance_info('deadbeef')").fetchall() == []


def test_instance_executions_and_retry(db) -> None:
    failed = simple(db, "dftui_alice", "failed")
    with db.connect("dftui_alice") as conn:
        rows = conn.execute("SELECT * FROM df.instance_executions(%s)", (failed,)).fetchall()
        assert [(r[0], r[1], r[4]) for r in rows] == [(1, "failed", "boom: division by zero")]
        conn.execute("SELECT df.retry(%s)", (failed,))
        rows = conn.execute("SELECT execution_id, status FROM df.instance_executions(%s)", (failed,)).fetchall()
        assert rows == [(2, "running"), (1, "failed")]
        assert conn.execute("SELECT current_execution_id FROM df.instance_info(%s)", (failed,)).fetchone()[0] == 2
        assert conn.execute("SELECT execution_count FROM df.list_instances()").fetchone()[0] == 2
        assert len(conn.execute("SELECT * FROM df.instance_executions(%s, 1)", (failed,)).fetchall()) == 1
        history = conn.execute(
            "SELECT kind, requested_by::text FROM df.node_attempt_history WHERE instance_id = %s",
            (failed,)).fetchall()
        assert history == [("retry", "dftui_alice")]
        assert conn.execute("SELECT execution, previous_status FROM df.retry_history").fetchall() == [
            (2, "failed")]
    assert "at least 1" in error_of(
        db, "SELECT * FROM df.instance_executions(%s, 0)", (failed,), role=ALICE)
    with db.connect("dftui_bob") as conn:  # invisible: no rows, as pg_durable
        assert conn.execute("SELECT * FROM df.instance_executions(%s)", (failed,)).fetchall() == []


def _inferred(db, iid: str, role: str = "dftui_alice") -> dict[str, tuple[str, str | None]]:
    with db.connect(role) as conn:
        return {
            r[0]: (r[1], r[2])
            for r in conn.execute(
                "SELECT node_id, inferred_status, inferred_status_from_ancestor_id"
                " FROM df.instance_nodes(%s)", (iid,))
        }


def test_inferred_untaken_if_arm(db) -> None:
    iid = make_graph(db, "dftui_alice", [
        N("if000001", "IF", '{"condition_node":"cond0001"}', "then0001", "else0001", "running"),
        N("cond0001", status="completed", result={"rows": [{"b": True}], "row_count": 1}),
        N("then0001", status="running"),
        N("else0001"),
    ])
    got = _inferred(db, iid)
    assert got == {
        "if000001": ("running", None),
        "cond0001": ("completed", None),
        "then0001": ("running", None),
        "else0001": ("skipped", "if000001"),
    }
    # Tree order: IF, condition, then, else.
    with db.connect("dftui_alice") as conn:
        order = [r[0] for r in conn.execute("SELECT node_id FROM df.instance_nodes(%s)", (iid,))]
    assert order == ["if000001", "cond0001", "then0001", "else0001"]


def test_inferred_failed_then_and_race_loser(db) -> None:
    iid = make_graph(db, "dftui_alice", [
        N("then0001", "THEN", None, "race0001", "next0001", "failed", "x failed"),
        N("race0001", "RACE", None, "fast0001", "slow0001", "failed", "x failed"),
        N("fast0001", status="failed", result="x failed"),
        N("slow0001", "THEN", None, "slow0002", "slow0003", "running"),
        N("slow0002", status="running"),
        N("slow0003"),
        N("next0001"),
    ], status="failed")
    got = _inferred(db, iid)
    assert got["next0001"] == ("skipped", "then0001")
    assert got["slow0001"] == ("skipped", "race0001")
    assert got["slow0002"] == ("skipped", "slow0001") or got["slow0002"] == ("skipped", "race0001")
    assert got["slow0003"][0] == "skipped"
    assert got["fast0001"] == ("failed", None)


def test_inferred_superseded_loop_iteration(db) -> None:
    iid = make_graph(db, "dftui_alice", [
        N("loop0001", "LOOP", None, "body0001", None, "running"),
        N("body0001", "THEN", None, "step0001", "step0002", "completed", {"rows": [], "row_count": 0}),
        N("step0001", status="completed", result={"rows": [], "row_count": 0}),
        N("step0002", status="completed", result={"rows": [], "row_count": 0}),
    ])
    got = _inferred(db, iid)
    assert got == {
        "loop0001": ("running", None),
        "body0001": ("pending", "loop0001"),
        "step0001": ("pending", "loop0001"),
        "step0002": ("pending", "loop0001"),
    }
    # Mid-iteration (body still running) nothing is superseded.
    with db.connect() as conn:
        conn.execute("UPDATE df.nodes SET status = 'running', result = NULL WHERE instance_id = %s"
                     " AND id IN ('body0001', 'step0002')", (iid,))
    got = _inferred(db, iid)
    assert got["step0001"] == ("completed", None)
    assert got["step0002"] == ("running", None)


def test_inferred_loop_with_condition_and_join_extras(db) -> None:
    iid = make_graph(db, "dftui_alice", [
        N("loop0001", "LOOP", '{"condition_node":"cond0001"}', "join0001", None, "running"),
        N("join0001", "JOIN", '{"extra_nodes":["join0004"]}', "join0002", "join0003", "completed",
          [1, 2, 3]),
        N("join0002", status="completed", result=1),
        N("join0003", status="completed", result=2),
        N("join0004", status="completed", result=3),
        N("cond0001", status="running"),
    ])
    got = _inferred(db, iid)
    # The condition is still being evaluated: the iteration is current.
    assert got["join0004"] == ("completed", None)
    assert got["cond0001"] == ("running", None)
    with db.connect("dftui_alice") as conn:
        order = [r[0] for r in conn.execute("SELECT node_id FROM df.instance_nodes(%s)", (iid,))]
    assert order == ["loop0001", "join0001", "join0002", "join0003", "join0004", "cond0001"]
    with db.connect() as conn:
        conn.execute("UPDATE df.nodes SET status = 'completed', result = 'true' WHERE instance_id = %s"
                     " AND id = 'cond0001'", (iid,))
    got = _inferred(db, iid)
    assert got["join0004"] == ("pending", "loop0001")
    assert got["cond0001"] == ("pending", "loop0001")


def test_inferred_cancelled_instance(db) -> None:
    iid = make_graph(db, "dftui_alice", [
        N("then0001", "THEN", None, "step0001", "step0002", "running"),
        N("step0001", status="running"),
        N("step0002"),
    ])
    db.scalar("SELECT df.cancel(%s)", (iid,), role=ALICE)
    got = _inferred(db, iid)
    assert got == {
        "then0001": ("cancelled", None),
        "step0001": ("cancelled", None),
        "step0002": ("skipped", None),
    }


def test_instance_nodes_visibility(db) -> None:
    bobs = simple(db, "dftui_bob")
    with db.connect("dftui_alice") as conn:  # invisible: no rows, as pg_durable
        assert conn.execute("SELECT * FROM df.instance_nodes(%s)", (bobs,)).fetchall() == []
        assert conn.execute("SELECT * FROM df.instance_nodes(%s, 1)", (bobs,)).fetchall() == []
    assert set(_inferred(db, bobs, role="dftui_bob")) == {"aaaa0001"}


# --- views ------------------------------------------------------------------------------------

ENGINE_VIEWS = ["df.node_runs", "df.node_attempt_history", "df.loop_history",
                "df.instance_runtime", "df.retry_history"]


def _seed_engine_state(db, iid: str) -> None:
    with db.connect() as conn:
        conn.execute(
            "INSERT INTO df_internal.node_attempts (instance_id, node_id, attempt, status,"
            " started_at, error, ran_sql) VALUES (%s, 'aaaa0001', 1, 'failed', now(), 'e', 'SELECT 1')",
            (iid,))
        conn.execute(
            "INSERT INTO df_internal.loop_iterations (instance_id, loop_node_id, iteration, nodes)"
            " VALUES (%s, 'aaaa0001', 1, '[]')", (iid,))
        conn.execute(
            "INSERT INTO df_internal.retries (instance_id, requested_by, previous_status)"
            " VALUES (%s, 'dftui_alice'::regrole, 'failed')", (iid,))


def test_views_filter_to_the_querying_role(db) -> None:
    alices = simple(db, "dftui_alice")
    bobs = simple(db, "dftui_bob")
    _seed_engine_state(db, alices)
    _seed_engine_state(db, bobs)
    for view in ENGINE_VIEWS:
        query = sql.SQL("SELECT DISTINCT instance_id FROM {}").format(sql.SQL(view))
        with db.connect("dftui_alice") as conn:
            assert [r[0] for r in conn.execute(query)] == [alices], view
        with db.connect("dftui_bob") as conn:
            assert [r[0] for r in conn.execute(query)] == [bobs], view
        with db.connect() as conn:
            assert {r[0] for r in conn.execute(query)} == {alices, bobs}, view
        with db.connect("dftui_carol") as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(query)
    with db.connect("dftui_alice") as conn:
        run = conn.execute("SELECT node_id, slot, attempts FROM df.node_runs").fetchone()
        assert run == ("aaaa0001", "root", 0)


def test_views_are_security_barriers(db) -> None:
    """A leaky function in the caller's WHERE clause must not see other roles' rows."""
    simple(db, "dftui_alice")
    bobs = simple(db, "dftui_bob")
    _seed_engine_state(db, bobs)
    seen: list[str] = []
    with db.connect("dftui_alice") as conn:
        conn.add_notice_handler(lambda d: seen.append(d.message_primary or ""))
        conn.execute(
            "CREATE FUNCTION pg_temp.leak(t text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001"
            " AS $$ BEGIN RAISE NOTICE 'saw %', t; RETURN true; END $$")
        for view in ENGINE_VIEWS:
            conn.execute(sql.SQL("SELECT * FROM {} WHERE pg_temp.leak(instance_id)").format(sql.SQL(view)))
    assert not any(bobs in s for s in seen)


def test_engines_view_visible_to_granted_roles(db) -> None:
    with db.connect() as conn:
        conn.execute("INSERT INTO df_internal.engines (id, host, pid, version) VALUES ('e1', 'h', 1, '0.1.0')")
        conn.execute("INSERT INTO df_internal.engines (id, host, pid, version, stopped_at)"
                     " VALUES ('e2', 'h', 2, '0.1.0', now())")
    with db.connect("dftui_alice") as conn:
        rows = conn.execute("SELECT id, state FROM df.engines ORDER BY id").fetchall()
    assert rows == [("e1", "alive"), ("e2", "stopped")]
    with db.connect("dftui_carol") as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM df.engines")


# --- admin ------------------------------------------------------------------------------------


def test_metrics_privileges_and_values(db) -> None:
    simple(db, "dftui_alice", "completed")
    failed = simple(db, "dftui_bob", "failed")
    simple(db, "dftui_bob", "running")
    db.scalar("SELECT df.retry(%s)", (failed,), role="dftui_bob")
    row = db.scalar("SELECT to_jsonb(m) FROM df.metrics() m")
    assert row == {"total_instances": 3, "running_instances": 2, "completed_instances": 1,
                   "failed_instances": 0, "total_executions": 4, "total_events": 0}
    for role in ["dftui_alice", "dftui_carol"]:
        with db.connect(role) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM df.metrics()")
    admin = f"dftui_admin_{secrets.token_hex(3)}"
    with db.connect() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(admin)))
        conn.execute("SET client_min_messages = warning")
        conn.execute("SELECT df.grant_usage(%s, false, true)", (admin,))
    try:
        assert db.scalar("SELECT total_instances FROM df.metrics()", role=admin) == 3
    finally:
        with db.connect() as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(admin)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(admin)))


def test_duroxide_schema(db) -> None:
    assert db.scalar("SELECT df.duroxide_schema()", role=ALICE) == "df_internal"
    assert db.scalar("SELECT to_regclass(df.duroxide_schema() || '._worker_ready') IS NOT NULL")


# --- with a real engine -----------------------------------------------------------------------


def test_engine_run_is_reported_consistently(db, live_engine) -> None:
    from tests.support import start, wait_terminal

    iid = start(db, "dftui_alice",
                "('SELECT false AS go' ?> 'SELECT ''then'' AS arm' !> 'SELECT ''else'' AS arm')"
                " ~> 'SELECT 7 AS done'", )
    assert wait_terminal(db, iid) == "completed"
    with db.connect("dftui_alice") as conn:
        nodes = conn.execute(
            "SELECT node_type, query, status, inferred_status, inferred_status_from_ancestor_id"
            " FROM df.instance_nodes(%s)", (iid,)).fetchall()
        if_id = conn.execute("SELECT id FROM df.nodes WHERE instance_id = %s AND node_type = 'IF'",
                             (iid,)).fetchone()[0]
        untaken = [n for n in nodes if n[1] == "SELECT 'then' AS arm"]
        assert untaken == [("SQL", "SELECT 'then' AS arm", "pending", "skipped", if_id)]
        assert all(n[3] == "completed" for n in nodes if n[1] != "SELECT 'then' AS arm")
        listed = conn.execute("SELECT status, execution_count, output FROM df.list_instances()").fetchone()
        assert listed[:2] == ("completed", 1)
        assert json.loads(listed[2]) == {"rows": [{"done": 7}], "row_count": 1}
        runs = conn.execute(
            "SELECT count(*) FILTER (WHERE attempts = 1 AND ran_sql IS NOT NULL AND started_at IS NOT NULL"
            " AND finished_at IS NOT NULL), count(*) FROM df.node_runs WHERE instance_id = %s"
            " AND node_type = 'SQL' AND status = 'completed'", (iid,)).fetchone()
        assert runs == (3, 3)
        attempts = conn.execute("SELECT count(*) FROM df.node_attempt_history WHERE instance_id = %s"
                                " AND kind = 'attempt' AND status = 'completed'", (iid,)).fetchone()[0]
        assert attempts == 3
        executions = conn.execute("SELECT execution_id, status, event_count FROM df.instance_executions(%s)",
                                  (iid,)).fetchall()
        assert executions == [(1, "completed", 3)]
        runtime = conn.execute("SELECT started_at IS NOT NULL, finished_at IS NOT NULL, execution"
                               " FROM df.instance_runtime WHERE instance_id = %s", (iid,)).fetchone()
        assert runtime == (True, True, 1)


def test_engine_retry_adds_an_execution(db, live_engine) -> None:
    from tests.support import start, wait_terminal

    with db.connect() as conn:
        conn.execute("CREATE TABLE public.flag (ok boolean)")
        conn.execute("INSERT INTO public.flag VALUES (false)")
        conn.execute("GRANT ALL ON public.flag TO PUBLIC")
    iid = start(db, "dftui_alice", "'SELECT 1 AS a' ~> 'SELECT 1 / (SELECT ok::int FROM public.flag) AS b'")
    assert wait_terminal(db, iid) == "failed"
    with db.connect() as conn:
        conn.execute("UPDATE public.flag SET ok = true")
    db.scalar("SELECT df.retry(%s)", (iid,), role=ALICE)
    assert wait_terminal(db, iid) == "completed"
    with db.connect("dftui_alice") as conn:
        rows = conn.execute("SELECT execution_id, status, event_count, output FROM df.instance_executions(%s)",
                            (iid,)).fetchall()
        assert [r[:3] for r in rows] == [(2, "completed", 1), (1, "failed", 2)]
        assert "division by zero" in rows[1][3]
        assert json.loads(rows[0][3]) == {"rows": [{"b": 1}], "row_count": 1}
        kinds = conn.execute("SELECT kind, status FROM df.node_attempt_history WHERE instance_id = %s"
                             " ORDER BY finished_at, kind", (iid,)).fetchall()
        assert ("retry", "retried from failed") in kinds
