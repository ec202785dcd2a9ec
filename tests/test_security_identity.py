"""Identity is enforced, not assumed: issue 13 class 4 (rows forged by roles that skip RLS), the
superuser part of class 5, and issue 14's "tampered identity".

RLS is the first line only: superusers, the tables' owner and BYPASSRLS roles (common on managed
services) skip it. Whatever such a role writes into df.instances / df.nodes, nothing may ever run
as a role other than the one that really started the instance, and no SECURITY DEFINER
trampoline may ever be made for a superuser.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from psycopg import sql

from tests.engine_support import node_rows, running_engine, start, wait_terminal
from tests.security_support import (
    ALICE,
    ENGINE_ROLE,
    counters,
    engine_in_mode,
    setup_engine_owner,
)


def instance_error(db, iid: str) -> str:
    """The instance's own error (instance_state) and every node error, for messages."""
    own = db.scalar("SELECT error FROM df_internal.instance_state WHERE instance_id = %s", (iid,))
    nodes = [n["error"] for n in node_rows(db, iid) if n["error"]]
    return " | ".join([own or "", *nodes])


def superuser_trampolines(db) -> int:
    return db.scalar(
        "SELECT count(*) FROM pg_catalog.pg_proc p "
        "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
        "JOIN pg_catalog.pg_roles r ON r.oid = p.proowner "
        "WHERE n.nspname = 'df_exec' AND r.rolsuper")


def exec_acl(db) -> str | None:
    return db.scalar("SELECT nspacl::text FROM pg_catalog.pg_namespace WHERE nspname = 'df_exec'")


@pytest.fixture
def fresh_role(db) -> Iterator[str]:
    """A login role that exists only for this test (roles are cluster-wide)."""
    name = f"dftui_new_{uuid.uuid4().hex[:6]}"
    with db.connect() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
        conn.execute("SET client_min_messages = warning")
        conn.execute("SELECT df.grant_usage(%s)", (name,))
    try:
        yield name
    finally:
        with db.connect() as conn:
            conn.execute(sql.SQL("DELETE FROM df.instances WHERE submitted_by = {}::regrole").format(
                sql.Literal(name)))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_superuser_instance_makes_no_trampoline_and_leaves_df_exec_intact(db, attacker, mode, fresh_role):
    """A superuser's instance (superuser instances enabled in its own session only) is refused
    before any SECURITY DEFINER function is created for the superuser, df_exec's ACL is left as
    it was, and a least-privilege install afterwards still serves a role it has never seen."""
    with engine_in_mode(db, mode, concurrency=1):
        acl_before = exec_acl(db)
        with db.connect() as conn:
            conn.execute("SET pg_durable.enable_superuser_instances = on")
            iid = conn.execute("SELECT df.start('SELECT nextval(''evil.escalated'') AS n')").fetchone()[0]
        assert wait_terminal(db, iid) == "failed"
    assert "superuser" in instance_error(db, iid)
    assert counters(db) == (0, 0)
    assert superuser_trampolines(db) == 0, "a SECURITY DEFINER trampoline owned by a superuser exists"
    assert exec_acl(db) == acl_before
    # A least-privilege install made afterwards can still create trampolines for new roles.
    dsn = setup_engine_owner(db)
    with db.connect() as conn:
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(fresh_role), sql.Identifier(ENGINE_ROLE)))
    with running_engine(dsn, concurrency=1, install=False):
        ok = start(db, fresh_role, "'SELECT current_user::text AS who'")
        assert wait_terminal(db, ok) == "completed", instance_error(db, ok)
    assert superuser_trampolines(db) == 0


def test_setup_repairs_an_exec_schema_whose_owner_lost_create(db, fresh_role):
    """An older engine revoked CREATE on df_exec from its own owner (after a superuser's
    trampolines); the least-privilege setup gives the new owner its privileges back."""
    with db.connect() as conn:
        conn.execute("GRANT CREATE ON SCHEMA df_exec TO CURRENT_USER")
        conn.execute("REVOKE CREATE ON SCHEMA df_exec FROM CURRENT_USER")
    dsn = setup_engine_owner(db)
    assert db.scalar("SELECT has_schema_privilege(%s, 'df_exec', 'CREATE')", (ENGINE_ROLE,))
    with db.connect() as conn:
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(fresh_role), sql.Identifier(ENGINE_ROLE)))
    with running_engine(dsn, concurrency=1, install=False):
        ok = start(db, fresh_role, "'SELECT 1 AS one'")
        assert wait_terminal(db, ok) == "completed", instance_error(db, ok)


def test_alice_is_never_given_a_trampoline_once_she_is_a_superuser(db, attacker, mode):
    """ALTER ROLE alice SUPERUSER between start and execution: refused, and no trampoline is
    made for her while she is one."""
    with db.connect() as conn:
        conn.execute("ALTER ROLE dftui_alice SUPERUSER")
    try:
        with db.connect(ALICE) as conn:
            conn.execute("SET pg_durable.enable_superuser_instances = on")
            iid = conn.execute("SELECT df.start('SELECT nextval(''evil.as_alice'') AS n')").fetchone()[0]
        with engine_in_mode(db, mode, concurrency=1):
            assert wait_terminal(db, iid) == "failed"
        assert "superuser" in instance_error(db, iid)
        assert superuser_trampolines(db) == 0
        assert counters(db) == (0, 0)
    finally:
        with db.connect() as conn:
            conn.execute("ALTER ROLE dftui_alice NOSUPERUSER")


