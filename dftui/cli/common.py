"""What every `dftui` command shares: the typer app and its routing to the TUI, the `--dsn` and
`--json` options, the one-line failure (`fail`), JSON output and the scripting client.

The command groups register themselves on `app` in their own modules (dftui/cli/*.py);
dftui/cli/__init__.py imports them in help order and holds the entry point.
"""

from __future__ import annotations

import dataclasses
import difflib
import getpass
import sys
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn

import psycopg
import typer
from typer.core import TyperGroup

from dftui import admin
from dftui.client import Client
from dftui.client import connect as connect_client
from engine import jsonexact

PROG = "dftui"
EXIT_TIMEOUT = 3  # `start --wait --timeout` gave up: distinct from a failed instance (1)


class CliError(Exception):
    """A user-facing failure: printed as one line, exits with `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def fail(message: str, code: int = 1) -> NoReturn:
    raise CliError(message, code)


class _DefaultToTui(TyperGroup):
    """A group whose default command is the (hidden) `tui` command.

    click cannot combine an optional positional CONNINFO on the group with subcommands (the
    first word would always be taken as CONNINFO), so the arguments are routed here instead:
    when the first positional word is not a subcommand, the call means "open the TUI".
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _route(list(args), set(self.commands)))


def _route(args: list[str], commands: set[str]) -> list[str]:
    skip = False
    for token in args:
        if skip:  # the value of --dsn
            skip = False
            continue
        if token in ("--help", "-h", "--version"):
            return args
        if token == "--":
            break
        if token.startswith("-"):
            skip = token == "--dsn"
            continue
        if token in commands:
            return args
        if not _looks_like_conninfo(token):
            # A bare word is a mistyped subcommand, not a connection string: say so (exit 2).
            close = difflib.get_close_matches(token, sorted(commands - {"tui"}), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            fail(f"no such command '{token}'{hint}; to open the TUI give a conninfo such as "
                 f"'dbname={token}' or a postgresql:// URI (see '{PROG} --help')", 2)
        return ["tui", *args]
    return ["tui", *args]


def _looks_like_conninfo(token: str) -> bool:
    """A libpq conninfo has `key=value` pairs; a URI starts with postgres(ql)://."""
    return "=" in token or token.startswith(("postgresql://", "postgres://"))


app = typer.Typer(
    name=PROG,
    cls=_DefaultToTui,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: typer's rich panels print `<bool>` after flags
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Durable workflows inside PostgreSQL: terminal UI, engine and admin tools.\n\n"
    "Run 'dftui [CONNINFO]' to open the TUI, or 'dftui demo' to try it on an embedded server.",
)

# --- shared options -------------------------------------------------------------------------

DsnOption = Annotated[
    str | None,
    typer.Option(
        "--dsn",
        envvar="DFTUI_DSN",
        show_envvar=True,
        help="libpq conninfo or URI (default: PG* environment variables, ~/.pgpass, services). "
        "Never put a password here: use ~/.pgpass, PGPASSWORD or the prompt.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _resolve_dsn(ctx: typer.Context, dsn: str | None, positional: str | None = None) -> str:
    """Pick the conninfo (positional beats --dsn) and refuse passwords typed on the command line."""
    if positional is not None and dsn is not None and _from_command_line(ctx, "dsn"):
        fail("give the connection either as CONNINFO or with --dsn, not both", 2)
    conninfo = positional if positional is not None else (dsn or "")
    try:
        admin.check_conninfo(conninfo)
    except admin.AdminError as exc:
        fail(str(exc), 2)
    typed_here = positional is not None or _from_command_line(ctx, "dsn")
    if typed_here and admin.conninfo_has_password(conninfo):
        fail(
            "refusing a password on the command line (it is visible to other users); "
            "use ~/.pgpass, PGPASSWORD or let dftui prompt for it",
            2,
        )
    return conninfo


def _from_command_line(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def _connect(conninfo: str) -> psycopg.Connection:
    return admin.connect(conninfo)


def _print_json(data: Any) -> None:
    """Exact numbers, any nesting depth (results are user data: see engine/jsonexact.py)."""
    typer.echo(jsonexact.dumps(data, indent=2, ensure_ascii=False, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(value)
    if isinstance(value, set | frozenset):
        return list(value)
    return str(value)


def _client(conninfo: str) -> Client:
    """A connected `dftui.client.Client`, prompting (hidden) for a password when needed; a
    database without the df schema, or a role without df usage, is one clear line (as the
    TUI says it), not the first query's 'relation "df.instances" does not exist'."""
    prompt = ((lambda target: getpass.getpass(f"Password for {target}: "))
              if sys.stdin is not None and sys.stdin.isatty() else None)
    client = connect_client(conninfo, password_prompt=prompt)
    problem = client.info.unusable if client.info is not None else None
    if problem:
        client.close()
        fail(problem)
    return client


def _jsonable(value: Any) -> Any:
    """A dataclass as a dict of its fields, one level deep: field values (results, outputs) are
    user JSON of any depth and go to the encoder as they are (dataclasses.asdict would recurse
    into them); datetimes and nested dataclasses are converted by _json_default."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return value


def _json_or_text(value: str | None) -> Any:
    """A JSON text as the value it encodes (left as text when it is not JSON)."""
    if value is None:
        return None
    try:
        return jsonexact.loads(value)
    except ValueError:
        return value


def _when(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _duration(start: datetime | None, end: datetime | None) -> str:
    if start is None:
        return "-"
    seconds = ((end or datetime.now(UTC)) - start).total_seconds()
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _report(message: str) -> None:
    sys.stderr.write(f"{PROG}: {message}\n")
    sys.stderr.flush()
