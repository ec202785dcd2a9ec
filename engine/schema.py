"""Install, upgrade and uninstall the df schema from the versioned files under sql/.

Layout: ``sql/<version>/NNN_*.sql``. Installing applies every version directory in order;
upgrading applies only versions newer than the one recorded in ``df_internal.schema_version``.
Everything runs in one transaction, so a failed install or upgrade leaves nothing behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import psycopg

INTERNAL_SCHEMA = "df_internal"


class SchemaError(RuntimeError):
    """The df schema could not be installed, upgraded or removed."""


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def sql_root() -> Path:
    """Directory holding the versioned SQL files, both in a checkout and in an installed wheel."""
    packaged = resources.files("engine") / "sql"
    if packaged.is_dir():
        return Path(str(packaged))
    checkout = Path(__file__).resolve().parent.parent / "sql"
    if checkout.is_dir():
        return checkout
    raise SchemaError("the dftui SQL files are missing from this installation")


def available_versions() -> list[str]:
    versions = [p.name for p in sql_root().iterdir() if p.is_dir() and p.name[0].isdigit()]
    return sorted(versions, key=_version_key)


def latest_version() -> str:
    return available_versions()[-1]


def version_sql(version: str) -> str:
    files = sorted((sql_root() / version).glob("*.sql"))
    return "\n".join(f.read_text() for f in files)


def installed_version(conn: psycopg.Connection) -> str | None:
    """The newest installed schema version, or None when df is not installed."""
    row = conn.execute(
        "SELECT pg_catalog.to_regclass('df_internal.schema_version') IS NOT NULL"
    ).fetchone()
    if not row or not row[0]:
        return None
    versions = [r[0] for r in conn.execute("SELECT version FROM df_internal.schema_version")]
    return max(versions, key=_version_key) if versions else None


@dataclass
class SchemaChange:
    before: str | None
    after: str
    applied: list[str]

    def describe(self) -> str:
        if not self.applied:
            return f"df schema {self.after} is already installed; nothing to do"
        if self.before is None:
            return f"installed df schema {self.after}"
        return f"upgraded df schema {self.before} -> {self.after} (applied {', '.join(self.applied)})"


def _apply(conn: psycopg.Connection, versions: list[str]) -> None:
    conn.execute("SET LOCAL check_function_bodies = off")
    conn.execute("SET LOCAL client_min_messages = warning")
    conn.execute("SET LOCAL search_path = pg_catalog, pg_temp")
    for version in versions:
        conn.execute(version_sql(version).encode())
        conn.execute(
            "INSERT INTO df_internal.schema_version (version) VALUES (%s) "
            "ON CONFLICT (version) DO NOTHING",
            (version,),
        )


def _lock(conn: psycopg.Connection) -> None:
    # Serialise concurrent installers (several engines starting at once).
    conn.execute("SELECT pg_catalog.pg_advisory_xact_lock(7262937812)")


def install(conn: psycopg.Connection, *, upgrade: bool = True) -> SchemaChange:
    """Install the schema if missing, else upgrade it (when `upgrade`). Idempotent."""
    try:
        with conn.transaction():
            _lock(conn)
            before = installed_version(conn)
            versions = available_versions()
            if before is None:
                todo = versions
            elif upgrade:
                todo = [v for v in versions if _version_key(v) > _version_key(before)]
            else:
                todo = []
            _apply(conn, todo)
            after = todo[-1] if todo else (before or versions[-1])
            return SchemaChange(before, after, todo)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise SchemaError(f"installing the df schema needs a superuser: {exc}") from exc


def uninstall(conn: psycopg.Connection) -> bool:
    """Drop the df and internal schemas (and the DSL operators that depend on df)."""
    with conn.transaction():
        _lock(conn)
        if installed_version(conn) is None and not conn.execute(
            "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'df'"
        ).fetchone():
            return False
        conn.execute("DROP SCHEMA IF EXISTS df CASCADE")
        conn.execute(f"DROP SCHEMA IF EXISTS {INTERNAL_SCHEMA} CASCADE")
        # Trampoline functions live in their own schema (see engine/identity.py).
        conn.execute("DROP SCHEMA IF EXISTS df_exec CASCADE")
        return True
