"""Tables that show text as written: a role's label, step SQL, result (and its column names),
error or variable value is data, never Rich/Textual markup.

Why: Textual's DataTable and Rich's Table read a plain `str` cell as markup, so a label
'[/]closing' raised MarkupError (the list screen could not open again while that instance
existed), '[bold]x' changed how it looked, and '[link=…]' made a link. Every table that holds
anything a role wrote is one of these; a cell that is already a renderable (a styled Text)
is left as it is.
"""

from __future__ import annotations

from typing import Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text
from textual.widgets import DataTable


def as_text(value: Any) -> Any:
    """A plain str as literal Text; anything else unchanged."""
    return Text(value) if isinstance(value, str) else value


class PlainDataTable(DataTable):
    """A DataTable whose str cells and column labels are literal text."""

    def add_column(self, label: Any, *args: Any, **kwargs: Any) -> Any:
        return super().add_column(as_text(label), *args, **kwargs)

    def add_row(self, *cells: Any, **kwargs: Any) -> Any:
        return super().add_row(*(as_text(c) for c in cells), **kwargs)

    def update_cell(self, row_key: Any, column_key: Any, value: Any, **kwargs: Any) -> None:
        super().update_cell(row_key, column_key, as_text(value), **kwargs)


class PlainTable(Table):
    """A Rich Table whose str cells and headers are literal text."""

    def add_column(self, header: RenderableType = "", *args: Any, **kwargs: Any) -> None:
        super().add_column(as_text(header), *args, **kwargs)

    def add_row(self, *renderables: RenderableType | None, **kwargs: Any) -> None:
        super().add_row(*(as_text(r) for r in renderables), **kwargs)
