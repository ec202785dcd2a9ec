"""Superuser instances with pg_durable.enable_superuser_instances on (where pg_durable's e2e
files 10, 11, 13, 15, 24 and 44 submit their workflows as `postgres`).

pg_durable's worker is a superuser (its worker_role must be one) and runs such an instance as its
submitter. dftui: an engine connected as a superuser runs it in its own session, as the
submitting superuser, through invoker functions it owns — never a SECURITY DEFINER function owned
by a superuser — and returns to its own identity before the checkpoint and the next role's step.
A least-privilege engine cannot: it fails the instance (no node failed), saying why. The setting
counts in the engine's own session (here ALTER DATABASE, the way that works on PostgreSQL 15).
"""

from __future__ import annotations

from psycopg import sql

from tests.support import ALICE, engine_in_mode, engine_user, node_rows, root_result, wait_terminal


def _enable(db) -> None:
    with db.connect() as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET pg_durable.enable_superuser_instances = on")
                     .format(sql.Identifier(db.name)))


def _start_as_superuser(db, expr: str) -> str:
    with db.connect() as conn:
        return conn.execute(f"SELECT df.start({expr})").fetchone()[0]


def _definer_functions_owned_by_superusers(db) -> int:
    return db.scalar(
        "SELECT count(*) FROM pg_catalog.pg_proc p "
        "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
        "JOIN pg_catalog.pg_roles r ON r.oid = p.proowner "
        "WHERE n.nspname = 'df_exec' AND r.rolsuper AND p.prosecdef")


def test_an_enabled_superuser_instance_runs_as_its_superuser(db, mode) -> None:
    _enable(db)
    me = db.scalar("SELECT current_user::text")
    with engine_in_mode(db, mode, concurrency=1):
        # pg_durable's e2e 13: a superuser's step reads what only superusers may read.
        iid = _start_as_superuser(
            db, "'SELECT current_user::text AS who, (SELECT count(*) FROM pg_authid) > 0 AS su'")
        status = wait_terminal(db, iid)
        # A step that changes the session's identity must not leave it to the next role's step.
        meddle = _start_as_superuser(
            db, "'SELECT set_config(''role'', ''dftui_bob'', false) AS r' ~> "
                "'SET SESSION AUTHORIZATION dftui_bob'")
        meddled = wait_terminal(db, meddle)
        with db.connect(ALICE) as conn:
            after = conn.execute("SELECT df.start('SELECT current_user::text AS who, "
                                 "session_user::text AS s')").fetchone()[0]
        after_status = wait_terminal(db, after)
    error = db.scalar("SELECT error FROM df_internal.instance_state WHERE instance_id = %s", (iid,))
    if mode == "superuser":
        assert status == "completed", error
        assert root_result(db, iid)["rows"] == [{"who": me, "su": True}]
        assert meddled == "completed"
        assert after_status == "completed"
        assert root_result(db, after)["rows"] == [{"who": ALICE, "s": engine_user(mode, db)}]
    else:
        # A least-privilege engine cannot become a superuser: the instance fails, nothing ran.
        assert status == "failed"
        assert "is not a superuser and cannot run superuser instances" in error
        assert not [n for n in node_rows(db, iid) if n["status"] == "failed"]
        assert meddled == "failed"
        assert after_status == "completed"
    assert _definer_functions_owned_by_superusers(db) == 0


def test_superuser_instances_stay_refused_when_the_engine_has_them_off(db, mode) -> None:
    """Enabled only in the submitter's own session: df.start accepts it, the engine (whose
    session decides, as pg_durable's worker) fails it before anything runs."""
    with engine_in_mode(db, mode, concurrency=1):
        with db.connect() as conn:
            conn.execute("SET pg_durable.enable_superuser_instances = on")
            iid = conn.execute("SELECT df.start('SELECT 1 AS one')").fetchone()[0]
        assert wait_terminal(db, iid) == "failed"
    assert "pg_durable.enable_superuser_instances is off" in db.scalar(
        "SELECT error FROM df_internal.instance_state WHERE instance_id = %s", (iid,))
    assert _definer_functions_owned_by_superusers(db) == 0
