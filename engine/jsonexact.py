"""JSON that round-trips exactly and never recurses on user data.

Values in jsonb (results, signal payloads, vars) come from users and must arrive exactly as sent:
PostgreSQL keeps numeric precision (`12345678901234567890.12345`, `0.1000000000000000000001`),
Python floats do not, so non-integers are decoded as `decimal.Decimal` (integers as `int`, or
Decimal beyond the 4,300 digits Python converts) and encoded back digit for digit. Nesting depth is unbounded in jsonb (PostgreSQL
stops at its stack limit, thousands of levels): the standard library's decoder and encoder recurse
and raise RecursionError about 1,000 levels down, so each falls back to the iterative
implementation below when that happens. The fast C paths still serve every ordinary document.

Pure standard library (no psycopg), so dftui's screens can use it through dftui.client;
engine.db.register_json and dftui.client install it on their connections.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

_WS = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_scanstring: Callable[[str, int, bool], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]


def _parse_int(digits: str) -> int | Decimal:
    """Integers as int, except those longer than Python converts (4,300 digits): Decimal."""
    return int(digits) if len(digits) < 4000 else Decimal(digits)


class _NeedsSlowPath(Exception):
    """A Decimal met by the C encoder: it can only write it as a string."""


def _no_constant(name: str) -> Any:
    """NaN, Infinity and -Infinity are not JSON (RFC 8259; PostgreSQL's json refuses them)."""
    raise ValueError(f"{name} is not valid JSON")


def loads(text: str | bytes | bytearray) -> Any:
    """Decode JSON exactly (non-integers as Decimal) at any nesting depth. Strict: NaN and
    Infinity, which Python's json accepts, are refused as PostgreSQL refuses them."""
    if isinstance(text, bytes | bytearray):
        text = text.decode()
    try:
        return json.loads(text, parse_float=Decimal, parse_int=_parse_int,
                          parse_constant=_no_constant)
    except RecursionError:
        return _loads_iterative(text)


def _loads_iterative(text: str) -> Any:
    """A JSON decoder with an explicit stack instead of recursion (same results as `loads`)."""
    stack: list[tuple[list[Any] | dict[str, Any], str | None]] = []  # (container, pending key)
    pos = _WS.match(text, 0).end()  # type: ignore[union-attr]
    value: Any = None
    while True:
        if pos >= len(text):
            raise json.JSONDecodeError("Expecting value", text, pos)
        ch = text[pos]
        have_value = True
        if ch == "{" or ch == "[":
            pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
            close = "}" if ch == "{" else "]"
            if pos < len(text) and text[pos] == close:
                value, pos = ({} if ch == "{" else []), pos + 1
            else:
                container: list[Any] | dict[str, Any] = {} if ch == "{" else []
                key = None
                if ch == "{":
                    key, pos = _object_key(text, pos)
                stack.append((container, key))
                pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
                have_value = False
        elif ch == '"':
            value, pos = _scanstring(text, pos + 1, True)
        elif text.startswith("true", pos):
            value, pos = True, pos + 4
        elif text.startswith("false", pos):
            value, pos = False, pos + 5
        elif text.startswith("null", pos):
            value, pos = None, pos + 4
        else:
            match = _NUMBER.match(text, pos)
            if match is None:
                raise json.JSONDecodeError("Expecting value", text, pos)
            number = match.group(0)
            value = Decimal(number) if match.group(1) or match.group(2) else _parse_int(number)
            pos = match.end()
        if not have_value:
            continue
        # Attach the finished value to its parent; close every container that ends here.
        while True:
            pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
            if not stack:
                if pos != len(text):
                    raise json.JSONDecodeError("Extra data", text, pos)
                return value
            parent, key = stack[-1]
            if isinstance(parent, dict):
                parent[key] = value  # type: ignore[index]
            else:
                parent.append(value)
            close = "}" if isinstance(parent, dict) else "]"
            if pos < len(text) and text[pos] == ",":
                pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
                if isinstance(parent, dict):
                    key, pos = _object_key(text, pos)
                    stack[-1] = (parent, key)
                    pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
                break
            if pos < len(text) and text[pos] == close:
                stack.pop()
                value, pos = parent, pos + 1
                continue
            raise json.JSONDecodeError(f"Expecting ',' or '{close}'", text, pos)


def _object_key(text: str, pos: int) -> tuple[str, int]:
    """`"key" :` at `pos`; returns the key and the position after the colon."""
    if pos >= len(text) or text[pos] != '"':
        raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, pos)
    key, pos = _scanstring(text, pos + 1, True)
    pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
    if pos >= len(text) or text[pos] != ":":
        raise json.JSONDecodeError("Expecting ':' delimiter", text, pos)
    return key, _WS.match(text, pos + 1).end()  # type: ignore[union-attr]


