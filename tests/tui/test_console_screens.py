"""The console's new screens and list powers, driven through Pilot against a real engine as a
non-superuser: the running-step view (session, lock wait, blocker; confirmed cancel), the
instance history, select-all-matching beyond the loaded rows, sort by any column, go to id,
and the LISTEN-driven refresh."""

from __future__ import annotations

import io

from rich.console import Console
from textual.widgets import DataTable, Input

from dftui.screens.activity import ActivityScreen
from dftui.screens.dialogs import CancelDialog, ConfirmDialog, GotoDialog
from dftui.screens.history import HistoryScreen
from dftui.screens.instance import InstanceScreen
from dftui.screens.instances import PAGE_SIZE, InstancesScreen
from tests.support import running_engine, start, wait_terminal
from tests.support import wait_for as wait_db
from tests.support import wait_for_app as wait_for
from tests.support.tui import Seed, make_app, seed_instances

ALICE = "dftui_alice"


def _text(visual) -> str:
    """What a Static showing rich renderables says, as plain text."""
    console = Console(width=120, record=True, file=io.StringIO())
    console.print(getattr(visual, "_renderable", visual))
    return console.export_text()


async def _loaded(pilot, app) -> InstancesScreen:
    screen = app.screen
    assert isinstance(screen, InstancesScreen)
    await wait_for(pilot, lambda: screen.loaded_once, what="instances loaded")
    return screen


async def test_running_step_view_shows_the_lock_wait_and_cancels_it(db):
    with db.connect() as conn:
        conn.execute("CREATE TABLE public.busy (x int)")
        conn.execute(f"ALTER TABLE public.busy OWNER TO {ALICE}")
    with db.connect(ALICE, autocommit=False) as holder, running_engine(db.dsn()):
        holder.execute("LOCK TABLE public.busy IN ACCESS EXCLUSIVE MODE")
        iid = start(db, ALICE, "'SELECT count(*) FROM public.busy', 'blocked'")
        app = make_app(db, ALICE, clock=None)
        async with app.run_test(size=(120, 40)) as pilot:
            await _loaded(pilot, app)
            app.push_screen(InstanceScreen(iid))
            await wait_for(pilot, lambda: isinstance(app.screen, InstanceScreen)
                           and app.screen.detail is not None, what="instance screen")
            await pilot.press("w")
            await wait_for(pilot, lambda: isinstance(app.screen, ActivityScreen), what="activity")
            screen = app.screen
            await wait_for(pilot, lambda: screen.steps and screen.steps[0].waiting.startswith("Lock"),
                           timeout=30, what="the step waiting for the lock")
            step = screen.steps[0]
            assert any(b.pid == holder.info.backend_pid for b in step.blocked_by)
            rendered = _text(screen.query_one("#activity").render())
            assert f"backend pid {step.backend_pid}" in rendered and "blocked by" in rendered
            await pilot.press("x")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="confirm")
            assert "Cancel the statement of node" in app.screen.question
            await pilot.click("#confirm")
            assert wait_terminal(db, iid) == "failed"
        holder.rollback()
    error = db.scalar("SELECT error FROM df_internal.instance_state WHERE instance_id = %s", (iid,))
    assert "canceling statement due to user request" in error
    by = db.scalar("SELECT requested_by::text FROM df_internal.step_actions WHERE instance_id = %s", (iid,))
    assert by == ALICE


async def test_activity_of_another_roles_instance_is_not_found(db):
    with running_engine(db.dsn()):
        bobs = start(db, "dftui_bob", "df.sleep(600), 'bobs'")
        app = make_app(db, ALICE, clock=None)
        async with app.run_test(size=(120, 40)) as pilot:
            await _loaded(pilot, app)
            app.push_screen(ActivityScreen(bobs))
            screen = app.screen
            await wait_for(pilot, lambda: screen.loaded, what="activity answered")
            assert screen.problem == "Instance not found or access denied"
            assert not screen.check_action("cancel_backend", ())


