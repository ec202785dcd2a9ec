"""The key bar: the keys that apply now, wrapped onto as many lines as the width needs.

Why not Textual's Footer: it is one line that cuts off whatever does not fit, so at 80 columns
`?` (help), `R` and `q` disappeared. Here help and quit/back come first and nothing is ever cut:
the bar grows a line instead. Disabled keys stay visible, dimmed; every key is clickable.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.dom import NoScreen
from textual.widgets import Static

from dftui.screens.base import operator_description

FIRST = ("help", "back_or_quit", "back")  # always shown first, so they never scroll away


class KeyBar(Static):
    """Drop-in for Footer on dftui's screens."""

    DEFAULT_CSS = """
    KeyBar { dock: bottom; height: auto; background: $panel; color: $foreground; padding: 0 1; }
    """

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._changed)
        self.call_after_refresh(self.render_keys)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _changed(self, _screen: object) -> None:
        if self.is_attached:
            self.call_after_refresh(self.render_keys)

    def on_resize(self) -> None:
        self.render_keys()

    def items(self) -> list[tuple[str, str, str, bool]]:
        """(key, key display, description, enabled) in display order, one per description."""
        screen = self.screen
        seen: dict[str, int] = {}
        out: list[tuple[str, str, str, bool]] = []
        for key, active in screen.active_bindings.items():
            binding: Binding = active.binding
            if not binding.show or not binding.description:
                continue
            description = operator_description(screen, binding)
            display = self.app.get_key_display(binding)
            if description in seen:  # esc and q both "Back": one item, both keys
                index = seen[description]
                k, d, desc, enabled = out[index]
                out[index] = (k, f"{d}/{display}", desc, enabled or active.enabled)
                continue
            seen[description] = len(out)
            out.append((key, display, description, active.enabled))
        actions = {k: a.binding.action for k, a in screen.active_bindings.items()}
        out.sort(key=lambda item: 0 if actions.get(item[0]) in FIRST else 1)
        return out

    def render_keys(self) -> None:
        if not self.is_attached or not self.is_mounted:
            return  # its screen was closed before this (deferred) render ran
        try:
            _ = self.screen
        except NoScreen:
            return
        width = max((self.size.width or self.app.size.width) - 2, 20)
        text = Text()
        line = 0
        for key, display, description, enabled in self.items():
            chunk = Text()
            click = Style(meta={"@click": f"app.simulate_key({key!r})"})
            chunk.append(f" {display} ", style=Style.parse("bold reverse" if enabled else "dim")
                         + click)
            chunk.append(f" {description}  ", style=Style.parse("" if enabled else "dim") + click)
            if line and line + chunk.cell_len > width:
                text.append("\n")
                line = 0
            text.append_text(chunk)
            line += chunk.cell_len
        self.update(text)
