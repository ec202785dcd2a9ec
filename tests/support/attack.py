"""The attack suites' toolbox: a hostile submitter's schema and witness, and the engine modes.

The "witness" is how an attack proves (or fails to prove) escalation. `evil.witness(tag)` is a
function owned by the attacker, dftui_alice. Whenever it runs as anybody but alice it bumps the
sequence `evil.escalated` (sequences are not transactional, so the evidence survives the
rollback of whatever statement ran it) and tries `ALTER ROLE dftui_alice SUPERUSER`; when it runs
as alice it bumps `evil.as_alice` (positive evidence that the code path was really exercised).
`evil.witness_quiet` does the same but is IMMUTABLE (for index expressions / domain checks).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from psycopg import sql

from engine import privileges
from tests.support.cluster import ALICE, GRANTED_ROLES
from tests.support.engine import running_engine

ENGINE_ROLE = "dftui_engine_owner"
SUBMITTERS = GRANTED_ROLES

EVIL_SETUP = """
CREATE SEQUENCE evil.escalated;
CREATE SEQUENCE evil.as_alice;
GRANT USAGE ON SCHEMA evil TO PUBLIC;
GRANT USAGE, SELECT, UPDATE ON SEQUENCE evil.escalated, evil.as_alice TO PUBLIC;
CREATE TABLE evil.log (tag text, who text, at timestamptz DEFAULT pg_catalog.clock_timestamp());
GRANT ALL ON evil.log TO PUBLIC;

CREATE FUNCTION evil.witness(tag text) RETURNS boolean LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF current_user::text <> 'dftui_alice' THEN
        PERFORM pg_catalog.nextval('evil.escalated');
        BEGIN
            EXECUTE 'ALTER ROLE dftui_alice SUPERUSER';
        EXCEPTION WHEN OTHERS THEN NULL;
        END;
    ELSE
        PERFORM pg_catalog.nextval('evil.as_alice');
    END IF;
    INSERT INTO evil.log (tag, who) VALUES (tag, current_user::text);
    RETURN true;
END $$;

CREATE FUNCTION evil.witness_quiet(v anyelement) RETURNS boolean LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF current_user::text <> 'dftui_alice' THEN
        PERFORM pg_catalog.nextval('evil.escalated');
    ELSE
        PERFORM pg_catalog.nextval('evil.as_alice');
    END IF;
    RETURN true;
END $$;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA evil TO PUBLIC;
"""


def prepare_attacker(db: Any) -> None:
    """Give alice her own schema `evil` (as an ordinary database user would have)."""
    reset_attacker(db)
    with db.connect() as conn:
        conn.execute("CREATE SCHEMA evil AUTHORIZATION dftui_alice")
    with db.connect(ALICE) as conn:
        conn.execute(EVIL_SETUP)


def reset_attacker(db: Any) -> None:
    """Undo a successful escalation (roles are cluster-wide; the next test must start clean)."""
    with db.connect() as conn:
        conn.execute("ALTER ROLE dftui_alice NOSUPERUSER NOBYPASSRLS")


def counters(db: Any) -> tuple[int, int]:
    """(times the witness ran as someone other than alice, times it ran as alice)."""
    with db.connect() as conn:
        def value(seq: str) -> int:
            last, called = conn.execute(f"SELECT last_value, is_called FROM evil.{seq}").fetchone()
            return int(last) if called else 0
        return value("escalated"), value("as_alice")


def assert_no_escalation(db: Any) -> None:
    escalated, _ = counters(db)
    assert escalated == 0, f"attacker code ran with someone else's privileges {escalated} time(s)"
    assert not db.scalar("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (ALICE,))
    others = db.scalar("SELECT array_agg(DISTINCT who) FROM evil.log WHERE who <> %s", (ALICE,))
    assert not others, f"attacker code ran as {others}"


def setup_engine_owner(db: Any) -> str:
    """Least-privilege mode: a non-superuser role owns df/df_internal; returns its DSN."""
    with db.connect() as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ENGINE_ROLE,)).fetchone()
        if not exists:
            with suppress(psycopg.errors.DuplicateObject):
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(ENGINE_ROLE)))
        privileges.setup_engine_role(conn, ENGINE_ROLE, submitters=SUBMITTERS)
    return db.dsn(ENGINE_ROLE)


@contextmanager
def engine_in_mode(db: Any, mode: str, **overrides: Any) -> Iterator[Any]:
    """An engine connected as the superuser ("superuser") or as the least-privilege owner."""
    if mode == "owner":
        dsn = setup_engine_owner(db)
        overrides.setdefault("install", False)
    else:
        dsn = db.dsn()
    with running_engine(dsn, **overrides) as eng:
        yield eng


def engine_user(mode: str, db: Any) -> str:
    if mode == "owner":
        return ENGINE_ROLE
    return db.scalar("SELECT current_user")


@contextmanager
def bypassrls_login(db: Any, *, table_dml: bool = False) -> Iterator[str]:
    """A fresh LOGIN role granted df usage that skips RLS (BYPASSRLS), the managed-service admin
    shape of the attack class 4 tests; with `table_dml`, also table-wide INSERT/UPDATE on
    df.instances and df.nodes (the broad grants such a role typically has). Dropped afterwards
    with every instance and var in its name."""
    name = f"dftui_byp_{uuid.uuid4().hex[:6]}"
    ident = sql.Identifier(name)
    with db.connect() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN BYPASSRLS").format(ident))
        conn.execute("SET client_min_messages = warning")
        conn.execute("SELECT df.grant_usage(%s)", (name,))
        if table_dml:
            conn.execute(sql.SQL("GRANT INSERT, UPDATE ON df.instances, df.nodes TO {}").format(
                ident))
    try:
        yield name
    finally:
        with db.connect() as conn:
            conn.execute("DELETE FROM df.instances WHERE submitted_by::oid NOT IN "
                         "(SELECT oid FROM pg_catalog.pg_roles)")
            conn.execute("DELETE FROM df.instances WHERE submitted_by = %s::regrole", (name,))
            conn.execute("DELETE FROM df.vars WHERE owner = %s::regrole", (name,))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
            conn.execute(sql.SQL("DROP ROLE {}").format(ident))
