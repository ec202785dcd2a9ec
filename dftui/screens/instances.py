"""Screen 1, the home screen: the table of instances.

Scales to millions of rows: rows are fetched in keyset pages (the next page is requested as the
cursor nears the end), status counts are capped index counts or planner estimates, and the live
refresh re-reads only the window already loaded. The cursor stays on the same instance id across
refreshes.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from rich.style import Style
from rich.text import Text
from textual import on
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.timer import Timer
from textual.widgets import DataTable, Input, Static

from dftui.client import (
    ActionResult,
    Client,
    InstancePage,
    InstanceSummary,
    StatusCounts,
)
from dftui.screens.actions import Plan, Target, plan, report
from dftui.screens.base import CURSOR_BINDINGS, AppHeader, BaseScreen, ThemeChanged
from dftui.screens.dialogs import (
    CancelDialog,
    GotoDialog,
    LabelPicker,
    RetryDialog,
    SignalDialog,
    StartDialog,
)
from dftui.screens.history import HistoryScreen
from dftui.screens.instance import InstanceScreen
from dftui.vocabulary import STATUSES
from dftui.widgets.format import (
    STATUS_STYLES,
    duration_between,
    format_duration,
    format_time,
    shorten,
    status_symbol,
    status_text,
)
from dftui.widgets.keybar import KeyBar

PAGE_SIZE = 100
SELECT_ALL_CAP = 10_000  # `*` selects at most this many matching instances (said when capped)
# Sortable columns (`S` cycles, `o` reverses; a click on a header sorts by it): started is the
# server's keyset order over all matching rows, the others order the rows loaded so far.
SORT_KEYS: dict[str, str] = {"started": "started", "id": "id", "label": "label",
                             "status": "status", "step": "current step", "duration": "took",
                             "by": "submitted by"}
FILTER_DEBOUNCE = 0.25  # seconds of no typing before the filter is applied
LOAD_AHEAD = 20  # fetch the next page when the cursor is this close to the last loaded row
REFRESH_WINDOW = 1000  # the live refresh re-reads at most this many rows from the top
STATUS_TABS: list[tuple[str | None, str]] = [
    (None, "All"),
    ("running", "Running"),
    ("failed", "Failed"),
    ("pending", "Pending"),
    ("completed", "Completed"),
    ("cancelled", "Cancelled"),
]
_SINCE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class Filters:
    """What the list shows. Parsed from the `/` box: `status:failed label:etl since:2h words`.

    `label:etl` matches labels containing "etl" (any case); `label:=etl` only the label "etl".
    Free words match the id (prefix), label, submitter, any step's SQL and any error text."""

    status: str | None = None
    label: str | None = None
    text: str | None = None
    since: timedelta | None = None
    oldest_first: bool = False

    @property
    def label_exact(self) -> str | None:
        return self.label[1:] if self.label and self.label.startswith("=") else None

    @property
    def label_like(self) -> str | None:
        return self.label if self.label and not self.label.startswith("=") else None

    def describe(self) -> str:
        parts = ["sort:oldest"] if self.oldest_first else []
        if self.status:
            parts.append(f"status:{self.status}")
        if self.label:
            parts.append(f"label:{shlex.quote(self.label)}")
        if self.since:
            parts.append(f"since:{int(self.since.total_seconds())}s")
        if self.text:
            parts.append(shlex.quote(self.text))
        return " ".join(parts)


def parse_filter(text: str, current: Filters) -> Filters:
    """Parse the filter box. Raises ValueError with a user-facing message on bad input."""
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"filter: {exc}") from None
    status, label, since, words = None, None, None, []
    oldest = False
    for token in tokens:
        key, sep, value = token.partition(":")
        if sep and key == "status":
            if value not in STATUSES:
                raise ValueError(f"unknown status {value!r}; use one of {', '.join(STATUSES)}")
            status = value
        elif sep and key == "label":
            label = value or None
        elif sep and key == "sort":
            if value not in ("oldest", "newest"):
                raise ValueError(f"sort:{value} — use sort:oldest or sort:newest")
            oldest = value == "oldest"
        elif sep and key == "since":
            unit = value[-1:] if value[-1:] in _SINCE_UNITS else "s"
            number = value[:-1] if value[-1:] in _SINCE_UNITS else value
            if not number.isdigit():
                raise ValueError(f"since:{value} — use a number with s, m, h, d or w (e.g. since:2h)")
            since = timedelta(seconds=int(number) * _SINCE_UNITS[unit])
        else:
            words.append(token)
    return Filters(status=status if status else current.status if not tokens else None,
                   label=label, text=" ".join(words) or None, since=since, oldest_first=oldest)


