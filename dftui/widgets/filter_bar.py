"""The instance list's `/` box: filter as you type, applied once typing pauses.

Why a widget of its own: the debounce (one query per pause, not per key) and showing/hiding the
box are the bar's business; what the text means (`instance_filters.parse_filter`) and what a
new filter does to the list are the screen's. The bar tells the screen with one message,
`FilterBar.Settled`, when the text should be applied: after a pause in typing, or on enter.
"""

from __future__ import annotations

from textual import on
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Input

DEBOUNCE = 0.25  # seconds of no typing before the filter is applied

PLACEHOLDER = ("filter as you type: words (id, label, SQL, error)  status:failed  "
               "label:etl  since:2h  sort:oldest  — enter: to the list, esc: clear")


class FilterBar(Input):
    """The filter box, hidden until `/` opens it."""

    class Settled(Message):
        """The text to apply: `submitted` on enter (problems are then said out loud)."""

        def __init__(self, value: str, submitted: bool) -> None:
            super().__init__()
            self.value = value
            self.submitted = submitted

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(placeholder=PLACEHOLDER, id=id)
        self._timer: Timer | None = None

    def on_mount(self) -> None:
        self.display = False

    def open(self, text: str) -> None:
        """Show the box holding `text` (the current filter) and type into it."""
        self.display = True
        self.value = text
        self.focus()

    @on(Input.Changed)
    def _typed(self, event: Input.Changed) -> None:
        """Typed into (not a programmatic change while unfocused): apply once typing pauses,
        so an unfinished term (`status:fa`) costs no query per key."""
        event.stop()
        if not self.has_focus:
            return
        self._stop_timer()
        value = event.value
        self._timer = self.set_timer(DEBOUNCE, lambda: self.post_message(self.Settled(value, False)))

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._stop_timer()
        self.post_message(self.Settled(event.value, True))

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
