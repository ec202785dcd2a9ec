"""The connection and its session: opening it (libpq rules, the password prompt), keeping it
thread-safe, and turning every psycopg failure into a `ClientError`.

Why a class of its own: every job module of the client (instances, actions, health, vars)
extends `Session` and reaches the database only through `_fetch` / `_rows` / `_one` /
`_rolled_back`, so error translation and locking live in exactly one place. Which backend is
behind the connection is decided once, at connect time, by `dftui.client.backends.detect`.
"""

from __future__ import annotations

import getpass
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import RowFactory, dict_row
from psycopg.types.json import set_json_dumps, set_json_loads

from dftui.client.backends import Backend, detect
from dftui.client.errors import (
    ClientError,
    ConnectionLost,
    PasswordRequired,
    needs_password,
    user_message,
    wrong_password,
)
from dftui.client.models import Capabilities, ConnectionInfo
from engine import jsonexact

APPLICATION_NAME = "dftui"
PASSWORD_TRIES = 3
Params = Sequence[Any] | Mapping[str, Any] | None  # what psycopg binds to %s / %(name)s
R = TypeVar("R")


class Session:
    """A connection to one database as one role.

    Thread-safe: every operation holds a lock, so Textual workers may call it concurrently (they
    simply queue). The connection is autocommit; multi-statement operations open their own
    transaction.
    """

    def __init__(self, conninfo: str = "", *, password: str | None = None, connect_timeout: int = 10):
        self.conninfo = conninfo
        self._password = password
        self._connect_timeout = connect_timeout
        self._conn: psycopg.Connection | None = None
        self._lock = threading.RLock()
        self.info: ConnectionInfo | None = None
        self.backend: Backend | None = None

    # -- connection management ----------------------------------------------------------------

    def connect(self) -> ConnectionInfo:
        """Open the connection (libpq rules: conninfo/URI, PG* env, pgpass, service files) and
        detect the backend behind it.

        Raises PasswordRequired when the server wants a password we do not have, ClientError for
        every other failure.
        """
        kwargs: dict[str, Any] = {"autocommit": True, "application_name": APPLICATION_NAME}
        if self._password is not None:
            kwargs["password"] = self._password
        params = psycopg.conninfo.conninfo_to_dict(self.conninfo) if self.conninfo else {}
        if "connect_timeout" not in params:
            kwargs["connect_timeout"] = self._connect_timeout
        with self._lock:
            self._close_quietly()
            try:
                self._conn = psycopg.connect(self.conninfo, **kwargs)
            except psycopg.Error as exc:
                if needs_password(exc) and self._password is None:
                    raise PasswordRequired("the server requires a password") from None
                raise ClientError(user_message(exc)) from None
            # results exactly as stored, at any depth (engine/jsonexact.py)
            set_json_loads(jsonexact.loads, self._conn)
            set_json_dumps(jsonexact.dumps, self._conn)
            self.info, self.backend = detect(self)
            return self.info

    def set_password(self, password: str) -> None:
        """Use this password for this and later (re)connections; kept only in memory."""
        self._password = password

    def reconnect(self) -> ConnectionInfo:
        """Try once to re-open a lost connection. Raises ConnectionLost when it still fails."""
        try:
            return self.connect()
        except PasswordRequired:
            raise
        except ClientError as exc:
            raise ConnectionLost(exc.message) from None

    def close(self) -> None:
        with self._lock:
            self._close_quietly()

    def _close_quietly(self) -> None:
        if self._conn is not None:
            with suppress(Exception):  # closing a broken connection may fail; nothing to do
                self._conn.close()
            self._conn = None

    @property
    def connected(self) -> bool:
        conn = self._conn
        return conn is not None and not conn.closed and not conn.broken

    def backend_pid(self) -> int | None:
        """The server process id of our session (tests use it to simulate connection loss)."""
        conn = self._conn
        return conn.info.backend_pid if conn is not None and not conn.closed else None

    @property
    def capabilities(self) -> Capabilities:
        return self.info.capabilities if self.info else Capabilities()

    def _adapter(self) -> Backend:
        """The backend adapter chosen at connect time."""
        if self.backend is None:
            raise ConnectionLost("not connected to the server")
        return self.backend

    # -- running statements --------------------------------------------------------------------

    def _live(self) -> psycopg.Connection:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            raise ConnectionLost("not connected to the server")
        return conn

    def _translate(self, conn: psycopg.Connection, exc: psycopg.Error) -> ClientError:
        """The one translation of a failed statement: ConnectionLost when the session is gone,
        else ClientError with the server's message on one line."""
        if conn.closed or conn.broken or isinstance(
            exc, pg_errors.AdminShutdown | pg_errors.ConnectionFailure
        ):
            return ConnectionLost(f"connection lost: {user_message(exc)}")
        return ClientError(user_message(exc))

    @contextmanager
    def _cursor(self, row_factory: RowFactory[R]) -> Iterator[psycopg.Cursor[R]]:
        """A cursor producing rows through `row_factory`; psycopg errors become ClientError /
        ConnectionLost."""
        with self._lock:
            conn = self._live()
            try:
                with conn.cursor(row_factory=row_factory) as cur:
                    yield cur
            except psycopg.Error as exc:
                raise self._translate(conn, exc) from None

    @contextmanager
    def _rolled_back(self) -> Iterator[psycopg.Cursor[Any]]:
        """A tuple cursor inside a transaction that is always rolled back (for probing
        statements that must change nothing)."""
        with self._lock:
            conn = self._live()
            try:
                with conn.transaction(force_rollback=True), conn.cursor() as cur:
                    yield cur
            except psycopg.Error as exc:
                raise self._translate(conn, exc) from None

    def _fetch(self, row_factory: RowFactory[R], query: str, params: Params = None) -> list[R]:
        """All rows of `query`, each built by `row_factory` (a dataclass via class_row, ...)."""
        with self._cursor(row_factory) as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []

    def _rows(self, query: str, params: Params = None) -> list[dict[str, Any]]:
        return self._fetch(dict_row, query, params)

    def _one(self, query: str, params: Params = None) -> dict[str, Any] | None:
        rows = self._rows(query, params)
        return rows[0] if rows else None

    def _usable(self, functions: Sequence[str], relations: Sequence[str]) -> frozenset[str]:
        """Which of these `df` functions this role may execute and relations it may read, in
        one round trip (capability detection asks about a dozen names at connect time)."""
        rows = self._rows(
            """
            SELECT p.proname AS name
              FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'df' AND p.proname = ANY(%(functions)s)
               AND pg_catalog.has_schema_privilege(n.oid, 'USAGE')
               AND pg_catalog.has_function_privilege(p.oid, 'EXECUTE')
            UNION
            SELECT c.relname
              FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'df' AND c.relname = ANY(%(relations)s)
               AND pg_catalog.has_schema_privilege(n.oid, 'USAGE')
               AND pg_catalog.has_table_privilege(c.oid, 'SELECT')
            """,
            {"functions": list(functions), "relations": list(relations)},
        )
        return frozenset(r["name"] for r in rows)