class InstanceTable(DataTable):
    """The instances table: `enter` is described as Open (it emits RowSelected)."""

    BINDINGS = [Binding("enter", "select_cursor", "Open")]


class InstancesScreen(BaseScreen):
    """All instances the role can see, newest first. The home screen."""

    HOME = True
    CSS_PATH = "instances.tcss"
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
        self.next_cursor: tuple[datetime, str] | None = None
        self.selected: set[str] = set()
        self.counts: StatusCounts | None = None
        self.loading_more = False
        self.loaded_once = False
        self._generation = 0  # bumps on every filter change; stale pages are dropped
        self._columns: list[str] = []
        self._wide = False
        self._width = 0
        self._filter_timer: Timer | None = None
        self._health: dict | None = None
        self._filter_problem: str | None = None
        self._label_width = 0
        self.sort_key = "started"  # one of SORT_KEYS; "started" is the server's order
        self.sort_reverse = False  # for "started": oldest first (Filters.oldest_first)
        # Instances selected with `*` beyond the loaded rows: id -> (label, status), so the
        # confirmation can name them and the actions can act on them.
        self.matching: dict[str, tuple[str | None, str]] = {}

    # -- layout --------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield AppHeader()
        yield Static(id="summary")
        yield Static(id="health-line")
        yield Input(placeholder="filter as you type: words (id, label, SQL, error)  status:failed  "
                                "label:etl  since:2h  sort:oldest  — enter: to the list, esc: clear",
                    id="filter")
        table = InstanceTable(id="instances", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static(id="statusline")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self._setup_columns()
        self.query_one(DataTable).focus()
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
        self._wide = width >= 120
        see_others = bool(self.dapp.info and self.dapp.info.capabilities.can_see_others)
        table = self.query_one(DataTable)
        table.clear(columns=True)
        # Fixed columns; the label and the current step share what is left (cell padding is 2
        # per column): the label gets what its longest loaded value needs, up to half of it.
        cols: list[tuple[str, str, int]] = [
            ("sel", " ", 1),
            ("id", "id", 8),
            ("status", "status", 11),
            ("started", "started", 19 if self._wide else 11),
            ("duration", "took", 7),
        ]
        if see_others:
            cols.append(("by", "submitted by", 14 if self._wide else 10))
        used = sum(w + 2 for _, _, w in cols) + 2 + 4  # + the label and step columns' padding
        flexible = max(width - used - 2, 20)
        self._label_width = self._wanted_label_width()
        label_width = max(min(self._label_width, int(flexible * 0.5)), 8)
        cols.insert(3, ("label", "label", label_width))
        cols.insert(4, ("step", "current step", max(flexible - label_width, 10)))
        self._columns = [key for key, _, _ in cols]
        for key, label, w in cols:
            if key == self.sort_key:
                down = self.filters.oldest_first if key == "started" else self.sort_reverse
                label = f"{label} {'▲' if (key == 'started') == down else '▼'}"
            table.add_column(label, width=w, key=key)

    # -- data ----------------------------------------------------------------------------------

    @property
    def current_id(self) -> str | None:
        table = self.query_one(DataTable)
        if not self.rows or table.cursor_row < 0 or table.cursor_row >= len(self.rows):
            return None
        return self.rows[table.cursor_row].id

    def _list_args(self) -> dict:
        f = self.filters
        since = self.dapp.now() - f.since if f.since else None
        return {"status": f.status, "label": f.label_exact, "label_like": f.label_like,
                "text": f.text, "since": since, "oldest_first": f.oldest_first}

    def _count_args(self) -> dict:
        """The list's filters minus status and order: the tab counts follow the filter."""
        args = self._list_args()
        del args["status"], args["oldest_first"]
        return args

    def reload(self) -> None:
        """Re-read from the top (filter change, R, reconnect); keeps the cursor's instance."""
        self._generation += 1
        generation = self._generation
        args = self._list_args()
        count_args = self._count_args()
        limit = min(max(len(self.rows), PAGE_SIZE), REFRESH_WINDOW)

        def call(client: Client) -> tuple[InstancePage, StatusCounts]:
            self._health = client.health_line()
            return client.list_instances(limit=limit, **args), client.status_counts(**count_args)

        self.dapp.run_db(self, call, lambda res: self._apply_reload(res, generation, False),
                         group="list")

    def live_refresh(self) -> None:
        """The periodic refresh: the loaded window from the top, older loaded rows kept."""
        generation = self._generation
        args = self._list_args()
        count_args = self._count_args()
        limit = min(max(len(self.rows), PAGE_SIZE), REFRESH_WINDOW)

        def call(client: Client) -> tuple[InstancePage, StatusCounts]:
            started = time.monotonic()
            self._health = client.health_line()
            result = (client.list_instances(limit=limit, **args),
                      client.status_counts(**count_args))
            # Expensive filters (free text scans) back the poll off instead of hammering the server.
            self.refresh_cost = time.monotonic() - started
            return result

        self.dapp.run_db(self, call, lambda res: self._apply_reload(res, generation, True),
                         group="list")

    def _apply_reload(self, result: tuple[InstancePage, StatusCounts], generation: int,
                      merge: bool) -> None:
        if generation != self._generation:
            return
        page, counts = result
        keep = self.current_id
        rows = list(page.rows)
        next_cursor = page.next_cursor
        if merge and page.next_cursor is not None and len(self.rows) >= len(page.rows):
            # Keep the already-loaded rows older than the refreshed window (and their cursor).
            last = (page.rows[-1].created_at, page.rows[-1].id) if page.rows else None
            if last is not None:
                older = [r for r in self.rows if _is_after(r, last, self.filters.oldest_first)]
                rows += older
                next_cursor = self.next_cursor if older else page.next_cursor
        visible = {r.id for r in rows}
        self.selected &= visible | set(self.matching)
        self.counts = counts
        self.next_cursor = next_cursor
        rows = self._sorted(rows)
        changed = [r.id for r in rows] != [r.id for r in self.rows]
        old = {r.id: r for r in self.rows}
        self.rows = rows
        self.loaded_once = True
        if self._wanted_label_width() != self._label_width:
            self._setup_columns()  # a longer (or no longer any) label: share the width again
            changed = True
        if changed:
            self._render_rows(keep_id=keep)
        else:
            self._update_changed(old)
        self._render_summary()
        self._maybe_load_more()

    def _maybe_load_more(self) -> None:
        table = self.query_one(DataTable)
        if self.loading_more or self.next_cursor is None:
            return
        if table.cursor_row < len(self.rows) - LOAD_AHEAD:
            return
        self.loading_more = True
        generation = self._generation
        args = self._list_args()
        after = self.next_cursor

        def call(client: Client) -> InstancePage:
            return client.list_instances(limit=PAGE_SIZE, after=after, **args)

        def done(page: InstancePage) -> None:
            self.loading_more = False
            if generation != self._generation or after != self.next_cursor:
                return
            known = {r.id for r in self.rows}
            new = [r for r in page.rows if r.id not in known]
            self.next_cursor = page.next_cursor
            if self.sort_key != "started":  # the loaded rows are re-sorted with the new ones
                self.rows = self._sorted(self.rows + new)
                self._render_rows(keep_id=self.current_id)
                self._maybe_load_more()
                return
            self.rows += new
            for r in new:
                table.add_row(*self._cells(r), key=r.id)
            self._render_status_line()
            self._maybe_load_more()

        def failed(exc) -> None:
            self.loading_more = False
            self.dapp.notify_error(exc)

        self.dapp.run_db(self, call, done, group="more", on_error=failed)

    # -- rendering -----------------------------------------------------------------------------

    def _cells(self, row: InstanceSummary) -> list:
        app = self.dapp
        now = app.now()
        values = {
            "sel": Text("●", style="bold cyan") if row.id in self.selected else " ",
            "id": row.id,
            "status": status_text(row.status),
            "label": shorten(row.label, 60) if row.label else Text("—", style="dim"),
            "step": Text(shorten(row.current_step, 200) if row.current_step else "",
                         style=STATUS_STYLES["failed"] if row.status == "failed" else ""),
            "started": format_time(row.created_at, app.tz, now, short=not self._wide),
            "duration": duration_between(
                row.created_at, row.finished_at, now) if row.status != "pending" else "",
            "by": row.submitted_by,
        }
        return [values[c] for c in self._columns]

    def _wanted_label_width(self) -> int:
        """What the longest loaded label needs (at least the header's width, at most 60)."""
        longest = max((len(r.label) for r in self.rows if r.label), default=0)
        return min(max(longest, len("label"), 12), 60)

    def _render_rows(self, keep_id: str | None) -> None:
        table = self.query_one(DataTable)
        offset = table.cursor_row - round(table.scroll_y)
        table.clear()
        for row in self.rows:
            table.add_row(*self._cells(row), key=row.id)
        if keep_id is not None and any(r.id == keep_id for r in self.rows):
            index = table.get_row_index(keep_id)
            table.move_cursor(row=index, animate=False, scroll=False)
            table.scroll_to(y=max(index - offset, 0), animate=False, immediate=True)
        self._render_status_line()

    def _update_changed(self, old: dict[str, InstanceSummary]) -> None:
        table = self.query_one(DataTable)
        for row in self.rows:
            before = old.get(row.id)
            if before == row and row.status not in ("running",):
                continue
            for key, value in zip(self._columns, self._cells(row), strict=True):
                table.update_cell(row.id, key, value)
        self._render_status_line()

    def _render_health(self) -> None:
        """engines 1/1 alive · 3 ready (oldest 2s) · 0 stuck — a click (or e) opens the detail."""
        h = self._health or {}
        text = Text()
        click = Style(meta={"@click": "app.engines"})
        parts: list[tuple[str, str]] = []
        if h.get("engines") is not None:
            bad = not h.get("alive")
            parts.append((f"engines {h['alive']}/{h['engines']} alive",
                          "bold red" if bad else "green"))
        if h.get("runnable") is not None:
            oldest = h.get("oldest_s")
            age = f" (oldest {format_duration(oldest)})" if oldest is not None else ""
            slow = oldest is not None and oldest > 60
            parts.append((f"{h['runnable']} ready{age}", "yellow" if slow else ""))
        if h.get("stuck") is not None:
            parts.append((f"{h['stuck']} stuck", "bold red" if h["stuck"] else ""))
        for i, (chunk, style) in enumerate(parts):
            if i:
                text.append(" · ", style="dim")
            text.append(chunk, style=Style.parse(style or "none") + click)
        if parts:
            text.append("   (e: engines & health)", style=Style.parse("dim") + click)
        line = self.query_one("#health-line", Static)
        line.display = bool(parts)
        line.update(text)

    def _render_summary(self) -> None:
        self._render_health()
        counts = self.counts
        text = Text()
        narrow = (self.size.width or 80) < 100
        for status, title in STATUS_TABS:
            active = status == self.filters.status
            number = counts.label(status) if counts else "…"
            symbol = "" if status is None else status_symbol(status) + " "
            name = title if not narrow or status is None else ""
            chunk = f" {symbol}{name}{' ' if name else ''}{number} "
            style = Style.parse("bold reverse" if active else STATUS_STYLES.get(status or "", "") or "none")
            # Clickable: the mouse works too (keys 1-6 do the same).
            style += Style(meta={"@click": f"screen.status('{status or 'all'}')"})
            if text:
                text.append("·", style="dim")
            text.append(chunk, style=style)
        self.query_one("#summary", Static).update(text)

    def _render_status_line(self) -> None:
        parts = []
        shown = len(self.rows)
        more = "+" if self.next_cursor else ""
        parts.append(f"{shown}{more} shown")
        if self.selected:
            parts.append(f"{len(self.selected)} selected (space toggles, esc clears)")
        if self.sort_key != "started":
            arrow = "▼" if self.sort_reverse else "▲"
            parts.append(f"sort: {SORT_KEYS[self.sort_key]} {arrow} (loaded rows; S: next, o: reverse)")
        described = self.filters.describe()
        if described:
            parts.append(f"filter: {described}")
        if self._filter_problem:
            parts.append(self._filter_problem)
        if self.loaded_once and not self.rows:
            parts.append("no instances match" if described else self._empty_hint())
        self.query_one("#statusline", Static).update(Text("  ·  ".join(parts), style="dim"))

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

    @on(Input.Changed, "#filter")
    def _filter_typed(self, event: Input.Changed) -> None:
        """Filter as you type: applied once typing pauses; an unfinished term (`status:fa`)
        shows its problem in the status line instead of a notification per key."""
        if not event.input.has_focus:
            return
        if self._filter_timer is not None:
            self._filter_timer.stop()
        value = event.value
        self._filter_timer = self.set_timer(FILTER_DEBOUNCE, lambda: self._apply_filter(value))

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

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        if self._filter_timer is not None:
            self._filter_timer.stop()
        if not self._apply_filter(event.value, loud=True):
            return
        event.input.display = bool(event.value)
        self.query_one(DataTable).focus()

    def _filters_changed(self) -> None:
        self.rows = []
        self.next_cursor = None
        self.selected.clear()
        self.matching.clear()
        self.query_one(DataTable).clear()
        self._render_summary()
        self._render_status_line()
        self.reload()

    # -- actions -------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("cancel", "signal", "new_run"):
            return self.dapp.write_state()
        if action == "retry":
            return self.dapp.write_state("retry")
        return True

    def action_cursor_down(self) -> None:
        self.query_one(DataTable).action_cursor_down()

    def action_cursor_up(self) -> None:
        self.query_one(DataTable).action_cursor_up()

    def action_cursor_top(self) -> None:
        self.query_one(DataTable).move_cursor(row=0)

    def action_cursor_bottom(self) -> None:
        table = self.query_one(DataTable)
        table.move_cursor(row=max(len(self.rows) - 1, 0))

    def action_open(self) -> None:
        instance_id = self.current_id
        if instance_id is None:
            return
        self.app.push_screen(InstanceScreen(instance_id))

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.value = self.filters.describe()
        box.focus()

    def action_clear(self) -> None:
        box = self.query_one("#filter", Input)
        if box.has_focus:
            box.value = ""
            box.display = bool(self.filters.describe())
            self.query_one(DataTable).focus()
            return
        if self.selected:
            self.selected.clear()
            self.matching.clear()
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
        """`o`: reverse the sort — for "started" the server's order (oldest/newest first over
        every matching row), for the other columns the loaded rows."""
        if self.sort_key == "started":
            self.filters = replace(self.filters, oldest_first=not self.filters.oldest_first)
            self.notify("Oldest first" if self.filters.oldest_first else "Newest first")
            self._setup_columns()
            self._filters_changed()
            return
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
        if key == "started":
            self.notify("Sorted by started (all matching rows, from the server)")
            self._setup_columns()
            self._render_rows(keep_id=self.current_id)
            self.reload()  # the server's order again
            return
        else:
            self.notify(f"Sorted by {SORT_KEYS[key]} (the loaded rows)")
        self._resort()

    def _resort(self) -> None:
        keep = self.current_id
        self.rows = self._sorted(self.rows)
        self._setup_columns()
        self._render_rows(keep_id=keep)

    def _sorted(self, rows: list[InstanceSummary]) -> list[InstanceSummary]:
        """`rows` in the chosen column's order (ties: the server's order); "started" is the
        server's order already."""
        key = self.sort_key
        if key == "started":
            return rows
        now = self.dapp.now()

        def value(row: InstanceSummary) -> tuple:
            if key == "duration":
                end = row.finished_at or now
                return (0, (end - row.created_at).total_seconds())
            text = {"id": row.id, "label": row.label, "status": row.status,
                    "step": row.current_step, "by": row.submitted_by}[key]
            return (0 if text else 1, (text or "").lower())  # empty values last

        order = {r.id: i for i, r in enumerate(rows)}
        return sorted(rows, key=lambda r: (value(r), order[r.id]), reverse=self.sort_reverse)

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
        if instance_id in self.selected:
            self.selected.discard(instance_id)
        else:
            self.selected.add(instance_id)
        table = self.query_one(DataTable)
        table.update_cell(instance_id, "sel",
                          Text("●", style="bold cyan") if instance_id in self.selected else " ")
        if table.cursor_row < len(self.rows) - 1:
            table.action_cursor_down()
        self._render_status_line()

    def action_select_all(self) -> None:
        """Select every instance matching the filter — all of them, not only the loaded rows
        (read from the server, up to SELECT_ALL_CAP) — or clear when all are selected."""
        if self.selected and self.matching and set(self.matching) <= self.selected:
            self.selected.clear()
            self.matching.clear()
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
            self.matching = {r.id: (r.label, r.status) for r in page.rows}
            self.selected = set(self.matching)
            self._render_rows(keep_id=self.current_id)
            capped = (f" (the first {SELECT_ALL_CAP:,}; more match — narrow the filter)"
                      if page.next_cursor else "")
            self.notify(f"{len(self.selected):,} selected: all matching the filter{capped}"
                        if self.selected else "Nothing matches the filter")

        self.dapp.run_db(self, call, done, group="select-all")

    def _targets(self) -> list[Target]:
        """The selection when there is one (in list order), else the cursor row."""
        if self.selected:
            loaded = [Target(r.id, r.label, r.status) for r in self.rows if r.id in self.selected]
            known = {t.id for t in loaded}
            others = [Target(i, label, status) for i, (label, status) in self.matching.items()
                      if i in self.selected and i not in known]
            return loaded + others
        rows = [r for r in self.rows if r.id == self.current_id]
        return [Target(r.id, r.label, r.status) for r in rows]

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

    def action_refresh(self) -> None:
        self.reload()

    def _plan(self, action: str) -> Plan | None:
        """What `action` will touch; None (after saying why) when it would touch nothing."""
        targets = self._targets()
        if not targets:
            self.notify(f"No instance to {action}", severity="warning")
            return None
        planned = plan(action, targets)
        if not planned.apply:
            self.notify(planned.nothing_text(), severity="warning", timeout=8)
            return None
        return planned

    def action_cancel(self) -> None:
        planned = self._plan("cancel")
        if planned is None:
            return
        def confirmed(reason: str | None) -> None:
            if reason is not None:
                self._bulk("cancel", lambda c: c.cancel(planned.ids, reason))

        self.app.push_screen(CancelDialog(planned), confirmed)

    def action_retry(self) -> None:
        planned = self._plan("retry")
        if planned is None:
            return
        def confirmed(ok: bool | None) -> None:
            if ok:
                self._bulk("retry", lambda c: c.retry(planned.ids))

        self.app.push_screen(RetryDialog(planned), confirmed)

    def action_signal(self) -> None:
        planned = self._plan("signal")
        if planned is None:
            return
        waited = set()
        for target in planned.apply:
            step = next((r.current_step for r in self.rows if r.id == target.id), None) or ""
            match = re.match(r"SIGNAL '([^']+)'", step)
            if match:
                waited.add(match.group(1))
        name = waited.pop() if len(waited) == 1 else ""

        def sent(results: list[ActionResult] | None) -> None:
            if results is not None:
                report(self.app, "signal", results)
                self._clear_selection()
            self.reload()

        self.app.push_screen(SignalDialog(planned, name), sent)

    def action_new_run(self) -> None:
        self.app.push_screen(StartDialog(), self._started)

    def _started(self, instance_id: str | None) -> None:
        if instance_id:
            self.reload()

    def _clear_selection(self) -> None:
        self.matching.clear()
        if self.selected:
            self.selected.clear()
            self._render_rows(keep_id=self.current_id)

    def _bulk(self, action: str, call) -> None:
        def done(results: list[ActionResult]) -> None:
            report(self.app, action, results)
            self._clear_selection()
            self.reload()

        self.dapp.run_db(self, call, done, group="action", exclusive=False,
                         what=action.capitalize())

    def palette_commands(self) -> Iterator[SystemCommand]:
        """One palette command per status tab."""
        for status, title in STATUS_TABS:
            yield SystemCommand(f"Show {title.lower()} instances", "status filter",
                                _bind(self.action_status, status or "all"))


def _bind(fn, *args):
    return lambda: fn(*args)


def _is_after(row: InstanceSummary, cursor: tuple[datetime, str], oldest_first: bool) -> bool:
    """True when `row` comes after the keyset cursor in `created_at DESC, id ASC` order (or in
    the reverse order when sorting oldest first)."""
    if oldest_first:
        return row.created_at > cursor[0] or (row.created_at == cursor[0] and row.id < cursor[1])
    return row.created_at < cursor[0] or (row.created_at == cursor[0] and row.id > cursor[1])
