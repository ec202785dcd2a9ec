"""Attack review two (2026-12-03), the routes it found open and that are closed now — each test
asserts the safe outcome, in both engine modes:

* a role locked out by an administrator (VALID UNTIL in the past, CONNECTION LIMIT 0) runs no
  further steps of an instance already running (the claim's "may log in" is PostgreSQL's);
* a database dropped and re-created under the same name (a role with CREATEDB) is not trusted
  from what the engine learnt of the old one: its df_exec is checked again (escalation before);
* a database owner's idle_session_timeout, ending the engine's cached session there, costs the
  next step nothing (it was charged as an engine fault).

The routes it found that are still open (row locks by a BYPASSRLS role, LOCK TABLE by a
pg_maintain member) are in docs/security.md's catalogue."""

from __future__ import annotations

import pytest
from psycopg import sql

from tests.support import (
    ALICE,
    BOB,
    ENGINE_ROLE,
    assert_no_escalation,
    engine_in_mode,
    errors,
    start,
    wait_for,
    wait_terminal,
)


def _parked(db, iid: str) -> None:
    wait_for(lambda: db.scalar("SELECT phase FROM df_internal.tasks WHERE instance_id = %s",
                               (iid,)) == "waiting", what="signal wait parked")


# -- lockouts an administrator applies to a login role, mid-instance ------------------------------
# The engine re-checks rolcanlogin, df usage and CONNECT for every step, but a role can also be
# locked out with VALID UNTIL (password expiry) or CONNECTION LIMIT 0: PostgreSQL then refuses
# every new session of the role, and pg_durable (which logs in as the submitter) stops running
# its steps. Safe outcome: the next step of a running instance does not run.
LOCKOUTS = {
    "valid-until-past": ("ALTER ROLE dftui_alice VALID UNTIL '2000-01-01'",
                         "ALTER ROLE dftui_alice VALID UNTIL 'infinity'"),
    "connection-limit-0": ("ALTER ROLE dftui_alice CONNECTION LIMIT 0",
                           "ALTER ROLE dftui_alice CONNECTION LIMIT -1"),
}


@pytest.mark.parametrize("what", sorted(LOCKOUTS))
def test_a_locked_out_role_runs_no_further_steps(db, attacker, mode, what):
    lock, unlock = LOCKOUTS[what]
    with engine_in_mode(db, mode, concurrency=1):
        iid = start(db, ALICE, "'SELECT 1 AS first' ~> df.wait_for_signal('go') ~> "
                               "'SELECT evil.witness(''after lockout'') AS w'")
        _parked(db, iid)
        try:
            with db.connect() as conn:
                conn.execute(lock)
                conn.execute("SELECT df.signal(%s, 'go')", (iid,))
            state = wait_terminal(db, iid)
        finally:
            with db.connect() as conn:
                conn.execute(unlock)
    ran = db.scalar("SELECT count(*) FROM evil.log WHERE tag = 'after lockout'")
    assert ran == 0, f"alice's step ran after {what} ({state}; {errors(db, iid)})"
    assert_no_escalation(db)


# -- cross-database trust: the engine's per-process trampoline cache outlives the database --------
# Trampolines.ensure() checks df_exec's owner (ensure_exec_schema) only the first time it sets up a
# role in a database; afterwards it trusts the cache keyed by database NAME. A role with CREATEDB
# that owns a database the engine ran its step in makes the engine's side sessions there go away
# (ALTER DATABASE … SET idle_session_timeout applies to the engine's sessions too), drops the
# database, creates a new one with the same name and, in it, her own schema df_exec with
# SECURITY INVOKER functions named like her trampolines. Her next step there calls them as the
# engine. Safe outcome: nothing of hers ever runs as anyone but alice.
FAKE_TRAMPOLINES = """
CREATE SCHEMA df_exec;
GRANT USAGE ON SCHEMA df_exec TO PUBLIC;
CREATE TABLE public.seen (who text);
GRANT ALL ON public.seen TO PUBLIC;
CREATE SEQUENCE public.as_other;
GRANT ALL ON public.as_other TO PUBLIC;
CREATE FUNCTION public.note() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.seen VALUES (current_user::text);
    IF current_user::text <> 'dftui_alice' THEN
        PERFORM pg_catalog.nextval('public.as_other');  -- (survives a rollback)
        BEGIN
            EXECUTE 'ALTER ROLE dftui_alice SUPERUSER';
        EXCEPTION WHEN OTHERS THEN NULL;
        END;
    END IF;
END $$;
GRANT EXECUTE ON FUNCTION public.note() TO PUBLIC;
CREATE FUNCTION df_exec.describe_{oid}(q text) RETURNS void LANGUAGE plpgsql AS
  $$ DECLARE c refcursor := 'df_describe'; BEGIN PERFORM public.note(); OPEN c FOR EXECUTE q; END $$;
CREATE FUNCTION df_exec.step_{oid}(q text) RETURNS SETOF record LANGUAGE plpgsql AS
  $$ BEGIN PERFORM public.note(); RETURN QUERY EXECUTE q; END $$;
CREATE FUNCTION df_exec.exec_{oid}(q text) RETURNS int8 LANGUAGE plpgsql AS
  $$ BEGIN PERFORM public.note(); RETURN 0; END $$;
CREATE FUNCTION df_exec.rows_{oid}(q text) RETURNS SETOF jsonb LANGUAGE plpgsql AS
  $$ BEGIN PERFORM public.note(); END $$;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA df_exec TO PUBLIC;
"""


