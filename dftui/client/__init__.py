"""The data-access layer of the TUI and the scripting CLI: the only UI-side code that talks to
PostgreSQL.

Why one package: screens must stay presentation-only (testable, never blocking the UI thread on
psycopg), and the same typed operations serve `dftui ls/show/cancel/...`. Everything here is
synchronous psycopg 3; the TUI calls it from Textual thread workers. This module is the
package's public face — callers import from `dftui.client`, the modules below are its parts,
one job each:

| module | job |
|---|---|
| `errors` | ClientError & co., the one error translation (`user_message`), `needs_password` |
| `models` | the typed rows (dataclasses) every operation returns |
| `session` | the connection: open/reconnect, locking, statements via psycopg row factories |
| `backends` | capability detection; one adapter per backend kind (dftui, pg_durable, none) |
| `instances` | list / filter / count / show instances and their nodes |
| `actions` | start, cancel, retry, signal |
| `health` | engines, health, role limits, metrics |
| `variables` | df.vars of the connected role |
| `console` | running steps inside PostgreSQL, instance history, LISTEN hints |

Backends: dftui's own `df` schema ("dftui") and Microsoft's pg_durable extension
("pg_durable") expose the same `df.instances` / `df.nodes` tables and user-facing functions;
what differs is the adapter's (`backends`), chosen once at connect time and reported in
`Capabilities` with a human-readable reason for every disabled feature.

Errors: every database failure becomes `ClientError(message)` carrying the server's message on
one line (never a traceback); a dead connection becomes `ConnectionLost`, after which
`reconnect()` may be tried.
"""

from __future__ import annotations

from collections.abc import Callable

from dftui.client.actions import Actions, action_refusal
from dftui.client.console import (
    Blocker,
    Console,
    HistoryEvent,
    Notifications,
    StepActivity,
    StepWait,
)
from dftui.client.errors import (
    ClientError,
    ConnectionLost,
    InputError,
    PasswordRequired,
    needs_password,
    user_message,
)
from dftui.client.health import HealthQueries
from dftui.client.instances import check_id
from dftui.client.models import (
    COUNT_CAP,
    ActionResult,
    Attempt,
    Capabilities,
    ConnectionInfo,
    EngineInfo,
    Health,
    InstanceDetail,
    InstancePage,
    InstanceSummary,
    NodeInfo,
    StatusCounts,
    Var,
    WaitingStep,
    instance_name,
    json_dumps,
    json_loads,
    json_value,
    mask_secret,
    ordered_result,
    parse_ts,
)
from dftui.client.session import APPLICATION_NAME, PASSWORD_TRIES, open_with_prompt, password_target
from dftui.client.variables import Vars, var_name_problem

__all__ = [
    "Blocker", "Console", "HistoryEvent", "Notifications", "StepActivity", "StepWait",
    "APPLICATION_NAME", "COUNT_CAP", "PASSWORD_TRIES", "ActionResult", "Attempt",
    "Capabilities", "Client", "ClientError", "ConnectionInfo", "ConnectionLost", "EngineInfo",
    "Health", "InputError", "InstanceDetail", "InstancePage", "InstanceSummary", "NodeInfo",
    "PasswordRequired", "StatusCounts", "Var", "WaitingStep", "action_refusal", "check_id",
    "connect", "instance_name", "json_dumps", "json_loads", "json_value", "mask_secret",
    "needs_password", "ordered_result", "parse_ts", "password_target", "user_message",
    "var_name_problem",
]


class Client(HealthQueries, Actions, Vars, Console):
    """A connection to one database as one role, with typed df.* operations: the jobs of the
    modules above on one `Session` (one connection, one lock, one error translation)."""

    def __enter__(self) -> Client:
        if self._conn is None:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(conninfo: str = "", *,
            password_prompt: Callable[[str], str] | None = None) -> Client:
    """Open a Client; when the server asks for a password, ask `password_prompt(target)`
    (target = `user@host:port/db`), up to PASSWORD_TRIES times while the password is wrong.

    Used by the CLI and the TUI launcher (with getpass, before Textual takes the terminal).
    """
    client = Client(conninfo)
    open_with_prompt(client, conninfo, password_prompt)
    return client