def dumps(value: Any, *, indent: int | None = None, compact: bool = False,
          ensure_ascii: bool = True, default: Callable[[Any], Any] | None = None) -> str:
    """Encode JSON exactly (Decimal digit for digit) at any nesting depth.

    `compact` drops the spaces after separators (the form sql_literal needs); `default` converts
    values JSON has no type for (as in json.dumps).
    """
    separators = (",", ":") if compact else ((",", ": ") if indent is not None else (", ", ": "))

    def reject_decimal(obj: Any) -> Any:
        if isinstance(obj, Decimal):
            raise _NeedsSlowPath
        if default is None:
            raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")
        return default(obj)

    try:
        return json.dumps(value, indent=indent, separators=separators, ensure_ascii=ensure_ascii,
                          default=reject_decimal)
    except (_NeedsSlowPath, RecursionError):
        return "".join(_iterencode(value, indent, separators, ensure_ascii, default))


def _scalar(obj: Any, ensure_ascii: bool) -> str | None:
    """The JSON text of a scalar, None for containers."""
    if isinstance(obj, str):
        return json.dumps(obj, ensure_ascii=ensure_ascii)
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, int):
        return int.__repr__(obj)
    if isinstance(obj, float):
        return json.dumps(obj)
    if isinstance(obj, Decimal):
        if not obj.is_finite():
            raise ValueError(f"{obj} is not a JSON number")
        return str(obj)
    return None


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    text = _scalar(key, False)
    if text is None:
        raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")
    return text


def _iterencode(value: Any, indent: int | None, separators: tuple[str, str], ensure_ascii: bool,
                default: Callable[[Any], Any] | None) -> Iterator[str]:
    item_sep, key_sep = separators
    # Each frame: (iterator over the container's items, is_dict, depth, first item still to come)
    stack: list[list[Any]] = []
    pending: Any = value
    have_pending = True
    while True:
        if have_pending:
            obj = pending
            have_pending = False
            text = _scalar(obj, ensure_ascii)
            if text is None and not isinstance(obj, dict | list | tuple):
                if default is None:
                    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")
                obj = default(obj)
                text = _scalar(obj, ensure_ascii)
            if text is not None:
                yield text
            elif isinstance(obj, dict):
                if not obj:
                    yield "{}"
                else:
                    yield "{"
                    stack.append([iter(obj.items()), True, len(stack) + 1, True])
            elif not obj:
                yield "[]"
            else:
                yield "["
                stack.append([iter(obj), False, len(stack) + 1, True])
        if not stack:
            return
        frame = stack[-1]
        items, is_dict, depth, first = frame
        try:
            item = next(items)
        except StopIteration:
            stack.pop()
            if indent is not None:
                yield "\n" + " " * (indent * (depth - 1))
            yield "}" if is_dict else "]"
            continue
        prefix = "" if first else item_sep
        frame[3] = False
        if indent is not None:
            prefix += "\n" + " " * (indent * depth)
        if is_dict:
            key, pending = item
            yield prefix + json.dumps(_key(key), ensure_ascii=ensure_ascii) + key_sep
        else:
            pending = item
            yield prefix
        have_pending = True

