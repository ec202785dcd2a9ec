"""Real-PostgreSQL test harness: the fixtures. What they are built from (servers, databases,
roles) is in tests/support/cluster.py; the helpers tests call are in tests/support/.

Tests that use the `db` fixture run once per server (PostgreSQL 18, and 15 when installed; see
tests/support/cluster.py for DFTUI_TEST_DSN and DFTUI_TEST_SERVERS). Each test gets its own
database cloned from a template in which the df schema is installed and the standard roles are
granted, so tests never see each other's rows.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from dftui.embedded import Cluster, embedded_bindir
from engine import schema
from tests.support.attack import (
    ENGINE_ROLE,
    bypassrls_login,
    engine_in_mode,
    prepare_attacker,
    reset_attacker,
)
from tests.support.cluster import (
    DAVE,
    GRANTED_ROLES,
    Server,
    TestDB,
    ensure_roles,
    prepare_app,
    scratch_database,
    server_bindir,
    servers,
)
from tests.support.engine import running_engine


@pytest.fixture(scope="session", params=servers())
def pg_server(request: pytest.FixtureRequest) -> Iterator[Server]:
    if request.param == "dsn":
        info = psycopg.conninfo.conninfo_to_dict(os.environ["DFTUI_TEST_DSN"])
        server = Server("dsn", info, None)
        ensure_roles(server)
        yield server
        return
    bindir = server_bindir(request.param) or embedded_bindir()
    tmp = Path(tempfile.mkdtemp(prefix=f"dftui-test-{request.param}-"))
    cluster = Cluster(tmp / "data", bindir=bindir, settings={"fsync": "off"})
    cluster.start()
    server = Server(request.param, psycopg.conninfo.conninfo_to_dict(cluster.dsn()), cluster)
    ensure_roles(server)
    try:
        yield server
    finally:
        cluster.stop("immediate")
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(pg_server: Server) -> Iterator[str]:
    """A database with df installed and roles granted; cloned for every test."""
    with scratch_database(pg_server, f"dftui_tpl_{uuid.uuid4().hex[:8]}") as tpl:
        with psycopg.connect(tpl.dsn()) as conn:
            schema.install(conn)
            conn.execute("SET client_min_messages = warning")
            for role in GRANTED_ROLES:
                conn.execute("SELECT df.grant_usage(%s, %s)", (role, role == DAVE))
            conn.commit()
        yield tpl.name


@pytest.fixture
def db(pg_server: Server, template_db: str) -> Iterator[TestDB]:
    with scratch_database(pg_server, f"dftui_t_{uuid.uuid4().hex[:10]}", template_db) as fresh:
        yield fresh


@pytest.fixture
def empty_db(pg_server: Server) -> Iterator[TestDB]:
    """A database without the df schema (for install/upgrade/uninstall tests)."""
    with scratch_database(pg_server, f"dftui_e_{uuid.uuid4().hex[:10]}") as fresh:
        yield fresh


@pytest.fixture
def baseline_db(empty_db: TestDB) -> Iterator[TestDB]:
    """empty_db with release 0.1.0 installed from its frozen files, the roles granted and
    alice's app tables (prepare_app)."""
    with psycopg.connect(empty_db.dsn(), autocommit=True) as conn:
        change = schema.install(conn, target=schema.BASELINE)
        assert change.after == schema.BASELINE
    prepare_app(empty_db)
    assert empty_db.scalar("SELECT to_regclass('df_internal.schema_migrations')") is None
    yield empty_db


# -- shared by the attack suites (tests/test_security*.py) -----------------------------------------

@pytest.fixture
def other_database(db: TestDB) -> Iterator[TestDB]:
    """A second database (no df schema) every role may CONNECT to, as by default; the engine
    role (when it exists: least-privilege mode) may create its df_exec there."""
    name = f"{db.name}_other"
    ident = sql.Identifier(name)
    with db.connect() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ENGINE_ROLE,)).fetchone():
            conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                ident, sql.Identifier(ENGINE_ROLE)))
    yield TestDB(db.server, name)
    with db.connect() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


@pytest.fixture(params=["superuser", "owner"])
def mode(request: pytest.FixtureRequest) -> str:
    """Both engine modes: superuser, and least-privilege owner of the df schemas."""
    return request.param


@pytest.fixture
def attacker(db: TestDB) -> Iterator[TestDB]:
    """A database prepared for attack tests (schema `evil`, witness functions)."""
    prepare_attacker(db)
    yield db
    reset_attacker(db)


@pytest.fixture
def live_engine(db: TestDB) -> Iterator[object]:
    """An in-process engine (superuser, 4 workers) serving `db` for the test's length."""
    with running_engine(db.dsn()) as engine:
        yield engine


@pytest.fixture
def eng(db: TestDB, attacker: TestDB, mode: str) -> Iterator[object]:
    """An engine in `mode` over an attacker-prepared database (the attack suites' default)."""
    with engine_in_mode(db, mode) as engine:
        yield engine


@pytest.fixture
def eng1(db: TestDB, attacker: TestDB, mode: str) -> Iterator[object]:
    """Like `eng` with one worker: the same connection serves every step in turn."""
    with engine_in_mode(db, mode, concurrency=1) as engine:
        yield engine


@pytest.fixture
def bypassrls_role(db: TestDB) -> Iterator[str]:
    """A granted BYPASSRLS role: pg_durable's grants give it full DML on df.vars, every row."""
    with bypassrls_login(db) as name:
        yield name


@pytest.fixture
def mallory(db: TestDB, attacker: TestDB) -> Iterator[str]:
    """A granted BYPASSRLS role with table-wide UPDATE on df.instances / df.nodes (the broad
    grants a managed-service admin role typically has), allowed to call the attacker's schema."""
    with bypassrls_login(db, table_dml=True) as name:
        with db.connect() as conn:
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA evil TO {}").format(sql.Identifier(name)))
        yield name


@pytest.fixture
def granted_roles(db: TestDB) -> Iterator[Callable[[int], list[str]]]:
    """make(n): n fresh LOGIN roles granted df usage (roles are cluster-wide: dropped, with their
    instances, after the test)."""
    made: list[str] = []

    def make(n: int) -> list[str]:
        names = [f"dftui_r{uuid.uuid4().hex[:8]}" for _ in range(n)]
        with db.connect() as conn:
            conn.execute("SET client_min_messages = warning")
            for name in names:
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
                made.append(name)
                conn.execute("SELECT df.grant_usage(%s)", (name,))
        return names

    try:
        yield make
    finally:
        with db.connect() as conn:
            for name in made:
                conn.execute("DELETE FROM df.instances WHERE submitted_by = %s::regrole", (name,))
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))
