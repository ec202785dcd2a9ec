"""Install, upgrade and uninstall the df schema — and the one public face of the schema code.

Everything runs in one transaction: a failed or interrupted install or upgrade leaves the
previous version intact, and a rerun completes it. Concurrent installers (engines starting at
once) serialise on a table lock only the schema's owner can take — never an advisory lock, which
any role could take first and so block every install (docs/security.md).

The engine drives exactly one *schema level* (the newest migration it ships): it refuses a
database that is older (unless it may upgrade it) or newer, and the claim function refuses an
engine of another level, so an engine left running across an upgrade stops cleanly.

One module per job, all re-exported here (callers use ``engine.schema``): ``schema_files`` reads
what this build ships (baseline, migrations, routines, releases), ``schema_state`` what a
database has and what an upgrade would apply, ``schema_trust`` whether dftui may drive or change
it; this module applies.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from engine.keys import SCHEMA_LOCK
from engine.schema_files import (
    BASELINE,
    Migration,
    SchemaError,
    SqlTree,
    available_versions,
    baseline_sql,
    latest_version,
    migrations,
    released_migrations,
    routines_sql,
    schema_level,
    sql_root,
    sql_tree,
    version_sql,
)
from engine.schema_state import (
    Installed,
    installed,
    installed_version,
    plan_migrations,
    table_exists,
)
from engine.schema_trust import (
    LEVEL_MISMATCH_MESSAGE,
    SchemaMismatch,
    check_compatible,
    foreign_df_schema,
    may_administer,
    owner_name,
    untrusted_for_superuser,
)

__all__ = [
    "BASELINE", "LEVEL_MISMATCH_MESSAGE", "Installed", "Migration", "SchemaChange", "SchemaError",
    "SchemaMismatch", "SqlTree", "available_versions", "baseline_sql", "check_compatible",
    "foreign_df_schema", "install", "installed", "installed_version", "latest_version",
    "may_administer", "migrations", "operator_schema", "released_migrations", "routines_sql",
    "schema_level", "sql_root", "sql_tree", "uninstall", "untrusted_for_superuser", "version_sql",
]

INTERNAL_SCHEMA = "df_internal"
# How long an upgrade waits for a lock a running step or session holds before giving up (and
# saying so); the whole upgrade is rolled back and can simply be rerun.
UPGRADE_LOCK_TIMEOUT = "10s"


@dataclass
class SchemaChange:
    before: str | None
    after: str
    applied: list[str]
    operator_schema: str | None = None

    def describe(self) -> str:
        if not self.applied:
            return f"df schema {self.after} is already installed; nothing to do"
        where = (f"; the DSL operators are in schema {self.operator_schema}"
                 if self.operator_schema not in (None, "pg_catalog") else "")
        if self.before is None:
            return f"installed df schema {self.after}{where}"
        return (f"upgraded df schema {self.before} -> {self.after} "
                f"(applied {', '.join(self.applied)}){where}")


_OPERATOR_DDL = re.compile(r"^((?:CREATE|COMMENT ON) OPERATOR )pg_catalog\.", re.MULTILINE)


def operator_schema(conn: psycopg.Connection) -> str:
    """Where the DSL operators go: pg_catalog for a superuser (every search_path finds them),
    else `public` when the installer may create there (the default search_path finds it, so
    existing roles need nothing: a managed service's admin owns the database and its public
    schema), else df (roles then add df to their search_path; `dftui grant` says so)."""
    row = conn.execute(
        "SELECT r.rolsuper, pg_catalog.has_schema_privilege('public', 'CREATE') "
        "FROM pg_catalog.pg_roles r WHERE r.rolname = current_user").fetchone()
    if row and row[0]:
        return "pg_catalog"
    if row and row[1]:
        return "public"
    return "df"


def _baseline_for(conn: psycopg.Connection, root: Path | None) -> tuple[str, str]:
    """The baseline's text with its operators placed where this installer may create them."""
    target = operator_schema(conn)
    text = baseline_sql(root)
    if target != "pg_catalog":
        text = _OPERATOR_DDL.sub(lambda m: f"{m.group(1)}{target}.", text)
    return text, target


