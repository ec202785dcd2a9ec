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
