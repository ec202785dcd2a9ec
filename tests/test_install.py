"""`dftui install / upgrade / uninstall` against a real server, through the CLI entry point."""

from __future__ import annotations

import pytest

from dftui.cli import main
from engine import schema


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def schemas(empty_db) -> set[str]:
    with empty_db.connect() as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname IN ('df', 'df_internal', 'df_exec')"
        ).fetchall()
    return {r[0] for r in rows}


def df_operator_oids(empty_db) -> set[int]:
    """The operators whose implementing function lives in schema df (the DSL operators)."""
    with empty_db.connect() as conn:
        rows = conn.execute(
            "SELECT o.oid FROM pg_operator o JOIN pg_proc p ON p.oid = o.oprcode "
            "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'df'"
        ).fetchall()
    return {r[0] for r in rows}


def test_install_then_idempotent_rerun(empty_db, capsys):
    dsn = empty_db.dsn()
    code, out, err = run(capsys, "install", "--dsn", dsn)
    assert (code, err) == (0, "")
    assert f"installed df schema {schema.latest_version()}" in out
    assert {"df", "df_internal"} <= schemas(empty_db)

    code, out, err = run(capsys, "install", "--dsn", dsn)
    assert (code, err) == (0, "")
    assert "already installed; nothing to do" in out
    # A fresh install records the baseline it laid down and the release it brought it to.
    assert empty_db.scalar("SELECT array_agg(version ORDER BY version) "
                           "FROM df_internal.schema_version") == [schema.BASELINE,
                                                                 schema.latest_version()]


def test_upgrade_is_noop_at_latest_and_refuses_without_install(empty_db, capsys):
    dsn = empty_db.dsn()
    code, out, err = run(capsys, "upgrade", "--dsn", dsn)
    assert code == 1 and out == ""
    assert err.startswith("dftui: ") and err.count("\n") == 1
    assert "not installed" in err
    assert schemas(empty_db) == set()

    assert run(capsys, "install", "--dsn", dsn)[0] == 0
    installed_at = empty_db.scalar("SELECT max(installed_at) FROM df_internal.schema_version")
    code, out, err = run(capsys, "upgrade", "--dsn", dsn)
    assert (code, err) == (0, "")
    assert "nothing to do" in out
    assert empty_db.scalar("SELECT max(installed_at) FROM df_internal.schema_version") == installed_at


def test_uninstall_requires_yes_then_removes_everything(empty_db, capsys):
    dsn = empty_db.dsn()
    assert run(capsys, "install", "--dsn", dsn)[0] == 0
    operators = df_operator_oids(empty_db)

    code, out, err = run(capsys, "uninstall", "--dsn", dsn)
    assert code == 2 and "--yes" in err and err.count("\n") == 1
    assert {"df", "df_internal"} <= schemas(empty_db)

    code, out, err = run(capsys, "uninstall", "--yes", "--dsn", dsn)
    assert (code, err) == (0, "")
    assert "removed df schema" in out
    assert schemas(empty_db) == set()
    with empty_db.connect() as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_operator WHERE oid = ANY(%s)", (list(operators),)
        ).fetchone()[0]
    assert left == 0

    code, out, err = run(capsys, "uninstall", "--yes", "--dsn", dsn)
    assert (code, err) == (0, "") and "not installed; nothing to do" in out


def test_uninstall_removes_dsl_operators(empty_db, capsys):
    dsn = empty_db.dsn()
    assert run(capsys, "install", "--dsn", dsn)[0] == 0
    operators = df_operator_oids(empty_db)
    if not operators:
        pytest.skip("this schema version defines no DSL operators yet")
    assert run(capsys, "uninstall", "--yes", "--dsn", dsn)[0] == 0
    # Installing again works: nothing of the first install was left behind to collide with.
    code, out, err = run(capsys, "install", "--dsn", dsn)
    assert (code, err) == (0, "") and "installed df schema" in out


