"""The UI side's one error translation: every failure becomes a one-line message for the user.

Why here and not shared with the engine: engine/errors.py (step_message) formats *step*
failures for the node's error column (and names an unknown `$name`), a different audience and
contract; the client layer may not import engine internals beyond the JSON codec. Everything
user-facing in dftui — the TUI, the scripting CLI and the admin commands (dftui/admin.py) — goes
through `user_message`, and the one rule for "the server wants a password we do not have" is `needs_password`.

Pure: no psycopg import (errors are read through their `diag` attribute when they have one).
"""

from __future__ import annotations


class ClientError(Exception):
    """A database or validation error, carrying a one-line message fit to show to the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConnectionLost(ClientError):
    """The connection to the server is gone; `Client.reconnect()` may bring it back."""


class PasswordRequired(ClientError):
    """The server asked for a password and none was available (no PGPASSWORD, no ~/.pgpass)."""


class InputError(ClientError):
    """The input itself is wrong (a malformed id, a payload that is not JSON, an empty name):
    nothing was sent to the server. The CLI reports it as a usage error (exit 2)."""


def user_message(exc: BaseException) -> str:
    """The error as one line: the server's primary message plus its detail when there is one.

    psycopg's texts for connection failures span several lines ("...\\n\\tIs the server
    running...?"); dftui promises one line per error, so the lines are joined.
    """
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = primary or str(exc) or type(exc).__name__
    detail = getattr(diag, "message_detail", None) if diag is not None else None
    if detail:
        text += f" ({detail})"
    return " ".join(part.strip() for part in text.splitlines() if part.strip()) or type(exc).__name__


def needs_password(exc: BaseException) -> bool:
    """True when a connection failed because the server demanded a password and libpq had none
    (no password given, no PGPASSWORD, no ~/.pgpass entry) — psql's rule for prompting.

    A *wrong* password ("password authentication failed") is not this: a password was supplied,
    and prompting would hide the misconfigured one. Callers that prompted themselves handle the
    wrong-password retry (see `session.connect`)."""
    return "no password supplied" in str(exc)


def wrong_password(exc: BaseException | str) -> bool:
    """True when the server refused the password that was sent."""
    return "password authentication failed" in str(exc)
