"""The home screen's status tabs: ` All 12 ·✓ Completed 9 ·✗ Failed 3 …`, each clickable.

Why a widget of its own: it renders two pieces of state — the per-status counts and the
active status filter — and the list screen only assigns them (reactive attributes redraw the
tabs). Keys 1-6 do what a click does (`screen.status(...)`).
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from dftui.client import StatusCounts
from dftui.widgets.format import STATUS_STYLES, status_symbol

STATUS_TABS: list[tuple[str | None, str]] = [
    (None, "All"),
    ("running", "Running"),
    ("failed", "Failed"),
    ("pending", "Pending"),
    ("completed", "Completed"),
    ("cancelled", "Cancelled"),
]
NARROW = 100  # below this many columns the tabs show symbols and counts only


def tabs_text(counts: StatusCounts | None, active: str | None, narrow: bool) -> Text:
    """The tabs for these counts (`…` while unknown), `active` highlighted."""
    text = Text()
    for status, title in STATUS_TABS:
        number = counts.label(status) if counts else "…"
        symbol = "" if status is None else status_symbol(status) + " "
        name = title if not narrow or status is None else ""
        chunk = f" {symbol}{name}{' ' if name else ''}{number} "
        style = Style.parse("bold reverse" if status == active
                            else STATUS_STYLES.get(status or "", "") or "none")
        # Clickable: the mouse works too (keys 1-6 do the same).
        style += Style(meta={"@click": f"screen.status('{status or 'all'}')"})
        if text:
            text.append("·", style="dim")
        text.append(chunk, style=style)
    return text


class StatusTabs(Static):
    """Shows `counts` with the `active` status tab highlighted; `narrow` drops the names."""

    counts: reactive[StatusCounts | None] = reactive(None, init=False)
    active: reactive[str | None] = reactive(None, init=False)
    narrow: reactive[bool] = reactive(False, init=False)

    def on_mount(self) -> None:
        self._redraw()

    def watch_counts(self) -> None:
        self._redraw()

    def watch_active(self) -> None:
        self._redraw()

    def watch_narrow(self) -> None:
        self._redraw()

    def _redraw(self) -> None:
        self.update(tabs_text(self.counts, self.active, self.narrow))
