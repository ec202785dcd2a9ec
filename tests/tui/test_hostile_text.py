"""Text that a role writes (labels, step SQL, results and their column names, errors, variable
values, signal names) is shown as written, never read as Rich/Textual markup: a label
'[/]closing' made the list raise MarkupError on every launch, a result '[/]' the detail screen.
Every screen a role's text reaches is opened on it."""

from __future__ import annotations

from textual.widgets import DataTable, Input, OptionList, TextArea

from dftui.screens.dialogs import CancelDialog, LabelPicker, SignalDialog
from dftui.screens.history import HistoryScreen
from dftui.screens.instance import InstanceScreen
from dftui.screens.variables import VariablesScreen
from tests.support import wait_for_app
from tests.support.tui import N, cursor_to, instances_loaded, make_app, rows_result, seed_graph

HOSTILE = "[/]closing [bold red]loud[/ [link=http://x]l[/link] [@click=app.quit]q[/]"


def _seed(db) -> None:
    seed_graph(db, "0badc0de", "failed", [
        N("20000001", "THEN", left="20000002", right="20000003", status="failed"),
        N("20000002", "SQL", f"SELECT '{HOSTILE}' AS \"[/]\"", status="completed",
          result=rows_result({"[/]": HOSTILE, "[b]col": "[/]"}), result_name="r"),
        N("20000003", "SQL", f"SELECT 1/0 -- {HOSTILE}", status="failed",
          error=f"division by zero {HOSTILE}", result={"error": f"division by zero {HOSTILE}"}),
    ], label=HOSTILE)


async def test_markup_in_a_roles_text_is_shown_as_written(db):
    _seed(db)
    with db.connect("dftui_alice") as conn:
        conn.execute("SELECT df.setvar('note', %s)", (HOSTILE,))
        pending = conn.execute("SELECT df.start(%s, %s)",
                               (f"SELECT '{HOSTILE}' AS \"[/]\"", HOSTILE)).fetchone()[0]
    app = make_app(db, "dftui_alice")
    async with app.run_test(size=(200, 50)) as pilot:
        screen = await instances_loaded(pilot, app)
        await cursor_to(pilot, screen, "0badc0de")
        label = str(screen.query_one(DataTable).get_cell("0badc0de", "label"))
        assert label.startswith("[/]closing [bold red]loud[/"), label
        await pilot.press("enter")
        await wait_for_app(pilot, lambda: isinstance(app.screen, InstanceScreen)
                           and app.screen.detail is not None, what="detail loaded")
        await pilot.pause()
        for _ in range(3):  # every node's panel: the SQL with its result, the failed one
            await pilot.press("down")
            await pilot.pause()
        await pilot.press("q")
        await wait_for_app(pilot, lambda: app.screen is screen, what="back on the list")
        await cursor_to(pilot, screen, pending)  # (a real one: the seeded rows have no history)
        await pilot.press("h")
        await wait_for_app(pilot, lambda: isinstance(app.screen, HistoryScreen)
                           and " events, " in str(app.screen.query_one("#history-title").render()),
                           what="history loaded")
        await pilot.press("q")
        await wait_for_app(pilot, lambda: app.screen is screen, what="back on the list")
        await pilot.press("v")
        await wait_for_app(pilot, lambda: isinstance(app.screen, VariablesScreen)
                           and app.screen.loaded_once, what="variables loaded")
        assert str(app.screen.query_one(DataTable).get_cell("note", "value")).startswith("[/]closing")
        await pilot.press("q")
        await wait_for_app(pilot, lambda: app.screen is screen, what="back on the list")
        await pilot.press("l")  # the label picker lists the label as written (MarkupError)
        await wait_for_app(pilot, lambda: isinstance(app.screen, LabelPicker), what="label picker")
        await wait_for_app(pilot, lambda: app.screen.query_one(OptionList).option_count > 1,
                           what="labels loaded")
        await pilot.pause()
        await pilot.press("escape")
        await wait_for_app(pilot, lambda: app.screen is screen, what="back on the list")
        await cursor_to(pilot, screen, "0badc0de")
        await pilot.press("c")  # a failed instance: refused, naming it by its label
        await pilot.pause()
        assert HOSTILE in "\n".join(str(n.message) for n in app._notifications)
        await cursor_to(pilot, screen, pending)
        await pilot.press("s")  # the dialogs name it by its label too
        await wait_for_app(pilot, lambda: isinstance(app.screen, SignalDialog), what="signal dialog")
        dialog = app.screen
        assert HOSTILE in str(dialog.query_one(".dialog-title").render())
        # NaN is not JSON: said in the dialog (its ValueError escaped as a traceback)
        dialog.query_one("#name", Input).value = "go"
        dialog.query_one("#payload", TextArea).text = "NaN"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is dialog
        assert "payload is not valid JSON" in str(dialog.query_one("#error").render())
        await pilot.press("escape")
        await wait_for_app(pilot, lambda: app.screen is screen, what="back on the list")
        await pilot.press("c")
        await wait_for_app(pilot, lambda: isinstance(app.screen, CancelDialog), what="cancel dialog")
        await pilot.press("enter")
        await wait_for_app(pilot, lambda: "Cancelled 1" in "\n".join(
            str(n.message) for n in app._notifications), what="cancel reported")
        assert app.return_code is None  # nothing raised (the app exits with 1 on an error)
    assert db.scalar("SELECT status FROM df.instances WHERE id = %s", (pending,)) == "cancelled"
