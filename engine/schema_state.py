"""What the df schema of one database holds, and what this build would change in it.

Why a module of its own: reading the installed state (which migrations, which release) and
planning an upgrade against the shipped files are read-only questions that the engine's start
check, `dftui status`-style reports and the installer all ask; only ``schema`` writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

from engine.schema_files import (
    BASELINE,
    Migration,
    latest_version,
    migrations,
    released_migrations,
)


@dataclass
class Installed:
    """What the df schema of one database holds."""

    baseline: bool
    applied: dict[str, str] = field(default_factory=dict)  # migration name -> checksum

    def level(self) -> str:
        return max(self.applied) if self.applied else BASELINE


def table_exists(conn: psycopg.Connection, qualified: str) -> bool:
    """Whether table schema.name exists — from the catalog, which any role may read
    (to_regclass raises for a schema the role has no USAGE on)."""
    nsp, name = qualified.split(".")
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s)",
        (nsp, name)).fetchone()
    return bool(row and row[0])


def installed(conn: psycopg.Connection) -> Installed | None:
    """The installed state, or None when no dftui df schema is there."""
    if not table_exists(conn, "df_internal.schema_version"):
        return None
    applied: dict[str, str] = {}
    if table_exists(conn, "df_internal.schema_migrations"):
        applied = dict(conn.execute(
            "SELECT name, checksum FROM df_internal.schema_migrations").fetchall())
    return Installed(baseline=True, applied=applied)


def installed_version(conn: psycopg.Connection) -> str | None:
    """The installed release (None: not installed); "0.1.0+<migration>" between releases."""
    state = installed(conn)
    if state is None:
        return None
    if not state.applied:
        return BASELINE
    known = {m.name for m in migrations()}
    applied = set(state.applied)
    if applied == known:
        # A release may change routines only: the release record then tells them apart.
        recorded = {row[0] for row in conn.execute(
            "SELECT version FROM df_internal.schema_version").fetchall()}
        if latest_version() in recorded:
            return latest_version()
        earlier = [r for r in released_migrations() if r in recorded]
        return earlier[-1] if earlier else latest_version()
    if applied - known:
        return f"newer than {latest_version()} ({max(applied - known)})"
    # Between releases, or at an older one: the newest release whose migrations are all in.
    at, shipped = BASELINE, set()
    for release, names in released_migrations().items():
        shipped |= set(names)
        if not shipped <= applied:
            break
        at = release
        if shipped == applied:
            return release
    return f"{at}+{state.level()}"


def plan_migrations(state: Installed, shipped: list[Migration]) -> tuple[list[str], list[Migration]]:
    """(applied migrations this build does not know or knows differently, migrations to apply)."""
    by_name = {m.name: m for m in shipped}
    foreign = [name for name in sorted(state.applied) if name not in by_name]
    changed = [name for name, checksum in sorted(state.applied.items())
               if name in by_name and by_name[name].checksum != checksum]
    todo = [m for m in shipped if m.name not in state.applied]
    return foreign + changed, todo
