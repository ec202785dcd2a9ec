"""Install, upgrade and uninstall the df schema: a frozen baseline, append-only migrations, routines.

Layout under ``sql/`` (see docs/architecture.md, "Schema versions"):

* ``0.1.0/NNN_*.sql`` — the first release, applied as one unit on a fresh install. Frozen: it is
  never edited again (``sql/RELEASED`` holds the checksum of every released file, checked by the
  suite), because databases exist that were installed from exactly this text.
* ``migrations/NNNN_<name>.sql`` — every later change of tables, columns, indexes and stored
  data, each applied exactly once, in file-name order, and recorded with its checksum in
  ``df_internal.schema_migrations``. A migration is never edited after its release either.
* ``routines/*.sql`` — the current definition of functions, views, triggers, policies and
  grants. They are re-applied (idempotently: CREATE OR REPLACE ...) after the migrations on every
  install and upgrade, so a function's history does not have to be replayed to read it.

Everything runs in one transaction: a failed or interrupted install or upgrade leaves the
previous version intact, and a rerun completes it. Concurrent installers (engines starting at
once) serialise on a table lock only the schema's owner can take — never an advisory lock, which
any role could take first and so block every install (docs/security.md).

The engine drives exactly one *schema level* (the newest migration it ships): it refuses a
database that is older (unless it may upgrade it) or newer, and the claim function refuses an
engine of another level, so an engine left running across an upgrade stops cleanly.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import psycopg
from psycopg import sql

from engine import __version__
from engine.keys import SCHEMA_LOCK

INTERNAL_SCHEMA = "df_internal"
BASELINE = "0.1.0"
# How long an upgrade waits for a lock a running step or session holds before giving up (and
# saying so); the whole upgrade is rolled back and can simply be rerun.
UPGRADE_LOCK_TIMEOUT = "10s"
# What a claim raises when the engine drives another schema level than the database's.
LEVEL_MISMATCH_MESSAGE = "dftui engine schema level mismatch"


class SchemaError(RuntimeError):
    """The df schema could not be installed, upgraded or removed; the message is for users."""


class SchemaMismatch(SchemaError):
    """The database's df schema is not the one this engine drives (older or newer)."""


@dataclass(frozen=True)
class Migration:
    """One append-only migration file."""

    name: str  # file name without .sql, e.g. "0001_schema_migrations"
    text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def sql_root() -> Path:
    """Directory holding the SQL files, both in a checkout and in an installed wheel."""
    packaged = resources.files("engine") / "sql"
    if packaged.is_dir():
        return Path(str(packaged))
    checkout = Path(__file__).resolve().parent.parent / "sql"
    if checkout.is_dir():
        return checkout
    raise SchemaError("the dftui SQL files are missing from this installation")


@dataclass(frozen=True)
class SqlTree:
    """The text of one SQL tree: the baseline, the migrations and the routines, each in order,
    and the record of released files (``sql/RELEASED``, empty when there is none)."""

    baseline: str
    migrations: tuple[Migration, ...]
    routines: str
    released: str


def _read_tree(root: Path) -> SqlTree:
    def texts(folder: Path) -> list[tuple[str, str]]:
        files = sorted(folder.glob("*.sql")) if folder.is_dir() else []
        return [(f.stem, f.read_text()) for f in files]

    return SqlTree(
        baseline="\n".join(text for _, text in texts(root / BASELINE)),
        migrations=tuple(Migration(name, text) for name, text in texts(root / "migrations")),
        routines="\n".join(text for _, text in texts(root / "routines")),
        released=(root / "RELEASED").read_text() if (root / "RELEASED").is_file() else "")


@functools.cache
def _shipped_tree() -> SqlTree:
    # The files this build ships do not change while it runs: read them once per process (an
    # engine calls schema_level() and the install path on every start; the CLI several times).
    return _read_tree(sql_root())


def sql_tree(root: Path | None = None) -> SqlTree:
    """The shipped SQL (read once), or the tree at `root`, read afresh (tests point `root` at
    trees they change between calls)."""
    return _shipped_tree() if root is None else _read_tree(root)


def baseline_sql(root: Path | None = None) -> str:
    """The frozen first release, its files concatenated in order."""
    return sql_tree(root).baseline


def migrations(root: Path | None = None) -> list[Migration]:
    """Every migration this build ships, in the order they are applied."""
    return list(sql_tree(root).migrations)


def routines_sql(root: Path | None = None) -> str:
    """Every routines file, concatenated in file-name order (re-applied on each install)."""
    return sql_tree(root).routines


def schema_level(root: Path | None = None) -> str:
    """The level this build drives: its newest migration (the baseline when it has none)."""
    found = migrations(root)
    return found[-1].name if found else BASELINE


def latest_version() -> str:
    """The release this build installs (the package version)."""
    return __version__


