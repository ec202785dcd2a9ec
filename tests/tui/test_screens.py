"""Pilot-driven tests of the TUI against a real PostgreSQL (seeded rows, no engine needed)."""

from __future__ import annotations

from textual.widgets import DataTable, Tree

from dftui.screens.instance import InstanceScreen
from dftui.screens.instances import InstancesScreen
from tests.support import wait_for_app
from tests.support.tui import Seed, make_app, seed_instances


def _ids(screen: InstancesScreen) -> list[str]:
    return [r.id for r in screen.rows]


async def test_list_filter_open(db):
    seed_instances(db, [
        Seed("0000000a", "completed", label="etl", minutes_ago=1),
        Seed("0000000b", "failed", label="etl", minutes_ago=2),
        Seed("0000000c", "running", label="embed", minutes_ago=3),
        Seed("000000b0", "failed", label="bob-only", role="dftui_bob", minutes_ago=4),
    ])
    app = make_app(db, "dftui_alice")
    async with app.run_test(size=(160, 48)) as pilot:
        screen = app.screen
        assert isinstance(screen, InstancesScreen)
        await wait_for_app(pilot, lambda: screen.loaded_once, what="first page")
        assert _ids(screen) == ["0000000a", "0000000b", "0000000c"]
        assert screen.counts.counts["failed"] == 1
        table = screen.query_one(DataTable)
        assert table.row_count == 3
        await pilot.press("3")  # failed only
        await wait_for_app(pilot, lambda: _ids(screen) == ["0000000b"], what="status filter")
        await pilot.press("1", "slash", *"label:embed", "enter")
        await wait_for_app(pilot, lambda: _ids(screen) == ["0000000c"], what="label filter")
        await pilot.press("escape")
        await wait_for_app(pilot, lambda: len(screen.rows) == 3, what="cleared filter")
        await pilot.press("j", "enter")
        await wait_for_app(pilot, lambda: isinstance(app.screen, InstanceScreen)
                           and app.screen.detail is not None, what="detail screen")
        detail = app.screen
        assert detail.instance_id == "0000000b"
        assert detail.detail.status == "failed"
        tree = detail.query_one(Tree)
        assert tree.cursor_node is not None and tree.cursor_node.data == "0000000b"
        await pilot.press("escape")
        assert app.screen is screen


async def test_keyset_paging_and_cursor_kept_on_refresh(db):
    seed_instances(db, [Seed(f"{i:08x}", "completed", label=f"l{i % 3}", minutes_ago=i)
                        for i in range(1, 251)])
    app = make_app(db, "dftui_alice")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await wait_for_app(pilot, lambda: screen.loaded_once, what="first page")
        assert len(screen.rows) == 100 and screen.next_cursor is not None
        for _ in range(6):  # G goes to the last loaded row; nearing the end loads the next page
            await pilot.press("G")
            await pilot.pause()
        await wait_for_app(pilot, lambda: len(screen.rows) == 250 and screen.next_cursor is None,
                           what="all pages")
        assert [r.id for r in screen.rows] == [f"{i:08x}" for i in range(1, 251)]
        assert screen.query_one(DataTable).row_count == 250

        # the cursor stays on the same instance when new ones appear above it
        table = screen.query_one(DataTable)
        table.move_cursor(row=table.get_row_index("00000064"))
        await pilot.pause()
        seed_instances(db, [Seed("ffff0001", "running", minutes_ago=0),
                            Seed("ffff0002", "pending", minutes_ago=0)])
        screen.live_refresh()
        await wait_for_app(pilot, lambda: screen.rows[0].id in ("ffff0001", "ffff0002"),
                           what="new rows on top")
        assert screen.current_id == "00000064"
        assert len(screen.rows) == 252


