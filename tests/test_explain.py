"""df.explain (sql/0.1.0/035_explain.sql): envelopes, DSL text, plain SQL and live instances."""

from __future__ import annotations

from tests.support import ALICE, error_of, nested_loops


def explain(db, text: str, role: str | None = "dftui_alice") -> str:
    """df.explain's text without the padding pg_durable adds to every tree line (checked in
    test_tree_lines_are_padded_as_pg_durable_pads_them)."""
    out = db.scalar("SELECT df.explain(%s)", (text,), role)
    return "\n".join(line.rstrip(" ") for line in out.split("\n"))


def test_then_chain_is_flattened(db):
    assert explain(db, "'SELECT 1' ~> 'SELECT 2' ~> df.sleep(30)") == (
        "SQL: SELECT 1\n→ SQL: SELECT 2\n→ SLEEP 30s"
    )


def test_envelope_and_dsl_text_explain_the_same(db):
    envelope = db.scalar("SELECT 'SELECT 1' ~> ('SELECT 2' ~> 'SELECT 3')")
    assert explain(db, envelope) == explain(db, "'SELECT 1' ~> 'SELECT 2' ~> 'SELECT 3'")
    assert explain(db, envelope).count("→ ") == 2


def test_plain_sql_is_a_single_sql_node_truncated_to_50_chars(db):
    assert explain(db, "SELECT 1") == "SQL: SELECT 1"
    long_sql = "SELECT * FROM orders WHERE created_at > now() - interval '1 day' AND x = 1"
    out = explain(db, long_sql)
    assert out == "SQL: " + long_sql[:47] + "..."
    # as pg_durable prints it: the query as stored, its own line breaks included
    assert explain(db, "select\n  1,\n  2") == "SQL: select\n  1,\n  2"


def test_tree_lines_are_padded_as_pg_durable_pads_them(db):
    """pg_durable pads every line of the tree to the longest one plus four spaces."""
    out = db.scalar("SELECT df.explain(%s)", ("'SELECT 1' ~> df.sleep(30)",), "dftui_alice")
    assert out.split("\n") == ["SQL: SELECT 1".ljust(17), "→ SLEEP 30s".ljust(17)]
    iid = start_if_graph(db)
    header, tree = db.scalar("SELECT df.explain(%s)", (iid,), "dftui_alice").split("\n\n", 1)
    assert header.split("\n")[0] == f"Instance: {iid} (nightly)"  # the header is not padded
    lines = tree.split("\n")
    width = max(len(line.rstrip(" ")) for line in lines) + 4
    assert all(len(line) == width for line in lines), lines


def test_blocks_for_every_composite_node(db):
    out = explain(
        db,
        "df.if('SELECT true', df.join3('a' |=> 'x', 'b', df.loop('body', 'cond')),"
        " df.if_rows('r', 'x', 'y')) ~> df.wait_for_signal('go', 60) ~> df.break('{\"k\":1}')"
        " ~> df.race('p', df.http('https://example.com/hook', 'GET'))"
        " ~> df.wait_for_schedule('0 9 * * 1-5') ~> @> 'tick'",
        role="dftui_dave",
    )
    expected = """\
IF
    ? condition:
      └─SQL: SELECT true
    ✓ then:
      └─JOIN (3)
          ║ branch 1:
            ├─SQL: a |=> 'x'
          ║ branch 2:
            ├─SQL: b
          ║ branch 3:
            └─LOOP (while)
                ↻ body:
                  └─SQL: body
                ? while:
                  └─SQL: cond
    ✗ else:
      └─IF
          ✓ then:
            └─SQL: x
          ✗ else:
            └─SQL: y
→ SIGNAL 'go' (60s)
→ BREAK '{"k":1}'
→ RACE
    ║ branch 1:
      ├─SQL: p
    ║ branch 2:
      └─HTTP GET https://example.com/hook
→ WAIT '0 9 * * 1-5'
→ LOOP (infinite)
    ↻ body:
      └─SQL: tick"""
    assert out == expected


def test_invalid_graphs_are_returned_not_raised(db):
    assert explain(db, '{"node_type": "FOO"}').startswith(
        "Invalid durable function graph: root: Unknown node_type 'FOO'"
    )
    bad_child = '{"node_type":"THEN","left_node":{"node_type":"SQL","query":"a"},"right_node":{"node_type":"NOPE"}}'
    assert explain(db, bad_child).startswith(
        "Invalid durable function graph: root.right: Unknown node_type 'NOPE'"
    )
    assert "maximum nesting depth of 256" in explain(db, nested_loops(257))
    assert "Invalid durable function graph" in explain(db, '{"node_type":"SLEEP","query":"-1"}')


def test_dsl_evaluation_errors_raise(db):
    assert "left side of !> must be a ?> expression" in error_of(
        db, "SELECT df.explain(%s)", ("'a' !> 'b'",), role=ALICE)
    assert "could not evaluate the DSL expression" in error_of(
        db, "SELECT df.explain(%s)", ("'a' ~> no_such_column",), role=ALICE)


