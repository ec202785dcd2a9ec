"""The instance graph as a tree that mirrors the DSL, and the DSL text that rebuilds a graph.

Pure functions over `client.NodeInfo` rows (no database, no Textual), so the same shaping is
testable on its own and reusable by the CLI. THEN chains are flattened into numbered steps; IF
shows condition/then/else; JOIN/RACE show their branches; LOOP shows body/while.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from dftui.client.models import NodeInfo, json_dumps
from dftui.plaintext import format_duration, shorten
from dftui.vocabulary import (
    break_value,
    cron_text,
    if_rows_result,
    is_composite,
    node_children,
    signal_name,
    status_symbol,
    step_text,
)


@dataclass
class GraphItem:
    """One line of the tree: a node (None for a synthetic line such as `rows in $x`) in a slot."""

    node: NodeInfo | None
    slot: str | None
    children: list[GraphItem] = field(default_factory=list)
    text: str = ""

    def walk(self) -> Iterator[GraphItem]:
        yield self
        for child in self.children:
            yield from child.walk()


def display_status(node: NodeInfo, instance_status: str) -> str:
    """The status a node is shown with: inferred status, and ⊘ for unfinished nodes of a
    cancelled instance."""
    status = node.inferred_status or node.status
    if instance_status == "cancelled" and status in ("pending", "running"):
        return "cancelled"
    return status


def node_summary(node: NodeInfo, width: int = 60) -> str:
    """Short text of a node, like df.explain's leaves: `SQL: SELECT …`, `SLEEP 30s`, …"""
    if is_composite(node.node_type):
        return node.node_type
    return shorten(step_text(node.node_type, node.query), width + 5)


def _step_suffix(node: NodeInfo) -> str:
    parts = []
    if node.result_name:
        parts.append(f"|=> {node.result_name}")
    if node.started_at is not None and node.finished_at is not None:
        parts.append(format_duration((node.finished_at - node.started_at).total_seconds()))
    if node.attempts and node.attempts > 1:
        parts.append(f"×{node.attempts}")
    return ("  " + "  ".join(parts)) if parts else ""


def build_graph(nodes: list[NodeInfo], root_id: str) -> GraphItem:
    """The tree for an instance. Unknown or missing node ids become visible placeholders rather
    than errors, so a half-visible or damaged graph still renders."""
    by_id = {n.id: n for n in nodes}
    seen: set[str] = set()

    def flatten(node_id: str | None) -> list[str | None]:
        node = by_id.get(node_id or "")
        if node is None or node.node_type != "THEN" or node.id in seen:
            return [node_id]
        seen.add(node.id)
        return flatten(node.left_node) + flatten(node.right_node)

    def item(node_id: str | None, slot: str | None) -> GraphItem:
        node = by_id.get(node_id or "")
        if node is None or node.id in seen:
            return GraphItem(None, slot, text=f"missing node {node_id}")
        if node.node_type == "THEN":
            steps = flatten(node.id)
            it = GraphItem(node, slot, text=f"THEN ({len(steps)} steps)")
            it.children = [item(step, f"{i}.") for i, step in enumerate(steps, 1)]
            return it
        seen.add(node.id)
        cfg = node.config
        it = GraphItem(node, slot, text=node_summary(node))
        children = node_children(node)
        if node.node_type == "IF" and if_rows_result(cfg) is not None:
            it.children.append(GraphItem(None, "condition", text=f"rows in ${if_rows_result(cfg)}"))
        elif node.node_type in ("JOIN", "RACE"):
            it.text = f"{node.node_type} ({len(children)} branches)"
        elif node.node_type == "LOOP" and node.iteration:
            it.text = f"LOOP (iteration {node.iteration})"
        branch = 0
        for role, child in children:
            if role == "branch":
                branch += 1
                role = f"branch {branch}:"
            it.children.append(item(child, role))
        return it

    return item(root_id, None)


def item_label(it: GraphItem, instance_status: str) -> tuple[str, str, str]:
    """(symbol, text, status) for one tree line."""
    if it.node is None:
        return (" ", it.text, "")
    status = display_status(it.node, instance_status)
    text = it.text + _step_suffix(it.node)
    return (status_symbol(status), text, status)