async def test_copy_follow_and_failed_jumps(db):
    from tests.support.tui import N, seed_graph

    seed_graph(db, "abcdef01", "running", [
        N("20000001", "JOIN", left="20000002", right="20000003", status="running"),
        N("20000002", "THEN", left="20000004", right="20000005", status="failed"),
        N("20000003", "THEN", left="20000006", right="20000007", status="running"),
        N("20000004", "SQL", "SELECT 1/0", status="failed", error="division by zero"),
        N("20000005", "SQL", "SELECT 'never'"),
        N("20000006", "SQL", "SELECT 'x'::int", status="failed", error="invalid input syntax"),
        N("20000007", "SQL", "SELECT pg_sleep(60)", status="running"),
    ], label="two-failures")
    app = make_app(db, "dftui_alice")
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for_app(pilot, lambda: app.screen.loaded_once)
        await pilot.press("y")
        assert app.clipboard == "abcdef01"
        await pilot.press("enter")
        await wait_for_app(pilot, lambda: isinstance(app.screen, InstanceScreen)
                           and app.screen.detail is not None, what="detail")
        detail = app.screen
        tree = detail.query_one(Tree)

        def at() -> str | None:
            return tree.cursor_node.data if tree.cursor_node else None

        await pilot.press("n")
        assert at() == "20000004"
        await pilot.press("n")
        assert at() == "20000006"
        await pilot.press("n")  # wraps around
        assert at() == "20000004"
        await pilot.press("N")
        assert at() == "20000006"
        await pilot.press("y")
        assert app.clipboard == "SELECT 'x'::int"
        await pilot.press("f")
        assert detail.follow
        await wait_for_app(pilot, lambda: at() == "20000007", what="follow jumps to running step")


async def test_missing_retry_is_disabled_with_reason(db):
    """A backend without df.retry (like pg_durable) greys retry out and says why."""
    with db.connect() as conn:
        conn.execute("DROP FUNCTION df.retry(text, text)")
    seed_instances(db, [Seed("0000000b", "failed")])
    app = make_app(db, "dftui_alice")
    async with app.run_test(size=(160, 48)) as pilot:
        screen = app.screen
        await wait_for_app(pilot, lambda: screen.loaded_once)
        assert not app.client.capabilities.can_retry
        assert "retry disabled" in app.header_text(160).plain
        assert screen.active_bindings["r"].enabled is False
        assert screen.active_bindings["c"].enabled is True
        await pilot.press("r")
        assert app.screen is screen


async def test_status_summary_is_clickable(db):
    seed_instances(db, [Seed("0000000a", "completed", minutes_ago=1),
                        Seed("0000000b", "failed", minutes_ago=2)])
    app = make_app(db, "dftui_alice")
    async with app.run_test(size=(160, 48)) as pilot:
        screen = app.screen
        await wait_for_app(pilot, lambda: screen.loaded_once and screen.counts is not None)
        summary = screen.query_one("#summary")
        x = str(summary.render()).index("Failed")
        await pilot.click("#summary", offset=(x + 1, 0))
        await wait_for_app(pilot, lambda: [r.id for r in screen.rows] == ["0000000b"], what="click filter")
        assert screen.filters.status == "failed"


async def test_sort_oldest_first_and_label_picker(db):
    seed_instances(db, [Seed(f"{i:08x}", "completed", label=f"batch-{i % 2}", minutes_ago=i)
                        for i in range(1, 131)])
    app = make_app(db, "dftui_alice")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await wait_for_app(pilot, lambda: screen.loaded_once)
        await pilot.press("o")
        await wait_for_app(pilot, lambda: screen.rows and screen.rows[0].id == f"{130:08x}",
                           what="oldest first")
        for _ in range(3):
            await pilot.press("G")
            await pilot.pause()
        await wait_for_app(pilot, lambda: len(screen.rows) == 130 and screen.next_cursor is None,
                           what="all pages oldest first")
        assert [r.id for r in screen.rows] == [f"{i:08x}" for i in range(130, 0, -1)]
        await pilot.press("l")
        from dftui.screens.dialogs import LabelPicker

        await wait_for_app(pilot, lambda: isinstance(app.screen, LabelPicker)
                           and app.screen.query_one("#labels").option_count == 3, what="labels")
        await pilot.press("down", "down", "enter")  # (all), batch-0, batch-1
        await wait_for_app(pilot, lambda: screen.filters.label_exact == "batch-1" and len(screen.rows) == 65,
                           what="label filter")
        assert all(r.label == "batch-1" for r in screen.rows)


async def test_resize_keeps_cursor_and_adapts_columns(db):
    seed_instances(db, [Seed(f"{i:08x}", "completed", minutes_ago=i) for i in range(1, 30)])
    app = make_app(db, "dftui_alice")
    async with app.run_test(size=(160, 48)) as pilot:
        screen = app.screen
        await wait_for_app(pilot, lambda: screen.loaded_once)
        table = screen.query_one(DataTable)
        table.move_cursor(row=table.get_row_index("0000000c"))
        await pilot.pause()
        wide_step = table.columns["step"].width
        await pilot.resize_terminal(80, 24)
        await wait_for_app(pilot, lambda: screen._width == 80, what="resize handled")
        assert screen.current_id == "0000000c"
        assert table.columns["step"].width < wide_step
