"""Variables, engines & health, help and the command palette, driven through the real app."""

from __future__ import annotations

from textual.widgets import DataTable, Input

from dftui.screens.engines import EnginesScreen, wait_due
from dftui.screens.help import HelpScreen
from dftui.screens.variables import ConfirmDialog, VarDialog, VariablesScreen
from tests.support import running_engine, start, wait_for, wait_for_app
from tests.support.tui import engines_health, make_app


def _vars(db, role):
    with db.connect(role) as conn:
        return dict(conn.execute("SELECT name, value FROM df.vars ORDER BY name").fetchall())


async def test_variables_add_edit_delete_and_masking(db):
    with db.connect("dftui_alice") as conn:
        conn.execute("SELECT df.setvar('api_token', 'sk-live-123')")
    with db.connect("dftui_bob") as conn:
        conn.execute("SELECT df.setvar('bob_only', 'x')")
    app = make_app(db, "dftui_alice")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for_app(pilot, lambda: app.screen.loaded_once)
        await pilot.press("v")
        await wait_for_app(pilot, lambda: isinstance(app.screen, VariablesScreen)
                           and app.screen.loaded_once, what="variables screen")
        screen = app.screen
        assert [v.name for v in screen.vars] == ["api_token"]  # bob's are invisible
        table = screen.query_one(DataTable)
        assert "sk-live" not in str(table.get_cell("api_token", "value"))
        await pilot.press("x")
        assert "sk-live-123" in str(table.get_cell("api_token", "value"))
        await pilot.press("x")
        assert "sk-live" not in str(table.get_cell("api_token", "value"))

        await pilot.press("a")
        await wait_for_app(pilot, lambda: isinstance(app.screen, VarDialog), what="add dialog")
        await pilot.press(*"region", "tab", *"eu-west-1", "enter")
        await wait_for_app(pilot, lambda: [v.name for v in screen.vars] == ["api_token", "region"],
                           what="var added")
        assert _vars(db, "dftui_alice")["region"] == "eu-west-1"

        # a bad name is refused inside the dialog, which stays open with the input kept
        await pilot.press("a")
        await wait_for_app(pilot, lambda: isinstance(app.screen, VarDialog), what="add dialog")
        dialog = app.screen
        await pilot.press(*"bad-name", "tab", *"v", "enter")
        await pilot.pause()
        assert app.screen is dialog
        assert "not a valid name" in str(dialog.query_one("#error").render())
        assert dialog.query_one("#name", Input).value == "bad-name"
        assert dialog.query_one("#value", Input).value == "v"
        await pilot.press("escape")
        await wait_for_app(pilot, lambda: app.screen is screen, what="dialog closed")
        assert "bad-name" not in _vars(db, "dftui_alice")

        # adding a name that exists is refused in the dialog (Save overwrote its value silently)
        await pilot.press("a")
        await wait_for_app(pilot, lambda: isinstance(app.screen, VarDialog), what="add dialog")
        dialog = app.screen
        await pilot.press(*"region", "tab", "enter")
        await pilot.pause()
        assert app.screen is dialog
        assert "region exists already" in str(dialog.query_one("#error").render())
        await pilot.press("escape")
        await wait_for_app(pilot, lambda: app.screen is screen, what="dialog closed")
        assert _vars(db, "dftui_alice")["region"] == "eu-west-1"

        # g / G move to the first / last variable
        await pilot.press("G")
        assert screen.current.name == "region"
        await pilot.press("g")
        assert screen.current.name == "api_token"

        table.move_cursor(row=table.get_row_index("region"))
        await pilot.press("enter")
        await wait_for_app(pilot, lambda: isinstance(app.screen, VarDialog), what="edit dialog")
        value = app.screen.query_one("#value", Input)
        value.value = "us-east-2"
        await pilot.press("enter")
        await wait_for_app(pilot, lambda: _vars(db, "dftui_alice").get("region") == "us-east-2",
                           what="var edited")

        await wait_for_app(pilot, lambda: app.screen is screen and len(screen.vars) == 2)
        table.move_cursor(row=table.get_row_index("region"))
        await pilot.press("d")
        await wait_for_app(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="confirm")
        await pilot.press("enter")
        await wait_for_app(pilot, lambda: "region" not in _vars(db, "dftui_alice"), what="deleted")
        assert _vars(db, "dftui_bob") == {"bob_only": "x"}


async def test_engines_screen_shows_engine_and_waits(db):
    with running_engine(db.dsn()):
        done = start(db, "dftui_alice", "'SELECT 1', 'quick'")
        waiting = start(db, "dftui_alice", "df.wait_for_signal('go', 3600), 'waiter'")
        wait_for(lambda: db.scalar("SELECT status FROM df.instances WHERE id = %s", (done,))
                 == "completed", what="quick instance done")
        # (the node reads running once activated; the wait is listed once the engine parked it)
        wait_for(lambda: db.scalar("SELECT count(*) FROM df.waiting_instances WHERE instance_id = %s",
                                   (waiting,), role="dftui_alice") == 1,
                 what="signal wait parked and listed")
        app = make_app(db, "dftui_alice", clock=None)
        async with app.run_test(size=(160, 48)) as pilot:
            health = await engines_health(pilot, app)
            assert any(e.data.get("state") == "alive" for e in health.engines)
            assert [w.instance_id for w in health.waiting] == [waiting]
            assert "SIGNAL 'go'" in health.waiting[0].step
            assert health.step_rate is not None and sum(health.step_rate) > 0
            due = wait_due(health.waiting[0], health.server_now)
            assert due is not None and due > health.server_now  # the signal's timeout
            await pilot.press("escape")
            assert not isinstance(app.screen, EnginesScreen)


async def test_help_lists_bindings_and_read_only_reasons(db):
    app = make_app(db, "dftui_alice", read_only=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for_app(pilot, lambda: app.screen.loaded_once)
        await pilot.press("question_mark")
        await wait_for_app(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        text = "\n".join(app.screen.lines)
        for expected in ("Filter", "Select", "Refresh", "Copy id", "Open"):
            assert expected in text
        assert "Cancel (disabled: read-only mode" in text
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_palette_offers_screen_actions(db):
    app = make_app(db, "dftui_alice")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for_app(pilot, lambda: app.screen.loaded_once)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "Cancel" in titles and "Filter" in titles and "Show failed instances" in titles
        assert "Cursor Down" not in titles
        await pilot.press("colon")
        await wait_for_app(pilot, lambda: app.screen.__class__.__name__ == "CommandPalette",
                           what="palette open")
