"""Install and run without a superuser, as on a managed service (RDS, Cloud SQL, Azure).

The platform gives its customer an admin role with CREATEROLE and CREATEDB that owns the
application database — no superuser bit. The suite's superuser only plays the platform: it creates
that admin role and its database; every connection of the test itself is the admin's or a role
the admin created.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from psycopg import sql

from dftui.cli import main
from tests.support import Server, running_engine, wait_terminal


@dataclass
class Managed:
    server: Server
    dbname: str
    admin: str
    engine: str
    app: str

    def dsn(self, role: str) -> str:
        return self.server.conninfo(self.dbname, role)


@pytest.fixture
def managed(pg_server: Server) -> Iterator[Managed]:
    tag = uuid.uuid4().hex[:8]
    m = Managed(pg_server, f"mgd_{tag}", f"mgd_admin_{tag}", f"mgd_engine_{tag}", f"mgd_app_{tag}")
    with pg_server.admin() as conn:  # the platform's part
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEROLE CREATEDB").format(
            sql.Identifier(m.admin)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(m.dbname), sql.Identifier(m.admin)))
    try:
        yield m
    finally:
        with pg_server.admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(m.dbname)))
            for role in (f"{m.app}_late", m.app, m.engine, m.admin):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(list(args))
    out, err = capsys.readouterr()
    assert (code, err) == (0, ""), (args, out, err)
    return out


def test_admin_without_superuser_installs_and_runs_workflows(managed: Managed, capsys):
    m = managed
    with m.server.connect_as(m.dbname, m.admin) as conn:
        assert not conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                                ).fetchone()[0]
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(m.engine)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(m.app)))
        conn.execute(sql.SQL("CREATE TABLE public.audit (who name, n int)"))
        conn.execute(sql.SQL("GRANT INSERT, SELECT ON public.audit TO {}").format(
            sql.Identifier(m.app)))

    out = cli(capsys, "install", "--dsn", m.dsn(m.admin))
    assert "installed df schema" in out and "operators are in schema public" in out
    cli(capsys, "grant", m.app, "--dsn", m.dsn(m.admin))
    out = cli(capsys, "install", "--engine-role", m.engine, "--dsn", m.dsn(m.admin))
    assert m.app in out

    # The application role uses the operators with its default search_path: nothing to set.
    with m.server.connect_as(m.dbname, m.app) as conn:
        iid = conn.execute(
            "SELECT df.start('SELECT 20 AS n' |=> 'x' ~> "
            "'INSERT INTO public.audit SELECT current_user, $x.n + 1 RETURNING n', 'managed')"
        ).fetchone()[0]
    with running_engine(m.dsn(m.engine)):
        assert wait_terminal(_Db(m), iid) == "completed"
    with m.server.connect_as(m.dbname, m.admin) as conn:
        assert conn.execute("SELECT who, n FROM public.audit").fetchall() == [(m.app, 21)]

    # A new application role later: the admin grants it and re-runs the engine-role setup. Its
    # search_path leaves public out, so the grant warns (the parser's own error can't say why).
    late = f"{m.app}_late"
    with m.server.connect_as(m.dbname, m.admin) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(late)))
        conn.execute(sql.SQL("ALTER ROLE {} SET search_path = pg_catalog").format(
            sql.Identifier(late)))
    assert main(["grant", late, "--dsn", m.dsn(m.admin)]) == 0
    out, err = capsys.readouterr()
    assert "warning: the DSL operators" in err and "SET search_path = pg_catalog, public" in err
    with m.server.connect_as(m.dbname, m.admin) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} RESET search_path").format(sql.Identifier(late)))
    assert late in cli(capsys, "install", "--engine-role", m.engine, "--dsn", m.dsn(m.admin))
    with m.server.connect_as(m.dbname, late) as conn:
        late_id = conn.execute("SELECT df.start('SELECT current_user::text AS u')").fetchone()[0]
    with running_engine(m.dsn(m.engine)):
        assert wait_terminal(_Db(m, late), late_id) == "completed"

    # From now on the engine role owns df: it upgrades (a no-op here) and uninstalls, leaving
    # nothing behind (the operators in public depend on df's functions and go with them).
    assert "nothing to do" in cli(capsys, "upgrade", "--dsn", m.dsn(m.engine))
    cli(capsys, "uninstall", "--yes", "--dsn", m.dsn(m.engine))
    with m.server.connect_as(m.dbname, m.admin) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname IN ('df', 'df_internal', 'df_exec')"
        ).fetchone()[0]
        ops = conn.execute("SELECT count(*) FROM pg_operator WHERE oprname IN "
                           "('~>', '|=>', '?>', '!>') ").fetchone()[0]
    assert (left, ops) == (0, 0)


class _Db:
    """The bits of TestDB that wait_terminal needs, connected as the application role (only it
    and the engine see its instances: the admin is neither superuser nor df's owner)."""

    def __init__(self, m: Managed, role: str | None = None) -> None:
        self.m = m
        self.role = role or m.app

    def scalar(self, query: str, params: tuple | None = None):
        with self.m.server.connect_as(self.m.dbname, self.role) as conn:
            row = conn.execute(query, params).fetchone()
            return row[0] if row else None
