"""The SQL lexer under the step classifier (engine/sqltext.py): what is one token, where a
statement ends. The classification itself is tested with the attacks that motivated it, in
tests/test_security_engine_surface.py."""

from __future__ import annotations

import pytest

from engine.sqltext import IDENT, OTHER, SEMI, STRING, WORD, LexError, Token, statements, tokens


def kinds(text: str) -> list[tuple[str, str]]:
    return [(t.kind, t.value) for t in tokens(text)]


def test_words_are_upper_cased_and_comments_dropped():
    assert kinds("select /* a /* nested */ comment */ x -- to the end\nfrom t") == [
        (WORD, "SELECT"), (WORD, "X"), (WORD, "FROM"), (WORD, "T")]


@pytest.mark.parametrize(
    "literal",
    ["'it''s; VACUUM'", "E'a\\' ; VACUUM'", "U&'d\\0061t; a'", "$$ VACUUM; $$",
     "$body$ ; $$ VACUUM $body$", "B'0101'", "X'1F'"],
)
def test_string_constants_are_single_tokens(literal):
    assert tokens(f"SELECT {literal}") == [Token(WORD, "SELECT"), Token(STRING, literal)]


def test_quoted_identifiers_keep_case_and_unescape_quotes():
    assert kinds('SELECT "Va""cuum;" FROM "T"') == [
        (WORD, "SELECT"), (IDENT, 'Va"cuum;'), (WORD, "FROM"), (IDENT, "T")]


def test_parameters_and_operators_are_not_dollar_quotes():
    assert kinds("SELECT $1 + $2") == [(WORD, "SELECT"), (OTHER, "$1"), (OTHER, "+"), (OTHER, "$2")]


def test_statements_split_at_top_level_semicolons_only():
    stmts = statements("SELECT 1; ; CREATE RULE r AS ON INSERT TO t DO (SELECT 1; SELECT 2);")
    assert [[t.value for t in s][:2] for s in stmts] == [["SELECT", "1"], ["CREATE", "RULE"]]
    assert len(stmts) == 2 and stmts[1][-1] == Token(OTHER, ")")
    assert [t for t in stmts[1] if t.kind == SEMI] == [Token(SEMI, ";")]  # the one in the rule


@pytest.mark.parametrize(
    "text", ["SELECT 'open", "SELECT /* open", 'SELECT "open', "SELECT $x$ open", "E'\\'"],
)
def test_unterminated_text_is_a_lex_error(text):
    with pytest.raises(LexError):
        tokens(text)
