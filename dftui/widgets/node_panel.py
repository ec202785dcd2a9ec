"""The side panel of the instance screen: everything about the selected node.

Built as one Rich renderable (SQL with syntax highlighting, the substituted SQL that ran, the
result as a table or pretty JSON, error, timing, attempts, status_details) so a refresh is a single
widget update.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Any

from rich.console import Group, RenderableType
from rich.highlighter import JSONHighlighter
from rich.syntax import Syntax
from rich.text import Text
from textual.widgets import Static

from dftui.client import NodeInfo, json_dumps, parse_ts
from dftui.graph import display_status, node_summary
from dftui.vocabulary import if_rows_result
from dftui.widgets.plain import PlainTable

from .format import (
    STATUS_STYLES,
    duration_between,
    format_time,
    status_symbol,
    status_text,
)

MAX_RESULT_ROWS = 50


def _heading(text: str) -> Text:
    return Text(f"\n{text}", style="bold underline")


def _sql(code: str, dark: bool) -> Syntax:
    return Syntax(
        code,
        "sql",
        theme="monokai" if dark else "friendly",
        word_wrap=True,
        background_color="default",
    )


def result_renderable(result: Any) -> RenderableType:
    """Row sets as a table (first MAX_RESULT_ROWS rows), anything else as pretty JSON."""
    if isinstance(result, dict) and isinstance(result.get("rows"), list):
        rows = result["rows"]
        count = result.get("row_count", len(rows))
        if not rows:
            return Text(f"{count} rows", style="dim")
        columns: list[str] = []
        for row in rows[:MAX_RESULT_ROWS]:
            for key in row if isinstance(row, dict) else []:
                if key not in columns:
                    columns.append(key)
        table = PlainTable(show_edge=False, pad_edge=False, header_style="bold")
        for col in columns:
            table.add_column(col, overflow="fold")
        for row in rows[:MAX_RESULT_ROWS]:
            table.add_row(*[_cell(row.get(c)) for c in columns])
        more = f" (showing {MAX_RESULT_ROWS})" if len(rows) > MAX_RESULT_ROWS else ""
        return Group(table, Text(f"{count} row{'s' if count != 1 else ''}{more}", style="dim"))
    return json_renderable(result)


def json_renderable(value: Any) -> Text:
    """Pretty, highlighted JSON. Not rich's JSON, which re-parses and re-encodes with the
    standard json module (digits lost, RecursionError on deep values): jsonexact is exact at any
    depth."""
    return JSONHighlighter()(Text(json_dumps(value, indent=2, ensure_ascii=False)))


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, (dict, list)):
        return json_dumps(value)
    return str(value)


def _why_status(node: NodeInfo, status: str, nodes: dict[str, NodeInfo]) -> str | None:
    """An operator's explanation of a status the node got from its surroundings rather than
    from running (never the internal node ids or stored/inferred jargon)."""
    if not node.inferred_status or node.inferred_status == node.status:
        return None
    ancestor = nodes.get(node.inferred_from or "")
    kind = ancestor.node_type if ancestor is not None else None
    if status == "skipped":
        if kind == "IF":
            return "not run: its IF took the other branch"
        if kind == "RACE":
            return "not run: another branch of its RACE finished first"
        if kind == "THEN":
            return "not run: a step before it did not complete"
        return "not run"
    if status == "cancelled":
        return "stopped: the instance was cancelled"
    if status == "failed" and kind:
        return f"failed with its {kind}"
    if status == "completed" and kind:
        return f"completed with its {kind}"
    return None


def _composite_text(node: NodeInfo, nodes: dict[str, NodeInfo]) -> str | None:
    """IF/LOOP/JOIN/RACE described in words instead of their JSON config."""
    cfg = node.config

    def step(node_id: Any) -> str:
        target = nodes.get(str(node_id or ""))
        return node_summary(target, 80) if target is not None else "?"

    if node.node_type == "IF":
        rows = if_rows_result(cfg)
        if rows is not None:
            return f"if ${rows} has rows"
        if cfg.get("condition_node"):
            return f"if {step(cfg['condition_node'])} returns true"
        return "if"
    if node.node_type == "LOOP":
        if cfg.get("condition_node"):
            return f"repeat while {step(cfg['condition_node'])} returns true"
        return "repeat until a BREAK"
    if node.node_type in ("JOIN", "RACE"):
        branches = 2 + len(cfg.get("extra_nodes") or [])
        what = "all finish" if node.node_type == "JOIN" else "the first one finishes"
        return f"{branches} branches in parallel, until {what}"
    return None


def node_details(
    node: NodeInfo, instance_status: str, *, now: datetime, tz: tzinfo | None, dark: bool = True,
    nodes: dict[str, NodeInfo] | None = None,
) -> RenderableType:
    """The full description of one node."""
    nodes = nodes or {}
    status = display_status(node, instance_status)
    parts: list[RenderableType] = []
    title = Text()
    title.append(f"{node.node_type} ", style="bold")
    title.append(node.id, style="dim")
    if node.result_name:
        title.append(f"  |=> {node.result_name}", style="cyan")
    parts.append(title)
    line = Text("status: ")
    line.append_text(status_text(status))
    why = _why_status(node, status, nodes)
    if why:
        line.append(f" — {why}", style="dim")
    parts.append(line)
    timing = []
    if node.started_at:
        timing.append(f"started {format_time(node.started_at, tz, now)}")
    if node.finished_at:
        timing.append(f"finished {format_time(node.finished_at, tz, now)}")
    if node.started_at:
        took = duration_between(node.started_at, node.finished_at, now)
        timing.append(f"took {took}" + (" (stopped with the instance)"
                                        if node.stopped_with_instance else ""))
    elif node.updated_at:
        timing.append(f"updated {format_time(node.updated_at, tz, now)}")
    runs = [a for a in node.attempt_history if a.kind != "retry"]
    if runs:
        timing.append(f"{len(runs)} attempt{'s' if len(runs) != 1 else ''}")
    elif node.attempts:
        timing.append(f"attempts {node.attempts}")
    if node.iteration and node.node_type == "LOOP":
        timing.append(f"iteration {node.iteration}")
    if timing:
        parts.append(Text(" · ".join(timing), style="dim"))

    if node.node_type == "SQL":
        parts += [_heading("Query"), _sql(node.query or "", dark)]
    elif node.node_type in ("IF", "LOOP", "JOIN", "RACE"):
        described = _composite_text(node, nodes)
        if described:
            parts += [_heading(node.node_type), Text(described)]
    elif node.query is not None:
        parts += [_heading(node_summary(node, 200))]
    if node.ran_sql and node.ran_sql != node.query:
        parts += [_heading("SQL that ran (after substitution)"), _sql(node.ran_sql, dark)]
    if node.error:
        parts += [_heading("Error"), Text(node.error, style=STATUS_STYLES["failed"])]
    if node.result is not None:
        parts += [_heading("Result"), result_renderable(node.result)]
    if node.status_details:
        parts += [_heading("Status details"), json_renderable(node.status_details)]
    if node.loop_iterations:
        table = PlainTable(show_edge=False, pad_edge=False, header_style="bold")
        for col in ("iteration", "finished", "steps"):
            table.add_column(col, overflow="fold")
        for it in node.loop_iterations[-20:]:
            body = it.get("nodes") or []
            tally: dict[str, int] = {}
            for entry in body if isinstance(body, list) else []:
                status = str(entry.get("status", "?")) if isinstance(entry, dict) else "?"
                tally[status] = tally.get(status, 0) + 1
            steps = Text()
            for status, n in sorted(tally.items()):
                steps.append(f"{status_symbol(status)}{n} ", style=STATUS_STYLES.get(status, ""))
            finished = it.get("finished_at")
            table.add_row(str(it.get("iteration", "?")),
                          format_time(parse_ts(finished), tz, now, short=True), steps)
        more = len(node.loop_iterations) - 20
        parts += [_heading(f"Previous iterations ({len(node.loop_iterations)})"), table]
        if more > 0:
            parts.append(Text(f"(showing the last 20; {more} older)", style="dim"))
    if node.attempt_history:
        parts += [_heading("Attempts"), attempts_table(node, now, tz)]
    return Group(*parts)


def attempts_table(node: NodeInfo, now: datetime, tz: tzinfo | None) -> PlainTable:
    """Every attempt, in time order and numbered distinctly (`#` counts all of them; the loop
    iteration and the execution — 1 + retries before it — say where each one belongs), with
    each df.retry between them and who asked."""
    history = node.attempt_history
    iterations = any(a.loop_iteration for a in history)
    executions = any(a.kind == "retry" for a in history)
    table = PlainTable(show_edge=False, pad_edge=False, header_style="bold")
    columns = ["#"] + (["iter"] if iterations else []) + (["exec"] if executions else [])
    for col in (*columns, "", "started", "took", "error"):
        table.add_column(col, overflow="fold", no_wrap=col in ("started", "took"))
    for a in history:
        if a.kind == "retry":
            row = ["↻"] + [""] * (len(columns) - 1)
            table.add_row(*row, Text("↻", style="cyan"), _clock(a.started_at, tz, now), "",
                          f"df.retry by {a.requested_by or '?'} ({a.status})")
            continue
        row = [str(a.run or a.attempt)]
        if iterations:
            row.append(str(a.loop_iteration or ""))
        if executions:
            row.append(str(a.execution))
        table.add_row(
            *row,
            # The symbol alone keeps the table readable in the narrow panel at 80 columns.
            status_text(a.status, word=False) if a.status in STATUS_STYLES else Text(a.status),
            _clock(a.started_at, tz, now),
            duration_between(a.started_at, a.finished_at, now),
            a.error or "",
        )
    return table


def _clock(value: datetime | None, tz: tzinfo | None, now: datetime) -> str:
    """Attempts are often seconds apart: keep the seconds (and the date)."""
    if value is None:
        return ""
    return value.astimezone(tz).strftime("%m-%d %H:%M:%S")


class NodePanel(Static):
    """Scrollable details of the selected node (the container scrolls; this renders)."""

    def show_node(
        self, node: NodeInfo | None, instance_status: str, *, now: datetime, tz: tzinfo | None,
        nodes: dict[str, NodeInfo] | None = None,
    ) -> None:
        if node is None:
            self.update(Text("Select a node to see its query, result and attempts.", style="dim"))
            return
        dark = self.app.current_theme.dark
        self.update(node_details(node, instance_status, now=now, tz=tz, dark=dark, nodes=nodes))
