"""The TUI tests' data: deterministic seeded instances written directly as superuser, and an app
connected to a test database.

Seeding bypasses df.start on purpose: snapshot tests need fixed ids and timestamps. Tests of
actions use df.start and a running engine instead (see tests/tui/test_actions.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support.wait import wait_for_app

BASE_TIME = datetime(2025, 1, 15, 12, 0, 0, tzinfo=UTC)


@dataclass
class Seed:
    id: str
    status: str
    label: str | None = None
    role: str = "dftui_alice"
    minutes_ago: int = 0
    query: str = "SELECT 1"


def seed_instances(db, seeds: list[Seed]) -> None:
    """Insert one single-SQL-node instance per seed, with fixed created_at/updated_at."""
    with db.connect() as conn, conn.transaction():
        # Engine triggers may react to inserts; these rows are fixtures, not work.
        conn.execute("SET LOCAL session_replication_role = replica")
        for s in seeds:
            created = BASE_TIME - timedelta(minutes=s.minutes_ago)
            updated = created + timedelta(seconds=42)
            node_status = {"cancelled": "pending"}.get(s.status, s.status)
            result = None
            error = None
            if s.status == "completed":
                result = '{"rows":[{"?column?":1}],"row_count":1}'
            elif s.status == "failed":
                result = '{"error":"division by zero"}'
                error = "division by zero"
            conn.execute(
                """INSERT INTO df.instances (id, label, root_node, status, submitted_by, database,
                       created_at, updated_at, completed_at)
                   VALUES (%s, %s, %s, %s, %s::regrole, current_database(), %s, %s, %s)""",
                (s.id, s.label, s.id, s.status, s.role, created, updated,
                 updated if s.status == "completed" else None),
            )
            conn.execute(
                """INSERT INTO df.nodes (id, instance_id, node_type, query, status, result, error,
                       submitted_by, database, created_at, updated_at)
                   VALUES (%s, %s, 'SQL', %s, %s, %s, %s, %s::regrole, current_database(), %s, %s)""",
                (s.id, s.id, s.query, "running" if s.status == "running" else node_status,
                 result, error, s.role, created, updated),
            )


async def instances_loaded(pilot: Any, app: Any) -> Any:
    """The instances screen (the app's first), once its first load finished."""
    from dftui.screens.instances import InstancesScreen

    screen = app.screen
    assert isinstance(screen, InstancesScreen)
    await wait_for_app(pilot, lambda: screen.loaded_once, what="instances loaded")
    return screen


async def cursor_to(pilot: Any, screen: Any, instance_id: str) -> None:
    """Put the instances table's cursor on `instance_id`, once it is listed."""
    from textual.widgets import DataTable

    await wait_for_app(pilot, lambda: any(r.id == instance_id for r in screen.rows),
                       what=f"{instance_id} listed")
    table = screen.query_one(DataTable)
    table.move_cursor(row=table.get_row_index(instance_id))
    await pilot.pause()
    assert screen.current_id == instance_id


async def engines_health(pilot: Any, app: Any) -> Any:
    """From the first screen, open the engines screen (`e`) and return its loaded health."""
    from dftui.screens.engines import EnginesScreen

    await wait_for_app(pilot, lambda: app.screen.loaded_once, what="first screen loaded")
    await pilot.press("e")
    await wait_for_app(pilot, lambda: isinstance(app.screen, EnginesScreen)
                       and app.screen.health is not None, what="health loaded")
    return app.screen.health


def make_app(db, role: str | None, **kwargs):
    """A DftuiApp connected as `role`, with a frozen clock, UTC times and no auto-refresh
    unless asked for."""
    from dftui.app import DftuiApp
    from dftui.client import Client

    client = Client(db.dsn(role))
    client.connect()
    kwargs.setdefault("refresh_interval", None)
    kwargs.setdefault("clock", lambda: BASE_TIME)
    kwargs.setdefault("tz", UTC)
    return DftuiApp(client, **kwargs)


@dataclass
class N:
    """One node row for `seed_graph`."""

    id: str
    node_type: str
    query: str | None = None
    left: str | None = None
    right: str | None = None
    status: str = "pending"
    result: object = None
    error: str | None = None
    result_name: str | None = None


def seed_graph(db, instance_id: str, status: str, nodes: list[N], *, label: str | None = None,
               role: str = "dftui_alice", minutes_ago: int = 0) -> None:
    """Insert an instance with an explicit node graph (root = first node), fixed timestamps."""
    created = BASE_TIME - timedelta(minutes=minutes_ago)
    updated = created + timedelta(minutes=2, seconds=5)
    with db.connect() as conn, conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(
            """INSERT INTO df.instances (id, label, root_node, status, submitted_by, database,
                   created_at, updated_at, completed_at)
               VALUES (%s, %s, %s, %s, %s::regrole, current_database(), %s, %s, %s)""",
            (instance_id, label, nodes[0].id, status, role, created, updated,
             updated if status == "completed" else None),
        )
        for n in nodes:
            conn.execute(
                """INSERT INTO df.nodes (id, instance_id, node_type, query, result_name, left_node,
                       right_node, status, result, error, submitted_by, database, created_at,
                       updated_at)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::regrole, current_database(),
                           %s, %s)""",
                (n.id, instance_id, n.node_type, n.query, n.result_name, n.left, n.right, n.status,
                 None if n.result is None else json.dumps(n.result), n.error, role, created,
                 updated),
            )


def rows_result(*rows: dict) -> dict:
    return {"rows": list(rows), "row_count": len(rows)}


def seed_showcase(db) -> None:
    """A fixed, varied data set for the snapshots: every status, a failed THEN chain with an IF
    and a JOIN, labels, and one instance of another role (invisible to alice)."""
    seed_graph(db, "a1b2c3d4", "failed", [
        N("10000001", "THEN", left="10000002", right="10000003", status="failed"),
        N("10000002", "SQL", "SELECT count(*) AS n FROM staging.events", status="completed",
          result=rows_result({"n": 1200}), result_name="cnt"),
        N("10000003", "THEN", left="10000004", right="10000008", status="failed"),
        N("10000004", "IF", json.dumps({"condition_node": "10000005"}), left="10000006",
          right="10000007", status="completed", result=rows_result({"?column?": 1})),
        N("10000005", "SQL", "SELECT $cnt > 1000", status="completed",
          result=rows_result({"?column?": True})),
        N("10000006", "JOIN", left="10000009", right="1000000a", status="completed",
          result=[rows_result({"ok": 1}), rows_result({"ok": 2})]),
        N("10000007", "SQL", "SELECT 'too few events'", status="pending"),
        N("10000008", "SQL", "INSERT INTO warehouse.facts SELECT * FROM staging.events "
                             "WHERE id / 0 > 1", status="failed", error="division by zero",
          result={"error": "division by zero"}),
        N("10000009", "SQL", "SELECT 1 AS ok", status="completed", result=rows_result({"ok": 1})),
        N("1000000a", "SQL", "SELECT 2 AS ok", status="completed", result=rows_result({"ok": 2})),
    ], label="nightly-etl", minutes_ago=5)
    seeds = [
        Seed("b2c3d4e5", "running", label="embeddings", minutes_ago=1,
             query="SELECT embed(chunk) FROM docs WHERE batch = 7"),
        Seed("c3d4e5f6", "completed", label="nightly-etl", minutes_ago=65),
        Seed("d4e5f6a7", "pending", label="approval", minutes_ago=2),
        Seed("e5f6a7b8", "cancelled", label=None, minutes_ago=130),
        Seed("f6a7b8c9", "completed", label="embeddings", minutes_ago=1500),
        Seed("0badf00d", "failed", label="secret-bob", role="dftui_bob", minutes_ago=3),
    ]
    seed_instances(db, seeds)
