"""The instance list's order: which columns sort, and the default keyset order.

Why a module of its own: every column is the server's keyset order over every matching row
(dftui.client.instances.SORT_KEYS says how each is ordered there; a reversal re-reads from the
server), and the screen, its header arrows and its status line must agree on the names. In the
default order ("started") a live refresh keeps the loaded rows older than its window by
`is_after`; in another order, by their position after the window's last row. Pure: no Textual.
"""

from __future__ import annotations

from typing import Any

from dftui.client import InstanceSummary

# Sortable columns (`S` cycles, `o` reverses; a click on a header sorts by it), as the status
# line names them, each the server's order over every matching row.
SORT_KEYS: dict[str, str] = {"started": "started", "id": "id", "label": "label",
                             "status": "status", "step": "current step", "duration": "took",
                             "by": "submitted by"}
SERVER_ORDER = "started"


def is_after(row: InstanceSummary, cursor: tuple[Any, ...], oldest_first: bool) -> bool:
    """True when `row` comes after the keyset cursor in `created_at DESC, id ASC` order (or in
    the reverse order when sorting oldest first)."""
    if oldest_first:
        return row.created_at > cursor[0] or (row.created_at == cursor[0] and row.id < cursor[1])
    return row.created_at < cursor[0] or (row.created_at == cursor[0] and row.id > cursor[1])