def password_target(conninfo: str) -> str:
    """`user@host:port/dbname` as libpq will resolve it (conninfo, then PG* variables), so a
    password prompt says which password it wants."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(conninfo) if conninfo else {}
    except psycopg.Error:
        params = {}
    user = params.get("user") or os.environ.get("PGUSER") or getpass.getuser()
    host = params.get("host") or os.environ.get("PGHOST") or "local socket"
    port = params.get("port") or os.environ.get("PGPORT") or "5432"
    dbname = params.get("dbname") or os.environ.get("PGDATABASE") or user
    return f"{user}@{host}:{port}/{dbname}"


def open_with_prompt(session: Session, conninfo: str,
                     password_prompt: Callable[[str], str] | None) -> None:
    """Connect `session`; when the server asks for a password, ask `password_prompt(target)`
    (target = `user@host:port/db`), up to PASSWORD_TRIES times while the password is wrong."""
    try:
        session.connect()
        return
    except PasswordRequired:
        if password_prompt is None:
            raise
    target = password_target(conninfo)
    for attempt in range(PASSWORD_TRIES):
        session.set_password(password_prompt(target))
        try:
            session.connect()
            return
        except ClientError as exc:
            if not wrong_password(exc.message) or attempt == PASSWORD_TRIES - 1:
                raise
            print(f"dftui: wrong password for {target}; try again", file=sys.stderr)
