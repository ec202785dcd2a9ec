"""Screen 4: the role's df.vars — add, edit, delete. Values whose names look secret (`*token*`,
`*secret*`, `*password*`, `*key*`) stay masked until revealed with `x`, one variable at a time,
so a shared screen or a screenshot never shows them by accident."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, DataTable, Input, Label, Static

from dftui.client import Client, Var, mask_secret, var_name_problem
from dftui.screens.base import CURSOR_BINDINGS, AppHeader, Dialog, TableScreen
from dftui.screens.dialogs import ConfirmDialog
from dftui.widgets.format import STATUS_STYLES, shorten
from dftui.widgets.keybar import KeyBar
from dftui.widgets.plain import PlainDataTable


class VarDialog(Dialog[tuple[str, str] | None]):
    """Add or edit one variable; returns (name, value) or None."""

    def __init__(self, var: Var | None = None, existing: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.var = var
        self.existing = existing  # (adding: names taken, which Save would silently overwrite)

    def compose(self) -> ComposeResult:
        editing = self.var is not None
        with Vertical(classes="dialog"):
            yield Label(f"Edit variable {self.var.name}" if editing and self.var else "Add a variable",
                        classes="dialog-title")
            yield Input(self.var.name if self.var else "", placeholder="name (an identifier)",
                        id="name", disabled=editing)
            yield Input(self.var.value or "" if self.var else "", placeholder="value",
                        id="value", password=bool(self.var and self.var.looks_secret))
            yield Static("Used as {name} in step text; instances snapshot vars at df.start.",
                         classes="dialog-note")
            yield Static(id="error", classes="dialog-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save", variant="primary", id="confirm")
                yield Button("Back", id="back")

    def on_mount(self) -> None:
        self.query_one("#value" if self.var else "#name", Input).focus()

    @on(Input.Submitted)
    @on(Button.Pressed, "#confirm")
    def _save(self) -> None:
        name = self.query_one("#name", Input).value.strip()
        problem = var_name_problem(name)
        if not problem and self.var is None and name in self.existing:
            problem = f"{name} exists already: edit it (enter on its row) to change its value"
        if problem:  # stay open with the input kept, so it can be corrected
            self.query_one("#error", Static).update(Text(problem, style=STATUS_STYLES["failed"]))
            self.query_one("#name", Input).focus()
            return
        self.dismiss((name, self.query_one("#value", Input).value))


class VarTable(PlainDataTable):
    """`enter` edits the variable under the cursor (via RowSelected)."""

    BINDINGS = [Binding("enter", "select_cursor", "Edit", show=False)]


class VariablesScreen(TableScreen):
    """df.vars of the connected role."""

    HELP_TITLE = "Variables"
    CSS_PATH = "variables.tcss"
    WRITE_ACTIONS = {"add": None, "edit": None, "delete": None}
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("a", "add", "Add"),
        Binding("d", "delete", "Delete"),
        Binding("x", "reveal", "Reveal/hide"),
        Binding("y", "copy", "Copy value", show=False),
        Binding("R", "refresh", "Refresh"),
        *CURSOR_BINDINGS,
    ]

    def __init__(self) -> None:
        super().__init__()
        self.vars: list[Var] = []
        self.revealed: set[str] = set()
        self.loaded_once = False

    def compose(self) -> ComposeResult:
        yield AppHeader()
        yield Static(Text(" Variables (df.vars) — secret-looking values are masked; x reveals",
                          style="bold"), id="summary")
        yield VarTable(id="vars", cursor_type="row", zebra_stripes=True)
        yield Static(id="statusline")
        yield KeyBar()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_column("name", width=30, key="name")
        table.add_column("value", key="value")
        table.focus()
        self.reload()

    def reload(self) -> None:
        self.dapp.run_db(self, lambda c: c.vars(), self._apply, group="vars")

    def _apply(self, variables: list[Var]) -> None:
        self.vars = variables
        self.loaded_once = True
        self._render_vars()

    def _shown_value(self, var: Var) -> Text:
        if var.looks_secret and var.name not in self.revealed:
            return Text(mask_secret(var.value) + "  (masked)", style="dim")
        return Text(shorten(var.value, 500) if var.value is not None else "NULL")

    def _render_vars(self) -> None:
        table = self.query_one(DataTable)
        keep = self.current
        table.clear()
        for var in self.vars:
            table.add_row(var.name, self._shown_value(var), key=var.name)
        if keep is not None and any(v.name == keep.name for v in self.vars):
            table.move_cursor(row=table.get_row_index(keep.name))
        note = f"{len(self.vars)} variable{'s' if len(self.vars) != 1 else ''}"
        if not self.vars:
            note += " — press a to add one"
        self.query_one("#statusline", Static).update(Text(note, style="dim"))

    @property
    def current(self) -> Var | None:
        table = self.query_one(DataTable)
        if not self.vars or not 0 <= table.cursor_row < len(self.vars):
            return None
        return self.vars[table.cursor_row]

    def action_reveal(self) -> None:
        var = self.current
        if var is None:
            return
        if var.name in self.revealed:
            self.revealed.discard(var.name)
        else:
            self.revealed.add(var.name)
        self.query_one(DataTable).update_cell(var.name, "value", self._shown_value(var))

    def action_copy(self) -> None:
        var = self.current
        if var is not None and var.value is not None:
            self.app.copy_to_clipboard(var.value)
            self.notify(f"Copied the value of {var.name}")

    def _save(self, result: tuple[str, str] | None) -> None:
        if result is None:
            return
        name, value = result

        def call(client: Client) -> None:
            client.set_var(name, value)

        def done(_: None) -> None:
            self.notify(f"Saved {name}")
            self.reload()

        self.dapp.run_db(self, call, done, group="write", exclusive=False)

    def action_add(self) -> None:
        self.app.push_screen(VarDialog(existing=frozenset(v.name for v in self.vars)), self._save)

    def action_edit(self) -> None:
        var = self.current
        if var is not None:
            self.app.push_screen(VarDialog(var), self._save)

    @on(DataTable.RowSelected, "#vars")
    def _selected(self, event: DataTable.RowSelected) -> None:
        if self.dapp.write_state():
            self.action_edit()

    def action_delete(self) -> None:
        var = self.current
        if var is None:
            return

        def confirmed(ok: bool | None) -> None:
            if not ok:
                return

            def done(deleted: bool) -> None:
                if deleted:
                    self.notify(f"Deleted {var.name}")
                else:
                    self.notify(f"Nothing deleted: {var.name} no longer exists", severity="warning")
                self.revealed.discard(var.name)
                self.reload()

            self.dapp.run_db(self, lambda c: c.unset_var(var.name), done, group="write",
                             exclusive=False)

        self.app.push_screen(ConfirmDialog(f"Delete variable {var.name}?"), confirmed)
