"""The instance list's order: which columns sort, how loaded rows sort, the keyset order.

Why a module of its own: "started" is the server's keyset order over every matching row (a
reversal re-reads from the server), every other column orders only the rows loaded so far — a
rule the screen, its header arrows and its status line must agree on. Pure: no Textual.
"""

from __future__ import annotations

from datetime import datetime

from dftui.client import InstanceSummary

# Sortable columns (`S` cycles, `o` reverses; a click on a header sorts by it), as the status
# line names them: started is the server's keyset order over all matching rows, the others
# order the rows loaded so far.
SORT_KEYS: dict[str, str] = {"started": "started", "id": "id", "label": "label",
                             "status": "status", "step": "current step", "duration": "took",
                             "by": "submitted by"}
SERVER_ORDER = "started"


def sort_rows(rows: list[InstanceSummary], key: str, reverse: bool,
              now: datetime) -> list[InstanceSummary]:
    """`rows` in column `key`'s order (ties: the server's order; empty values last); the
    server's order already for "started"."""
    if key == SERVER_ORDER:
        return rows

    def value(row: InstanceSummary) -> tuple:
        if key == "duration":
            end = row.finished_at or now
            return (0, (end - row.created_at).total_seconds())
        text = {"id": row.id, "label": row.label, "status": row.status,
                "step": row.current_step, "by": row.submitted_by}[key]
        return (0 if text else 1, (text or "").lower())

    order = {r.id: i for i, r in enumerate(rows)}
    return sorted(rows, key=lambda r: (value(r), order[r.id]), reverse=reverse)


def is_after(row: InstanceSummary, cursor: tuple[datetime, str], oldest_first: bool) -> bool:
    """True when `row` comes after the keyset cursor in `created_at DESC, id ASC` order (or in
    the reverse order when sorting oldest first)."""
    if oldest_first:
        return row.created_at > cursor[0] or (row.created_at == cursor[0] and row.id < cursor[1])
    return row.created_at < cursor[0] or (row.created_at == cursor[0] and row.id > cursor[1])
