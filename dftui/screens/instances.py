"""Screen 1, the home screen: the table of instances.

Scales to millions of rows: rows are fetched in keyset pages (the next page is requested as the
cursor nears the end), status counts are capped index counts or planner estimates, and the live
refresh re-reads only the window already loaded. The cursor stays on the same instance id across
refreshes.

This module is the screen: which rows are loaded and when, keys and the status line. Each other
job has a module of its own — what the `/` box means (`instance_filters`), how rows sort
(`instance_order`), what is selected (`selection`), acting on instances (`action_flow`), and the
widgets: the table (`widgets/instance_table`), the filter box (`widgets/filter_bar`), the status
tabs (`widgets/status_tabs`), the health line (`widgets/health_line`) and the status line
(`widgets/list_status`).

Why it is still near 600 lines: what is left is one job — which rows are loaded (first load,
live window, next pages, sort and filter changes) and the screen's 22 key bindings, each a short
handler that changes that state; splitting the handlers from the state they change would send a
reader back and forth between files.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from textual import on
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.widgets import DataTable

from dftui.client import Client, InstancePage, InstanceSummary, StatusCounts
from dftui.screens.action_flow import ActionFlow
from dftui.screens.actions import Plan
from dftui.screens.base import CURSOR_BINDINGS, AppHeader, TableScreen, ThemeChanged
from dftui.screens.dialogs import GotoDialog, LabelPicker, StartDialog
from dftui.screens.history import HistoryScreen
from dftui.screens.instance import InstanceScreen
from dftui.screens.instance_filters import Filters, parse_filter
from dftui.screens.instance_order import SERVER_ORDER, SORT_KEYS, is_after
from dftui.screens.selection import Selection
from dftui.widgets.filter_bar import FilterBar
from dftui.widgets.health_line import HealthLine
from dftui.widgets.instance_table import (
    WIDE,
    InstanceTable,
    plan_columns,
    row_cells,
    wanted_label_width,
)
from dftui.widgets.keybar import KeyBar
from dftui.widgets.list_status import ListStatus, StatusLine
from dftui.widgets.status_tabs import NARROW, STATUS_TABS, StatusTabs

__all__ = ["PAGE_SIZE", "Filters", "InstancesScreen", "parse_filter"]

PAGE_SIZE = 100
SELECT_ALL_CAP = 10_000  # `*` selects at most this many matching instances (said when capped)
LOAD_AHEAD = 20  # fetch the next page when the cursor is this close to the last loaded row
REFRESH_WINDOW = 1000  # the live refresh re-reads at most this many rows from the top
SEEK_LIMIT = 10_000  # after a re-sort, pages are read (REFRESH_WINDOW rows each) to find the
# cursor's instance in the new order up to this many rows; beyond it the cursor goes to the top


class InstancesScreen(TableScreen):
    """All instances the role can see, newest first. The home screen."""

    HOME = True
    CSS_PATH = "instances.tcss"
    WRITE_ACTIONS = {"cancel": None, "signal": None, "new_run": None, "retry": "retry"}
    BINDINGS = [
        Binding("slash", "filter", "Filter"),
        Binding("space", "toggle_select", "Select"),
        Binding("asterisk", "select_all", "Select all matching", show=False),
        Binding("S", "cycle_sort", "Sort by next column", show=False),
        Binding("h", "history", "History", show=False),
        Binding("i", "goto_id", "Go to id", show=False),
        Binding("c", "cancel", "Cancel"),
        Binding("r", "retry", "Retry"),
        Binding("s", "signal", "Signal"),
        Binding("n", "new_run", "New run"),
        Binding("y", "copy", "Copy id"),
        Binding("R", "refresh", "Refresh"),
        Binding("o", "toggle_sort", "Reverse sort", show=False),
        Binding("l", "pick_label", "Labels", show=False),
        *CURSOR_BINDINGS,
        Binding("escape", "clear", "Clear filter/selection", show=False),
        Binding("1", "status('all')", "All", show=False),
        Binding("2", "status('running')", "Running", show=False),
        Binding("3", "status('failed')", "Failed", show=False),
        Binding("4", "status('pending')", "Pending", show=False),
        Binding("5", "status('completed')", "Completed", show=False),
        Binding("6", "status('cancelled')", "Cancelled", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.filters = Filters()
        self.rows: list[InstanceSummary] = []
        self.next_cursor: tuple[Any, ...] | None = None
        self.selection = Selection()
        self.counts: StatusCounts | None = None
        self.loading_more = False
        self.loaded_once = False
        self._generation = 0  # bumps on every filter change; stale pages are dropped
        self._columns: list[str] = []
        self._wide = False
        self._width = 0
        self._health: dict | None = None
        self._filter_problem: str | None = None
        self._label_width = 0
        self.sort_key = SERVER_ORDER  # one of SORT_KEYS; "started" is the server's order
        self.sort_reverse = False  # for "started": oldest first (Filters.oldest_first)
        # After a re-sort: the instance the cursor was on, until the pages of the new order
        # that hold it are loaded (at most SEEK_LIMIT rows are read to find it).
        self._seek: str | None = None
        self.actions = ActionFlow(self, lambda: self.selection.targets(self.rows, self.current_id),
                                  after=self._clear_selection)

    @property
    def selected(self) -> set[str]:
        """The selected instance ids (loaded or brought in by `*`)."""
        return self.selection.ids

    # -- layout --------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield AppHeader()
        yield StatusTabs(id="summary")
        yield HealthLine(id="health-line")
        yield FilterBar(id="filter")
        yield InstanceTable(id="instances", cursor_type="row", zebra_stripes=True)
        yield StatusLine(id="statusline")
        yield KeyBar()

    @property
    def table(self) -> InstanceTable:
        return self.query_one(InstanceTable)

    def on_mount(self) -> None:
        self._setup_columns()
        self.table.focus()
        self.reload()
        self.start_live_refresh()

    def on_resize(self) -> None:
        width = self.size.width
        if width != self._width:
            keep = self.current_id  # before the columns (and the cursor) are rebuilt
            self._setup_columns()
            self._render_rows(keep_id=keep)
        self._render_summary()

    def _setup_columns(self) -> None:
        width = self.size.width or self.app.size.width
        self._width = width
        self._wide = width >= WIDE
        self._label_width = wanted_label_width(self.rows)
        columns = plan_columns(
            width, see_others=bool(self.dapp.info and self.dapp.info.capabilities.can_see_others),
            wanted_label=self._label_width, sort_key=self.sort_key,
            oldest_first=self.filters.oldest_first, sort_reverse=self.sort_reverse)
        self._columns = [c.key for c in columns]
        self.table.set_columns(columns)

    # -- data ----------------------------------------------------------------------------------

    @property
    def current_id(self) -> str | None:
        table = self.table
        if not self.rows or table.cursor_row < 0 or table.cursor_row >= len(self.rows):
            return None
        return self.rows[table.cursor_row].id

    def _list_args(self) -> dict:
        f = self.filters
        since = self.dapp.now() - f.since if f.since else None
        sort = None if self.sort_key == SERVER_ORDER else self.sort_key
        return {"status": f.status, "label": f.label_exact, "label_like": f.label_like,
                "text": f.text, "since": since, "oldest_first": f.oldest_first,
                "sort": sort, "descending": self.sort_reverse}

    def _count_args(self) -> dict:
        """The list's filters minus status and order: the tab counts follow the filter."""
        args = self._list_args()
        del args["status"], args["oldest_first"], args["sort"], args["descending"]
        return args

    def reload(self) -> None:
        """Re-read from the top (filter change, R, reconnect); keeps the cursor's instance."""
        self._generation += 1
        self._read_window(merge=False)

    def live_refresh(self) -> None:
        """The periodic refresh: the loaded window from the top, older loaded rows kept."""
        self._read_window(merge=True)

    def _read_window(self, *, merge: bool) -> None:
        """Read the loaded window from the top (at most REFRESH_WINDOW rows), the counts and
        the health line. A live refresh (`merge`) keeps older loaded rows and measures itself:
        expensive filters (free text scans) back the poll off instead of hammering the server."""
        generation = self._generation
        args = self._list_args()
        count_args = self._count_args()
        limit = min(max(len(self.rows), PAGE_SIZE), REFRESH_WINDOW)

        def call(client: Client) -> tuple[InstancePage, StatusCounts]:
            started = time.monotonic()
            self._health = client.health_line()
            result = (client.list_instances(limit=limit, **args),
                      client.status_counts(**count_args))
            if merge:
                self.refresh_cost = time.monotonic() - started
            return result

        self.dapp.run_db(self, call, lambda res: self._apply_reload(res, generation, merge),
                         group="list")

    def _apply_reload(self, result: tuple[InstancePage, StatusCounts], generation: int,
                      merge: bool) -> None:
        if generation != self._generation:
            return
        page, counts = result
        keep = self._seek or self.current_id
        rows = list(page.rows)
        next_cursor = page.next_cursor
        if merge and page.next_cursor is not None and len(self.rows) >= len(page.rows) and rows:
            # Keep the already-loaded rows beyond the refreshed window (and their cursor: a
            # cursor on row 1,500 stays there). In the default order they are the rows older
            # than the window's last; in another order, those loaded after the window's last
            # row (by position: the server's keys are not kept per row).
            older = self._beyond(rows)
            rows += older
            next_cursor = self.next_cursor if older else page.next_cursor
        self.selection.keep_only({r.id for r in rows})
        self.counts = counts
        self.next_cursor = next_cursor
        changed = [r.id for r in rows] != [r.id for r in self.rows]
        old = {r.id: r for r in self.rows}
        self.rows = rows
        self.loaded_once = True
        if wanted_label_width(self.rows) != self._label_width:
            self._setup_columns()  # a longer (or no longer any) label: share the width again
            changed = True
        if changed:
            self._render_rows(keep_id=keep)
        else:
            self.table.update_changed(self.rows, old, self._columns, self._cells)
            self._render_status_line()
        self._render_summary()
        self._found_seek()
        self._maybe_load_more()

    def _beyond(self, window: list[InstanceSummary]) -> list[InstanceSummary]:
        """The loaded rows that come after a refreshed `window` (read from the top)."""
        last = window[-1]
        shown = {r.id for r in window}
        if self.sort_key == SERVER_ORDER:
            key = (last.created_at, last.id)
            return [r for r in self.rows
                    if r.id not in shown and is_after(r, key, self.filters.oldest_first)]
        ids = [r.id for r in self.rows]
        start = ids.index(last.id) + 1 if last.id in ids else len(window)
        return [r for r in self.rows[start:] if r.id not in shown]

    def _found_seek(self) -> None:
        """Put the cursor on the instance sought after a re-sort once it is loaded; give up
        when it is not within SEEK_LIMIT rows (or no longer matches)."""
        if self._seek is None:
            return
        if any(r.id == self._seek for r in self.rows):
            self.table.move_cursor(row=self.table.get_row_index(self._seek), animate=False)
            self._seek = None
        elif self.next_cursor is None or len(self.rows) >= SEEK_LIMIT:
            self._seek = None

    def _maybe_load_more(self) -> None:
        table = self.table
        if self.loading_more or self.next_cursor is None:
            return
        if table.cursor_row < len(self.rows) - LOAD_AHEAD and self._seek is None:
            return
        self.loading_more = True
        generation = self._generation
        args = self._list_args()
        after = self.next_cursor
        size = REFRESH_WINDOW if self._seek is not None else PAGE_SIZE  # seeking: big pages

        def call(client: Client) -> InstancePage:
            return client.list_instances(limit=size, after=after, **args)

        def done(page: InstancePage) -> None:
            self.loading_more = False
            if generation != self._generation or after != self.next_cursor:
                return
            known = {r.id for r in self.rows}
            new = [r for r in page.rows if r.id not in known]
            self.next_cursor = page.next_cursor
            self.rows += new
            for r in new:
                table.add_row(*self._cells(r), key=r.id)
            self._render_status_line()
            self._found_seek()
            self._maybe_load_more()

        def failed(exc) -> None:
            self.loading_more = False
            self.dapp.notify_error(exc)

        self.dapp.run_db(self, call, done, group="more", on_error=failed)

    # -- rendering -----------------------------------------------------------------------------

    def _cells(self, row: InstanceSummary) -> list:
        return row_cells(row, self._columns, selected=row.id in self.selection,
                         now=self.dapp.now(), tz=self.dapp.tz, wide=self._wide)

    def _render_rows(self, keep_id: str | None) -> None:
        self.table.fill(self.rows, self._cells, keep_id)
        self._render_status_line()

    def _render_summary(self) -> None:
        """The health line and the status tabs: assigning their state redraws them."""
        self.query_one(HealthLine).health = self._health
        tabs = self.query_one(StatusTabs)
        tabs.counts = self.counts
        tabs.active = self.filters.status
        tabs.narrow = (self.size.width or 80) < NARROW

    def _render_status_line(self) -> None:
        sort = None if self.sort_key == SERVER_ORDER else (SORT_KEYS[self.sort_key], self.sort_reverse)
        self.query_one(StatusLine).status = ListStatus(
            shown=len(self.rows), more=self.next_cursor is not None, selected=len(self.selection),
            sort=sort, filter=self.filters.describe(), problem=self._filter_problem,
            loaded=self.loaded_once, empty=self._empty_hint())

    def _empty_hint(self) -> str:
        info = self.dapp.info
        if self.dapp.read_only:
            return "no instances yet"
        if info is not None and info.is_superuser:
            return ("no instances yet — superusers cannot start workflows; connect as a role "
                    "granted df usage (dftui grant ROLE) to start one")
        return "no instances yet — press n to start one"

    @on(ThemeChanged)
    def theme_changed(self) -> None:
        self._render_rows(keep_id=self.current_id) if self.is_mounted else None

    # -- events --------------------------------------------------------------------------------

    @on(DataTable.RowSelected, "#instances")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    @on(DataTable.RowHighlighted, "#instances")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._maybe_load_more()

    @on(FilterBar.Settled)
    def _filter_settled(self, event: FilterBar.Settled) -> None:
        """Typing paused (or enter): apply the box. An unfinished term (`status:fa`) shows its
        problem in the status line; on enter it is also notified, and the list keeps focus."""
        if not self._apply_filter(event.value, loud=event.submitted) or not event.submitted:
            return
        self.query_one(FilterBar).display = bool(event.value)
        self.table.focus()

    def _apply_filter(self, value: str, *, loud: bool = False) -> bool:
        try:
            filters = parse_filter(value, self.filters)
        except ValueError as exc:
            self._filter_problem = str(exc)
            if loud:
                self.notify(str(exc), severity="error")
            self._render_status_line()
            return False
        self._filter_problem = None
        if filters != self.filters:
            self.filters = filters
            self._filters_changed()
        else:
            self._render_status_line()
        return True

    def _filters_changed(self) -> None:
        self.rows = []
        self.next_cursor = None
        self.selection.clear()
        self.table.clear()
        self._render_summary()
        self._render_status_line()
        self.reload()

    # -- actions -------------------------------------------------------------------------------

    def action_open(self) -> None:
        instance_id = self.current_id
        if instance_id is None:
            return
        self.app.push_screen(InstanceScreen(instance_id))

    def action_filter(self) -> None:
        self.query_one(FilterBar).open(self.filters.describe())

    def action_clear(self) -> None:
        box = self.query_one(FilterBar)
        if box.has_focus:
            box.value = ""
            box.display = bool(self.filters.describe())
            self.table.focus()
            return
        if self.selection:
            self.selection.clear()
            self._render_rows(keep_id=self.current_id)
            return
        if self.filters != Filters():
            self.filters = Filters()
            box.value = ""
            box.display = False
            self._filters_changed()

    def action_status(self, status: str) -> None:
        self.filters = replace(self.filters, status=None if status == "all" else status)
        self._filters_changed()

    def action_toggle_sort(self) -> None:
        """`o`: reverse the sort (for "started": oldest/newest first), over every matching
        row: the server re-orders, the selection stays."""
        if self.sort_key == SERVER_ORDER:
            self.filters = replace(self.filters, oldest_first=not self.filters.oldest_first)
            self.notify("Oldest first" if self.filters.oldest_first else "Newest first")
        else:
            self.sort_reverse = not self.sort_reverse
        self._resort()

    def action_cycle_sort(self) -> None:
        """`S`: sort by the next column (started → id → label → status → …)."""
        keys = [k for k in SORT_KEYS if k in self._columns]
        index = keys.index(self.sort_key) if self.sort_key in keys else -1
        self.set_sort(keys[(index + 1) % len(keys)])

    def set_sort(self, key: str) -> None:
        """Sort by `key` (a click on the same header again reverses it)."""
        if key not in SORT_KEYS:
            return
        if key == self.sort_key:
            self.action_toggle_sort()
            return
        self.sort_key = key
        self.sort_reverse = False
        self.notify(f"Sorted by {SORT_KEYS[key]} (every matching instance)")
        self._resort()

    def _resort(self) -> None:
        """Re-read the loaded window in the new order (the server sorts every matching row);
        the cursor stays on its instance (the pages holding it are loaded, up to SEEK_LIMIT
        rows), the selection stays."""
        self._seek = self.current_id
        self._setup_columns()  # (the header's arrow; it empties the table: refill it till then)
        self._render_rows(keep_id=self._seek)
        self.reload()  # (a page of the old order arriving later is dropped: a new generation)

    @on(DataTable.HeaderSelected, "#instances")
    def _header_selected(self, event: DataTable.HeaderSelected) -> None:
        self.set_sort(str(event.column_key.value))

    def action_pick_label(self) -> None:
        def picked(label: str | None) -> None:
            if label is None:
                return
            self.filters = replace(self.filters, label=f"={label}" if label else None)
            self._filters_changed()

        self.app.push_screen(LabelPicker(self.filters.label_exact), picked)

    def action_toggle_select(self) -> None:
        instance_id = self.current_id
        if instance_id is None:
            return
        table = self.table
        table.mark(instance_id, self.selection.toggle(instance_id))
        if table.cursor_row < len(self.rows) - 1:
            table.action_cursor_down()
        self._render_status_line()

    def action_select_all(self) -> None:
        """Select every instance matching the filter — all of them, not only the loaded rows
        (read from the server, up to SELECT_ALL_CAP) — or clear when all are selected."""
        if self.selection.all_matching:
            self.selection.clear()
            self._render_rows(keep_id=self.current_id)
            self.notify("Selection cleared")
            return
        generation = self._generation
        args = self._list_args()

        def call(client: Client) -> InstancePage:
            return client.list_instances(limit=SELECT_ALL_CAP, **args)

        def done(page: InstancePage) -> None:
            if generation != self._generation:
                return
            self.selection.select_matching(page.rows)
            self._render_rows(keep_id=self.current_id)
            capped = (f" (the first {SELECT_ALL_CAP:,}; more match — narrow the filter)"
                      if page.next_cursor else "")
            self.notify(f"{len(self.selection):,} selected: all matching the filter{capped}"
                        if self.selection else "Nothing matches the filter")

        self.dapp.run_db(self, call, done, group="select-all")

    def action_history(self) -> None:
        instance_id = self.current_id
        if instance_id is None:
            return
        label = next((r.label for r in self.rows if r.id == instance_id), None)
        self.app.push_screen(HistoryScreen(instance_id, label))

    def action_goto_id(self) -> None:
        """`i`: jump to an instance by id (or a unique prefix of one) and open it."""
        def chosen(text: str | None) -> None:
            if text:
                self._goto(text)

        self.app.push_screen(GotoDialog(), chosen)

    def _goto(self, text: str) -> None:
        prefix = text.strip().lower()

        def call(client: Client) -> InstancePage:
            return client.list_instances(text=prefix, limit=50)

        def done(page: InstancePage) -> None:
            exact = [r for r in page.rows if r.id == prefix]
            hits = exact or [r for r in page.rows if r.id.startswith(prefix)]
            if len(hits) != 1:
                self.notify(f"no instance id starts with {prefix!r}" if not hits
                            else f"{len(hits)} instance ids start with {prefix!r}; type more of it",
                            severity="warning")
                return
            self.app.push_screen(InstanceScreen(hits[0].id))

        self.dapp.run_db(self, call, done, group="goto")

    def hint_refresh(self) -> bool:
        """A LISTEN hint: refresh the loaded window now (once the first load is done)."""
        return self.loaded_once and super().hint_refresh()

    def action_copy(self) -> None:
        instance_id = self.current_id
        if instance_id:
            self.app.copy_to_clipboard(instance_id)
            self.notify(f"Copied {instance_id}")

    def action_cancel(self) -> None:
        self.actions.cancel()

    def action_retry(self) -> None:
        self.actions.retry()

    def action_signal(self) -> None:
        self.actions.signal(self._waited_signal)

    def _waited_signal(self, planned: Plan) -> str:
        """The signal the planned instances wait for, when they all wait for the same one."""
        waited = set()
        for target in planned.apply:
            step = next((r.current_step for r in self.rows if r.id == target.id), None) or ""
            match = re.match(r"SIGNAL '([^']+)'", step)
            if match:
                waited.add(match.group(1))
        return waited.pop() if len(waited) == 1 else ""

    def action_new_run(self) -> None:
        self.app.push_screen(StartDialog(), self._started)

    def _started(self, instance_id: str | None) -> None:
        if instance_id:
            self.reload()

    def _clear_selection(self) -> None:
        """After an action: nothing stays selected."""
        had = bool(self.selection)
        self.selection.clear()
        if had:
            self._render_rows(keep_id=self.current_id)

    def palette_commands(self) -> Iterator[SystemCommand]:
        """One palette command per status tab."""
        for status, title in STATUS_TABS:
            yield SystemCommand(f"Show {title.lower()} instances", "status filter",
                                _bind(self.action_status, status or "all"))


def _bind(fn, *args):
    return lambda: fn(*args)
