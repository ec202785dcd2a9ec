"""Screen 8: instance history — every event of one instance in time order (df.instance_history):
submitted, started, each attempt of each node with its outcome (across retries and loop
iterations), each execution's end, retries, cancels, signals and who asked. Refreshed while
the instance runs."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from dftui.client import Client, HistoryEvent
from dftui.screens.base import CURSOR_BINDINGS, AppHeader, TableScreen
from dftui.widgets.format import STATUS_STYLES, format_time, shorten
from dftui.widgets.keybar import KeyBar
from dftui.widgets.plain import PlainDataTable

_EVENT_STYLES = {"completed": "completed", "failed": "failed", "cancelled": "cancelled",
                 "attempt completed": "completed", "attempt failed": "failed",
                 "attempt failed, retrying": "failed", "retried": "running"}


class HistoryScreen(TableScreen):
    """The timeline of one instance."""

    HELP_TITLE = "Instance history"
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("R", "refresh", "Refresh"),
        *CURSOR_BINDINGS,
    ]

    def __init__(self, instance_id: str, label: str | None = None) -> None:
        super().__init__()
        self.instance_id = instance_id
        self.label = label
        self.events: list[HistoryEvent] = []

    def compose(self) -> ComposeResult:
        yield AppHeader()
        yield Static(id="history-title")
        yield PlainDataTable(id="history", cursor_type="row", zebra_stripes=True)
        yield KeyBar()

    def on_mount(self) -> None:
        name = f"{self.instance_id} ({self.label})" if self.label else self.instance_id
        self.query_one("#history-title", Static).update(
            Text(f"history of instance {name} — loading…", style="bold"))
        self._setup_columns()
        self.query_one(DataTable).focus()
        self.reload()
        self.start_live_refresh()

    def on_resize(self) -> None:
        self._setup_columns()
        self._render_rows()

    def _setup_columns(self) -> None:
        width = self.size.width or self.app.size.width
        wide = width >= 120
        table = self.query_one(DataTable)
        table.clear(columns=True)
        # Narrow terminals: who asked goes into the detail column (see _render_rows).
        cols = [("at", "at", 19 if wide else 11), ("ex", "#", 2), ("event", "event", 24 if wide else 20),
                ("node", "node", 22 if wide else 13)]
        if wide:
            cols.append(("by", "by", 14))
        used = sum(w + 2 for _, _, w in cols) + 4
        cols.append(("detail", "detail", max(width - used, 12)))
        for key, title, w in cols:
            table.add_column(title, width=w, key=key)

    def reload(self) -> None:
        instance_id = self.instance_id

        def call(client: Client) -> list[HistoryEvent]:
            return client.history(instance_id)

        self.dapp.run_db(self, call, self._apply, group="history", on_error=self._failed)

    def _failed(self, exc) -> None:
        self.dapp.notify_error(exc)
        self.query_one("#history-title", Static).update(
            Text(f"history of instance {self.instance_id}: {exc}", style=STATUS_STYLES["failed"]))

    def _apply(self, events: list[HistoryEvent]) -> None:
        changed = events != self.events
        self.events = events
        name = f"{self.instance_id} ({self.label})" if self.label else self.instance_id
        executions = max((e.execution or 1 for e in events), default=1)
        self.query_one("#history-title", Static).update(
            Text(f"history of instance {name} — {len(events)} events, "
                 f"{executions} execution{'s' if executions != 1 else ''}", style="bold"))
        if changed:
            self._render_rows()

    def _render_rows(self) -> None:
        table = self.query_one(DataTable)
        keep = table.cursor_row
        table.clear()
        wide = (self.size.width or 80) >= 120
        now = self.dapp.now()
        for i, e in enumerate(self.events):
            node = ""
            if e.node_id:
                node = f"{e.node_type or ''} {e.node_id}".strip()
                if e.iteration:
                    node += f" it{e.iteration}"
                if e.attempt:
                    node += f" #{e.attempt}"
            style = STATUS_STYLES.get(_EVENT_STYLES.get(e.event, ""), "")
            detail = " ".join((e.detail or "").split())
            cells = [format_time(e.at, self.dapp.tz, now, short=not wide), str(e.execution or ""),
                     Text(e.event, style=style or ""), node]
            if wide:
                cells.append(e.actor or "")
            elif e.actor:
                detail = f"by {e.actor}" + (f" — {detail}" if detail else "")
            table.add_row(*cells, shorten(detail, 400), key=str(i))
        if self.events:
            table.move_cursor(row=min(max(keep, 0), len(self.events) - 1), animate=False)
