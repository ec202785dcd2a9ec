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


async def test_activity_says_what_every_other_running_step_is_doing(db):
    """The running-step view names what a step no engine session executes is doing: sleeping
    until when, waiting for which signal (and its timeout), for which cron schedule, queued for
    a worker; and says why a step running in another database shows no session."""
    with running_engine(db.dsn()):
        iid = start(db, ALICE, "df.join3(df.sleep(600), df.wait_for_signal('approval', 900), "
                               "df.wait_for_schedule('0 0 1 1 *')), 'waits'")
        wait_db(lambda: db.scalar("SELECT count(*) FROM df.waiting_instances WHERE instance_id = %s",
                                  (iid,)) == 3, what="three parked steps")
    # No engine now: a new step stays queued. One more instance, shown as running in another
    # database (the engine runs such steps on a connection of its own there).
    queued = start(db, ALICE, "'SELECT 1 AS one', 'queued'")
    elsewhere = start(db, ALICE, "'SELECT 2 AS two', 'elsewhere'")
    with db.connect() as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("UPDATE df.instances SET database = 'postgres', status = 'running' WHERE id = %s",
                     (elsewhere,))
        conn.execute("DELETE FROM df_internal.tasks WHERE instance_id = %s", (elsewhere,))
    app = make_app(db, ALICE, clock=None)
    async with app.run_test(size=(160, 48)) as pilot:
        await _loaded(pilot, app)
        texts = {}
        for target in (iid, queued, elsewhere):
            app.push_screen(ActivityScreen(target))
            screen = app.screen
            await wait_for(pilot, lambda screen=screen: screen.loaded, what="activity answered")
            texts[target] = " ".join(_text(screen.query_one("#activity").render()).split())
            app.pop_screen()
    waits = texts[iid]
    assert "SLEEP sleeping until " in waits and "(in 9m" in waits
    assert "SIGNAL waiting for the signal 'approval', times out at " in waits
    assert "WAIT_SCHEDULE waiting for the schedule '0 0 1 1 *', next at " in waits
    assert "SQL ready since " in texts[queued] and "waiting for a free engine worker" in texts[queued]
    assert "runs in database 'postgres'" in texts[elsewhere]
    assert "no statement of it is executing at this moment" in texts[elsewhere]


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
        await wait_for(pilot, lambda: [r.label for r in screen.rows] == ["alpha", "mango", "zebra"],
                       what="sorted by label")
        assert "▲" in str(table.columns["label"].label)
        assert "▼" not in str(table.columns["started"].label)
        await pilot.press("o")  # reverse
        await wait_for(pilot, lambda: [r.label for r in screen.rows] == ["zebra", "mango", "alpha"],
                       what="reversed")
        assert "▼" in str(table.columns["label"].label)
        await pilot.press("S")  # the next column after label: status, ascending
        await wait_for(pilot, lambda: [r.status for r in screen.rows] == ["completed", "failed", "running"],
                       what="sorted by status")
        assert screen.sort_key == "status"
        assert "sort: status ▲" in str(screen.query_one("#statusline").render())
        screen.set_sort("started")  # back to the default order, newest first
        await wait_for(pilot, lambda: [r.id for r in screen.rows] == ["0000000a", "0000000b", "0000000c"],
                       what="the server's order again")


async def test_sort_orders_every_matching_row_not_only_the_loaded_ones(db):
    """Sorting by a column is the server's order over every row matching the filter: the
    alphabetically first label belongs to the oldest instance, far beyond the first page, yet
    it comes first; the pages that follow continue the order; the cursor stays on its
    instance and the filter still applies."""
    count = PAGE_SIZE + 60
    # labels a permutation of job-0000..job-0159 across the creation order; job-0000 the oldest
    label = {i: f"job-{i * 37 % count:04d}" for i in range(1, count + 1)}
    seeds = [Seed(f"{i:08x}", "completed", label=label[i], minutes_ago=i)
             for i in range(1, count + 1)]
    seeds.append(Seed("ffffffff", "completed", label="zz-other", minutes_ago=0))
    seed_instances(db, seeds)
    app = make_app(db, ALICE)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _loaded(pilot, app)
        await pilot.press("slash", *"label:job", "enter")
        await wait_for(pilot, lambda: len(screen.rows) == PAGE_SIZE and screen.rows[0].id == "00000001",
                       what="the first page of the filter, newest first")
        assert f"{count:08x}" not in {r.id for r in screen.rows}  # the oldest is not loaded
        table = screen.query_one(DataTable)
        # (the loaded row whose label sorts first among the loaded ones: a sort of the loaded
        # rows alone would put it on top and load nothing more)
        first_loaded = min((r for r in screen.rows), key=lambda r: r.label).id
        table.move_cursor(row=table.get_row_index(first_loaded))
        await pilot.pause()
        screen.set_sort("label")
        await wait_for(pilot, lambda: screen.rows and screen.rows[0].id == f"{count:08x}",
                       what="the oldest instance's label first")
        assert screen.current_id == first_loaded  # the cursor stays on its instance
        for _ in range(6):  # nearing the end of the loaded rows loads the next page
            await pilot.press("G")
            await pilot.pause()
        await wait_for(pilot, lambda: len(screen.rows) == count and screen.next_cursor is None,
                       what="every page, in label order")
        labels = [r.label for r in screen.rows]
        assert labels == sorted(labels) and len(set(labels)) == count
        assert "zz-other" not in labels
        table.move_cursor(row=0)  # the oldest instance: last once reversed, beyond a page
        await pilot.pause()
        await pilot.press("o")  # reversed: the newest instance's label first, from the server
        await wait_for(pilot, lambda: screen.rows[0].label == f"job-{count - 1:04d}"
                       and screen.current_id == f"{count:08x}",
                       what="reversed over every row, the cursor still on its instance")
        assert "ffffffff" not in {r.id for r in screen.rows}


async def test_the_cursor_stays_on_its_instance_beyond_a_thousand_rows_after_a_resort(db):
    """The newest instance's label sorts last among 1,200: after sorting by label the cursor
    follows it to row 1,200 (the pages holding it are loaded), and a live refresh, which
    re-reads only the top 1,000, keeps the rows beyond them and the cursor where it is."""
    from dftui.screens.instances import REFRESH_WINDOW

    count = REFRESH_WINDOW + 200
    seeds = [Seed(f"{i:08x}", "completed", label=f"job-{i:05d}", minutes_ago=i)
             for i in range(1, count)]
    seeds.append(Seed("ffffffff", "completed", label="zz-last", minutes_ago=0))
    seed_instances(db, seeds)
    app = make_app(db, ALICE)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _loaded(pilot, app)
        assert screen.current_id == "ffffffff"  # the newest, on top
        screen.set_sort("label")
        await wait_for(pilot, lambda: screen.rows and screen.rows[0].label == "job-00001"
                       and screen.current_id == "ffffffff",
                       what="sorted by label, the cursor on its instance at the end")
        table = screen.query_one(DataTable)
        assert table.cursor_row == count - 1 and len(screen.rows) == count
        with db.connect() as conn:  # a change in the top window shows the refresh arrived
            conn.execute("UPDATE df.instances SET label = 'job-00002b' WHERE id = '00000002'")
        screen.live_refresh()
        await wait_for(pilot, lambda: screen.rows[1].label == "job-00002b", what="refreshed")
        await pilot.pause()
        assert len(screen.rows) == count and screen.current_id == "ffffffff"
        assert table.cursor_row == count - 1
        assert [r.label for r in screen.rows] == sorted(r.label for r in screen.rows)


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
