"""Administrative helpers for the command line: connecting, installing, granting.

The scripting commands go through `dftui.client`; this module holds only what the client layer
does not cover (schema installation and role grants are superuser/admin work, not something the
TUI does), plus the connection helper the CLI and `dftui demo` share.
"""

from __future__ import annotations

import contextlib
import getpass
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from dftui.client.errors import needs_password, user_message
from engine import schema


class AdminError(RuntimeError):
    """An administrative action was refused; the message is meant for the user as-is."""


def conninfo_has_password(conninfo: str) -> bool:
    """True when a conninfo string or URI carries a password (it would be visible in `ps`)."""
    try:
        return bool(psycopg.conninfo.conninfo_to_dict(conninfo).get("password"))
    except psycopg.ProgrammingError:
        return False


def check_conninfo(conninfo: str) -> None:
    """Raise `AdminError` when `conninfo` cannot be parsed (before trying to connect)."""
    try:
        psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as exc:
        raise AdminError(f"invalid connection string: {user_message(exc)}") from exc


def connect(
    conninfo: str = "",
    *,
    autocommit: bool = True,
    prompt: Callable[[str], str] | None = None,
) -> psycopg.Connection:
    """Connect with libpq conventions (an empty conninfo means PG* variables, pgpass, services).

    When the server asks for a password that libpq could not find and we are on a terminal,
    prompt for it (hidden) once, as psql does, instead of ever taking it on the command line.
    """
    check_conninfo(conninfo)
    try:
        return psycopg.connect(conninfo, autocommit=autocommit)
    except psycopg.OperationalError as exc:
        if not needs_password(exc):
            raise
        if prompt is None:
            if sys.stdin is None or not sys.stdin.isatty():
                raise
            prompt = getpass.getpass
        password = prompt("Password: ")
        return psycopg.connect(conninfo, autocommit=autocommit, password=password)


def is_superuser(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user"
    ).fetchone()
    return bool(row and row[0])


def current_role(conn: psycopg.Connection) -> str:
    row = conn.execute("SELECT current_user").fetchone()
    return str(row[0]) if row else "?"


def install(conn: psycopg.Connection, *, upgrade: bool) -> schema.SchemaChange:
    """Install (or, with `upgrade`, upgrade) the df schema.

    A superuser installs the DSL operators in pg_catalog; any other role that may create schemas
    in the database (a managed service's admin, the database owner) installs them in `public`
    (see engine.schema.operator_schema). The schema's owner (or a superuser) upgrades it.
    """
    if not schema.may_administer(conn):
        raise AdminError(
            f"role {current_role(conn)} may not upgrade the df schema: only its owner or a "
            "superuser may")
    with _as_schema_owner(conn):
        before = schema.installed_version(conn)
        if upgrade and before is None:
            raise AdminError("the df schema is not installed; run 'dftui install' first")
        try:
            return schema.install(conn, upgrade=upgrade)
        except schema.SchemaError as exc:
            raise AdminError(user_message(exc)) from exc


def uninstall(conn: psycopg.Connection) -> Uninstalled | None:
    """Remove the df schema and what the engine made for it elsewhere (None: nothing installed)."""
    if not schema.may_administer(conn):
        raise AdminError(
            f"removing the df schema needs its owner or a superuser (connected as "
            f"{current_role(conn)})"
        )
    before = schema.installed_version(conn)
    owner = conn.execute("SELECT nspowner FROM pg_catalog.pg_namespace "
                         "WHERE nspname = 'df_internal'").fetchone()
    try:
        removed = schema.uninstall(conn)
    except schema.SchemaError as exc:
        raise AdminError(user_message(exc)) from exc
    if not removed:
        return None
    result = Uninstalled(before or "unknown")
    if owner is not None:
        _remove_remote_exec_schemas(conn, int(owner[0]), result)
    return result


@dataclass
class Uninstalled:
    """What uninstall removed: the version, and the df_exec schemas of cross-database steps
    dropped in (or left in, with why) other databases."""

    version: str
    dropped: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)


def _remove_remote_exec_schemas(conn: psycopg.Connection, owner_oid: int,
                                result: Uninstalled) -> None:
    """Drop the df_exec schemas the engine created in other databases for cross-database steps.

    Only where that database has no df installation of its own (its df_exec is its own then) and
    the schema belongs to the same owner as the removed df_internal (the engine that made it) —
    or, in superuser mode, to a superuser; anything else is somebody else's and is left alone.
    """
    here = conn.info.dbname
    names = [r[0] for r in conn.execute(
        "SELECT datname FROM pg_catalog.pg_database WHERE datallowconn AND datname <> %s "
        "AND pg_catalog.has_database_privilege(datname, 'CONNECT') ORDER BY 1", (here,))]
    params = conn.info.get_parameters()
    password = conn.info.password
    for name in names:
        try:
            with psycopg.connect(**{**params, "dbname": name},
                                 password=password, autocommit=True, connect_timeout=5) as other:
                row = other.execute(
                    "SELECT pg_catalog.to_regnamespace('df_internal') IS NULL, "
                    "       n.nspowner = %s OR r.rolsuper "
                    "  FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r "
                    "    ON r.oid = n.nspowner WHERE n.nspname = 'df_exec'",
                    (owner_oid,)).fetchone()
                if row is None or not row[0]:
                    continue  # no df_exec there, or that database's own installation
                if not row[1]:
                    result.left.append(f"{name} (df_exec there is not the engine's)")
                    continue
                other.execute("DROP SCHEMA df_exec CASCADE")
                result.dropped.append(name)
        except psycopg.Error as exc:
            result.left.append(f"{name} ({user_message(exc)})")


