"""pg_durable's settings, honoured by the engine with the same meaning (engine/pg_settings.py):
set the way that works on every server, PostgreSQL 15 included (ALTER DATABASE ... SET; ALTER
SYSTEM refuses settings of an extension that is not loaded there), they become the engine's
defaults; a flag or environment variable still wins.
"""

from __future__ import annotations

from datetime import timedelta

from psycopg import sql

from engine.config import EngineConfig
from engine.pg_settings import apply_database_settings
from tests.support import ALICE, running_engine, start, wait_for, wait_terminal


def _set(db, name: str, value: str) -> None:
    with db.connect() as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET {} = {}").format(
            sql.Identifier(db.name), sql.Identifier(*name.split(".")), sql.Literal(value)))


def test_max_user_connections_is_the_engine_concurrency(db) -> None:
    _set(db, "pg_durable.max_user_connections", "3")
    with running_engine(db.dsn()) as engine:
        assert len(engine.workers) == 3
        assert db.scalar("SELECT concurrency FROM df.engines WHERE state = 'alive'") == 3
    explicit = EngineConfig.from_env(dsn=db.dsn(), concurrency=5)
    with db.connect() as conn:
        assert apply_database_settings(conn, explicit) == []
    assert explicit.concurrency == 5  # the operator's flag wins


def test_retention_days_removes_old_terminal_instances(db) -> None:
    _set(db, "pg_durable.retention_days", "1")
    old = start(db, ALICE, "'SELECT 1'")
    with running_engine(db.dsn()):
        assert wait_terminal(db, old) == "completed"
        recent = start(db, ALICE, "'SELECT 2'")
        assert wait_terminal(db, recent) == "completed"
        with db.connect() as conn:  # make the first one two days old (past the update trigger)
            conn.execute("SET session_replication_role = replica")
            conn.execute("UPDATE df.instances SET updated_at = now() - %s WHERE id = %s",
                         (timedelta(days=2), old))
        wait_for(lambda: db.scalar("SELECT count(*) FROM df.instances WHERE id = %s", (old,)) == 0,
                 what="retention to remove the old instance")
    assert db.scalar("SELECT count(*) FROM df.instances WHERE id = %s", (recent,)) == 1


def test_settings_are_read_and_bad_values_ignored(db) -> None:
    _set(db, "pg_durable.reconcile_interval", "0")
    _set(db, "pg_durable.retention_days", "lots")
    config = EngineConfig(dsn=db.dsn())
    with db.connect() as conn:
        applied = apply_database_settings(conn, config)
    assert applied == ["pg_durable.reconcile_interval = 0 sets reconcile_interval"]
    assert config.reconcile_interval == 0 and config.retention_days is None