async def test_history_screen_keeps_the_failed_execution_after_a_retry(db):
    with db.connect() as conn:
        conn.execute("CREATE TABLE public.gate2 (x int)")
        conn.execute(f"GRANT SELECT, INSERT ON public.gate2 TO {ALICE}")
    with running_engine(db.dsn()):
        iid = start(db, ALICE, "'SELECT 1 / (SELECT count(*) FROM public.gate2)::int AS q', 'flaky'")
        assert wait_terminal(db, iid) == "failed"
        with db.connect(ALICE) as conn:
            conn.execute("INSERT INTO public.gate2 VALUES (1)")
        app = make_app(db, ALICE, clock=None)
        async with app.run_test(size=(160, 48)) as pilot:
            screen = await _loaded(pilot, app)
            await wait_for(pilot, lambda: any(r.id == iid for r in screen.rows), what="listed")
            table = screen.query_one(DataTable)
            table.move_cursor(row=table.get_row_index(iid))
            await pilot.press("r")
            await wait_for(pilot, lambda: app.screen is not screen, what="retry dialog")
            await pilot.click("#confirm")
            assert wait_terminal(db, iid) == "completed"
            await pilot.pause()
            app.pop_screen() if app.screen is not screen else None
            await wait_for(pilot, lambda: app.screen is screen, what="back on the list")
            await pilot.press("h")
            await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen) and app.screen.events,
                           what="history")
            events = [(e.execution, e.event) for e in app.screen.events]
            assert (1, "attempt failed") in events and (1, "failed") in events
            assert (2, "retried") in events and events[-1] == (2, "completed")
            retried = next(e for e in app.screen.events if e.event == "retried")
            assert retried.actor == ALICE
            assert app.screen.query_one(DataTable).row_count == len(events)


async def test_select_all_matching_selects_beyond_the_loaded_rows(db):
    total = PAGE_SIZE + 30
    seed_instances(db, [Seed(f"{i:08x}", "running", label=f"batch-{i:03d}", minutes_ago=i)
                        for i in range(total)])
    app = make_app(db, ALICE)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _loaded(pilot, app)
        assert len(screen.rows) == PAGE_SIZE and screen.next_cursor is not None
        await pilot.press("asterisk")
        await wait_for(pilot, lambda: len(screen.selected) == total, what="all matching selected")
        assert len(screen.rows) < total  # selected although not loaded
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, CancelDialog), what="cancel dialog")
        assert len(app.screen.ids) == total
        title = str(app.screen.query_one(".dialog-title").render())
        assert str(total) in title
        names = str(app.screen.query_one(".dialog-ids").render())
        assert "batch-000" in names
        await pilot.press("escape")
        await pilot.press("asterisk")  # again: clears
        await wait_for(pilot, lambda: not screen.selected, what="cleared")


async def test_sort_by_any_column_with_indicator(db):
    seed_instances(db, [Seed("0000000a", "failed", label="zebra", minutes_ago=1),
                        Seed("0000000b", "completed", label="alpha", minutes_ago=2),
                        Seed("0000000c", "running", label="mango", minutes_ago=3)])
    app = make_app(db, ALICE)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _loaded(pilot, app)
        assert [r.id for r in screen.rows] == ["0000000a", "0000000b", "0000000c"]
        table = screen.query_one(DataTable)
        assert "▼" in str(table.columns["started"].label)
        screen.set_sort("label")
        await pilot.pause()
        assert [r.label for r in screen.rows] == ["alpha", "mango", "zebra"]
        assert "▲" in str(table.columns["label"].label)
        assert "▼" not in str(table.columns["started"].label)
        await pilot.press("o")  # reverse
        assert [r.label for r in screen.rows] == ["zebra", "mango", "alpha"]
        assert "▼" in str(table.columns["label"].label)
        await pilot.press("S")  # the next column after label: status, ascending
        await pilot.pause()
        assert screen.sort_key == "status"
        assert [r.status for r in screen.rows] == ["completed", "failed", "running"]
        assert "sort: status ▲" in str(screen.query_one("#statusline").render())
        screen.set_sort("started")  # back to the server's order, newest first
        await wait_for(pilot, lambda: [r.id for r in screen.rows] == ["0000000a", "0000000b", "0000000c"],
                       what="the server's order again")


async def test_go_to_id(db):
    seed_instances(db, [Seed("abc12345", "completed", label="target"),
                        Seed("abd99999", "completed", label="other", minutes_ago=1)])
    app = make_app(db, ALICE)
    async with app.run_test(size=(120, 40)) as pilot:
        await _loaded(pilot, app)
        await pilot.press("i")
        await wait_for(pilot, lambda: isinstance(app.screen, GotoDialog), what="goto dialog")
        await pilot.press(*"zz", "enter")  # not an id: said in the dialog, which stays
        assert isinstance(app.screen, GotoDialog)
        app.screen.query_one(Input).value = ""
        await pilot.press(*"abc1", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, InstanceScreen), what="opened")
        assert app.screen.instance_id == "abc12345"


async def test_listen_refreshes_without_waiting_for_the_poll(db):
    # A poll so slow it never fires during the test: only a LISTEN hint can bring the new row.
    app = make_app(db, ALICE, refresh_interval=3600, clock=None)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _loaded(pilot, app)
        await wait_for(pilot, lambda: app.listening, what="LISTEN connection up")
        iid = start(db, ALICE, "df.sleep(600), 'notified'")  # df.start notifies df_work
        await wait_for(pilot, lambda: any(r.id == iid for r in screen.rows), timeout=20,
                       what="the new instance listed by the hint")
        assert app.hints >= 1
    wait_db(lambda: True)
