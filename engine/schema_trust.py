"""Whether dftui may drive or change the df schema of a database: trust checks.

Why a module of its own: these are the security questions of the schema (docs/security.md) —
is the `df` there dftui's (not pg_durable's, not a schema a database user created first to run
code as the engine), may a superuser engine run its code (a non-superuser owner could replace
it), may this role administer it — and the engine's start check, which adds the level check.
"""

from __future__ import annotations

import psycopg

from engine.schema_files import SchemaError, latest_version, migrations
from engine.schema_state import installed, installed_version, plan_migrations, table_exists

# What a claim raises when the engine drives another schema level than the database's.
LEVEL_MISMATCH_MESSAGE = "dftui engine schema level mismatch"


class SchemaMismatch(SchemaError):
    """The database's df schema is not the one this engine drives (older or newer)."""


def foreign_df_schema(conn: psycopg.Connection) -> str | None:
    """Why an existing `df` schema is not dftui's (e.g. the real pg_durable), or None."""
    row = conn.execute(
        "SELECT e.extname, e.extversion FROM pg_catalog.pg_extension e "
        "WHERE e.extname = 'pg_durable'").fetchone()
    if row:
        return f"the pg_durable extension {row[1]} is installed in this database"
    rows = conn.execute(
        "SELECT n.nspname, pg_catalog.pg_get_userbyid(n.nspowner), "
        "       r.rolsuper OR n.nspowner = (SELECT oid FROM pg_catalog.pg_roles "
        "                                   WHERE rolname = current_user) "
        "  FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner "
        " WHERE n.nspname IN ('df', 'df_internal', 'df_exec')").fetchall()
    owners = {name: owner for name, owner, _trusted in rows}
    if not table_exists(conn, "df_internal.schema_version"):
        # Whoever owns a schema may drop and replace anything in it: installing into a schema
        # a database user created first would run that user's code as the engine (a superuser).
        # (df_exec made by a superuser engine for steps from another database is fine.)
        for name, owner, trusted in rows:
            if name == "df" or not trusted:
                return (f"a schema named {name} exists that dftui did not install "
                        f"(owned by {owner}); drop it first")
        return None
    if owners.get("df") != owners.get("df_internal"):
        return (f"schema df is owned by {owners.get('df')} but df_internal by "
                f"{owners.get('df_internal')}; the df schemas must have one owner")
    return None


def untrusted_for_superuser(conn: psycopg.Connection) -> str | None:
    """Why a superuser session must not run the df schema's code, or None.

    A superuser engine calls df_internal's functions on every claim; if a role that is not a
    superuser owns df_internal, that role can replace them and have them run as the superuser.
    Such an installation is driven by an engine connected as its owner (least-privilege mode).
    """
    row = conn.execute(
        "SELECT pg_catalog.pg_get_userbyid(n.nspowner) FROM pg_catalog.pg_namespace n "
        "JOIN pg_catalog.pg_roles owner ON owner.oid = n.nspowner "
        "JOIN pg_catalog.pg_roles me ON me.rolname = current_user "
        "WHERE n.nspname = 'df_internal' AND me.rolsuper AND NOT owner.rolsuper").fetchone()
    if row is None:
        return None
    return (f"the df schemas are owned by role {row[0]}, which is not a superuser and could "
            f"change the code a superuser engine runs; connect the engine as {row[0]} "
            "(least-privilege mode, docs/security.md)")


def may_administer(conn: psycopg.Connection) -> bool:
    """True for a superuser, or a member of the role owning df_internal (or when nothing is
    installed yet): who may install, upgrade or remove the schema."""
    row = conn.execute(
        "SELECT r.rolsuper OR n.oid IS NULL OR pg_catalog.pg_has_role(n.nspowner, 'MEMBER') "
        "FROM pg_catalog.pg_roles r LEFT JOIN pg_catalog.pg_namespace n "
        "ON n.nspname = 'df_internal' WHERE r.rolname = current_user").fetchone()
    return bool(row and row[0])


def owner_name(conn: psycopg.Connection) -> str:
    row = conn.execute("SELECT pg_catalog.pg_get_userbyid(nspowner) FROM pg_catalog.pg_namespace "
                       "WHERE nspname = 'df_internal'").fetchone()
    return str(row[0]) if row else "?"


def check_compatible(conn: psycopg.Connection) -> None:
    """Raise SchemaMismatch (one line saying what to run) unless this engine can drive `conn`."""
    reason = foreign_df_schema(conn)
    if reason:
        raise SchemaMismatch(f"{reason}; dftui cannot drive it")
    reason = untrusted_for_superuser(conn)
    if reason:
        raise SchemaMismatch(f"refusing to run: {reason}")
    state = installed(conn)
    if state is None:
        raise SchemaMismatch("the df schema is not installed in this database (run `dftui install`)")
    unknown, todo = plan_migrations(state, migrations())
    if unknown:
        raise SchemaMismatch(
            f"the df schema in this database is newer than this dftui {latest_version()} "
            f"(migration {unknown[-1]} is unknown to it): upgrade dftui on this host")
    if todo:
        raise SchemaMismatch(
            f"the df schema in this database ({installed_version(conn)}) is older than this "
            f"dftui {latest_version()}: run `dftui upgrade`")
