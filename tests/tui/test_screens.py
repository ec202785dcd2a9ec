"""Pilot-driven tests of the TUI against a real PostgreSQL (seeded rows, no engine needed)."""

from __future__ import annotations

from textual.widgets import DataTable, Tree

from dftui.screens.instance import InstanceScreen
from dftui.screens.instances import InstancesScreen

from .conftest import Seed, make_app, seed_instances, wait_for


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
        await wait_for(pilot, lambda: screen.loaded_once, what="first page")
        assert _ids(screen) == ["0000000a", "0000000b", "0000000c"]
        assert screen.counts.counts["failed"] == 1
        table = screen.query_one(DataTable)
        assert table.row_count == 3
        await pilot.press("3")  # failed only
        await wait_for(pilot, lambda: _ids(screen) == ["0000000b"], what="status filter")
        await pilot.press("1", "slash", *"label:embed", "enter")
        await wait_for(pilot, lambda: _ids(screen) == ["0000000c"], what="label filter")
        await pilot.press("escape")
        await wait_for(pilot, lambda: len(screen.rows) == 3, what="cleared filter")
        await pilot.press("j", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, InstanceScreen)
                       and app.screen.detail is not None, what="detail screen")
        detail = app.screen
        assert detail.instance_id == "0000000b"
        assert detail.detail.status == "failed"
        tree = detail.query_one(Tree)
        assert tree.cursor_node is not None and tree.cursor_node.data == "0000000b"
        await pilot.press("escape")
        assert app.screen is screen
