"""The client layer's one error translation and its one password rule (dftui.client.errors),
without a server: psycopg's connection failures span lines, server errors carry a detail."""

from __future__ import annotations

from types import SimpleNamespace

from dftui.client.errors import needs_password, user_message, wrong_password


class _ServerError(Exception):
    """Shaped like a psycopg.Error: the text plus a `diag` with the server's fields."""

    def __init__(self, text: str, primary: str | None, detail: str | None = None) -> None:
        super().__init__(text)
        self.diag = SimpleNamespace(message_primary=primary, message_detail=detail)


def test_connection_failure_spanning_lines_becomes_one_line():
    exc = _ServerError('connection to server at "127.0.0.1", port 1 failed: Connection refused\n'
                       "\tIs the server running on that host and accepting TCP/IP connections?",
                       None)
    text = user_message(exc)
    assert "\n" not in text and "\t" not in text
    assert text.startswith('connection to server at "127.0.0.1", port 1 failed')
    assert text.endswith("accepting TCP/IP connections?")


def test_server_error_is_its_primary_message_and_detail():
    exc = _ServerError("ERROR: boom\nDETAIL: long", "duplicate key value", "Key (id)=(1) exists.")
    assert user_message(exc) == "duplicate key value (Key (id)=(1) exists.)"


def test_an_error_without_text_is_named_by_its_type():
    assert user_message(KeyError()) == "KeyError"
    assert user_message(Exception("  \n ")) == "Exception"


def test_password_rule_is_psqls_missing_not_wrong():
    missing = Exception("connection failed: fe_sendauth: no password supplied")
    wrong = Exception('FATAL:  password authentication failed for user "alice"')
    assert needs_password(missing) and not wrong_password(missing)
    assert wrong_password(wrong) and not needs_password(wrong)
