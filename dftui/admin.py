"""Administrative helpers for the command line: connecting, installing, granting.

The scripting commands go through `dftui.client`; this module holds only what the client layer
does not cover (schema installation and role grants are superuser/admin work, not something the
TUI does), plus the connection helper the CLI and `dftui demo` share.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from engine import schema


class AdminError(RuntimeError):
    """An administrative action was refused; the message is meant for the user as-is."""


def one_line(exc: BaseException) -> str:
    """A single-line description of an error (the server's primary message when there is one).

    psycopg's texts for connection failures span several lines ("...\\n\\tIs the server
    running...?"); the CLI promises one line per error, so the lines are joined.
    """
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = primary or str(exc) or type(exc).__name__
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


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
        raise AdminError(f"invalid connection string: {one_line(exc)}") from exc


def _needs_password(exc: psycopg.OperationalError) -> bool:
    text = str(exc)
    return "no password supplied" in text or "password authentication failed" in text


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
        if not _needs_password(exc):
            raise
        if prompt is None:
            if not sys.stdin.isatty():
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
    """Install (or, with `upgrade`, upgrade) the df schema; refuses non-superusers up front.

    The SQL files create the DSL operators in pg_catalog, which only a superuser may do; saying
    so before trying gives a clearer error than the first failing statement would.
    """
    if not is_superuser(conn):
        raise AdminError(
            f"installing the df schema needs a superuser (connected as {current_role(conn)})"
        )
    before = schema.installed_version(conn)
    if upgrade and before is None:
        raise AdminError("the df schema is not installed; run 'dftui install' first")
    try:
        return schema.install(conn, upgrade=upgrade)
    except schema.SchemaError as exc:
        raise AdminError(one_line(exc)) from exc


def uninstall(conn: psycopg.Connection) -> str | None:
    """Remove the df schema; returns the version that was removed (None: nothing installed)."""
    if not is_superuser(conn):
        raise AdminError(
            f"removing the df schema needs a superuser (connected as {current_role(conn)})"
        )
    before = schema.installed_version(conn)
    removed = schema.uninstall(conn)
    if not removed:
        return None
    return before or "unknown"


@dataclass
class GrantResult:
    """What a grant or revoke did, including the server's NOTICE lines."""

    role: str
    notices: list[str] = field(default_factory=list)


def _with_notices(conn: psycopg.Connection, query: sql.Composable, params: tuple) -> list[str]:
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


def grant(
    conn: psycopg.Connection, role: str, *, http: bool = False, with_grant: bool = False
) -> GrantResult:
    """df.grant_usage(role, include_http, with_grant); the function itself resolves the name."""
    _require_df(conn)
    notices = _with_notices(
        conn, sql.SQL("SELECT df.grant_usage(%s, %s, %s)"), (role, http, with_grant)
    )
    return GrantResult(role, notices)


def revoke(conn: psycopg.Connection, role: str) -> GrantResult:
    """df.revoke_usage(role)."""
    _require_df(conn)
    notices = _with_notices(conn, sql.SQL("SELECT df.revoke_usage(%s)"), (role,))
    return GrantResult(role, notices)
