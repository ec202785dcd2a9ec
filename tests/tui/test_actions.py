"""The TUI acting on a real database with a running engine, as non-superuser roles: cancel
(single and bulk), retry, signal, start; RLS through the UI; read-only mode; connection loss."""

from __future__ import annotations

import json

from textual.widgets import Input, TextArea

from dftui.screens.dialogs import CancelDialog, RetryDialog, SignalDialog, StartDialog
from dftui.screens.instance import InstanceScreen
from tests.support import running_engine, start, wait_for, wait_for_app, wait_terminal
from tests.support.tui import cursor_to, instances_loaded, make_app


def _status(db, instance_id: str) -> str:
    return db.scalar("SELECT status FROM df.instances WHERE id = %s", (instance_id,))




async def test_cancel_retry_signal_as_alice(db):
    with running_engine(db.dsn()):
        waiting = start(db, "dftui_alice", "df.seq('SELECT 1 AS one', df.wait_for_signal('go')), 'sig'")
        failing = start(db, "dftui_alice", "df.seq('SELECT 1', 'SELECT 1/0'), 'boom'")
        sleeper = start(db, "dftui_alice", "df.sleep(600), 'nap'")
        assert wait_terminal(db, failing) == "failed"

        app = make_app(db, "dftui_alice", clock=None)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await instances_loaded(pilot, app)

            # cancel with a reason
            await cursor_to(pilot, screen, sleeper)
            await pilot.press("c")
            await wait_for_app(pilot, lambda: isinstance(app.screen, CancelDialog), what="cancel dialog")
            await pilot.press(*"no longer needed", "enter")
            wait_for(lambda: _status(db, sleeper) == "cancelled", what="cancelled in the db")
            reason = db.scalar("SELECT cancel_reason FROM df.instance_runtime WHERE instance_id = %s",
                               (sleeper,))
            assert reason == "no longer needed"

            # retry shows what will re-run, then re-runs it (and fails again: 1/0)
            await cursor_to(pilot, screen, failing)
            await pilot.press("r")
            await wait_for_app(pilot, lambda: isinstance(app.screen, RetryDialog), what="retry dialog")
            dialog = app.screen
            await wait_for_app(pilot, lambda: "SELECT 1/0" in str(dialog.query_one("#preview").render()),
                               what="retry preview")
            await pilot.press("enter")
            wait_for(lambda: db.scalar("SELECT count(*) FROM df_internal.retries WHERE instance_id = %s",
                                       (failing,)) == 1, what="retry recorded")
            assert wait_terminal(db, failing) == "failed"

            # signal with a JSON payload validated in the dialog
            await cursor_to(pilot, screen, waiting)
            await pilot.press("s")
            await wait_for_app(pilot, lambda: isinstance(app.screen, SignalDialog), what="signal dialog")
            dialog = app.screen
            await pilot.press(*"go")
            dialog.query_one("#payload", TextArea).text = '{"approved": '
            await pilot.press("ctrl+s")
            await pilot.pause()
            assert "not valid JSON" in str(dialog.query_one("#error").render())
            assert app.screen is dialog  # nothing sent
            dialog.query_one("#payload", TextArea).text = '{"approved": true}'
            await pilot.press("ctrl+s")
            await wait_for_app(pilot, lambda: app.screen is screen, what="signal dialog closed")
            assert wait_terminal(db, waiting) == "completed"
            result = db.scalar("SELECT df.result(%s)", (waiting,), role="dftui_alice")
            assert json.loads(result)["data"] == {"approved": True}


async def test_bulk_cancel_and_start(db):
    with running_engine(db.dsn()):
        a = start(db, "dftui_alice", "df.sleep(600), 'bulk'")
        b = start(db, "dftui_alice", "df.sleep(600), 'bulk'")
        keep = start(db, "dftui_alice", "df.sleep(600), 'keep'")
        app = make_app(db, "dftui_alice", clock=None)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await instances_loaded(pilot, app)
            await cursor_to(pilot, screen, a)
            await pilot.press("space")
            await cursor_to(pilot, screen, b)
            await pilot.press("space")
            assert screen.selected == {a, b}
            await pilot.press("c")
            await wait_for_app(pilot, lambda: isinstance(app.screen, CancelDialog), what="cancel dialog")
            assert "Cancel 2 instances?" in str(app.screen.query_one(".dialog-title").render())
            await pilot.press("enter")
            wait_for(lambda: _status(db, a) == _status(db, b) == "cancelled", what="bulk cancel")
            assert _status(db, keep) in ("pending", "running")

            # start a new run from the DSL editor
            await pilot.press("n")
            await wait_for_app(pilot, lambda: isinstance(app.screen, StartDialog), what="start dialog")
            dialog = app.screen
            dialog.query_one("#source", TextArea).text = "'SELECT 40 + 2 AS answer' |=> 'x'"
            dialog.query_one("#label", Input).value = "from-tui"
            await wait_for_app(pilot, lambda: "SQL" in str(dialog.query_one("#preview").render()),
                               what="explain preview")
            await pilot.press("ctrl+s")
            await wait_for_app(pilot, lambda: app.screen is screen, what="start dialog closed")
            new_id = db.scalar("SELECT id FROM df.instances WHERE label = 'from-tui'")
            assert db.scalar("SELECT submitted_by::text FROM df.instances WHERE id = %s",
                             (new_id,)) == "dftui_alice"
            assert wait_terminal(db, new_id) == "completed"


