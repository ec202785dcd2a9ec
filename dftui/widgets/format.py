"""Presentation helpers shared by screens: status symbols and colours, times and durations.

Colour is never the only signal (symbols carry the meaning), so NO_COLOR terminals lose nothing.
Times are formatted against an injectable clock and time zone so snapshots are deterministic.
"""

from __future__ import annotations

from datetime import datetime, tzinfo

from rich.text import Text

# Re-exported: the symbols are vocabulary (the CLI uses them too), durations and shortening are
# plain text (the graph uses them too); the colours are presentation.
from dftui.plaintext import format_duration, shorten
from dftui.vocabulary import STATUS_SYMBOLS, status_symbol

STATUS_STYLES: dict[str, str] = {
    "completed": "green",
    "failed": "bold red",
    "running": "yellow",
    "pending": "dim",
    "cancelled": "magenta",
    "skipped": "dim",
}


def status_text(status: str, *, word: bool = True) -> Text:
    """`✓ completed` in the status colour (just the symbol when word=False)."""
    label = f"{status_symbol(status)} {status}" if word else status_symbol(status)
    return Text(label, style=STATUS_STYLES.get(status, ""))


def duration_between(start: datetime | None, end: datetime | None, now: datetime) -> str:
    """Duration from start to end, or to `now` while still running."""
    if start is None:
        return ""
    return format_duration(((end or now) - start).total_seconds())


def format_time(value: datetime | None, tz: tzinfo | None, now: datetime, *, short: bool = False) -> str:
    """`2025-01-15 12:00:00`; with short=True `01-15 12:00` (the date is never dropped: a bare
    time is ambiguous when a list spans midnight)."""
    if value is None:
        return ""
    local = value.astimezone(tz)
    if not short:
        return local.strftime("%Y-%m-%d %H:%M:%S")
    del now  # kept in the signature: callers pass their (injectable) clock
    return local.strftime("%m-%d %H:%M")


def age(value: datetime | None, now: datetime) -> str:
    """`5s ago`-style age for heartbeats."""
    if value is None:
        return ""
    return format_duration(max((now - value).total_seconds(), 0.0)) + " ago"


__all__ = [
    "STATUS_STYLES",
    "STATUS_SYMBOLS",
    "age",
    "duration_between",
    "format_duration",
    "format_time",
    "shorten",
    "status_symbol",
    "status_text",
]
