"""Row → JSON typing of SQL step results (sql-api.md §6), done inside PostgreSQL.

The engine describes the step's statement first (column names and type OIDs), then reads the
trampoline's rows through a column definition list and encodes them in the same statement, so
rows never travel to Python: `{"rows": [{col: value}], "row_count": n}`.

Nothing from the step or the catalog is pasted into that statement as text: column names are
SQL literals and type names identifiers, quoted by psycopg, and the statement carries
no placeholders, so it is never %-formatted (a column named `%s` or `100%`, a type named
`"pct%"`, come back exactly).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import psycopg
from psycopg import sql

BYTEA = 17
FLOATS = {700, 701}
NUMERIC = 1700


class UnsupportedType(ValueError):
    """A result column whose type the result envelope cannot carry (bytea, as pg_durable)."""


@dataclass(frozen=True)
class Column:
    name: str
    type_oid: int


# Types with OIDs below this are built into PostgreSQL; only those are given to to_jsonb().
FIRST_NORMAL_OID = 16384


@dataclass(frozen=True)
class TypeInfo:
    schema: str  # the type's own schema and name (domains: their base type's)
    name: str
    base_oid: int  # domains resolved to their base type
    pseudo: bool = False  # void, record, …: cannot appear in a column definition list
    # A user-defined type (or array of one): to_jsonb would apply a user-defined cast to json,
    # i.e. run the submitter's code with the engine's privileges. Such values are encoded
    # through their output function instead (only superusers can write output functions).
    user_defined: bool = False


class TypeCache:
    """oid → type name/base type, shared by all workers of one engine."""

    def __init__(self) -> None:
        self._types: dict[int, TypeInfo] = {}
        self._lock = threading.Lock()

    def lookup(self, conn: psycopg.Connection, oids: set[int]) -> dict[int, TypeInfo]:
        missing = [o for o in oids if o not in self._types]
        if missing:
            rows = conn.execute(
                """
                WITH RECURSIVE base AS (
                    SELECT t.oid AS oid, t.oid AS cur, t.typtype, t.typbasetype
                      FROM pg_catalog.pg_type t WHERE t.oid = ANY(%s)
                    UNION ALL
                    SELECT base.oid, t.oid, t.typtype, t.typbasetype
                      FROM base JOIN pg_catalog.pg_type t ON t.oid = base.typbasetype
                     WHERE base.typtype = 'd'
                )
                SELECT b.oid, n.nspname::text, t.typname::text, b.cur, b.typtype = 'p',
                       b.cur >= %s OR COALESCE((SELECT e.typelem >= %s OR e.typrelid <> 0
                                                  FROM pg_catalog.pg_type e WHERE e.oid = b.cur), false)
                  FROM base b
                  JOIN pg_catalog.pg_type t ON t.oid = b.cur
                  JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
                 WHERE b.typtype <> 'd'
                """,
                (missing, FIRST_NORMAL_OID, FIRST_NORMAL_OID),
            ).fetchall()
            with self._lock:
                for oid, schema, name, base, pseudo, user_defined in rows:
                    self._types[oid] = TypeInfo(schema, name, base, pseudo, user_defined)
        return {o: self._types[o] for o in oids if o in self._types}


def _encode(expr: str, base_oid: int, user_defined: bool = False) -> str:
    if user_defined:
        return f"pg_catalog.to_jsonb(pg_catalog.format('%s', {expr}))"
    if base_oid in FLOATS:
        return (f"CASE WHEN {expr} IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8) "
                f"THEN 'null'::jsonb ELSE pg_catalog.to_jsonb({expr}) END")
    if base_oid == NUMERIC:
        return f"pg_catalog.to_jsonb({expr}::text)"
    return f"pg_catalog.to_jsonb({expr})"


def type_name(info: TypeInfo, conn: psycopg.Connection) -> str:
    """The type as a quoted, schema-qualified identifier (arrays by their own name, `_elem`)."""
    return sql.Identifier(info.schema, info.name).as_string(conn)


def needs_generic_rows(columns: list[Column], types: dict[int, TypeInfo]) -> bool:
    return any(types[c.type_oid].pseudo for c in columns)


def generic_query(call: str) -> str:
    """Envelope from a trampoline returning SETOF jsonb (pseudo-type columns)."""
    return ("SELECT pg_catalog.jsonb_build_object('rows', COALESCE(pg_catalog.jsonb_agg(t.r), "
            f"'[]'::jsonb), 'row_count', pg_catalog.count(*)) AS env FROM {call} AS t(r)")


def encoding_query(columns: list[Column], types: dict[int, TypeInfo], call: str,
                   conn: psycopg.Connection) -> str:
    """SELECT producing one jsonb result envelope from `call` (a set-returning trampoline call,
    the step text in it already a literal). `conn` quotes names the way its session needs."""
    if not columns:
        raise ValueError("encoding_query needs at least one column")
    coldefs = []
    pairs = []
    for i, col in enumerate(columns, start=1):
        info = types[col.type_oid]
        if info.base_oid == BYTEA:
            raise UnsupportedType(
                f"Unsupported column type: bytea (column \"{col.name}\"); encode it, e.g. "
                "encode(col, 'base64')"
            )
        coldefs.append(f"c{i} {type_name(info, conn)}")
        pairs.append((col.name, _encode(f"t.c{i}", info.base_oid, info.user_defined)))
    # jsonb_build_object takes at most 100 arguments: build in chunks and concatenate.
    chunks = []
    for start in range(0, len(pairs), 40):
        args = ", ".join(f"{sql.Literal(name).as_string(conn)}::pg_catalog.text, {expr}"
                         for name, expr in pairs[start:start + 40])
        chunks.append(f"pg_catalog.jsonb_build_object({args})")
    row = " || ".join(chunks)
    return (
        "SELECT pg_catalog.jsonb_build_object('rows', "
        f"COALESCE(pg_catalog.jsonb_agg({row}), '[]'::jsonb), 'row_count', pg_catalog.count(*)) "
        f"AS env FROM {call} AS t({', '.join(coldefs)})"
    )
