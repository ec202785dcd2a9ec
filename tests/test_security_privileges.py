"""Least-privilege engine mode (engine/privileges.py): the engine connects as a non-superuser role
that owns the df schemas. Setup is validated, idempotent and complete; such an engine serves
several submitters and fails a submitter it was not granted cleanly instead of looping.

(The attack suites in test_security*.py run against both engine modes.)"""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from engine import privileges
from tests.support import (
    ALICE,
    BOB,
    ENGINE_ROLE,
    SUBMITTERS,
    node_rows,
    root_result,
    running_engine,
    setup_engine_owner,
    start,
    wait_terminal,
)


def _not_owned(db, role: str) -> list[str]:
    with db.connect() as conn:
        return [r[0] for r in conn.execute(
            """
            SELECT format('%%s %%s.%%s', kind, nsp, name) FROM (
                SELECT 'rel' AS kind, n.nspname AS nsp, c.relname::text AS name, c.relowner AS owner,
                       c.oid AS oid, 'pg_class'::regclass AS cls
                  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind IN ('r', 'v', 'm', 'S', 'p')
                UNION ALL
                SELECT 'fn', n.nspname, p.proname::text, p.proowner, p.oid, 'pg_proc'::regclass
                  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                UNION ALL
                SELECT 'schema', n.nspname, '', n.nspowner, n.oid, 'pg_namespace'::regclass
                  FROM pg_namespace n
            ) o
            WHERE o.nsp IN ('df', 'df_internal') AND o.owner <> %s::regrole
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.deptype = 'e'
                                 AND d.classid = o.cls AND d.objid = o.oid)
            """, (role,)).fetchall()]


def test_setup_makes_the_role_own_everything_and_is_idempotent(db):
    setup_engine_owner(db)
    setup_engine_owner(db)  # again: no error, same result
    assert _not_owned(db, ENGINE_ROLE) == []
    with db.connect() as conn:
        assert not conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (ENGINE_ROLE,)).fetchone()[0]
        assert conn.execute("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'df_exec'"
                            ).fetchone()[0] == ENGINE_ROLE
        assert conn.execute("SELECT has_database_privilege(%s, current_database(), 'CREATE')",
                            (ENGINE_ROLE,)).fetchone()[0]
        for submitter in SUBMITTERS:
            assert conn.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", (ENGINE_ROLE, submitter)).fetchone()[0]
        # nobody else got anything on the engine's schemas
        assert not conn.execute("SELECT has_schema_privilege('dftui_alice', 'df_internal', 'USAGE') "
                                "OR has_schema_privilege('dftui_alice', 'df_exec', 'USAGE')").fetchone()[0]


@pytest.mark.parametrize(("caller", "role", "submitters", "message"), [
    (None, "dftui_no_such_role", [], "does not exist"),
    (None, "postgres", [], "is a superuser"),
    (None, ENGINE_ROLE, ["dftui_no_such_submitter"], r"submitter role\(s\) do not exist"),
    (ALICE, ENGINE_ROLE, [], "must be run by a superuser"),
])
def test_setup_refuses_bad_requests_and_changes_nothing(db, caller, role, submitters, message):
    with db.connect() as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ENGINE_ROLE,)).fetchone():
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(ENGINE_ROLE)))
        owner_before = conn.execute("SELECT nspowner FROM pg_namespace WHERE nspname = 'df'").fetchone()
    with db.connect(caller) as conn, pytest.raises(privileges.PrivilegeSetupError, match=message):
        privileges.setup_engine_role(conn, role, submitters=submitters)
    assert db.scalar("SELECT nspowner FROM pg_namespace WHERE nspname = 'df'") == owner_before[0]


def test_setup_needs_the_schema_installed(empty_db):
    with empty_db.connect() as conn:
        conn.execute("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dftui_engine_owner') "
                     "THEN CREATE ROLE dftui_engine_owner LOGIN; END IF; END $$")
        with pytest.raises(privileges.PrivilegeSetupError, match="not installed"):
            privileges.setup_engine_role(conn, ENGINE_ROLE)


def test_owner_engine_serves_several_submitters(db):
    dsn = setup_engine_owner(db)
    with running_engine(dsn, install=False, concurrency=2):
        ids = {role: start(db, role, "'SELECT current_user::text AS u, session_user::text AS s' |=> 'r' "
                                     "~> 'SELECT $r.u AS u, $r.s AS s'")
               for role in (ALICE, BOB, "Quoted Role")}
        for role, iid in ids.items():
            assert wait_terminal(db, iid) == "completed", node_rows(db, iid)
            assert root_result(db, iid)["rows"] == [{"u": role, "s": ENGINE_ROLE}]


def test_owner_engine_fails_a_submitter_it_was_not_granted(db):
    """The operator forgot `GRANT new_role TO engine`: the step fails with a clear message, the
    worker does not retry the trampoline setup forever, and other roles are still served."""
    dsn = setup_engine_owner(db)
    with db.connect() as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'dftui_ungranted'").fetchone():
            conn.execute("DROP OWNED BY dftui_ungranted")
            conn.execute("DROP ROLE dftui_ungranted")
        conn.execute("CREATE ROLE dftui_ungranted LOGIN")
        conn.execute("SELECT df.grant_usage('dftui_ungranted')")
    try:
        with running_engine(dsn, install=False, concurrency=1):
            lost = start(db, "dftui_ungranted", "'SELECT 1 AS x'")
            ok = start(db, BOB, "'SELECT 2 AS x'")
            assert wait_terminal(db, ok) == "completed"
            assert wait_terminal(db, lost) == "failed"
            assert node_rows(db, lost)[0]["error"]
    finally:
        with db.connect() as conn:
            conn.execute("DELETE FROM df.instances WHERE submitted_by::text = 'dftui_ungranted'")
            conn.execute("DROP OWNED BY dftui_ungranted")
            conn.execute("DROP ROLE dftui_ungranted")


def test_owner_engine_cannot_become_superuser(db):
    dsn = setup_engine_owner(db)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for stmt in ("ALTER ROLE dftui_engine_owner SUPERUSER", "SET ROLE postgres",
                     "CREATE EXTENSION IF NOT EXISTS plpython3u", "ALTER SYSTEM SET work_mem = '1MB'"):
            with pytest.raises(psycopg.Error):
                conn.execute(stmt)


def test_cli_install_with_engine_role(db, capsys):
    from dftui.cli import main

    with db.connect() as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ENGINE_ROLE,)).fetchone():
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(ENGINE_ROLE)))
    assert main(["install", "--dsn", db.dsn(), "--engine-role", ENGINE_ROLE]) == 0
    out = capsys.readouterr().out
    assert ENGINE_ROLE in out and ALICE in out
    assert _not_owned(db, ENGINE_ROLE) == []
    assert db.scalar("SELECT pg_has_role(%s, %s, 'MEMBER')", (ENGINE_ROLE, ALICE))
    for role, fragment in (("postgres", "is a superuser"), ("dftui_no_such_role", "does not exist")):
        assert main(["install", "--dsn", db.dsn(), "--engine-role", role]) == 1
        err = capsys.readouterr().err
        assert err.startswith("dftui: ") and err.count("\n") == 1 and fragment in err, err
