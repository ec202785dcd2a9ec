"""The vocabulary module, and that it still mirrors the df schema's own definitions."""

from __future__ import annotations

import json
import re

import pytest

from dftui import vocabulary as v
from engine import schema


def _schema_text() -> str:
    """Every SQL file an install applies (released baseline, migrations, routines)."""
    return "\n".join(p.read_text() for p in sorted(schema.sql_root().rglob("*.sql")))


def _check_list(constraint: str) -> set[str]:
    match = re.search(r"CONSTRAINT\s+" + constraint + r"\s+CHECK\s*\(\s*\w+\s+IN\s*\(([^)]*)\)", _schema_text())
    assert match, f"constraint {constraint} not found in the schema"
    return set(re.findall(r"'([^']+)'", match.group(1)))


def test_statuses_are_the_schemas():
    assert set(v.InstanceStatus) == _check_list("instances_status_check")
    assert set(v.STATUSES) == set(v.InstanceStatus)
    assert len(v.STATUSES) == len(set(v.STATUSES))
    assert {"completed", "failed", "cancelled"} == v.TERMINAL_STATUSES


def test_node_types_are_the_schemas():
    assert set(v.NODE_TYPES) == _check_list("nodes_node_type_check")
    assert not v.COMPOSITE_NODE_TYPES & v.LEAF_NODE_TYPES


@pytest.mark.parametrize("status", ["completed", "failed", "running", "pending", "skipped"])
def test_symbols_are_df_explains(status):
    """df.explain marks nodes with the same symbols the TUI and the CLI use."""
    assert f"WHEN '{status}' THEN ' {v.status_symbol(status)}'" in _schema_text()


def test_every_status_has_a_symbol_and_unknown_ones_a_question_mark():
    for status in (*v.STATUSES, v.SKIPPED):
        assert v.status_symbol(status) not in ("", v.UNKNOWN_SYMBOL)
    assert v.status_symbol("sleeping") == "?"


def test_children_of_each_node_type(node):
    then = node("a", "THEN", left="b", right="c")
    assert v.node_children(then) == [("step", "b"), ("step", "c")]
    cond = node("a", "IF", json.dumps({"condition_node": "x"}), left="t", right="e")
    assert v.node_children(cond) == [("condition", "x"), ("then", "t"), ("else", "e")]
    rows = node("a", "IF", json.dumps({"if_rows": "found"}), left="t", right="e")
    assert v.node_children(rows) == [("then", "t"), ("else", "e")]
    # pg_durable's df.if_rows config
    pgd_rows = node("a", "IF", '{"condition_type":"result_has_rows","result_name":"found"}',
                    left="t", right="e")
    assert v.node_children(pgd_rows) == [("then", "t"), ("else", "e")]
    join = node("a", "JOIN", json.dumps({"extra_nodes": ["d", "e"]}), left="b", right="c")
    assert v.node_children(join) == [("branch", x) for x in "bcde"]
    race = node("a", "RACE", left="b", right="c")
    assert v.node_children(race) == [("branch", "b"), ("branch", "c")]
    loop = node("a", "LOOP", json.dumps({"condition_node": "w"}), left="b")
    assert v.node_children(loop) == [("body", "b"), ("while", "w")]
    assert v.node_children(node("a", "LOOP", left="b")) == [("body", "b")]
    for leaf in v.LEAF_NODE_TYPES:
        assert v.node_children(node("a", leaf, "SELECT 1")) == []


def test_a_damaged_config_gives_no_children_instead_of_failing(node):
    join = node("a", "JOIN", json.dumps({"extra_nodes": "not a list"}), left="b", right="c")
    assert v.node_children(join) == [("branch", "b"), ("branch", "c")]
    assert v.node_children(node("a", "IF", "{not json", left="t", right="e")) == [
        ("condition", None), ("then", "t"), ("else", "e")]


@pytest.mark.parametrize(
    ("node_type", "query", "name", "text"),
    [
        ("SQL", "SELECT  1\n  FROM t", None, "SQL: SELECT 1 FROM t"),
        ("SQL", "SELECT 1", "one", "SQL: SELECT 1 |=> one"),
        ("SLEEP", "30", None, "SLEEP 30s"),
        ("WAIT_SCHEDULE", "0 9 * * *", None, "WAIT_SCHEDULE '0 9 * * *'"),
        ("SIGNAL", json.dumps({"name": "approve"}), None, "SIGNAL 'approve'"),
        ("SIGNAL", json.dumps({"name": "go", "timeout_seconds": 5}), None,
         "SIGNAL 'go' (timeout 5s)"),
        ("HTTP", json.dumps({"method": "GET", "url": "https://x.test/a"}), None,
         "HTTP GET https://x.test/a"),
        ("HTTP_MULTIPART", json.dumps({"url": "https://x.test/u"}), None,
         "HTTP_MULTIPART POST https://x.test/u"),
        ("BREAK", "null", None, "BREAK"),
        ("BREAK", "'done'", None, "BREAK 'done'"),
        ("SIGNAL", "not json", None, "SIGNAL '?'"),
        # pg_durable's configs (what dftui stores too since 0.2)
        ("SIGNAL", '{"signal_name":"approve","timeout_seconds":null}', None, "SIGNAL 'approve'"),
        ("SIGNAL", '{"signal_name":"go","timeout_seconds":5}', None, "SIGNAL 'go' (timeout 5s)"),
        ("WAIT_SCHEDULE", '{"cron_expr":"0 9 * * *"}', None, "WAIT_SCHEDULE '0 9 * * *'"),
        ("BREAK", '{"break_value":"done"}', None, "BREAK done"),
        ("BREAK", '{"break_value":null}', None, "BREAK"),
        ("FUTURE_TYPE", "x", None, "FUTURE_TYPE"),
    ],
)
def test_leaf_text(node_type, query, name, text):
    assert v.step_text(node_type, query, name) == text