@pytest.mark.parametrize("command", [["install"], ["upgrade"], ["uninstall", "--yes"]])
def test_non_superuser_gets_one_line_error(empty_db, capsys, command):
    if command[0] != "install":
        assert run(capsys, "install", "--dsn", empty_db.dsn())[0] == 0
    before = schemas(empty_db)
    code, out, err = run(capsys, *command, "--dsn", empty_db.dsn("dftui_alice"))
    assert code == 1 and out == ""
    assert err.startswith("dftui: ") and err.count("\n") == 1
    assert "superuser" in err and "dftui_alice" in err
    assert "Traceback" not in err
    assert schemas(empty_db) == before


def test_install_unreachable_server_is_one_line(capsys):
    code, out, err = run(capsys, "install", "--dsn", "host=127.0.0.1 port=1 connect_timeout=3")
    assert code == 1 and out == ""
    assert err.startswith("dftui: ") and err.count("\n") == 1
    assert "Traceback" not in err


def test_least_privilege_recipe_from_operations_doc(db):
    """The least-privilege block in docs/operations.md, run verbatim (names substituted), lets a
    non-superuser engine run a step as its submitter."""
    import time
    import uuid
    from pathlib import Path

    from engine.config import EngineConfig
    from engine.runner import Engine

    doc = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    block = doc.split("-- least-privilege: begin")[1].split("-- least-privilege: end")[0]
    role = f"dftui_engine_{uuid.uuid4().hex[:8]}"
    block = (
        block.replace("dftui_engine", role)
        .replace("DATABASE app", f'DATABASE "{db.name}"')
        .replace("app_backend", "dftui_alice")
    )
    admin = db.connect()
    try:
        admin.execute(block)
        assert not db.scalar("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,))
        assert db.scalar("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'df'") == role
        engine = Engine(EngineConfig(dsn=db.dsn(role), concurrency=1))
        engine.start()
        try:
            with db.connect("dftui_alice") as conn:
                instance_id = conn.execute(
                    "SELECT df.start('SELECT current_user AS u', 'least-privilege')"
                ).fetchone()[0]
            deadline = time.monotonic() + 120  # hang guard only
            while db.scalar("SELECT df.status(%s)", (instance_id,)) not in (
                "completed", "failed"
            ) and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            engine.stop(grace=1)
        assert db.scalar("SELECT df.status(%s)", (instance_id,)) == "completed"
        assert db.scalar("SELECT df.result(%s)::jsonb #>> '{rows,0,u}'", (instance_id,)) == (
            "dftui_alice"
        )
    finally:
        admin.execute(f'REASSIGN OWNED BY "{role}" TO postgres')
        admin.execute(f'DROP OWNED BY "{role}"')
        admin.close()
        with db.server.admin() as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_uninstall_removes_the_engines_df_exec_in_other_databases(empty_db, capsys):
    """A cross-database step makes the engine create df_exec (trampolines) in that database;
    uninstall removes it there too, and a second database's own installation is left alone."""
    import uuid

    from tests.support import running_engine, start, wait_terminal

    dsn = empty_db.dsn()
    assert run(capsys, "install", "--dsn", dsn)[0] == 0
    with empty_db.connect() as conn:
        conn.execute("SELECT df.grant_usage('dftui_alice')")
    other = f"dftui_x_{uuid.uuid4().hex[:8]}"
    with empty_db.server.admin() as conn:
        conn.execute(f'CREATE DATABASE "{other}"')
    try:
        with running_engine(dsn):
            iid = start(empty_db, "dftui_alice",
                        "'SELECT current_database()::text AS db', database => %s", other)
            assert wait_terminal(empty_db, iid) == "completed"
        with empty_db.server.admin(other) as conn:
            assert conn.execute("SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON "
                                "n.oid = p.pronamespace WHERE n.nspname = 'df_exec'"
                                ).fetchone()[0] > 0
        code, out, err = run(capsys, "uninstall", "--yes", "--dsn", dsn)
        assert (code, err) == (0, "")
        assert f"also removed df_exec (cross-database step functions) from: {other}" in out
        with empty_db.server.admin(other) as conn:
            assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'df_exec'"
                                ).fetchone()[0] == 0
        # Reinstalling starts clean and works.
        assert run(capsys, "install", "--dsn", dsn)[0] == 0
    finally:
        with empty_db.server.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{other}" WITH (FORCE)')