# ------------------------------------------------------------------------------------------------
# Graph -> DSL (for "start again like this one")
# ------------------------------------------------------------------------------------------------


def quote_literal(value: str) -> str:
    """A SQL string literal (standard_conforming_strings)."""
    return "'" + value.replace("'", "''") + "'"


def to_dsl(nodes: list[NodeInfo], root_id: str) -> str:
    """DSL source (df.* builder calls) that rebuilds the graph; evaluable by `Client.start`."""
    by_id = {n.id: n for n in nodes}

    def expr(node_id: str | None, depth: int) -> str:
        node = by_id.get(node_id or "")
        if node is None:
            raise ValueError(f"node {node_id} is not visible")
        pad = "  " * (depth + 1)
        cfg = node.config
        kind = node.node_type

        def call(name: str, *args: str) -> str:
            if all("\n" not in a for a in args) and sum(len(a) for a in args) < 60:
                return f"df.{name}({', '.join(args)})"
            inner = (",\n" + pad).join(args)
            return f"df.{name}(\n{pad}{inner})"

        def sub(child: str | None) -> str:
            return expr(child, depth + 1)

        if kind == "SQL":
            out = quote_literal(node.query or "")
        elif kind == "THEN":
            out = call("seq", sub(node.left_node), sub(node.right_node))
        elif kind == "JOIN":
            extras = [sub(x) for x in cfg.get("extra_nodes", [])]
            if len(extras) == 1:
                out = call("join3", sub(node.left_node), sub(node.right_node), extras[0])
            else:
                out = call("join", sub(node.left_node), sub(node.right_node))
                for extra in extras:  # more than three branches: nest (result arrays nest too)
                    out = call("join", out, extra)
        elif kind == "RACE":
            out = call("race", sub(node.left_node), sub(node.right_node))
        elif kind == "IF":
            if if_rows_result(cfg) is not None:
                out = call("if_rows", quote_literal(if_rows_result(cfg) or ""), sub(node.left_node),
                           sub(node.right_node))
            else:
                out = call("if", sub(cfg.get("condition_node")), sub(node.left_node),
                           sub(node.right_node))
        elif kind == "LOOP":
            if cfg.get("condition_node"):
                out = call("loop", sub(node.left_node), sub(cfg["condition_node"]))
            else:
                out = call("loop", sub(node.left_node))
        elif kind == "BREAK":
            value = break_value(node.query)
            out = "df.break()" if value is None else call("break", quote_literal(value))
        elif kind == "SLEEP":
            out = f"df.sleep({int(float(node.query or 0))})"
        elif kind == "WAIT_SCHEDULE":
            out = call("wait_for_schedule", quote_literal(cron_text(node.query)))
        elif kind == "SIGNAL":
            args = [quote_literal(signal_name(cfg) or "")]
            if cfg.get("timeout_seconds") is not None:
                args.append(str(int(cfg["timeout_seconds"])))
            out = call("wait_for_signal", *args)
        elif kind in ("HTTP", "HTTP_MULTIPART"):
            body_key = "parts" if kind == "HTTP_MULTIPART" else "body"
            body = cfg.get(body_key)
            if body is None:
                body_sql = "NULL"
            elif kind == "HTTP_MULTIPART" or not isinstance(body, str):
                body_sql = quote_literal(json_dumps(body)) + ("::jsonb" if kind == "HTTP_MULTIPART" else "")
            else:
                body_sql = quote_literal(body)
            headers = cfg.get("headers")
            headers_sql = "NULL" if headers is None else quote_literal(json_dumps(headers)) + "::jsonb"
            out = call(
                "http" if kind == "HTTP" else "http_multipart",
                quote_literal(str(cfg.get("url", ""))),
                quote_literal(str(cfg.get("method", "POST"))),
                body_sql,
                headers_sql,
                str(int(cfg.get("timeout_seconds") or 30)),
            )
        else:
            raise ValueError(f"unknown node type {kind}")
        if node.result_name:
            out = f"df.as({out}, {quote_literal(node.result_name)})"
        return out

    return expr(root_id, 0)
