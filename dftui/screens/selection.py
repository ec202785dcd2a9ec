"""The instance list's selection: what `space` and `*` chose, and what an action acts on.

Why a module of its own: `*` selects every instance matching the filter, also those not loaded
into the table, so the selection must remember each one's label and status (the confirmation
names them, the plan skips those the action cannot apply to) — kept apart from the rows shown.
"""

from __future__ import annotations

from collections.abc import Iterable

from dftui.client import InstanceSummary
from dftui.screens.actions import Target


class Selection:
    """The selected instance ids, and the matching-but-not-loaded ones `*` brought in."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        # Instances selected with `*` beyond the loaded rows: id -> (label, status).
        self.matching: dict[str, tuple[str | None, str]] = {}

    def __bool__(self) -> bool:
        return bool(self.ids)

    def __contains__(self, instance_id: object) -> bool:
        return instance_id in self.ids

    def __len__(self) -> int:
        return len(self.ids)

    def toggle(self, instance_id: str) -> bool:
        """Select or unselect one instance; True when it is selected now."""
        if instance_id in self.ids:
            self.ids.discard(instance_id)
            return False
        self.ids.add(instance_id)
        return True

    def select_matching(self, rows: Iterable[InstanceSummary]) -> None:
        """`*`: exactly these instances (every one matching the filter, loaded or not)."""
        self.matching = {r.id: (r.label, r.status) for r in rows}
        self.ids = set(self.matching)

    @property
    def all_matching(self) -> bool:
        """True when the selection is a `*` selection still whole (a second `*` clears it)."""
        return bool(self.ids) and bool(self.matching) and set(self.matching) <= self.ids

    def clear(self) -> None:
        self.ids.clear()
        self.matching.clear()

    def keep_only(self, visible: set[str]) -> None:
        """After a refresh: forget selected rows no longer listed (`*`'s stay selected)."""
        self.ids &= visible | set(self.matching)

    def targets(self, rows: list[InstanceSummary], current_id: str | None) -> list[Target]:
        """The selection when there is one (in list order, then the unloaded `*` ones), else
        the cursor row."""
        if self.ids:
            loaded = [Target(r.id, r.label, r.status) for r in rows if r.id in self.ids]
            known = {t.id for t in loaded}
            others = [Target(i, label, status) for i, (label, status) in self.matching.items()
                      if i in self.ids and i not in known]
            return loaded + others
        return [Target(r.id, r.label, r.status) for r in rows if r.id == current_id]
