"""Screen 6: help — every key binding of the screen underneath, generated from its bindings
(so it can never drift from what the keys really do), with disabled ones marked and explained."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Label, Static

from dftui.screens.base import BaseScreen, operator_description, services


def binding_rows(screen: Screen) -> list[tuple[str, str, bool]]:
    """(keys, description, enabled) for every described binding active on `screen`."""
    app = screen.app
    grouped: dict[tuple[str, str], list[str]] = {}
    enabled_by: dict[tuple[str, str], bool] = {}
    # The screen's own keys first, then the app's, then those of the focused widget (navigation).
    own = {b.action for b in getattr(type(screen), "BINDINGS", []) if isinstance(b, Binding)}
    app_own = {b.action for b in getattr(type(app), "BINDINGS", []) if isinstance(b, Binding)}

    def rank(item: tuple) -> int:
        action = item[1].binding.action
        return 0 if action in own else 1 if action in app_own else 2

    ordered = sorted(screen.active_bindings.items(), key=rank)
    for key, active in ordered:
        binding = active.binding
        if not binding.description or binding.action.startswith("refused("):
            continue
        node = active.node
        if node is not screen and node is not app and \
                not type(node).__module__.startswith("dftui."):
            continue  # a widget's own navigation keys (tree/table cursor moves, scrolling)
        description = operator_description(screen, binding)
        ident = (description, description)
        display = app.get_key_display(Binding(key, binding.action, description,
                                              key_display=binding.key_display))
        grouped.setdefault(ident, [])
        if display not in grouped[ident]:
            grouped[ident].append(display)
        enabled_by[ident] = enabled_by.get(ident, False) or active.enabled
    return [(" / ".join(keys), desc, enabled_by[(ident, desc)])
            for (ident, desc), keys in grouped.items()]


class HelpScreen(ModalScreen[None]):
    """Key bindings of `target` (the screen that was on top when `?` was pressed)."""

    CSS_PATH = ["dialogs.tcss", "help.tcss"]  # the dialogs' frame, and its own height

    BINDINGS = [
        Binding("escape", "dismiss", "Close"),
        Binding("question_mark", "dismiss", "Close", show=False),
        Binding("q", "dismiss", "Close", show=False),
    ]

    def __init__(self, target: Screen) -> None:
        super().__init__()
        self.target = target

    def compose(self) -> ComposeResult:
        target = self.target
        title = (target.help_title() if isinstance(target, BaseScreen)
                 else type(target).__name__.removesuffix("Screen"))
        with Vertical(classes="dialog dialog-wide", id="help"):
            yield Label(f"Keys — {title}", classes="dialog-title")
            with VerticalScroll():
                yield Static(self._table(), id="help-table")
            yield Static(Text("Also: arrows/mouse to move · ctrl+p or : command palette · "
                              "ctrl+t light/dark · esc back", style="dim"))

    def _table(self) -> Table:
        app = services(self)
        reason = app.explain_disabled()
        retry_reason = app.explain_disabled("retry")
        table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
        table.add_column("key", style="bold cyan", no_wrap=True)
        table.add_column("action")
        self.lines: list[str] = []
        for keys, desc, enabled in binding_rows(self.target):
            if enabled:
                table.add_row(keys, desc)
            else:
                why = retry_reason if desc.lower().startswith("retry") else reason
                desc = f"{desc} (disabled{': ' + why if why else ''})"
                table.add_row(Text(keys, style="dim"), Text(desc, style="dim"))
            self.lines.append(f"{keys}  {desc}")
        return table

    async def action_dismiss(self, result: object = None) -> None:
        self.dismiss(None)
