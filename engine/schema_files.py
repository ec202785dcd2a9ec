"""The SQL this build ships: the frozen baseline, the migrations, the routines, the releases.

Layout under ``sql/`` (see docs/engine.md, "Schema versions in detail"):

* ``0.1.0/NNN_*.sql`` — the first release, applied as one unit on a fresh install. Frozen: it is
  never edited again (``sql/RELEASED`` holds the checksum of every released file, checked by the
  suite), because databases exist that were installed from exactly this text.
* ``migrations/NNNN_<name>.sql`` — every later change of tables, columns, indexes and stored
  data, each applied exactly once, in file-name order, and recorded with its checksum in
  ``df_internal.schema_migrations``. A migration is never edited after its release either.
* ``routines/*.sql`` — the current definition of functions, views, triggers, policies and
  grants, re-applied (CREATE OR REPLACE ...) after the migrations on every install and upgrade.

Why a module of its own: reading the files touches no database, and what a build ships (its
schema level, its releases) is asked by the engine, the CLI and the tests without connecting.
The rest of the schema code: ``schema_state`` (what a database has), ``schema_trust`` (whether
dftui may drive or change it), ``schema`` (install, upgrade, uninstall — and the public names).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from engine import __version__

BASELINE = "0.1.0"


class SchemaError(RuntimeError):
    """The df schema could not be installed, upgraded or removed; the message is for users."""


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
