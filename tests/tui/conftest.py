"""Fixtures for the TUI tests: deterministic seeded instances written directly as superuser.

Seeding bypasses df.start on purpose: snapshot tests need fixed ids and timestamps. Tests of
actions use df.start and a running engine instead (see test_actions.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

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


async def wait_for(pilot, predicate, timeout: float = 15.0, what: str = "condition") -> None:
    """Let the app run until `predicate()` holds (workers finish, messages are processed).

    Not a timing assertion: the timeout only bounds a hang; the check is on state."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        await pilot.pause()
        if predicate():
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


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
