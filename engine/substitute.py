"""Substitution inside step text at execution time (sql-api.md §5).

Two passes, in this order:
1. ``{name}``: the value of var ``name`` from the start-time snapshot, inserted raw; plus
   ``{sys_instance_id}`` and ``{sys_label}``. Unknown names are left untouched (JSON survives).
2. ``$name`` and friends: values from named results, as SQL literals (or raw, for HTTP fields).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from engine import jsonexact

_VAR = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class SubstitutionError(ValueError):
    """A strict reference found no row or a NULL value; the node fails with this message."""


@dataclass(frozen=True)
class NamedResult:
    result: Any
    columns: list[str] | None = None

    @property
    def is_row_set(self) -> bool:
        return (
            isinstance(self.result, dict)
            and "rows" in self.result
            and "row_count" in self.result
            and isinstance(self.result["rows"], list)
        )

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.result["rows"] if self.is_row_set else []

    def column_names(self) -> list[str]:
        if self.columns:
            return list(self.columns)
        return list(self.rows[0].keys()) if self.rows else []


def substitute_vars(text: str, variables: dict[str, Any], instance_id: str, label: str | None) -> str:
    values = {str(k): _raw(v) for k, v in variables.items()}  # text as is, other JSON exact
    values["sys_instance_id"] = instance_id
    values["sys_label"] = label or ""

    def repl(match: re.Match[str]) -> str:
        name = match.group(1)
        return values[name] if name in values else match.group(0)

    return _VAR.sub(repl, text)


def sql_literal(value: Any) -> str:
    """A JSON value as a SQL literal: strings quoted, numbers and booleans bare."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return jsonexact.dumps(value)  # digit for digit (a Decimal from jsonb, exact)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return "'" + jsonexact.dumps(value, compact=True).replace("'", "''") + "'"


def _raw(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return jsonexact.dumps(value, compact=True)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _pattern(names: list[str]) -> re.Pattern[str] | None:
    if not names:
        return None
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    # $name needs a word boundary on both sides; longest name wins.
    return re.compile(
        r"(?<![\w$])\$(" + alternatives + r")(?![A-Za-z0-9_])"
        r"(?:(\.\*)|\.([A-Za-z_][A-Za-z0-9_]*))?(\?)?"
    )


# Most rows `$name.*` expands to (pg_durable's MAX_ROWSET_EXPANSION).
MAX_ROWSET_EXPANSION = 10_000


def _values_relation(name: str, result: NamedResult) -> str:
    cols = result.column_names()
    if not result.rows or not cols:
        select = ", ".join(f"NULL AS {_quote_ident(c)}" for c in cols) or "NULL AS \"?column?\""
        return f"(SELECT {select} WHERE false) AS {_quote_ident(name)}"
    rows = ", ".join(
        "(" + ", ".join(sql_literal(row.get(c)) for c in cols) + ")" for row in result.rows
    )
    col_list = ", ".join(_quote_ident(c) for c in cols)
    return f"(VALUES {rows}) AS {_quote_ident(name)}({col_list})"


def _scalar(name: str, result: NamedResult, column: str | None, optional: bool) -> Any:
    if not result.is_row_set:
        if column is not None:
            value = result.result.get(column) if isinstance(result.result, dict) else None
            if value is None and not optional:
                raise SubstitutionError(f"${name}.{column}: no such field in the result")
            return value
        return result.result
    if not result.rows:
        if optional:
            return None
        raise SubstitutionError(f"${name}: the result has no rows (use ${name}? to allow that)")
    row = result.rows[0]
    if column is None:
        cols = result.column_names()
        column = cols[0] if cols else None
        if column is None:
            raise SubstitutionError(f"${name}: the result has no columns")
    elif column not in row:
        raise SubstitutionError(f"${name}.{column}: no column {column!r} in the result")
    value = row.get(column)
    if value is None and not optional:
        ref = f"${name}" if column is None else f"${name}.{column}"
        raise SubstitutionError(f"{ref} is NULL (use {ref}? to allow NULL)")
    return value


def substitute_results(text: str, named: dict[str, NamedResult], *, raw: bool = False) -> str:
    """Replace $name references. `raw` inserts values unquoted (HTTP url, body, headers)."""
    pattern = _pattern(list(named))
    if pattern is None or "$" not in text:
        return text

    def repl(match: re.Match[str]) -> str:
        name, star, column, optional = match.groups()
        result = named[name]
        if star:
            if result.is_row_set and len(result.rows) > MAX_ROWSET_EXPANSION:
                # pg_durable's cap and message: an inline relation that large is never wanted.
                raise SubstitutionError(
                    f"${name}.* — result has {len(result.rows)} rows, exceeding the maximum of "
                    f"{MAX_ROWSET_EXPANSION} for row-set expansion. Use pagination or intermediate "
                    "tables for large result sets.")
            if raw:
                return _raw(result.rows if result.is_row_set else result.result)
            if not result.is_row_set:
                raise SubstitutionError(f"${name}.* needs a row-set result")
            return _values_relation(name, result)
        if not result.is_row_set and column is None:
            # HTTP, signal and JOIN results substitute as the whole JSON value.
            value = result.result
            return _raw(value) if raw else sql_literal(
                value if isinstance(value, str) else jsonexact.dumps(value, compact=True))
        value = _scalar(name, result, column, bool(optional))
        if raw:
            return _raw(value)
        return sql_literal(value)

    return pattern.sub(repl, text)


def parse_named(payload: dict[str, Any]) -> dict[str, NamedResult]:
    """Named results as returned by df_internal.claim_task."""
    return {
        name: NamedResult(item.get("result"), item.get("columns"))
        for name, item in (payload or {}).items()
    }