@dataclass
class GrantResult:
    """What a grant or revoke did, including the server's NOTICE lines."""

    role: str
    notices: list[str] = field(default_factory=list)


def _with_notices(conn: psycopg.Connection, query: sql.SQL | sql.Composed, params: tuple) -> list[str]:
    notices: list[str] = []

    def collect(diag: psycopg.errors.Diagnostic) -> None:
        if diag.message_primary:
            notices.append(diag.message_primary)

    conn.add_notice_handler(collect)
    try:
        conn.execute(query, params)
    finally:
        conn.remove_notice_handler(collect)
    return notices


def _require_df(conn: psycopg.Connection) -> None:
    if schema.installed_version(conn) is None:
        raise AdminError("the df schema is not installed in this database; run 'dftui install'")


@contextlib.contextmanager
def _as_schema_owner(conn: psycopg.Connection) -> Iterator[None]:
    """Act as the df schemas' owner when the connected admin may SET ROLE to it but is not it.

    On a managed service the admin hands df to the least-privilege engine role and keeps only
    SET ROLE on it (no superuser to bypass ownership): granting a new application role still
    has to work from the admin's session.
    """
    row = conn.execute(
        "SELECT pg_catalog.pg_get_userbyid(n.nspowner), "
        "       NOT pg_catalog.has_schema_privilege(n.oid, 'USAGE') "
        "       AND pg_catalog.pg_has_role(n.nspowner, 'MEMBER') "
        "  FROM pg_catalog.pg_namespace n WHERE n.nspname = 'df_internal'").fetchone()
    if not row or not row[1]:
        yield
        return
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(row[0])))
    try:
        yield
    finally:
        conn.execute("RESET ROLE")


def grant(
    conn: psycopg.Connection, role: str, *, http: bool = False, with_grant: bool = False
) -> GrantResult:
    """df.grant_usage(role, include_http, with_grant); the function itself resolves the name."""
    with _as_schema_owner(conn):
        _require_df(conn)
        notices = _with_notices(
            conn, sql.SQL("SELECT df.grant_usage(%s, %s, %s)"), (role, http, with_grant)
        )
    return GrantResult(role, notices)


def operator_visibility_note(conn: psycopg.Connection, role: str) -> str | None:
    """Why `role` would not find the DSL operators (installed outside pg_catalog by a
    non-superuser install), or None. Parser errors cannot be reworded, so the admin is told here.
    """
    row = conn.execute(
        """
        SELECT n.nspname,
               (SELECT s.setconfig FROM pg_catalog.pg_db_role_setting s
                 WHERE s.setrole IN (r.oid, 0)
                   AND s.setdatabase IN (0, (SELECT d.oid FROM pg_catalog.pg_database d
                                              WHERE d.datname = pg_catalog.current_database()))
                   AND EXISTS (SELECT 1 FROM pg_catalog.unnest(s.setconfig) c
                                WHERE pg_catalog.starts_with(c, 'search_path='))
                 ORDER BY s.setrole = 0, s.setdatabase = 0 LIMIT 1)
          FROM pg_catalog.pg_operator o
          JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
          JOIN pg_catalog.pg_proc p ON p.oid = o.oprcode
          JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace AND pn.nspname = 'df'
          JOIN pg_catalog.pg_roles r ON r.rolname = %s
         WHERE o.oprname = '~>'
        """, (role,)).fetchone()
    if row is None or row[0] == "pg_catalog":
        return None
    where, config = row
    path = next((c.split("=", 1)[1] for c in (config or []) if c.startswith("search_path=")),
                '"$user", public')
    entries = [e.strip().strip('"') for e in path.split(",")]
    if where in entries:
        return None
    return (f"the DSL operators (~>, |=>, ...) are in schema {where}, which {role}'s search_path "
            f"({path}) leaves out; run: ALTER ROLE {sql.Identifier(role).as_string(conn)} "
            f"SET search_path = {path}, {where}")


def revoke(conn: psycopg.Connection, role: str) -> GrantResult:
    """df.revoke_usage(role)."""
    with _as_schema_owner(conn):
        _require_df(conn)
        notices = _with_notices(conn, sql.SQL("SELECT df.revoke_usage(%s)"), (role,))
    return GrantResult(role, notices)
