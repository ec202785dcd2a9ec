"""The words of a workflow, defined once for the TUI, the CLI and the tests.

Statuses and the symbol each is shown with, the node types and which of a node's references are
its children, and the one-line text of a leaf step. Every one of these mirrors the df schema:
the statuses are the CHECK constraints on df_internal.instances / df_internal.nodes plus the
inferred 'skipped' of df.instance_nodes(); the symbols and leaf texts are df.explain's
(sql/0.1.0/035_explain.sql, itself following pg_durable's src/explain.rs); the child references
are df_internal.child_refs'. When one of those changes, this module changes with it.

Pure Python — no database, no Textual, no Rich — so the client layer, the CLI, the widgets and
the tests can all import it (the import contracts in pyproject.toml keep it that way).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Protocol


class InstanceStatus(StrEnum):
    """What df.instances.status can hold, in lifecycle order (the CLI's --status choices)."""

    pending = "pending"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


# The order the TUI lists status counts in: what needs attention first.
STATUSES: tuple[str, ...] = (
    InstanceStatus.running,
    InstanceStatus.failed,
    InstanceStatus.pending,
    InstanceStatus.completed,
    InstanceStatus.cancelled,
)
TERMINAL_STATUSES: frozenset[str] = frozenset(
    {InstanceStatus.completed, InstanceStatus.failed, InstanceStatus.cancelled}
)
# A node that will never run: an untaken IF arm, the rest of a failed THEN, a RACE loser.
# Only ever inferred (df.instance_nodes().inferred_status), never stored.
SKIPPED = "skipped"

# One symbol per status, everywhere (df.explain's markers). Colour is never the only signal.
STATUS_SYMBOLS: Mapping[str, str] = {
    InstanceStatus.completed: "✓",
    InstanceStatus.failed: "✗",
    InstanceStatus.running: "⏳",
    InstanceStatus.pending: "○",
    InstanceStatus.cancelled: "⊘",
    SKIPPED: "⊘",
}
UNKNOWN_SYMBOL = "?"


def status_symbol(status: str) -> str:
    """The symbol of a status; `?` for one this version does not know (a newer backend's)."""
    return STATUS_SYMBOLS.get(status, UNKNOWN_SYMBOL)


# Node types. Composite nodes only combine their children; leaves are the steps that run.
COMPOSITE_NODE_TYPES: frozenset[str] = frozenset({"THEN", "IF", "JOIN", "RACE", "LOOP"})
LEAF_NODE_TYPES: frozenset[str] = frozenset(
    {"SQL", "SLEEP", "WAIT_SCHEDULE", "SIGNAL", "HTTP", "HTTP_MULTIPART", "BREAK"}
)
NODE_TYPES: frozenset[str] = COMPOSITE_NODE_TYPES | LEAF_NODE_TYPES


def is_composite(node_type: str) -> bool:
    return node_type in COMPOSITE_NODE_TYPES


class GraphNode(Protocol):
    """What this module needs of a node row (dftui.client.NodeInfo is one)."""

    @property
    def node_type(self) -> str: ...

    @property
    def left_node(self) -> str | None: ...

    @property
    def right_node(self) -> str | None: ...

    @property
    def config(self) -> dict[str, Any]: ...


def node_children(node: GraphNode) -> list[tuple[str, str | None]]:
    """(role, child id) of every child of a node, in the order df.explain shows them.

    Roles: THEN `step` (twice: its left, then its right); IF `condition` (absent for
    if_rows, whose condition is a result name, not a node), `then`, `else`; JOIN / RACE
    `branch` per branch (left, right, then config.extra_nodes); LOOP `body` and, for a
    loop with a condition, `while`. Leaves have none. Ids may be None or dangling in a
    damaged graph; callers show that instead of failing.
    """
    cfg = node.config
    kind = node.node_type
    if kind == "THEN":
        return [("step", node.left_node), ("step", node.right_node)]
    if kind == "IF":
        tested: list[tuple[str, str | None]] = (
            [] if "if_rows" in cfg else [("condition", cfg.get("condition_node"))])
        return [*tested, ("then", node.left_node), ("else", node.right_node)]
    if kind in ("JOIN", "RACE"):
        extra = cfg.get("extra_nodes")
        branches = [node.left_node, node.right_node, *(extra if isinstance(extra, list) else [])]
        return [("branch", b) for b in branches]
    if kind == "LOOP":
        until = cfg.get("condition_node")
        return [("body", node.left_node), *([("while", until)] if until else [])]
    return []


def step_text(node_type: str, query: str | None, result_name: str | None = None) -> str:
    """One-line text of a leaf step, as df.explain writes its leaves: `SQL: SELECT …`,
    `SLEEP 30s`, `SIGNAL 'approve'`, `HTTP GET https://…`; `|=> name` when it is named."""
    cfg: dict[str, Any] = {}
    if query and node_type not in ("SQL", "SLEEP", "WAIT_SCHEDULE"):
        try:
            loaded = json.loads(query)
            cfg = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            cfg = {}
    flat = " ".join((query or "").split())
    if node_type == "SQL":
        text = f"SQL: {flat}"
    elif node_type == "SLEEP":
        text = f"SLEEP {flat}s"
    elif node_type == "WAIT_SCHEDULE":
        text = f"WAIT_SCHEDULE '{flat}'"
    elif node_type == "SIGNAL":
        timeout = cfg.get("timeout_seconds")
        text = f"SIGNAL '{cfg.get('name', '?')}'" + (f" (timeout {timeout}s)" if timeout else "")
    elif node_type in ("HTTP", "HTTP_MULTIPART"):
        text = f"{node_type} {cfg.get('method', 'POST')} {cfg.get('url', '')}"
    elif node_type == "BREAK":
        text = "BREAK" if flat in ("", "null") else f"BREAK {flat}"
    else:
        text = node_type
    return text + (f" |=> {result_name}" if result_name else "")
