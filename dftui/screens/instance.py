"""Screen 2: one instance — its header, the node graph as a DSL-shaped tree, and the selected
node's details (SQL, the SQL that ran, result, error, timing, attempts, status_details).

The graph's shape never changes after df.start, so a refresh only relabels tree lines (keeping
the cursor and expansion) unless the node set itself changed.
"""

from __future__ import annotations

import time

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.reactive import reactive
from textual.widgets import Static, Tree
from textual.widgets.tree import TreeNode

from dftui.client import Client, InstanceDetail, NodeInfo, json_dumps
from dftui.graph import GraphItem, build_graph, display_status, item_label, to_dsl
from dftui.screens.action_flow import ActionFlow
from dftui.screens.actions import Target
from dftui.screens.activity import ActivityScreen
from dftui.screens.base import CURSOR_BINDINGS, AppHeader, BaseScreen, ThemeChanged
from dftui.screens.dialogs import StartDialog
from dftui.screens.history import HistoryScreen
from dftui.timings import instance_end
from dftui.vocabulary import TERMINAL_STATUSES, is_composite, signal_name
from dftui.widgets.export import export_result
from dftui.widgets.format import (
    STATUS_STYLES,
    duration_between,
    format_time,
    shorten,
    status_text,
)
from dftui.widgets.keybar import KeyBar
from dftui.widgets.node_panel import NodePanel


