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
    assert empty_db.scalar("SELECT count(*) FROM df_internal.schema_version") == len(
        schema.available_versions()
    )


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
