"""The graph shaping of the instance screen and "start again like this one" (graph → DSL),
checked against graphs really started with df.start."""

from __future__ import annotations

import pytest

from dftui.client import Client
from dftui.graph import build_graph, to_dsl

EXPRESSIONS = [
    "'SELECT 1 AS one' |=> 'first' ~> 'SELECT $first + 1' ~> 'SELECT 3'",
    "df.join3('SELECT 1', df.sleep(5), df.wait_for_signal('go', 30)) ~> 'SELECT ''done'''",
    "df.race(df.wait_for_schedule('*/5 * * * *'), df.sleep(60))",
    "df.if('SELECT true', 'SELECT ''yes''', df.seq('SELECT 1', 'SELECT 2'))",
    "df.as('SELECT 1 WHERE false', 'maybe') ~> df.if_rows('maybe', 'SELECT 1', 'SELECT 2')",
    "df.loop(df.seq('SELECT 1', df.if('SELECT random() > 0.5', df.break('{\"v\": 1}'), "
    "'SELECT 0')))",
    "df.loop('SELECT 1', 'SELECT false')",
]


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_graph_to_dsl_round_trip(db, expression):
    with Client(db.dsn("dftui_alice")) as client:
        original = client.evaluate(expression)
        instance_id = client.start(expression, "round-trip")
        detail = client.instance(instance_id)
        nodes = client.nodes(instance_id)
        rebuilt = to_dsl(nodes, detail.root_node)
        assert client.evaluate(rebuilt) == original, rebuilt


def test_tree_mirrors_the_dsl(db):
    with Client(db.dsn("dftui_alice")) as client:
        instance_id = client.start(
            "'SELECT 1' ~> df.if('SELECT true', df.join('SELECT 2', 'SELECT 3'), 'SELECT 4')"
            " ~> 'SELECT 5'", None)
        detail = client.instance(instance_id)
        graph = build_graph(client.nodes(instance_id), detail.root_node)
    assert graph.text == "THEN (3 steps)"
    step1, step2, step3 = graph.children
    assert (step1.slot, step1.text) == ("1.", "SQL: SELECT 1")
    assert step2.text == "IF" and [c.slot for c in step2.children] == ["condition", "then", "else"]
    join = step2.children[1]
    assert join.text == "JOIN (2 branches)"
    assert [c.text for c in join.children] == ["SQL: SELECT 2", "SQL: SELECT 3"]
    assert step3.text == "SQL: SELECT 5"
