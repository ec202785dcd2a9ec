"""SVG snapshots of the main screens at 80×24 and 160×48 (pytest-textual-snapshot).

Deterministic: fixed rows with fixed timestamps (seeded as superuser), a frozen clock, UTC, no
live refresh, a database with a fixed name. Snapshots exist per server (the header shows the
PostgreSQL version); update them with `pytest tests/tui/test_snapshots.py --snapshot-update`
run against both servers (an update limited by DFTUI_TEST_SERVERS deletes the other server's files).
"""

from __future__ import annotations

import pytest

from dftui.screens.activity import ActivityScreen
from dftui.screens.history import HistoryScreen
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
        # (the no-engine banner is part of the picture: its own query must have answered)
        await wait_for_app(pilot, lambda: app.engine_warning is not None)
        await pilot.pause()  # (and the header it re-rendered laid out)
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


def _seed_history(db) -> None:
    """A fixed history for a1b2c3d4 (seed_showcase writes no engine state): it ran, failed,
    was retried by alice, received a signal and failed again."""
    from datetime import timedelta

    from tests.support.tui import BASE_TIME

    t = BASE_TIME
    with db.connect() as conn, conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(
            "INSERT INTO df_internal.instance_state (instance_id, submitted_by, started_at, "
            "finished_at, error, execution) VALUES ('a1b2c3d4', 'dftui_alice', %s, %s, "
            "'division by zero', 2)", (t + timedelta(seconds=1), t + timedelta(seconds=125)))
        attempts = [("10000002", 1, "completed", 1, 2, None),
                    ("10000008", 1, "failed", 3, 4, "division by zero"),
                    ("10000008", 1, "failed", 120, 125, "division by zero")]
        for node, attempt, status, start_s, end_s, error in attempts:
            conn.execute(
                "INSERT INTO df_internal.node_attempts (instance_id, node_id, attempt, status, "
                "started_at, finished_at, error) VALUES ('a1b2c3d4', %s, %s, %s, %s, %s, %s)",
                (node, attempt, status, t + timedelta(seconds=start_s), t + timedelta(seconds=end_s),
                 error))
        conn.execute(
            "INSERT INTO df_internal.retries (instance_id, requested_by, requested_at, "
            "previous_status, previous_error, previous_finished_at) VALUES ('a1b2c3d4', "
            "'dftui_alice', %s, 'failed', 'division by zero', %s)",
            (t + timedelta(seconds=100), t + timedelta(seconds=4)))
        conn.execute(
            "INSERT INTO df_internal.signals (instance_id, name, data, sent_by, sent_at) "
            "VALUES ('a1b2c3d4', 'approve', '{\"ok\": true}', 'dftui_alice', %s)",
            (t + timedelta(seconds=110),))


def _over_the_list(snap_db, snap_compare, size, make_screen, ready) -> bool:
    """The snapshot of the screen `make_screen()` builds, pushed over the seeded list (with its
    history), once `ready(screen)`."""
    seed_showcase(snap_db)
    _seed_history(snap_db)
    app = make_app(snap_db, "dftui_alice")

    async def opened(pilot):
        await wait_for_app(pilot, lambda: app.screen.loaded_once)
        screen = make_screen()
        app.push_screen(screen)
        await wait_for_app(pilot, lambda: app.screen is screen and ready(screen))
        await pilot.pause()

    return snap_compare(app, terminal_size=size, run_before=opened)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_history_screen(snap_db, snap_compare, size):
    assert _over_the_list(snap_db, snap_compare, size,
                          lambda: HistoryScreen("a1b2c3d4", "nightly-etl"), lambda s: s.events)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_activity_screen_with_nothing_running(snap_db, snap_compare, size):
    assert _over_the_list(snap_db, snap_compare, size,
                          lambda: ActivityScreen("a1b2c3d4", "nightly-etl"), lambda s: s.loaded)
