"""The instance list's table: its columns for a width, one row's cells, redrawing in place.

Why a widget of its own: how wide each column is (the label and the current step share what
the fixed columns leave), what a cell shows and how a redraw keeps the cursor's instance where
it was on screen are the table's business; which rows it shows and in which order are the list
screen's (dftui/screens/instances.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo

from rich.text import Text
from textual.binding import Binding

from dftui.client import InstanceSummary
from dftui.screens.instance_order import SERVER_ORDER
from dftui.widgets.format import (
    STATUS_STYLES,
    duration_between,
    format_time,
    shorten,
    status_text,
)
from dftui.widgets.plain import PlainDataTable

WIDE = 120  # from this many columns on, times are shown in full


@dataclass(frozen=True)
class Column:
    """One table column: its key (a SORT_KEYS key, or "sel"), header title and width."""

    key: str
    title: str
    width: int


def plan_columns(width: int, *, see_others: bool, wanted_label: int, sort_key: str,
                 oldest_first: bool, sort_reverse: bool) -> list[Column]:
    """The columns for a table `width` wide. Fixed columns first; the label and the current
    step share what is left (cell padding is 2 per column): the label gets what its longest
    loaded value needs (`wanted_label`), up to half. The sorted column's title carries ▲/▼."""
    wide = width >= WIDE
    cols: list[tuple[str, str, int]] = [
        ("sel", " ", 1),
        ("id", "id", 8),
        ("status", "status", 11),
        ("started", "started", 19 if wide else 11),
        ("duration", "took", 7),
    ]
    if see_others:
        cols.append(("by", "submitted by", 14 if wide else 10))
    used = sum(w + 2 for _, _, w in cols) + 2 + 4  # + the label and step columns' padding
    flexible = max(width - used - 2, 20)
    label_width = max(min(wanted_label, int(flexible * 0.5)), 8)
    cols.insert(3, ("label", "label", label_width))
    cols.insert(4, ("step", "current step", max(flexible - label_width, 10)))
    out = []
    for key, title, w in cols:
        if key == sort_key:
            down = oldest_first if key == SERVER_ORDER else sort_reverse
            title = f"{title} {'▲' if (key == SERVER_ORDER) == down else '▼'}"
        out.append(Column(key, title, w))
    return out


def wanted_label_width(rows: Sequence[InstanceSummary]) -> int:
    """What the longest loaded label needs (at least the header's width, at most 60)."""
    longest = max((len(r.label) for r in rows if r.label), default=0)
    return min(max(longest, len("label"), 12), 60)


def row_cells(row: InstanceSummary, keys: Sequence[str], *, selected: bool, now: datetime,
              tz: tzinfo | None, wide: bool) -> list:
    """The cells of one instance, in the order of the column `keys`."""
    values = {
        "sel": selected_mark(selected),
        "id": row.id,
        "status": status_text(row.shown_status),
        "label": shorten(row.label, 60) if row.label else Text("—", style="dim"),
        "step": Text(shorten(row.current_step, 200) if row.current_step else "",
                     style=STATUS_STYLES["failed"] if row.status == "failed" else ""),
        "started": format_time(row.created_at, tz, now, short=not wide),
        "duration": duration_between(
            row.created_at, row.finished_at, now) if row.shown_status != "pending" else "",
        "by": row.submitted_by,
    }
    return [values[k] for k in keys]


def selected_mark(selected: bool) -> Text | str:
    """The "sel" cell: a cyan dot on a selected row."""
    return Text("●", style="bold cyan") if selected else " "


class InstanceTable(PlainDataTable):
    """The instances table: `enter` is described as Open (it emits RowSelected)."""

    BINDINGS = [Binding("enter", "select_cursor", "Open")]

    def set_columns(self, columns: Sequence[Column]) -> None:
        """Replace every column (and with them the rows: `fill` them again)."""
        self.clear(columns=True)
        for c in columns:
            self.add_column(c.title, width=c.width, key=c.key)

    def fill(self, rows: Sequence[InstanceSummary], cells: Callable[[InstanceSummary], list],
             keep_id: str | None) -> None:
        """Show `rows`, the cursor on `keep_id` (when still listed) at the same place on
        screen as before."""
        offset = self.cursor_row - round(self.scroll_y)
        self.clear()
        for row in rows:
            self.add_row(*cells(row), key=row.id)
        if keep_id is not None and any(r.id == keep_id for r in rows):
            index = self.get_row_index(keep_id)
            self.move_cursor(row=index, animate=False, scroll=False)
            self.scroll_to(y=max(index - offset, 0), animate=False, immediate=True)

    def update_changed(self, rows: Sequence[InstanceSummary], old: dict[str, InstanceSummary],
                       keys: Sequence[str], cells: Callable[[InstanceSummary], list]) -> None:
        """Rewrite the cells of the rows that changed (and of running ones: their duration
        grows) — the same rows in the same order, so nothing moves."""
        for row in rows:
            before = old.get(row.id)
            if before == row and row.status not in ("running",):
                continue
            for key, value in zip(keys, cells(row), strict=True):
                self.update_cell(row.id, key, value)

    def mark(self, instance_id: str, selected: bool) -> None:
        """Show or clear one row's selection mark."""
        self.update_cell(instance_id, "sel", selected_mark(selected))
