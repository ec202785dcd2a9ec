"""The home screen's health line: `engines 1/1 alive · 3 ready (oldest 2s) · 0 stuck`.

Why a widget of its own: it renders one piece of state (the client's `health_line()` dict) and
nothing else; the list screen only assigns `health` and the reactive attribute redraws it (and
hides the line when this backend or role can see none of it). A click, or `e`, opens engines.
"""

from __future__ import annotations

from typing import Any

from rich.style import Style
from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from dftui.widgets.format import format_duration

SLOW_READY = 60  # seconds: the oldest ready step is shown in yellow beyond this


def health_text(health: dict[str, Any] | None) -> Text:
    """The line for one `Client.health_line()` result (empty when nothing is known)."""
    h = health or {}
    text = Text()
    click = Style(meta={"@click": "app.engines"})
    parts: list[tuple[str, str]] = []
    if h.get("engines") is not None:
        bad = not h.get("alive")
        line = (f"engines {h['alive']}/{h['engines']} alive" if h["engines"]
                else "no engine running")  # (stopped engines are not counted)
        parts.append((line, "bold red" if bad else "green"))
    if h.get("runnable") is not None:
        oldest = h.get("oldest_s")
        age = f" (oldest {format_duration(oldest)})" if oldest is not None else ""
        slow = oldest is not None and oldest > SLOW_READY
        parts.append((f"{h['runnable']} ready{age}", "yellow" if slow else ""))
    if h.get("stuck") is not None:
        parts.append((f"{h['stuck']} stuck", "bold red" if h["stuck"] else ""))
    for i, (chunk, style) in enumerate(parts):
        if i:
            text.append(" · ", style="dim")
        text.append(chunk, style=Style.parse(style or "none") + click)
    if parts:
        text.append("   (e: engines & health)", style=Style.parse("dim") + click)
    return text


class HealthLine(Static):
    """Shows `health`; hidden while it says nothing."""

    health: reactive[dict[str, Any] | None] = reactive(None, init=True)

    def watch_health(self, health: dict[str, Any] | None) -> None:
        text = health_text(health)
        self.display = bool(text)
        self.update(text)
