"""pg_durable's settings, honoured by the engine with the same meaning (engine/pg_settings.py):
set the way that works on every server, PostgreSQL 15 included (ALTER DATABASE ... SET; ALTER
SYSTEM refuses settings of an extension that is not loaded there), they become the engine's
defaults; a flag or environment variable still wins.
"""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
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


def _age(db, iid: str, **columns: timedelta) -> None:
    """Move an instance's timestamps into the past (past the update trigger)."""
    with db.connect() as conn:
        conn.execute("SET session_replication_role = replica")
        for column, ago in columns.items():
            conn.execute(sql.SQL("UPDATE df.instances SET {} = now() - %s WHERE id = %s").format(
                sql.Identifier(column)), (ago, iid))


def test_retention_days_removes_old_terminal_instances(db) -> None:
    """pg_durable's rules (USER_GUIDE "Automatic Reconciliation"): the age runs from
    completed_at, else created_at; updated_at, which the role may write itself, never counts."""
    _set(db, "pg_durable.retention_days", "1")
    two_days = timedelta(days=2)
    with running_engine(db.dsn()):
        done = [start(db, ALICE, f"'SELECT {n}'") for n in range(4)]
        failed = start(db, ALICE, "'SELECT 1/0'")
        for iid in [*done, failed]:
            wait_terminal(db, iid)
        old, recent_completion, touched, recent = done
        _age(db, old, created_at=two_days, completed_at=two_days)
        _age(db, recent_completion, created_at=two_days)  # completed within the window: kept
        _age(db, touched, updated_at=two_days)  # a role's own UPDATE of updated_at: kept
        _age(db, failed, created_at=two_days)  # no completed_at: its age is created_at's
        wait_for(lambda: db.scalar("SELECT count(*) FROM df.instances WHERE id = ANY(%s)",
                                   ([old, failed],)) == 0,
                 what="retention to remove the old instances")
    assert db.scalar("SELECT count(*) FROM df.instances WHERE id = ANY(%s)",
                     ([recent_completion, touched, recent],)) == 3


def test_retention_keeps_at_most_the_newest_10000_finished_instances(db) -> None:
    """pg_durable's fixed cap (src/worker.rs TERMINAL_INSTANCE_MAX_KEEP): beyond the newest
    10,000 terminal instances, older ones go whatever their age; running ones never."""
    with db.connect(autocommit=False) as conn:
        conn.execute("SET LOCAL session_replication_role = replica")  # rows as history, no engine
        conn.execute(
            "INSERT INTO df.instances (id, root_node, status, submitted_by, created_at, completed_at)"
            " SELECT lpad(to_hex(g), 8, '0'), 'aaaa0001',"
            "        CASE WHEN g <= 3 THEN 'running' WHEN g %% 2 = 0 THEN 'completed' ELSE 'failed' END,"
            "        %s::regrole, now() - make_interval(secs => 20000 - g),"
            "        CASE WHEN g > 3 AND g %% 2 = 0 THEN now() - make_interval(secs => 20000 - g) END"
            " FROM generate_series(1, 10010) g", (ALICE,))
        conn.commit()
    with running_engine(db.dsn(), retention_days=30.0, reconcile_interval=1.0):
        wait_for(lambda: db.scalar("SELECT count(*) FROM df.instances WHERE status <> 'running'")
                 == 10000, what="retention to cut the finished instances to 10,000")
    with db.connect() as conn:
        gone = [r[0] for r in conn.execute(
            "SELECT lpad(to_hex(g), 8, '0') FROM generate_series(1, 10010) g"
            " WHERE NOT EXISTS (SELECT 1 FROM df.instances i WHERE i.id = lpad(to_hex(g), 8, '0'))")]
    # the 7 oldest finished ones (ids 4..10); the 3 oldest, still running, stay
    assert gone == [f"{g:08x}" for g in range(4, 11)]


def test_settings_are_read_and_bad_values_ignored(db) -> None:
    _set(db, "pg_durable.reconcile_interval", "0")
    _set(db, "pg_durable.retention_days", "lots")
    config = EngineConfig(dsn=db.dsn())
    with db.connect() as conn:
        applied = apply_database_settings(conn, config)
    assert applied == ["pg_durable.reconcile_interval = 0 sets reconcile_interval"]
    assert config.reconcile_interval == 0 and config.retention_days is None


def test_alter_system_of_a_pg_durable_setting_and_the_way_that_works_on_15(db) -> None:
    """Without a library defining them, pg_durable.* settings are placeholders. PostgreSQL 17+
    lets ALTER SYSTEM SET one; 15 refuses it (42704) unless the session already has that
    placeholder: SET it first in the same session (docs/pg_durable.md, "PostgreSQL 15")."""
    name = "pg_durable.max_management_connections"  # a setting dftui reads nowhere: harmless
    with db.connect() as conn:
        major = conn.info.server_version // 10000
        try:
            if major < 17:
                with pytest.raises(psycopg.errors.UndefinedObject,
                                   match="unrecognized configuration parameter"):
                    conn.execute(f"ALTER SYSTEM SET {name} = 7")
            else:
                conn.execute(f"ALTER SYSTEM SET {name} = 7")
            # the way that works on every version: the placeholder first, then ALTER SYSTEM
            with db.connect() as fresh:
                fresh.execute(f"SELECT set_config('{name}', '', false)")
                fresh.execute(f"ALTER SYSTEM SET {name} = 8")
                fresh.execute("SELECT pg_reload_conf()")
            wait_for(lambda: db.scalar(f"SELECT current_setting('{name}', true)") == "8", 60,
                     what="new sessions to see the ALTER SYSTEM value")
        finally:
            with db.connect() as fresh:  # (a placeholder again: the file now names it)
                fresh.execute(f"SELECT set_config('{name}', '', false)")
                fresh.execute(f"ALTER SYSTEM RESET {name}")
                fresh.execute("SELECT pg_reload_conf()")
    wait_for(lambda: db.scalar(f"SELECT current_setting('{name}', true)") in (None, ""), 60,
             what="the setting to be gone again")
