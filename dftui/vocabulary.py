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
from urllib.parse import urlsplit


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


# -- node configs (df.nodes.query) -------------------------------------------------------------
# pg_durable 0.2.6 writes SIGNAL {"signal_name", "timeout_seconds"}, WAIT_SCHEDULE {"cron_expr"},
# BREAK {"break_value"} and df.if_rows {"condition_type": "result_has_rows", "result_name"};
# dftui 0.1.0 wrote {"name", ...}, the bare cron text, the value's JSON and {"if_rows"}. The
# readers below accept both, so the TUI shows a real pg_durable and an old dftui schema alike.

def _config(query: str | None) -> dict[str, Any]:
    if not query:
        return {}
    try:
        loaded = json.loads(query)
    except (ValueError, RecursionError):  # (a deeply nested HTTP body: only keys are read)
        return {}
    return loaded if isinstance(loaded, dict) else {}


def signal_name(cfg: dict[str, Any]) -> str | None:
    """The name a SIGNAL node waits for."""
    name = cfg.get("signal_name", cfg.get("name"))
    return name if isinstance(name, str) else None


def signal_target(query: str | None) -> str | None:
    """The name a SIGNAL node (given its config text) waits for."""
    return signal_name(_config(query))


def http_target(query: str | None) -> str | None:
    """`METHOD host` of an HTTP node's call (the host only: its path and query may carry
    tokens)."""
    cfg = _config(query)
    url = cfg.get("url")
    if not isinstance(url, str):
        return None
    host = urlsplit(url).hostname or url
    return f"{cfg.get('method', 'POST')} {host}"


def if_rows_result(cfg: dict[str, Any]) -> str | None:
    """The result name an IF built by df.if_rows tests, or None for a df.if."""
    if cfg.get("condition_type") == "result_has_rows":
        name = cfg.get("result_name")
    else:
        name = cfg.get("if_rows")
    return name if isinstance(name, str) else None


def cron_text(query: str | None) -> str:
    """The cron expression of a WAIT_SCHEDULE node."""
    text = (query or "").strip()
    if text.startswith("{"):
        value = _config(text).get("cron_expr")
        text = value if isinstance(value, str) else ""
    return " ".join(text.split())


def break_value(query: str | None) -> str | None:
    """The value a BREAK node leaves its loop with, as given to df.break (None: no value)."""
    text = (query or "").strip()
    try:
        loaded = json.loads(text) if text else None
    except ValueError:
        return text  # a bare text value (hand-made row)
    if isinstance(loaded, dict) and "break_value" in loaded:
        value = loaded["break_value"]
        return value if isinstance(value, str) or value is None else json.dumps(value)
    if loaded is None:
        return None
    return loaded if isinstance(loaded, str) else text  # 0.1.0: the value's JSON


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
            [] if if_rows_result(cfg) is not None else [("condition", cfg.get("condition_node"))])
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
    cfg = _config(query) if node_type not in ("SQL", "SLEEP", "WAIT_SCHEDULE") else {}
    flat = " ".join((query or "").split())
    if node_type == "SQL":
        text = f"SQL: {flat}"
    elif node_type == "SLEEP":
        text = f"SLEEP {flat}s"
    elif node_type == "WAIT_SCHEDULE":
        text = f"WAIT_SCHEDULE '{cron_text(query)}'"
    elif node_type == "SIGNAL":
        timeout = cfg.get("timeout_seconds")
        text = f"SIGNAL '{signal_name(cfg) or '?'}'" + (f" (timeout {timeout}s)" if timeout else "")
    elif node_type in ("HTTP", "HTTP_MULTIPART"):
        text = f"{node_type} {cfg.get('method', 'POST')} {cfg.get('url', '')}"
    elif node_type == "BREAK":
        value = break_value(query)
        text = "BREAK" if value is None else f"BREAK {value}"
    else:
        text = node_type
    return text + (f" |=> {result_name}" if result_name else "")
