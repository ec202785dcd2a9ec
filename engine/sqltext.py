"""A small SQL lexer: what statements a step's text contains, and what kind each one is.

The engine never decides anything about a step's *privileges* from its text: every statement
runs inside the submitter's SECURITY DEFINER trampoline, where PostgreSQL itself enforces the
identity. The text is only classified to refuse, with a readable message, statements that
cannot run there (VACUUM, CREATE INDEX CONCURRENTLY, ...: PostgreSQL refuses them inside a
function or transaction block) and to skip describing statements that certainly return no rows.
A wrong guess therefore costs at most a less helpful error message, never an escalation.

Still, the classification must see the statement PostgreSQL sees, so this is a lexer, not a
regex over raw text: comments (``--`` and nested ``/* */``), string literals (``'...'``,
``E'...'`` with backslash escapes, ``U&'...'``, bit/hex strings), quoted identifiers and
dollar-quoted strings are skipped as units; keywords are only recognised as whole tokens
outside them; statements are split at top-level semicolons.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

# Token kinds
WORD = "word"  # keyword or unquoted identifier, upper-cased in Token.value
IDENT = "ident"  # quoted identifier
STRING = "string"  # any string constant, dollar-quoted included
SEMI = "semi"
OTHER = "other"  # numbers, operators, punctuation, parameters


@dataclass(frozen=True)
class Token:
    kind: str
    value: str


class LexError(ValueError):
    """The text is not lexically valid SQL (an unterminated comment, string or identifier)."""


_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_$\u0080-\U0010ffff]*")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_\u0080-\U0010ffff]*)?\$")
_NUMBER = re.compile(r"(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d+)?|0[xXoObB][0-9A-Fa-f_]+")
_PARAM = re.compile(r"\$\d+")
_OPERATOR = re.compile(r"[+\-*/<>=~!@#%^&|`?]+")
# string prefixes: E'..' (backslash escapes), B'..' / X'..' (bit strings), N'..', U&'..'
_STRING_PREFIX = re.compile(r"(?:[eE]|[bB]|[xX]|[nN]|[uU]&)'")
_QIDENT_PREFIX = re.compile(r'[uU]&"')


def _quoted(text: str, pos: int, quote: str, backslash: bool) -> int:
    """End (exclusive) of the quoted run starting at text[pos] == quote; doubled quotes and, for
    E'' strings, backslash escapes stay inside."""
    i = pos + 1
    n = len(text)
    while i < n:
        ch = text[i]
        if backslash and ch == "\\":
            i += 2
            continue
        if ch == quote:
            if i + 1 < n and text[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    raise LexError("unterminated quoted identifier" if quote == '"' else "unterminated string")


def _block_comment(text: str, pos: int) -> int:
    """End of the (nestable) /* */ comment starting at pos."""
    depth = 0
    i = pos
    n = len(text)
    while i < n:
        if text.startswith("/*", i):
            depth += 1
            i += 2
        elif text.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    raise LexError("unterminated /* comment")


def tokens(text: str) -> list[Token]:
    """The tokens of `text`, comments and whitespace dropped."""
    out: list[Token] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            m = _SPACE.match(text, i)
            i = m.end() if m else i + 1
            continue
        if text.startswith("--", i):
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if text.startswith("/*", i):
            i = _block_comment(text, i)
            continue
        m = _STRING_PREFIX.match(text, i)
        if m:
            quote_at = m.end() - 1
            end = _quoted(text, quote_at, "'", backslash=text[i] in "eE")
            out.append(Token(STRING, text[i:end]))
            i = end
            continue
        if ch == "'":
            end = _quoted(text, i, "'", backslash=False)
            out.append(Token(STRING, text[i:end]))
            i = end
            continue
        m = _QIDENT_PREFIX.match(text, i)
        if m or ch == '"':
            start = m.end() - 1 if m else i
            end = _quoted(text, start, '"', backslash=False)
            out.append(Token(IDENT, text[start + 1:end - 1].replace('""', '"')))
            i = end
            continue
        if ch == "$":
            m = _PARAM.match(text, i)
            if m:
                out.append(Token(OTHER, m.group(0)))
                i = m.end()
                continue
            m = _DOLLAR_TAG.match(text, i)
            if m:
                tag = m.group(0)
                end = text.find(tag, m.end())
                if end < 0:
                    raise LexError("unterminated dollar-quoted string")
                out.append(Token(STRING, text[i:end + len(tag)]))
                i = end + len(tag)
                continue
            out.append(Token(OTHER, ch))
            i += 1
            continue
        m = _WORD.match(text, i)
        if m:
            out.append(Token(WORD, m.group(0).upper()))
            i = m.end()
            continue
        m = _NUMBER.match(text, i)
        if m and m.end() > i:
            out.append(Token(OTHER, m.group(0)))
            i = m.end()
            continue
        if ch == ";":
            out.append(Token(SEMI, ";"))
            i += 1
            continue
        m = _OPERATOR.match(text, i)
        if m:
            out.append(Token(OTHER, m.group(0)))
            i = m.end()
            continue
        out.append(Token(OTHER, ch))
        i += 1
    return out


def statements(text: str) -> list[list[Token]]:
    """The non-empty statements of `text` (split at top-level semicolons), as token lists.

    A semicolon inside parentheses (e.g. in a CREATE RULE action list) does not split.
    """
    result: list[list[Token]] = []
    current: list[Token] = []
    depth = 0
    for tok in tokens(text):
        if tok.kind == OTHER and tok.value == "(":
            depth += 1
        elif tok.kind == OTHER and tok.value == ")":
            depth = max(0, depth - 1)
        if tok.kind == SEMI and depth == 0:
            if current:
                result.append(current)
            current = []
            continue
        current.append(tok)
    if current:
        result.append(current)
    return result


def _words(stmt: list[Token], count: int) -> list[str]:
    """The statement's leading tokens as upper-case words ('' for anything that is not a word)."""
    return [t.value if t.kind == WORD else "" for t in stmt[:count]]