def released_migrations(root: Path | None = None) -> dict[str, list[str]]:
    """Each shipped release, oldest first, with the migrations it added (from ``sql/RELEASED``).

    The record lets a database be named by the release it is at ("0.2.0") rather than by its
    newest migration, and keeps a released migration from ever being edited (the suite checks).
    """
    releases: dict[str, list[str]] = {}
    for line in sql_tree(root).released.splitlines():
        parts = line.split()
        if len(parts) != 3 or line.startswith("#"):
            continue
        release, _digest, file = parts
        names = releases.setdefault(release, [])
        if file.startswith("migrations/"):
            names.append(Path(file).stem)
    return releases


def available_versions() -> list[str]:
    """Releases a database can be at, oldest first: the baseline, each shipped one, this build's."""
    versions = [BASELINE, *released_migrations()]
    return list(dict.fromkeys([*versions, latest_version()]))


def version_sql(version: str) -> str:
    """All SQL a fresh install of `version` runs (the baseline alone for 0.1.0)."""
    if version == BASELINE:
        return baseline_sql()
    return "\n".join([baseline_sql(), *(m.text for m in migrations()), routines_sql()])


# -- what a database has ---------------------------------------------------------------------

@dataclass
class Installed:
    """What the df schema of one database holds."""

    baseline: bool
    applied: dict[str, str] = field(default_factory=dict)  # migration name -> checksum

    def level(self) -> str:
        return max(self.applied) if self.applied else BASELINE


def _exists(conn: psycopg.Connection, qualified: str) -> bool:
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
    if not _exists(conn, "df_internal.schema_version"):
        return None
    applied: dict[str, str] = {}
    if _exists(conn, "df_internal.schema_migrations"):
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
    if not _exists(conn, "df_internal.schema_version"):
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


def _problems(state: Installed, shipped: list[Migration]) -> tuple[list[str], list[Migration]]:
    """(applied migrations this build does not know or knows differently, migrations to apply)."""
    by_name = {m.name: m for m in shipped}
    foreign = [name for name in sorted(state.applied) if name not in by_name]
    changed = [name for name, checksum in sorted(state.applied.items())
               if name in by_name and by_name[name].checksum != checksum]
    todo = [m for m in shipped if m.name not in state.applied]
    return foreign + changed, todo


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
    unknown, todo = _problems(state, migrations())
    if unknown:
        raise SchemaMismatch(
            f"the df schema in this database is newer than this dftui {latest_version()} "
            f"(migration {unknown[-1]} is unknown to it): upgrade dftui on this host")
    if todo:
        raise SchemaMismatch(
            f"the df schema in this database ({installed_version(conn)}) is older than this "
            f"dftui {latest_version()}: run `dftui upgrade`")


# -- applying ----------------------------------------------------------------------------------

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


def may_administer(conn: psycopg.Connection) -> bool:
    """True for a superuser, or a member of the role owning df_internal (or when nothing is
    installed yet): who may install, upgrade or remove the schema."""
    row = conn.execute(
        "SELECT r.rolsuper OR n.oid IS NULL OR pg_catalog.pg_has_role(n.nspowner, 'MEMBER') "
        "FROM pg_catalog.pg_roles r LEFT JOIN pg_catalog.pg_namespace n "
        "ON n.nspname = 'df_internal' WHERE r.rolname = current_user").fetchone()
    return bool(row and row[0])


def _owner_name(conn: psycopg.Connection) -> str:
    row = conn.execute("SELECT pg_catalog.pg_get_userbyid(nspowner) FROM pg_catalog.pg_namespace "
                       "WHERE nspname = 'df_internal'").fetchone()
    return str(row[0]) if row else "?"


def _lock(conn: psycopg.Connection) -> None:
    """Serialise installers on a lock only the schema's owner (or a superuser) can take."""
    if _exists(conn, "df_internal.schema_version"):
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
            f"owned by {_owner_name(conn)}; connect as that role or a superuser")
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
    unknown, todo = _problems(before_state, shipped)
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
                if not upgrade and _exists(conn, "df_internal.schema_version"):
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
                f"the upgrade waited {UPGRADE_LOCK_TIMEOUT} for a lock held by a running "
                f"session ({exc.diag.message_primary}); nothing changed — rerun it") from exc
        except psycopg.errors.InsufficientPrivilege as exc:
            user = conn.execute("SELECT current_user").fetchone()
            raise SchemaError(
                f"role {user[0] if user else '?'} may not install the df schema: "
                f"{exc.diag.message_primary} (it needs a superuser, or a role that may create "
                f"schemas in this database such as its owner; nothing changed; see "
                f"docs/operations.md, 'Managed PostgreSQL')") from exc
    raise AssertionError("unreachable")


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