def _define_level(conn: psycopg.Connection, level: str) -> None:
    # The claim compares its caller's level with this constant (inlined: free per claim).
    conn.execute(sql.SQL(
        "CREATE OR REPLACE FUNCTION df_internal.schema_level() RETURNS text "
        "LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp "
        "AS {}").format(sql.Literal(f"SELECT {sql.Literal(level).as_string(conn)}::text")))


def _lock(conn: psycopg.Connection) -> None:
    """Serialise installers on a lock only the schema's owner (or a superuser) can take."""
    if table_exists(conn, "df_internal.schema_version"):
        # An upgrade by another installer may take a while: wait for it longer than for others.
        conn.execute("SET LOCAL lock_timeout = '120s'")
        conn.execute(f"LOCK TABLE {SCHEMA_LOCK} IN SHARE ROW EXCLUSIVE MODE")
        conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(UPGRADE_LOCK_TIMEOUT)))


def _apply(conn: psycopg.Connection, root: Path | None, target: str | None) -> SchemaChange:
    conn.execute("SET LOCAL check_function_bodies = off")
    conn.execute("SET LOCAL client_min_messages = warning")
    conn.execute("SET LOCAL search_path = pg_catalog, pg_temp")
    conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(UPGRADE_LOCK_TIMEOUT)))
    reason = foreign_df_schema(conn)
    if reason:
        raise SchemaError(f"{reason}; dftui will not install over it (changed nothing)")
    if not may_administer(conn):
        user = conn.execute("SELECT current_user").fetchone()
        raise SchemaError(
            f"role {user[0] if user else '?'} may not install or upgrade the df schema: it is "
            f"owned by {owner_name(conn)}; connect as that role or a superuser")
    _lock(conn)
    reason = foreign_df_schema(conn)
    if reason:
        raise SchemaError(f"{reason}; dftui will not install over it (changed nothing)")
    before_state = installed(conn)
    before = installed_version(conn)
    applied: list[str] = []
    op_schema: str | None = None
    if before_state is None:
        text, op_schema = _baseline_for(conn, root)
        conn.execute(text.encode())
        conn.execute("INSERT INTO df_internal.schema_version (version) VALUES (%s)", (BASELINE,))
        applied.append(BASELINE)
        before_state = Installed(baseline=True)
    if target == BASELINE:
        return SchemaChange(before, BASELINE, applied, op_schema)
    shipped = migrations(root)
    unknown, todo = plan_migrations(before_state, shipped)
    if unknown:
        raise SchemaError(
            f"the df schema in this database ({before}) is newer than this dftui "
            f"{latest_version()} or was installed from different migration files "
            f"({', '.join(unknown)}); changed nothing")
    for migration in todo:
        conn.execute(migration.text.encode())
        conn.execute(
            "INSERT INTO df_internal.schema_migrations (name, checksum) VALUES (%s, %s)",
            (migration.name, migration.checksum))
        applied.append(migration.name)
    routines = routines_sql(root)
    checksum = hashlib.sha256(routines.encode()).hexdigest()
    row = conn.execute("SELECT checksum FROM df_internal.schema_routines").fetchone()
    if applied or not row or row[0] != checksum:
        # Re-created only when they changed: CREATE OR REPLACE TRIGGER and policies take table
        # locks, which an engine starting next to running steps should not queue for.
        if routines.strip():
            conn.execute(routines.encode())
        _define_level(conn, schema_level(root))
        conn.execute(
            "INSERT INTO df_internal.schema_routines (checksum) VALUES (%s) ON CONFLICT "
            "(singleton) DO UPDATE SET checksum = excluded.checksum, applied_at = now()",
            (checksum,))
        if not applied:
            applied.append("routines")
    # Every shipped migration is applied now (_problems refused anything else): record the
    # release, which tools (and 0.1.0's readers) look at and which tells releases that changed
    # routines only apart.
    recorded = conn.execute(
        "INSERT INTO df_internal.schema_version (version) VALUES (%s) "
        "ON CONFLICT (version) DO NOTHING", (latest_version(),)).rowcount
    if recorded and not applied:
        applied.append(f"release record {latest_version()}")
    after = installed_version(conn) or latest_version()
    return SchemaChange(before, after, applied, op_schema)


