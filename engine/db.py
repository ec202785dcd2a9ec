"""Engine connections: one definition of how the engine talks to PostgreSQL."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import set_json_dumps, set_json_loads

from engine import jsonexact

Params = Sequence[Any] | Mapping[str, Any] | None  # what psycopg binds to %s / %(name)s

# search_path pinned to pg_catalog (engine SQL is schema-qualified; a step's plain SET is reset
# after it); a lost or stalled client is noticed by the server within seconds. Startup options
# override ALTER DATABASE / ALTER ROLE settings, which the owner of a database the engine runs
# steps in controls: without `role=none` an `ALTER DATABASE ... SET role = x` would make the
# engine's session act as x there, and string quoting must never depend on a database's
# standard_conforming_strings (nor the client encoding on its defaults).
_OPTIONS = (
    "-c search_path=pg_catalog,pg_temp -c role=none -c standard_conforming_strings=on "
    "-c idle_in_transaction_session_timeout=600000 "
    "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3"
)


def connect(dsn: str, purpose: str, dbname: str | None = None) -> psycopg.Connection:
    """An engine connection: autocommit (transactions are explicit), pinned search_path.

    `dbname` overrides the DSN's database (steps of instances that name another database).
    """
    if dbname is not None:
        dsn = psycopg.conninfo.make_conninfo(dsn, dbname=dbname)  # keywords override the DSN's
    conn = psycopg.connect(dsn, autocommit=True, application_name=f"dftui engine ({purpose})",
                           options=_OPTIONS, client_encoding="UTF8", prepare_threshold=None)
    register_json(conn)
    return conn


def register_json(conn: psycopg.Connection) -> None:
    """jsonb exactly as stored, at any depth (engine/jsonexact.py), on this connection: decoded
    with jsonexact.loads, Json/Jsonb parameters encoded with jsonexact.dumps."""
    set_json_loads(jsonexact.loads, conn)
    set_json_dumps(jsonexact.dumps, conn)


def scalar(conn: psycopg.Connection, query: str | sql.SQL | sql.Composed, params: Params = None) -> Any:
    """The first column of the one row a statement always returns (SHOW, SELECT f(...)).

    A statement that returned no row is a bug in the caller's SQL, not bad user input, so it
    raises psycopg's own ProgrammingError rather than returning None for every caller to check.
    """
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise psycopg.ProgrammingError("the statement returned no row")
    return row[0]