def test_a_recreated_database_of_the_same_name_is_not_trusted_from_the_cache(db, attacker, mode):
    name = f"{db.name}_own"
    ident = sql.Identifier(name)
    alice_oid = db.scalar("SELECT oid FROM pg_roles WHERE rolname = %s", (ALICE,))
    with db.connect() as conn:
        conn.execute("ALTER ROLE dftui_alice CREATEDB")
    try:
        with engine_in_mode(db, mode, concurrency=1):
            with db.connect(ALICE) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
                if mode == "owner":
                    conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                        ident, sql.Identifier(ENGINE_ROLE)))
                # every session opened there from now on (the engine's too) ends when idle
                conn.execute(sql.SQL("ALTER DATABASE {} SET idle_session_timeout = '300ms'").format(ident))
            with db.connect(ALICE) as conn:
                first = conn.execute("SELECT df.start('SELECT 1 AS a', database => %s)",
                                     (name,)).fetchone()[0]
            assert wait_terminal(db, first) == "completed", errors(db, first)
            wait_for(lambda: db.scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                                       (name,)) == 0, 20, what="the engine's side sessions to end")
            with db.connect(ALICE) as conn:
                conn.execute(sql.SQL("DROP DATABASE {}").format(ident))
                conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
            with db.server.connect_as(name, ALICE) as conn:
                conn.execute(FAKE_TRAMPOLINES.replace("{oid}", str(alice_oid)))
            outcomes = []
            for _ in range(3):  # (the first may be charged the dead cached connection)
                with db.connect(ALICE) as conn:
                    iid = conn.execute("SELECT df.start('SELECT 2 AS b', database => %s)",
                                       (name,)).fetchone()[0]
                outcomes.append((wait_terminal(db, iid), errors(db, iid)))
                with db.server.connect_as(name, ALICE) as conn:
                    if conn.execute("SELECT last_value FROM public.as_other "
                                    "WHERE is_called").fetchone():
                        break
            with db.server.connect_as(name, ALICE) as conn:
                seen = [r[0] for r in conn.execute("SELECT who FROM public.seen").fetchall()]
                as_other = conn.execute("SELECT CASE WHEN is_called THEN last_value ELSE 0 END "
                                        "FROM public.as_other").fetchone()[0]
        superuser = db.scalar("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (ALICE,))
        assert not as_other and not [w for w in seen if w != ALICE] and not superuser, (
            f"alice's fake df_exec ran as someone else {as_other} time(s), committed as {seen} "
            f"(alice superuser now: {superuser}); {outcomes}")
    finally:
        with db.connect() as conn:
            conn.execute("ALTER ROLE dftui_alice NOCREATEDB NOSUPERUSER")
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


def test_a_side_session_the_server_ended_while_idle_costs_no_step(db, attacker, mode, caplog):
    """The owner of a database sets `idle_session_timeout` there: the engine's cached session
    ends between two of bob's steps in it. The next step opens a new session (nothing ran on the
    dead one) instead of being charged an engine fault for it."""
    name = f"{db.name}_idle"
    ident = sql.Identifier(name)
    with db.connect() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
        conn.execute(sql.SQL("ALTER DATABASE {} SET idle_session_timeout = '300ms'").format(ident))
    try:
        with engine_in_mode(db, mode, concurrency=1):
            if mode == "owner":  # (the engine role exists from here on)
                with db.connect() as conn:
                    conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                        ident, sql.Identifier(ENGINE_ROLE)))
            first = start(db, BOB, "'SELECT 1 AS a', database => %s", name)
            assert wait_terminal(db, first) == "completed", errors(db, first)
            wait_for(lambda: db.scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                                       (name,)) == 0, 20, what="the engine's side session to end")
            caplog.clear()
            second = start(db, BOB, "'SELECT 2 AS b', database => %s", name)
            assert wait_terminal(db, second) == "completed", errors(db, second)
        charged = [r.getMessage() for r in caplog.records if "cannot process step" in r.getMessage()]
        assert not charged, f"the dead side session was charged to bob's step: {charged}"
    finally:
        with db.connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
