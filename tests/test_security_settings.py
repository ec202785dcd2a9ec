"""Settings that gate security cannot be changed by ordinary users (issue 13 class 5).

df._setting(name) is what df functions read pg_durable.* settings through: a plain SET,
set_config() or a connection's `options` by an ordinary role never counts; a superuser's own
session, ALTER DATABASE / ALTER ROLE values (superuser-only for placeholders on PostgreSQL 15+),
and what a live engine's own session sees do.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from tests.support import ALICE, ENGINE_ROLE, engine_in_mode, setup_engine_owner

LIMIT = "pg_durable.list_instances_max_limit"


def trusted(db, role: str | None = None, *, options: str | None = None, set_first: str | None = None):
    dsn = db.dsn(role)
    if options:
        dsn += f" options='{options}'"
    with psycopg.connect(dsn, autocommit=True) as conn:
        if set_first is not None:
            conn.execute("SELECT set_config(%s, %s, false)", (LIMIT, set_first))
            assert conn.execute("SELECT current_setting(%s)", (LIMIT,)).fetchone()[0] == set_first
        return conn.execute("SELECT df._setting(%s)", (LIMIT,)).fetchone()[0]


def test_an_ordinary_roles_own_values_never_count(db):
    assert trusted(db, ALICE) is None
    assert trusted(db, ALICE, set_first="1000000") is None
    assert trusted(db, ALICE, options=f"-c {LIMIT}=1000000") is None
    with db.connect(ALICE) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(sql.SQL("ALTER ROLE {} SET {} = '1000000'").format(
            sql.Identifier(ALICE), sql.Identifier(*LIMIT.split("."))))


def test_administrator_values_count_and_a_superusers_session_too(db):
    dbname = sql.Identifier(db.name)
    with db.connect() as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET pg_durable.list_instances_max_limit = '3'").format(dbname))
    try:
        assert trusted(db, ALICE, set_first="1000000") == "3"
        with db.connect() as conn:
            conn.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} SET pg_durable.list_instances_max_limit = '4'")
                         .format(sql.Identifier(ALICE), dbname))
        assert trusted(db, ALICE, set_first="1000000") == "4"
        assert trusted(db, None, set_first="9") == "9"  # SUSET: a superuser may SET it
    finally:
        with db.connect() as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} RESET pg_durable.list_instances_max_limit").format(dbname))
            conn.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} RESET pg_durable.list_instances_max_limit")
                         .format(sql.Identifier(ALICE), dbname))


def test_the_engines_own_view_of_the_server_configuration_counts(db, mode):
    """The engine publishes what its own session sees (here: a superuser's ALTER ROLE for the
    engine's role, standing in for postgresql.conf), which an ordinary SET cannot change."""
    if mode == "owner":
        setup_engine_owner(db)
    engine_role = ENGINE_ROLE if mode == "owner" else db.scalar("SELECT current_user")
    with db.connect() as conn:
        conn.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} SET pg_durable.list_instances_max_limit = '7'")
                     .format(sql.Identifier(engine_role), sql.Identifier(db.name)))
    try:
        with engine_in_mode(db, mode, concurrency=1):
            assert trusted(db, ALICE, set_first="1000000") == "7"
    finally:
        with db.connect() as conn:
            conn.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} RESET pg_durable.list_instances_max_limit")
                         .format(sql.Identifier(engine_role), sql.Identifier(db.name)))


def test_only_pg_durable_settings_can_be_read(db):
    with db.connect(ALICE) as conn, pytest.raises(psycopg.errors.InvalidParameterValue, match="only pg_durable"):
        conn.execute("SELECT df._setting('data_directory')")


def test_a_step_cannot_make_its_own_set_count(db, attacker, mode):
    """Inside a step session_user is the engine (a superuser in superuser mode): the step's own
    SET must still not count."""
    from tests.support import root_result, start, wait_terminal

    with engine_in_mode(db, mode, concurrency=1):
        iid = start(db, ALICE, "'SELECT set_config(''pg_durable.list_instances_max_limit'', ''99999'', false) AS s, "
                               "df._setting(''pg_durable.list_instances_max_limit'') AS v'")
        assert wait_terminal(db, iid) == "completed"
    assert root_result(db, iid)["rows"][0]["v"] is None