class InstanceScreen(BaseScreen):
    """Details of one instance."""

    CSS_PATH = "instance.tcss"
    # Follow mode: the header shows FOLLOW and the cursor tracks the running step (watch_follow).
    follow: reactive[bool] = reactive(False, init=False)
    WRITE_ACTIONS = {"cancel": None, "signal": None, "again": None, "retry": "retry"}
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("n", "next_failed", "Next failed"),
        Binding("N", "prev_failed", "Prev failed"),
        Binding("f", "follow", "Follow"),
        Binding("c", "cancel", "Cancel"),
        Binding("r", "retry", "Retry"),
        Binding("s", "signal", "Signal"),
        Binding("a", "again", "Run again"),
        Binding("w", "activity", "What is it doing"),
        Binding("h", "history", "History"),
        Binding("y", "copy", "Copy SQL"),
        Binding("Y", "copy_result", "Copy result", show=False),
        Binding("E", "export", "Export result"),
        Binding("i", "copy_id", "Copy id", show=False),
        Binding("R", "refresh", "Refresh"),
        *CURSOR_BINDINGS,
        Binding("right_square_bracket", "next_failed", "Next failed", show=False),
        Binding("left_square_bracket", "prev_failed", "Prev failed", show=False),
    ]

    def __init__(self, instance_id: str) -> None:
        super().__init__()
        self.instance_id = instance_id
        self.detail: InstanceDetail | None = None
        self.nodes: dict[str, NodeInfo] = {}
        self.graph: GraphItem | None = None
        self._tree_nodes: dict[str, TreeNode] = {}
        self._items: dict[int, GraphItem] = {}
        self.actions = ActionFlow(self, self._targets, nothing="Still loading this instance")

    def compose(self) -> ComposeResult:
        yield AppHeader()
        yield Static(id="instance-header")
        with Horizontal(id="instance-body"):
            tree: Tree[str | None] = Tree("graph", id="graph")
            tree.show_root = False
            tree.guide_depth = 3
            yield tree
            with VerticalScroll(id="node-scroll"):
                yield NodePanel(id="node-panel")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#instance-header", Static).update(
            Text(f"instance {self.instance_id} — loading…", style="dim"))
        self.query_one(Tree).focus()
        self.reload()
        self.start_live_refresh()

    # -- data ----------------------------------------------------------------------------------

    def reload(self) -> None:
        instance_id = self.instance_id

        def call(client: Client) -> tuple[InstanceDetail, list[NodeInfo]]:
            started = time.monotonic()
            detail = client.instance(instance_id)
            result = detail, client.nodes(instance_id, detail)
            self.refresh_cost = time.monotonic() - started
            return result

        self.dapp.run_db(self, call, self._apply, group="detail", on_error=self._failed)

    def _failed(self, exc) -> None:
        self.dapp.notify_error(exc)
        if self.detail is None:
            self.query_one("#instance-header", Static).update(
                Text(f"instance {self.instance_id}: {exc}", style=STATUS_STYLES["failed"]))

    def _apply(self, result: tuple[InstanceDetail, list[NodeInfo]]) -> None:
        detail, nodes = result
        self.detail = detail
        same_shape = set(self.nodes) == {n.id for n in nodes} and self.graph is not None
        self.nodes = {n.id: n for n in nodes}
        self.graph = build_graph(nodes, detail.root_node)
        self._render_header()
        if same_shape:
            self._relabel()
        else:
            self._build_tree()
        if self.follow:
            self._jump_to_running()
        self._show_selected()
        self.refresh_bindings()

    def refresh_factor(self) -> float:
        """Finished instances change only through retry: refreshed three times less often."""
        return 3.0 if self.detail is not None and self.detail.status in TERMINAL_STATUSES else 1.0

    # -- rendering -----------------------------------------------------------------------------

    def _render_header(self) -> None:
        d = self.detail
        if d is None:
            return
        app = self.dapp
        now = app.now()
        text = Text()
        text.append(f"{d.id} ", style="bold")
        text.append_text(status_text(d.shown_status))
        text.append(f"  {d.label}" if d.label else "  (no label)", style="bold" if d.label else "dim")
        text.append(f"  by {d.submitted_by}", style="dim")
        if self.follow:
            text.append("  FOLLOW", style="bold reverse cyan")
        text.append("\n")
        start = d.started_at or d.created_at
        # The true end: a step's checkpoint may be stamped after the instance's own end.
        end = instance_end(d, list(self.nodes.values()))
        text.append(f"created {format_time(d.created_at, app.tz, now)}")
        if d.started_at:
            text.append(f" · started {format_time(d.started_at, app.tz, now)}")
        if end:
            text.append(f" · finished {format_time(end, app.tz, now)}")
        if d.shown_status != "pending":
            text.append(f" · took {duration_between(start, end, now)}")
        if d.shown_status != d.status:
            text.append("\n(its first step is running: df.status reads 'pending' until that "
                        "step's checkpoint commits)", style="dim")
        if d.status == "failed" and d.error:
            text.append("\nerror: ", style="bold")
            text.append(shorten(d.error, 300), style=STATUS_STYLES["failed"])
        elif d.status == "cancelled" and d.cancel_reason:
            text.append(f"\ncancelled: {shorten(d.cancel_reason, 300)}", style=STATUS_STYLES["cancelled"])
        elif d.output is not None:
            text.append("\noutput: ", style="bold")
            text.append(shorten(d.output, 300))
        self.query_one("#instance-header", Static).update(text)

    def _line(self, item: GraphItem) -> Text:
        status = self.detail.status if self.detail else ""
        symbol, body, node_status = item_label(item, status)
        text = Text()
        if item.slot:
            text.append(f"{item.slot} ", style="dim italic")
        text.append(symbol, style=STATUS_STYLES.get(node_status, ""))
        text.append(" ")
        text.append(body, style="dim" if node_status in ("skipped", "pending") else "")
        return text

    def _build_tree(self) -> None:
        tree: Tree[str | None] = self.query_one(Tree)
        keep = self._selected_node_id()
        tree.clear()
        self._tree_nodes.clear()
        self._items.clear()
        if self.graph is None:
            return

        def add(parent: TreeNode, item: GraphItem) -> None:
            node_id = item.node.id if item.node else None
            if item.children:
                branch = parent.add(self._line(item), data=node_id, expand=True)
                for child in item.children:
                    add(branch, child)
            else:
                branch = parent.add_leaf(self._line(item), data=node_id)
            self._items[branch.id] = item
            if node_id is not None:
                self._tree_nodes[node_id] = branch

        add(tree.root, self.graph)
        tree.root.expand_all()
        target = self._tree_nodes.get(keep or "")
        if target is None and self.detail is not None and self.detail.status == "failed":
            failed = self._failed_nodes()
            target = failed[0] if failed else None
        if target is not None:
            def move() -> None:
                tree.move_cursor(target)
                self._show_selected()  # the highlight event may come before the nodes are set

            self.call_after_refresh(move)
        else:
            tree.cursor_line = 0

    def _relabel(self) -> None:
        if self.graph is None:
            return
        by_node = {item.node.id: item for item in self.graph.walk() if item.node is not None}
        status = self.detail.status if self.detail else ""
        for node_id, tree_node in self._tree_nodes.items():
            item = by_node.get(node_id)
            if item is None:
                continue
            self._items[tree_node.id] = item
            tree_node.set_label(self._line(item))
        del status

    def _selected_node_id(self) -> str | None:
        tree: Tree[str | None] = self.query_one(Tree)
        node = tree.cursor_node
        return node.data if node is not None else None

    def _selected_node(self) -> NodeInfo | None:
        node_id = self._selected_node_id()
        return self.nodes.get(node_id) if node_id else None

    def _show_selected(self) -> None:
        panel = self.query_one(NodePanel)
        status = self.detail.status if self.detail else ""
        panel.show_node(self._selected_node(), status, now=self.dapp.now(), tz=self.dapp.tz,
                        nodes=self.nodes)

    @on(ThemeChanged)
    def theme_changed(self) -> None:
        if self.is_mounted:
            self._show_selected()

    @on(Tree.NodeHighlighted, "#graph")
    def _highlighted(self, event: Tree.NodeHighlighted) -> None:
        self._show_selected()

    # -- navigation ----------------------------------------------------------------------------

    def _visible_order(self) -> list[TreeNode]:
        tree: Tree[str | None] = self.query_one(Tree)
        out: list[TreeNode] = []

        def walk(node: TreeNode) -> None:
            for child in node.children:
                out.append(child)
                walk(child)

        walk(tree.root)
        return out

    def _failed_nodes(self) -> list[TreeNode]:
        status = self.detail.status if self.detail else ""
        result = []
        for tree_node in self._visible_order():
            node = self.nodes.get(tree_node.data or "")
            if node is not None and display_status(node, status) == "failed" and \
                    not is_composite(node.node_type):
                result.append(tree_node)
        return result

    def _jump_failed(self, forward: bool) -> None:
        failed = self._failed_nodes()
        if not failed:
            self.notify("No failed nodes in this instance")
            return
        tree: Tree[str | None] = self.query_one(Tree)
        order = self._visible_order()
        lines = {n.id: i for i, n in enumerate(order)}
        current = lines.get(tree.cursor_node.id, -1) if tree.cursor_node else -1
        if forward:
            after = [n for n in failed if lines[n.id] > current]
            target = after[0] if after else failed[0]
        else:
            before = [n for n in failed if lines[n.id] < current]
            target = before[-1] if before else failed[-1]
        tree.move_cursor(target)

    def _jump_to_running(self) -> None:
        status = self.detail.status if self.detail else ""
        for tree_node in self._visible_order():
            node = self.nodes.get(tree_node.data or "")
            if node is not None and display_status(node, status) == "running" and \
                    not is_composite(node.node_type):
                self.query_one(Tree).move_cursor(tree_node)
                return

    # -- actions -------------------------------------------------------------------------------

    def action_cursor_down(self) -> None:
        self.query_one(Tree).action_cursor_down()

    def action_cursor_up(self) -> None:
        self.query_one(Tree).action_cursor_up()

    def action_cursor_top(self) -> None:
        self.query_one(Tree).cursor_line = 0

    def action_cursor_bottom(self) -> None:
        tree = self.query_one(Tree)
        tree.cursor_line = tree.last_line

    def action_next_failed(self) -> None:
        self._jump_failed(True)

    def action_prev_failed(self) -> None:
        self._jump_failed(False)

    def action_follow(self) -> None:
        self.follow = not self.follow
        self.notify("Follow mode on: the cursor tracks the running step" if self.follow
                    else "Follow mode off")

    def watch_follow(self, follow: bool) -> None:
        self._render_header()
        if follow:
            self._jump_to_running()

    def action_copy(self) -> None:
        node = self._selected_node()
        if node is None or not node.query:
            self.action_copy_id()
            return
        self.app.copy_to_clipboard(node.ran_sql or node.query)
        self.notify("Copied the step's SQL" if node.node_type == "SQL" else "Copied the step's text")

    def action_copy_result(self) -> None:
        node = self._selected_node()
        if node is None or node.result is None:
            self.notify("The selected node has no result")
            return
        self.app.copy_to_clipboard(json_dumps(node.result, indent=2))
        self.notify("Copied the result as JSON")

    def action_export(self) -> None:
        """Write the selected node's whole result to a file (CSV for row sets, columns in the
        statement's order; JSON otherwise) in $DFTUI_EXPORT_DIR or the current directory."""
        node = self._selected_node()
        if node is None or node.result is None:
            self.notify("The selected node has no result to export", severity="warning")
            return
        try:
            path, count = export_result(self.instance_id, node)
        except OSError as exc:
            self.notify(f"Export failed: {exc.strerror or exc}", severity="error")
            return
        rows = f"{count} row{'s' if count != 1 else ''} " if count is not None else ""
        self.notify(f"Exported {rows}to {path}", title="Export")

    def action_activity(self) -> None:
        """`w`: the running steps inside PostgreSQL (pid, waits, locks, blockers; cancel)."""
        self.app.push_screen(ActivityScreen(self.instance_id, self.detail.label if self.detail else None))

    def action_history(self) -> None:
        """`h`: every event of this instance, across retries."""
        self.app.push_screen(HistoryScreen(self.instance_id, self.detail.label if self.detail else None))

    def action_copy_id(self) -> None:
        self.app.copy_to_clipboard(self.instance_id)
        self.notify(f"Copied {self.instance_id}")

    def _targets(self) -> list[Target]:
        """This instance, once loaded (the actions' target)."""
        d = self.detail
        return [Target(d.id, d.label, d.status)] if d is not None else []

    def action_cancel(self) -> None:
        self.actions.cancel()

    def action_retry(self) -> None:
        self.actions.retry()

    def action_signal(self) -> None:
        self.actions.signal(lambda _planned: self._waited_signal())

    def _waited_signal(self) -> str:
        """The name of the signal a running SIGNAL step of this instance waits for ("")."""
        waited = ""
        for node in self.nodes.values():
            if node.node_type == "SIGNAL" and display_status(node, self.detail.status
                                                             if self.detail else "") == "running":
                waited = signal_name(node.config) or ""
        return waited

    def action_again(self) -> None:
        if self.detail is None:
            return
        try:
            source = to_dsl(list(self.nodes.values()), self.detail.root_node)
        except ValueError as exc:
            self.notify(f"Cannot rebuild this graph: {exc}", severity="error")
            return

        def started(new_id: str | None) -> None:
            if new_id:
                self.app.switch_screen(InstanceScreen(new_id))

        self.app.push_screen(StartDialog(source, self.detail.label), started)
