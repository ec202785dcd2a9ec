"""Graph shaping without a database: the TUI's tree, the CLI's fallback tree, and graph -> DSL."""

from __future__ import annotations

import json

import pytest

from dftui.cli.scripting import render_tree
from dftui.graph import build_graph, display_status, item_label, to_dsl


@pytest.fixture
def pipeline(node):
    """'SELECT 1' |=> 'n' ~> df.if('SELECT $n > 0', df.sleep(5), df.join(a, b, c))."""
    return [
        node("00000001", "THEN", left="00000002", right="00000003", status="running"),
        node("00000002", "SQL", "SELECT 1", result_name="n", status="completed"),
        node("00000003", "IF", json.dumps({"condition_node": "00000004"}), left="00000005",
             right="00000006", status="running"),
        node("00000004", "SQL", "SELECT $n > 0", status="completed"),
        node("00000005", "SLEEP", "5", status="running"),
        node("00000006", "JOIN", json.dumps({"extra_nodes": ["00000009"]}), left="00000007",
             right="00000008", inferred="skipped"),
        node("00000007", "SQL", "SELECT 'a'", inferred="skipped"),
        node("00000008", "SQL", "SELECT 'b'", inferred="skipped"),
        node("00000009", "SQL", "SELECT 'c'", inferred="skipped"),
    ]


def test_tree_flattens_then_and_labels_every_slot(pipeline):
    root = build_graph(pipeline, "00000001")
    lines = [(it.slot, it.text) for it in root.walk()]
    assert lines == [
        (None, "THEN (2 steps)"),
        ("1.", "SQL: SELECT 1"),
        ("2.", "IF"),
        ("condition", "SQL: SELECT $n > 0"),
        ("then", "SLEEP 5s"),
        ("else", "JOIN (3 branches)"),
        ("branch 1:", "SQL: SELECT 'a'"),
        ("branch 2:", "SQL: SELECT 'b'"),
        ("branch 3:", "SQL: SELECT 'c'"),
    ]


def test_missing_and_cyclic_references_render_as_placeholders(node):
    nodes = [node("00000001", "THEN", left="00000002", right="0000dead"),
             node("00000002", "LOOP", left="00000001")]
    texts = [it.text for it in build_graph(nodes, "00000001").walk()]
    assert texts == ["THEN (2 steps)", "LOOP", "missing node 00000001", "missing node 0000dead"]


def test_cli_tree_is_the_tui_tree_as_text(pipeline):
    assert render_tree(pipeline, "00000001", "running").splitlines() == [
        "⏳ THEN (2 steps)",
        "  1. ✓ SQL: SELECT 1  |=> n",
        "  2. ⏳ IF",
        "    condition ✓ SQL: SELECT $n > 0",
        "    then ⏳ SLEEP 5s",
        "    else ⊘ JOIN (3 branches)",
        "      branch 1: ⊘ SQL: SELECT 'a'",
        "      branch 2: ⊘ SQL: SELECT 'b'",
        "      branch 3: ⊘ SQL: SELECT 'c'",
    ]


def test_unfinished_nodes_of_a_cancelled_instance_show_as_cancelled(pipeline):
    sleep = pipeline[4]
    assert display_status(sleep, "running") == "running"
    assert display_status(sleep, "cancelled") == "cancelled"
    assert display_status(pipeline[1], "cancelled") == "completed"
    symbol, _, status = item_label(build_graph(pipeline, "00000005"), "cancelled")
    assert (symbol, status) == ("⊘", "cancelled")


def test_dsl_rebuilds_the_graph(pipeline):
    assert to_dsl(pipeline, "00000001") == (
        "df.seq(\n"
        "  df.as('SELECT 1', 'n'),\n"
        "  df.if(\n"
        "    'SELECT $n > 0',\n"
        "    df.sleep(5),\n"
        "    df.join3('SELECT ''a''', 'SELECT ''b''', 'SELECT ''c''')))"
    )


def test_dsl_of_an_invisible_node_is_an_error(node):
    with pytest.raises(ValueError, match="not visible"):
        to_dsl([node("00000001", "THEN", left="00000002", right="00000003")], "00000001")