async def test_rls_bob_never_sees_alice(db):
    alice_id = start(db, "dftui_alice", "'SELECT 1', 'alice-private'")
    bob_id = start(db, "dftui_bob", "'SELECT 2', 'bob-own'")
    app = make_app(db, "dftui_bob")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await instances_loaded(pilot, app)
        assert [r.id for r in screen.rows] == [bob_id]
        assert screen.counts.total == 1
        # searching for alice's id or label finds nothing
        await pilot.press("slash", *alice_id, "enter")
        await wait_for_app(pilot, lambda: screen.filters.text == alice_id, what="filter applied")
        await wait_for_app(pilot, lambda: screen.loaded_once and screen.rows == [], what="no rows")
        # opening alice's instance directly behaves like a missing one
        app.push_screen(InstanceScreen(alice_id))
        await wait_for_app(pilot, lambda: any("not found or access denied" in str(n.message)
                                              for n in app._notifications), what="denied notice")
        assert app.screen.detail is None


async def test_read_only_disables_writes(db):
    sleeper = start(db, "dftui_alice", "df.sleep(600), 'nap'")
    app = make_app(db, "dftui_alice", read_only=True)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await instances_loaded(pilot, app)
        await cursor_to(pilot, screen, sleeper)
        for key in ("c", "r", "s", "n"):
            await pilot.press(key)
            await pilot.pause()
            assert app.screen is screen, f"{key} opened a dialog in read-only mode"
        bindings = screen.active_bindings
        assert bindings["c"].enabled is False and bindings["r"].enabled is False
        assert "READ-ONLY" in app.header_text(120).plain
    assert _status(db, sleeper) == "pending"


async def test_connection_loss_banner_and_recovery(db):
    start(db, "dftui_alice", "'SELECT 1', 'x'")
    app = make_app(db, "dftui_alice", reconnect_delays=(1.5, 0.2))
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await instances_loaded(pilot, app)
        # Started after the list was read, shown only by the reload the app's Reconnected
        # message triggers (no live refresh here; the `R` below fails on the dead session).
        start(db, "dftui_alice", "'SELECT 2', 'y'")
        pid = app.client.backend_pid()
        assert db.scalar("SELECT pg_terminate_backend(%s)", (pid,)) is True
        await pilot.press("R")
        await wait_for_app(pilot, lambda: app.disconnections == 1, what="loss noticed")
        header = screen.query_one("AppHeader")
        if app.disconnected is not None:  # still in the first back-off delay: banner is up
            assert "Connection lost" in app.header_text(120).plain
            assert header.has_class("-disconnected")
            assert "Connection lost" in str(header.render())  # the widget follows header_state
        await wait_for_app(pilot, lambda: app.disconnected is None, what="reconnected")
        assert app.client.backend_pid() != pid
        assert "Connection lost" not in app.header_text(120).plain
        assert not header.has_class("-disconnected")
        assert "Connection lost" not in str(header.render())
        await wait_for_app(pilot, lambda: len(screen.rows) == 2, what="list re-read after reconnect")


async def test_loop_iterations_and_attempts_in_panel(db):
    from textual.widgets import Tree

    from dftui.screens.instance import InstanceScreen

    with db.connect() as conn:
        conn.execute("CREATE TABLE public.ticks (n int)")
        conn.execute("GRANT ALL ON public.ticks TO dftui_alice")
    with running_engine(db.dsn()):
        looped = start(db, "dftui_alice",
                       "df.loop(df.seq('INSERT INTO public.ticks VALUES (1)', "
                       "df.if('SELECT count(*) >= 3 FROM public.ticks', df.break('\"done\"'), "
                       "'SELECT 0'))), 'looper'")
        assert wait_terminal(db, looped) == "completed"
        app = make_app(db, "dftui_alice", clock=None)
        async with app.run_test(size=(160, 48)) as pilot:
            await instances_loaded(pilot, app)
            app.push_screen(InstanceScreen(looped))
            await wait_for_app(pilot, lambda: isinstance(app.screen, InstanceScreen)
                               and app.screen.detail is not None, what="detail")
            detail = app.screen
            loop = next(n for n in detail.nodes.values() if n.node_type == "LOOP")
            assert len(loop.loop_iterations) >= 2
            tree = detail.query_one(Tree)
            tree.move_cursor(detail._tree_nodes[loop.id])
            await pilot.pause()
            assert detail._selected_node_id() == loop.id
            assert "LOOP" in tree.cursor_node.label.plain
            assert "Previous iterations" in _panel_text(loop)
            insert = next(n for n in detail.nodes.values() if n.query and "INSERT" in n.query)
            assert insert.attempt_history and insert.attempt_history[-1].status == "completed"
            text = _panel_text(insert)
            assert "INSERT INTO public.ticks" in text and "Attempts" in text


def _panel_text(node) -> str:
    import io
    from datetime import UTC, datetime

    from rich.console import Console

    from dftui.widgets.node_panel import node_details

    console = Console(width=120, record=True, file=io.StringIO())
    console.print(node_details(node, "completed", now=datetime.now(UTC), tz=UTC))
    return console.export_text()