def test_dsl_text_cannot_smuggle_extra_statements(db):
    attack = "'a' ~> 'b'); CREATE TABLE public.pwned (x int); SELECT ('x'"
    assert "multi-query" in error_of(db, "SELECT df.explain(%s)", (attack,), role=None)
    assert db.scalar("SELECT to_regclass('public.pwned')") is None


def test_explaining_a_graph_writes_nothing(db):
    explain(db, "'SELECT 1' ~> 'SELECT 2'")
    explain(db, "SELECT 1")
    row = (
        db.connect()
        .execute("SELECT (SELECT count(*) FROM df.instances), (SELECT count(*) FROM df.nodes)")
        .fetchone()
    )
    assert row == (0, 0)


# --- live instances -------------------------------------------------------------------------------


def start_if_graph(db) -> str:
    return db.scalar(
        "SELECT df.start(df.if('SELECT true', 'SELECT 1', 'SELECT 2') ~> 'SELECT 3', 'nightly')",
        role=ALICE,
    )


def test_pending_instance_has_header_and_markers(db):
    iid = start_if_graph(db)
    out = explain(db, iid.upper())
    assert out == (
        f"Instance: {iid} (nightly)\n"
        "Status:   ○ pending\n"
        "\n"
        # df.start activates the graph at once: the IF and its queued condition read ⏳.
        "IF ⏳\n"
        "    ? condition:\n"
        "      └─SQL: SELECT true ⏳\n"
        "    ✓ then:\n"
        "      └─SQL: SELECT 1 ○\n"
        "    ✗ else:\n"
        "      └─SQL: SELECT 2 ○\n"
        "→ SQL: SELECT 3 ○"
    )


def test_other_roles_cannot_explain_an_instance(db):
    # as pg_durable's explain_instance: a text, the same for another role's id as a missing one
    iid = start_if_graph(db)
    assert db.scalar("SELECT df.explain(%s)", (iid,), role="dftui_bob") == f"Instance '{iid}' not found"
    assert db.scalar("SELECT df.explain('0badc0de')", role="dftui_bob") == "Instance '0badc0de' not found"


def set_statuses(db, iid: str, statuses: dict[str, str], instance_status: str) -> None:
    """Mark nodes (by query text) and the instance as the engine would have left them."""
    with db.connect() as conn:
        for query, status in statuses.items():
            result = '{"rows": [], "row_count": 0}' if status in ("completed", "failed") else None
            conn.execute(
                "UPDATE df.nodes SET status = %s, result = %s::jsonb"
                " WHERE instance_id = %s AND query = %s",
                (status, result, iid, query),
            )
        conn.execute(
            "UPDATE df.nodes SET status = %s, result = %s::jsonb WHERE instance_id = %s"
            " AND node_type IN ('IF', 'THEN')",
            (
                instance_status,
                '{"rows": []}' if instance_status in ("completed", "failed") else None,
                iid,
            ),
        )
        conn.execute(
            "UPDATE df.instances SET status = %s,"
            " completed_at = CASE WHEN %s = 'completed' THEN now() END WHERE id = %s",
            (instance_status, instance_status, iid),
        )


def test_finished_instance_markers(db):
    iid = start_if_graph(db)
    set_statuses(
        db,
        iid,
        {"SELECT true": "completed", "SELECT 1": "completed", "SELECT 3": "failed"},
        "failed",
    )
    lines = explain(db, iid).splitlines()
    assert lines[1] == "Status:   ✗ failed"
    assert "      └─SQL: SELECT true ✓" in lines
    assert "      └─SQL: SELECT 1 ✓" in lines
    assert "      └─SQL: SELECT 2 ⊘" in lines  # the untaken arm
    assert "→ SQL: SELECT 3 ✗" in lines


def test_running_instance_markers(db):
    iid = start_if_graph(db)
    set_statuses(db, iid, {"SELECT true": "running"}, "running")
    out = explain(db, iid)
    assert "Status:   ⏳ running" in out
    assert "SQL: SELECT true ⏳" in out
    assert "SQL: SELECT 3 ○" in out


def test_leaf_labels_are_pg_durable_s(db):
    """The labels of pg_durable's explain (src/explain.rs, format_node_display)."""
    url = "https://hooks.example.com/services/T000/B000/XXXXXXXXXXXX"
    out = explain(
        db,
        f"df.http('{url}', 'GET') ~> df.http_multipart('https://example.com/u', 'PUT',"
        " '[{\"name\": \"f\", \"data_b64\": \"eA==\"}]'::jsonb) ~> df.wait_for_signal('s')"
        " ~> df.break() ~> df.break(repeat('v', 30)) ~> ('a' & 'b') ~> df.sleep(5)",
        role="dftui_dave",
    )
    assert out.split("\n") == [
        f"HTTP GET {url[:37]}...",
        "→ HTTP_MULTIPART PUT https://example.com/u",
        "→ SIGNAL 's'",
        "→ BREAK",
        "→ BREAK '" + "v" * 17 + "...'",
        "→ JOIN (2)",
        "    ║ branch 1:",
        "      ├─SQL: a",
        "    ║ branch 2:",
        "      └─SQL: b",
        "→ SLEEP 5s",
    ]
