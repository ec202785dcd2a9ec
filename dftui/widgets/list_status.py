"""The instance list's status line: `120+ shown · 3 selected … · filter: status:failed`.

Why a widget of its own: it renders one value, `ListStatus` (what is loaded, selected, sorted
and filtered, and what to say when nothing is listed); the list screen assigns a new one
whenever any of it changes and the reactive attribute redraws the line.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static


@dataclass(frozen=True)
class ListStatus:
    """What the status line says. `sort` is the column the list is sorted by (None: the
    default order, newest first),
    `empty` what to say when the first load found nothing and no filter is set."""

    shown: int = 0
    more: bool = False
    selected: int = 0
    sort: tuple[str, bool] | None = None  # (column name, reversed)
    filter: str = ""
    problem: str | None = None
    loaded: bool = False
    empty: str = ""

    def text(self) -> Text:
        parts = [f"{self.shown}{'+' if self.more else ''} shown"]
        if self.selected:
            parts.append(f"{self.selected} selected (space toggles, esc clears)")
        if self.sort is not None:
            name, reverse = self.sort
            parts.append(f"sort: {name} {'▼' if reverse else '▲'} (S: next, o: reverse)")
        if self.filter:
            parts.append(f"filter: {self.filter}")
        if self.problem:
            parts.append(self.problem)
        if self.loaded and not self.shown:
            parts.append("no instances match" if self.filter else self.empty)
        return Text("  ·  ".join(parts), style="dim")


class StatusLine(Static):
    """Shows `status`."""

    status: reactive[ListStatus] = reactive(ListStatus, init=False)

    def watch_status(self, status: ListStatus) -> None:
        self.update(status.text())
