"""Plain-text formatting shared by the TUI, the CLI and the graph: durations and one-line
shortening. No Rich, no Textual, no database: the graph (dftui/graph.py) and the CLI use these
without pulling in the presentation layer.
"""

from __future__ import annotations


def format_duration(seconds: float | None) -> str:
    """Compact duration: `850ms`, `42s`, `3m05s`, `2h07m`, `3d04h`."""
    if seconds is None:
        return ""
    if seconds < 0:
        seconds = 0
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def shorten(text: str | None, width: int) -> str:
    """One line, at most `width` cells, with an ellipsis when cut."""
    if not text:
        return ""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: max(width - 1, 0)] + "…"