def install(conn: psycopg.Connection, *, upgrade: bool = True, root: Path | None = None,
            target: str | None = None) -> SchemaChange:
    """Install the schema if missing, else upgrade it (when `upgrade`). Idempotent.

    `target=BASELINE` installs the frozen first release only (upgrade tests start there);
    `root` points at another SQL tree (tests of interrupted upgrades).
    """
    for attempt in range(2):
        try:
            with conn.transaction():
                if not upgrade and table_exists(conn, "df_internal.schema_version"):
                    version = installed_version(conn) or BASELINE
                    return SchemaChange(version, version, [])
                return _apply(conn, root, target)
        except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateSchema,
                psycopg.errors.DuplicateObject, psycopg.errors.DuplicateTable,
                psycopg.errors.DuplicateFunction):
            # Two first installs raced: the other one created the schema first. Once more, now
            # as an upgrade of what it installed (which then waits on the table lock).
            if attempt:
                raise
        except psycopg.errors.LockNotAvailable as exc:
            raise SchemaError(
                f"the upgrade waited {UPGRADE_LOCK_TIMEOUT} for a lock held by another session "
                f"({exc.diag.message_primary}){_blockers(conn)}; nothing changed (the upgrade is "
                f"one transaction) — end that session or wait for it, then rerun") from exc
        except psycopg.errors.InsufficientPrivilege as exc:
            user = conn.execute("SELECT current_user").fetchone()
            raise SchemaError(
                f"role {user[0] if user else '?'} may not install the df schema: "
                f"{exc.diag.message_primary} (it needs a superuser, or a role that may create "
                f"schemas in this database such as its owner; nothing changed; see "
                f"docs/operations.md, 'Managed PostgreSQL')") from exc
    raise AssertionError("unreachable")


def _blockers(conn: psycopg.Connection) -> str:
    """Who holds locks on the df schemas' relations, for the message of a timed-out upgrade.

    Any session that has read a df view in a still-open transaction (an idle psql, a stuck
    application) holds a lock that CREATE OR REPLACE VIEW must wait for. The upgrade waits a
    bounded time, because while it waits every new reader of that view queues behind it; the
    operator then needs to know which session to end. Read after the failed transaction is
    rolled back; pid and role are visible to every installer (state and age only with
    pg_read_all_stats or to a superuser)."""
    try:
        with conn.transaction():
            rows = conn.execute(
                "SELECT l.pid, pg_catalog.pg_get_userbyid(a.usesysid), a.state, "
                "       pg_catalog.to_char(pg_catalog.now() - a.xact_start, 'HH24:MI:SS'), "
                "       pg_catalog.string_agg(DISTINCT c.oid::pg_catalog.regclass::text, ', ') "
                "  FROM pg_catalog.pg_locks l "
                "  JOIN pg_catalog.pg_class c ON c.oid = l.relation "
                "  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                "  LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid "
                " WHERE l.granted AND l.pid <> pg_catalog.pg_backend_pid() "
                "   AND n.nspname IN ('df', 'df_internal', 'df_exec') "
                " GROUP BY 1, 2, 3, 4 ORDER BY 1 LIMIT 5").fetchall()
    except psycopg.Error:
        return ""
    if not rows:
        return ""
    held = "; ".join(
        f"pid {pid} (role {role or '?'}"
        + (f", {state}" if state else "")
        + (f" for {age}" if age else "")
        + f") holds {relations}"
        for pid, role, state, age, relations in rows)
    return f" — {held} (SELECT pg_terminate_backend(pid) ends a session)"


def uninstall(conn: psycopg.Connection) -> bool:
    """Drop the df and internal schemas (and the DSL operators that depend on df)."""
    with conn.transaction():
        _lock(conn)
        if installed(conn) is None and not conn.execute(
            "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'df'"
        ).fetchone():
            return False
        if foreign_df_schema(conn):
            raise SchemaError(f"{foreign_df_schema(conn)}; dftui will not remove it")
        conn.execute("DROP SCHEMA IF EXISTS df CASCADE")
        conn.execute(f"DROP SCHEMA IF EXISTS {INTERNAL_SCHEMA} CASCADE")
        # Trampoline functions live in their own schema (see engine/identity.py).
        conn.execute("DROP SCHEMA IF EXISTS df_exec CASCADE")
        return True
