"""The installer and a superuser engine trust only schemas nobody else can change.

Whoever owns a schema may drop and re-create anything in it. A database user with CREATE on the
database (an application role owning its database on a managed service) could otherwise create
`df_internal` or `df_exec` before `dftui install`, let the installer build the engine's
internals inside it, then replace a function every claim calls — and have it run as the
superuser engine. docs/security.md, the attack catalogue (class 3).
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from dftui.cli import main
from engine import schema
from engine.config import EngineConfig
from engine.runner import Engine
from tests.support import ALICE


def grant_create_on_database(db) -> None:
    with db.connect() as conn:
        conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO dftui_alice").format(
            sql.Identifier(db.name)))


@pytest.mark.parametrize("planted", ["df_internal", "df_exec", "df"])
def test_install_refuses_a_schema_a_user_created_first_and_changes_nothing(empty_db, planted, capsys):
    grant_create_on_database(empty_db)
    with empty_db.connect(ALICE) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(planted)))
    with psycopg.connect(empty_db.dsn(), autocommit=True) as conn, pytest.raises(
            schema.SchemaError, match=f"schema named {planted} exists that dftui did not install"):
        schema.install(conn)
    code = main(["install", "--dsn", empty_db.dsn()])
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and err.count("\n") == 1, (out, err)
    assert "owned by dftui_alice" in err and "drop it first" in err
    schemas = empty_db.scalar("SELECT array_agg(nspname::text ORDER BY nspname) FROM pg_namespace "
                              "WHERE nspname IN ('df', 'df_internal', 'df_exec')")
    assert schemas == [planted]  # nothing else was created


def test_a_faked_installation_owned_by_a_user_is_never_run_by_a_superuser_engine(empty_db):
    """alice makes her own schemas look like an installed df (df_internal.schema_version and
    all): a superuser engine refuses to run code she can change."""
    grant_create_on_database(empty_db)
    with empty_db.connect(ALICE) as conn:
        conn.execute("CREATE SCHEMA df")
        conn.execute("CREATE SCHEMA df_internal")
        conn.execute("CREATE TABLE df_internal.schema_version (version text PRIMARY KEY)")
        conn.execute("INSERT INTO df_internal.schema_version VALUES ('0.1.0')")
    engine = Engine(EngineConfig(dsn=empty_db.dsn(), concurrency=1, install=False))
    with pytest.raises(schema.SchemaMismatch, match="owned by role dftui_alice, which is not a "
                                                    "superuser"):
        engine.start()


def test_a_superuser_owned_exec_schema_left_by_cross_database_steps_is_fine(empty_db):
    """An engine serving steps of another database creates df_exec here as the superuser; a
    later install into this database uses it (only a superuser could have changed it)."""
    with empty_db.connect() as conn:
        conn.execute("CREATE SCHEMA df_exec")
    with psycopg.connect(empty_db.dsn(), autocommit=True) as conn:
        assert schema.install(conn).after == schema.latest_version()
