"""SVG snapshots of the main screens at 80×24 and 160×48 (pytest-textual-snapshot).

Deterministic: fixed rows with fixed timestamps (seeded as superuser), a frozen clock, UTC, no
live refresh, a database with a fixed name. Snapshots exist per server (the header shows the
PostgreSQL version); update them with `pytest tests/tui/test_snapshots.py --snapshot-update`
run against both servers (an update limited by DFTUI_TEST_SERVERS deletes the other server's files).
"""

from __future__ import annotations

import pytest

from dftui.screens.instance import InstanceScreen
from dftui.screens.instances import InstancesScreen
from tests.support import wait_for_app
from tests.support.tui import make_app, seed_showcase

SIZES = [(80, 24), (160, 48)]


@pytest.fixture(autouse=True)
def _only_known_servers(pg_server):
    if pg_server.name not in ("pg18", "pg15"):
        pytest.skip("snapshots are recorded for the self-started pg18/pg15 servers only")


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_instances_screen(snap_db, snap_compare, size):
    seed_showcase(snap_db)
    app = make_app(snap_db, "dftui_alice")

    async def loaded(pilot):
        screen = app.screen
        await wait_for_app(pilot, lambda: isinstance(screen, InstancesScreen) and screen.loaded_once)
        await pilot.press("j")

    assert snap_compare(app, terminal_size=size, run_before=loaded)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_instance_screen(snap_db, snap_compare, size):
    seed_showcase(snap_db)
    app = make_app(snap_db, "dftui_alice")

    async def opened(pilot):
        await wait_for_app(pilot, lambda: app.screen.loaded_once)
        app.push_screen(InstanceScreen("a1b2c3d4"))
        await wait_for_app(pilot, lambda: isinstance(app.screen, InstanceScreen)
                           and app.screen.detail is not None)
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=opened)
