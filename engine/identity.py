"""Running a step with exactly its submitter's privileges.

Design (b) of security.md: the engine stays connected as itself and runs each SQL step through a
SECURITY DEFINER *trampoline* owned by the submitter, in schema ``df_exec``:

* Inside a security-definer function PostgreSQL refuses ``SET ROLE``, ``RESET ROLE``,
  ``SET SESSION AUTHORIZATION`` and ``set_config('role', …)``, so the step cannot change identity.
* Code that could run later with the engine's privileges is flushed *inside* the trampoline:
  ``SET CONSTRAINTS ALL IMMEDIATE`` fires deferred constraint triggers and deferred unique /
  exclusion checks as the submitter, and ``CLOSE ALL`` drops holdable cursors before commit
  would materialise them.
* Session state the step leaves behind (GUCs set with plain SET, temporary objects, prepared
  statements, LISTEN, advisory locks) is wiped by ``DISCARD ALL`` after the step's transaction,
  before the connection runs anything else; within the transaction the engine only calls
  schema-qualified ``df_internal`` functions that pin their own search_path.
* Users have no USAGE on ``df_exec``, so they cannot name, alter or replace a trampoline.

The trampoline's ``search_path`` is the submitter's configured default (role or database
setting) or ``"$user", public``, so unqualified names resolve as they would in the submitter's
own session.
"""

from __future__ import annotations

import re
import threading

import psycopg
from psycopg import sql

EXEC_SCHEMA = "df_exec"
_DEFAULT_PATH = '"$user", public'

# Statements PostgreSQL refuses inside a transaction block. They run outside the step's
# transaction (at-least-once, see docs/architecture.md).
_NON_TRANSACTIONAL = re.compile(
    r"""^\s*(
        VACUUM\b
      | CREATE\s+(UNIQUE\s+)?INDEX\s+CONCURRENTLY\b
      | DROP\s+INDEX\s+CONCURRENTLY\b
      | REINDEX\b.*\bCONCURRENTLY\b
      | CREATE\s+DATABASE\b | DROP\s+DATABASE\b
      | ALTER\s+SYSTEM\b
      | CREATE\s+TABLESPACE\b | DROP\s+TABLESPACE\b
      | ALTER\s+TYPE\b.*\bADD\s+VALUE\b
    )""",
    re.IGNORECASE | re.VERBOSE | re.DOTALL,
)


def is_non_transactional(query: str) -> bool:
    return bool(_NON_TRANSACTIONAL.match(query))


def step_function(role_oid: int) -> str:
    return f"{EXEC_SCHEMA}.step_{role_oid}"


def exec_function(role_oid: int) -> str:
    return f"{EXEC_SCHEMA}.exec_{role_oid}"


def rows_function(role_oid: int) -> str:
    return f"{EXEC_SCHEMA}.rows_{role_oid}"


_STEP_BODY = """
BEGIN
    RETURN QUERY EXECUTE q;
    SET CONSTRAINTS ALL IMMEDIATE;
    EXECUTE 'CLOSE ALL';
END
"""

# For results with pseudo-type columns (void, record, …) that a column definition list cannot
# name: rows come back as jsonb, encoded by to_jsonb.
_ROWS_BODY = """
DECLARE
    r record;
BEGIN
    FOR r IN EXECUTE q LOOP
        RETURN NEXT pg_catalog.to_jsonb(r);
    END LOOP;
    SET CONSTRAINTS ALL IMMEDIATE;
    EXECUTE 'CLOSE ALL';
END
"""

_EXEC_BODY = """
DECLARE
    n bigint;
BEGIN
    EXECUTE q;
    GET DIAGNOSTICS n = ROW_COUNT;
    SET CONSTRAINTS ALL IMMEDIATE;
    EXECUTE 'CLOSE ALL';
    RETURN n;
END
"""