def non_transactional_kind(stmt: list[Token]) -> str | None:
    """If PostgreSQL refuses this statement inside a transaction block or a function, a short
    name for it (as the error message shows it); else None."""
    w = _words(stmt, 6)
    w += [""] * (6 - len(w))
    all_words = {t.value for t in stmt if t.kind == WORD}
    first = w[0]
    if first == "VACUUM":
        return "VACUUM"
    if first == "CREATE":
        rest = w[1:]
        if rest[0] == "UNIQUE":
            rest = rest[1:]
        if rest[0] == "INDEX" and rest[1] == "CONCURRENTLY":
            return "CREATE INDEX CONCURRENTLY"
        if rest[0] in ("DATABASE", "TABLESPACE", "SUBSCRIPTION"):
            return f"CREATE {rest[0]}"
    if first == "DROP":
        if w[1] == "INDEX" and w[2] == "CONCURRENTLY":
            return "DROP INDEX CONCURRENTLY"
        if w[1] in ("DATABASE", "TABLESPACE", "SUBSCRIPTION"):
            return f"DROP {w[1]}"
    if first == "REINDEX":
        if "CONCURRENTLY" in all_words:
            return "REINDEX CONCURRENTLY"
        if w[1] in ("DATABASE", "SYSTEM") or (w[1] == "(" and ("DATABASE" in all_words
                                                               or "SYSTEM" in all_words)):
            return f"REINDEX {w[1] if w[1] != '(' else 'DATABASE/SYSTEM'}"
    if first == "ALTER":
        if w[1] == "SYSTEM":
            return "ALTER SYSTEM"
        if w[1] == "DATABASE" and "TABLESPACE" in all_words and "SET" in all_words:
            return "ALTER DATABASE ... SET TABLESPACE"
        if w[1] == "SUBSCRIPTION" and ("REFRESH" in all_words or "ENABLE" in all_words
                                       or "DISABLE" in all_words):
            return "ALTER SUBSCRIPTION"
    if first == "CLUSTER" and len(stmt) == 1:
        return "CLUSTER (all tables)"
    if first in ("BEGIN", "COMMIT", "ROLLBACK", "END", "ABORT", "SAVEPOINT", "RELEASE") \
            or (first == "START" and w[1] == "TRANSACTION") \
            or (first == "PREPARE" and w[1] == "TRANSACTION"):
        return "transaction control (" + first + ")"
    return None


@lru_cache(maxsize=2048)
def refused_statement(text: str) -> str | None:
    """The kind of the first statement in `text` that cannot run inside the submitter's
    trampoline (see non_transactional_kind), or None. Text that does not lex is left to
    PostgreSQL, which reports the syntax error itself."""
    try:
        stmts = statements(text)
    except LexError:
        return None
    for stmt in stmts:
        kind = non_transactional_kind(stmt)
        if kind:
            return kind
    return None


# Statements of these kinds return no rows unless they say RETURNING.
_ROWLESS = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE", "CREATE", "ALTER", "DROP",
                      "TRUNCATE", "GRANT", "REVOKE", "COMMENT", "LOCK", "NOTIFY", "DO"})


@lru_cache(maxsize=2048)
def returns_no_rows(text: str) -> bool:
    """Certainly no result rows: the first statement is of a row-less kind and no RETURNING
    keyword token appears anywhere (strings and comments do not count). When unsure: False
    (the step is described). Several statements are described too: describing refuses them
    (a step is one statement, see steps.MULTI_STATEMENT)."""
    try:
        stmts = statements(text)
    except LexError:
        return False
    if len(stmts) != 1 or stmts[0][0].kind != WORD or stmts[0][0].value not in _ROWLESS:
        return False
    return not any(t.kind == WORD and t.value == "RETURNING" for stmt in stmts for t in stmt)