class Trampolines:
    """Creates (once per role and engine process) and names the per-role trampolines."""

    def __init__(self) -> None:
        # keyed by (database, role oid): trampolines live in each database that runs steps
        self._ready: dict[tuple[str, int], str] = {}
        self._gone: set[tuple[str, int]] = set()
        self._lock = threading.Lock()

    def needs_setup(self, database: str, role_oid: int) -> bool:
        key = (database, role_oid)
        return key not in self._ready and key not in self._gone

    def search_path(self, database: str, role_oid: int) -> str | None:
        return self._ready.get((database, role_oid))

    def ensure(self, conn: psycopg.Connection, role_oid: int) -> str:
        """Make sure the role's trampolines exist; returns the role's search_path for steps.

        Runs in its own short transaction on `conn` (autocommit connection, no step in flight).
        """
        key = (conn.info.dbname, role_oid)
        cached = self._ready.get(key)
        if cached is not None:
            return cached
        with self._lock:
            cached = self._ready.get(key)
            if cached is not None:
                return cached
            try:
                path = self._create(conn, role_oid)
            except RoleGone:
                self._gone.add(key)
                return ""
            self._ready[key] = path
            return path

    def _create(self, conn: psycopg.Connection, role_oid: int) -> str:
        with conn.transaction():
            conn.execute("SELECT pg_catalog.pg_advisory_xact_lock(72629378, %s::int)", (role_oid % 2**31,))
            row = conn.execute(
                "SELECT r.rolname FROM pg_catalog.pg_roles r WHERE r.oid = %s", (role_oid,)
            ).fetchone()
            if row is None:
                raise RoleGone(f"role with oid {role_oid} no longer exists")
            role = row[0]
            path = self._configured_path(conn, role_oid) or _DEFAULT_PATH
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(EXEC_SCHEMA)))
            conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(sql.Identifier(EXEC_SCHEMA)))
            for name, returns, body in (
                (f"step_{role_oid}", sql.SQL("SETOF record"), _STEP_BODY),
                (f"exec_{role_oid}", sql.SQL("bigint"), _EXEC_BODY),
                (f"rows_{role_oid}", sql.SQL("SETOF jsonb"), _ROWS_BODY),
            ):
                fn = sql.Identifier(EXEC_SCHEMA, name)
                exists = conn.execute(
                    "SELECT p.proowner = %s FROM pg_catalog.pg_proc p "
                    "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
                    "WHERE n.nspname = %s AND p.proname = %s",
                    (role_oid, EXEC_SCHEMA, name),
                ).fetchone()
                if exists is not None:
                    # Drop and recreate: ownership or body may be stale (role renamed, path changed).
                    conn.execute(sql.SQL("DROP FUNCTION {}(text)").format(fn))
                conn.execute(
                    sql.SQL(
                        "CREATE FUNCTION {fn}(q text) RETURNS {returns} LANGUAGE plpgsql "
                        "SECURITY DEFINER SET search_path TO {path} SET df.in_workflow = 'true' "
                        "AS {body}"
                    ).format(fn=fn, returns=returns, path=sql.SQL(path), body=sql.Literal(body))
                )
                conn.execute(sql.SQL("REVOKE ALL ON FUNCTION {}(text) FROM PUBLIC").format(fn))
                # ALTER OWNER needs the new owner to have CREATE on the schema; grant it only for
                # the duration of this transaction (matters in least-privilege mode).
                conn.execute(
                    sql.SQL("GRANT CREATE ON SCHEMA {} TO {}").format(
                        sql.Identifier(EXEC_SCHEMA), sql.Identifier(role)
                    )
                )
                conn.execute(
                    sql.SQL("ALTER FUNCTION {}(text) OWNER TO {}").format(fn, sql.Identifier(role))
                )
                conn.execute(
                    sql.SQL("REVOKE CREATE ON SCHEMA {} FROM {}").format(
                        sql.Identifier(EXEC_SCHEMA), sql.Identifier(role)
                    )
                )
            return path

    @staticmethod
    def _configured_path(conn: psycopg.Connection, role_oid: int) -> str | None:
        """The search_path the role would get in a fresh session of this database, if set."""
        rows = conn.execute(
            """
            SELECT s.setrole, s.setdatabase, cfg
              FROM pg_catalog.pg_db_role_setting s,
                   LATERAL unnest(s.setconfig) AS cfg
             WHERE cfg LIKE 'search_path=%%'
               AND s.setrole IN (0, %s)
               AND s.setdatabase IN (0, (SELECT d.oid FROM pg_catalog.pg_database d
                                          WHERE d.datname = pg_catalog.current_database()))
             ORDER BY (s.setrole <> 0) DESC, (s.setdatabase <> 0) DESC
             LIMIT 1
            """,
            (role_oid,),
        ).fetchone()
        if rows is None:
            return None
        value = rows[2].split("=", 1)[1]
        # Validate: a comma-separated list of identifiers / quoted identifiers only.
        if not re.fullmatch(r'\s*("([^"]|"")+"|[\w$]+)(\s*,\s*("([^"]|"")+"|[\w$]+))*\s*', value):
            return None
        return value


class RoleGone(RuntimeError):
    """The submitter role was dropped after the instance started."""
