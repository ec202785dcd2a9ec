"""The `dftui` command line (typer).

`dftui [CONNINFO]` opens the TUI; subcommands install the schema, manage grants, run the engine,
start the zero-setup demo and script df.* from the shell. Conventions every command follows:

* connection: a libpq conninfo string or URI via `--dsn` (or `$DFTUI_DSN`); empty means libpq's
  own environment (PG* variables, ~/.pgpass, service files). Passwords are never accepted on the
  command line (they would show up in `ps`); when the server wants one, we prompt for it.
* exit codes: 0 ok, 1 the action failed, 2 the command line was wrong.
* errors: one line on stderr, `dftui: <message>` (the server's own message for database
  errors), never a traceback.
* `--json` on commands whose result is data.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated, Any, NoReturn

import psycopg
import typer
from typer.core import TyperGroup

from dftui import admin
from engine import __version__

PROG = "dftui"


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
    for token in args:
        if token in ("--help", "-h", "--version"):
            return args
        if token == "--":
            break
        if token.startswith("-"):
            continue
        return args if token in commands else ["tui", *args]
    return ["tui", *args]


app = typer.Typer(
    name=PROG,
    cls=_DefaultToTui,
    add_completion=False,
    pretty_exceptions_enable=False,
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
    typer.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))


# --- top level and the TUI ------------------------------------------------------------------


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"dftui {__version__}")
        raise typer.Exit(0)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True,
                     help="Print the version and exit."),
    ] = False,
) -> None:
    """Durable workflows inside PostgreSQL."""


@app.command("tui", hidden=True)
def tui(
    ctx: typer.Context,
    conninfo: Annotated[
        str | None,
        typer.Argument(help="libpq conninfo or URI, e.g. 'host=db1 dbname=app' or postgresql://…"),
    ] = None,
    dsn: DsnOption = None,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Disable every write action (on-call browsing).")
    ] = False,
) -> int:
    """Open the terminal UI (the default when no subcommand is given)."""
    target = _resolve_dsn(ctx, dsn, conninfo)
    password = admin.password_for(target)
    if password is not None:
        target = psycopg.conninfo.make_conninfo(target, password=password)
    from dftui.app import run_app

    return int(run_app(target, read_only) or 0)


# --- schema ---------------------------------------------------------------------------------


@app.command()
def install(ctx: typer.Context, dsn: DsnOption = None) -> None:
    """Install the df schema (idempotent; one transaction). Needs a superuser."""
    with _connect(_resolve_dsn(ctx, dsn)) as conn:
        change = admin.install(conn, upgrade=False)
    typer.echo(change.describe())
    from engine import schema

    latest = schema.latest_version()
    if change.after != latest:
        typer.echo(f"a newer schema ({latest}) is available: run 'dftui upgrade'")


@app.command()
def upgrade(ctx: typer.Context, dsn: DsnOption = None) -> None:
    """Upgrade the df schema to this version of dftui (a no-op when already current)."""
    with _connect(_resolve_dsn(ctx, dsn)) as conn:
        change = admin.install(conn, upgrade=True)
    typer.echo(change.describe())


@app.command()
def uninstall(
    ctx: typer.Context,
    dsn: DsnOption = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="Really drop df, df_internal and every instance.")
    ] = False,
) -> None:
    """Remove the df schema, its internal state and the DSL operators (asks for --yes)."""
    if not yes:
        fail("uninstall deletes every workflow instance and variable; repeat with --yes", 2)
    with _connect(_resolve_dsn(ctx, dsn)) as conn:
        removed = admin.uninstall(conn)
    if removed is None:
        typer.echo("the df schema is not installed; nothing to do")
    else:
        typer.echo(
            f"removed df schema {removed} (schemas df, df_internal, df_exec and the DSL operators)"
        )


# --- grants ---------------------------------------------------------------------------------


@app.command()
def grant(
    ctx: typer.Context,
    role: Annotated[str, typer.Argument(help="Role to grant df usage to.")],
    dsn: DsnOption = None,
    http: Annotated[
        bool, typer.Option("--http", help="Also allow building HTTP steps (df.http).")
    ] = False,
    with_grant: Annotated[
        bool,
        typer.Option("--with-grant", help="Let the role grant usage to others (delegated admin)."),
    ] = False,
) -> None:
    """Let ROLE start, watch and control its own workflows (df.grant_usage)."""
    with _connect(_resolve_dsn(ctx, dsn)) as conn:
        admin.grant(conn, role, http=http, with_grant=with_grant)
    extras = [x for x, on in (("HTTP", http), ("WITH GRANT OPTION", with_grant)) if on]
    suffix = f" ({', '.join(extras)})" if extras else ""
    typer.echo(f"granted df usage to {role}{suffix}")


@app.command()
def revoke(
    ctx: typer.Context,
    role: Annotated[str, typer.Argument(help="Role to revoke df usage from.")],
    dsn: DsnOption = None,
) -> None:
    """Take df usage away from ROLE (df.revoke_usage); its instances stay."""
    with _connect(_resolve_dsn(ctx, dsn)) as conn:
        admin.revoke(conn, role)
    typer.echo(f"revoked df usage from {role}")


# --- engine ---------------------------------------------------------------------------------


class HttpPolicy(StrEnum):
    disabled = "disabled"
    allowlist = "allowlist"
    allow_all = "allow-all"


@app.command()
def engine(
    ctx: typer.Context,
    dsn: DsnOption = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency", min=1, envvar="DFTUI_ENGINE_CONCURRENCY", show_envvar=True,
            help="Steps run at once (and database connections used for them).",
        ),
    ] = None,
    http_policy: Annotated[
        HttpPolicy | None,
        typer.Option(
            "--http-policy", envvar="DFTUI_HTTP_POLICY", show_envvar=True,
            help="Outbound HTTP for df.http steps (default: disabled).",
        ),
    ] = None,
    http_allow: Annotated[
        list[str] | None,
        typer.Option(
            "--http-allow", envvar="DFTUI_HTTP_ALLOW", show_envvar=True, metavar="SUFFIX",
            help="Domain suffix HTTP steps may reach (repeat; implies --http-policy allowlist).",
        ),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Run until no work is ready, then exit.")
    ] = False,
) -> int:
    """Run the executor in the foreground (structured logs; SIGTERM stops it gracefully)."""
    conninfo = _resolve_dsn(ctx, dsn)
    if http_policy is None and http_allow:
        http_policy = HttpPolicy.allowlist
    if http_policy is HttpPolicy.allowlist and not http_allow:
        fail("--http-policy allowlist needs at least one --http-allow SUFFIX", 2)
    if http_allow and http_policy is not HttpPolicy.allowlist:
        fail("--http-allow only makes sense with --http-policy allowlist", 2)
    try:
        from engine.config import EngineConfig
        from engine.runner import main as run_engine
    except ImportError as exc:
        fail(f"the engine is not available in this installation ({exc})")
    settings: dict[str, Any] = {"dsn": conninfo, "once": once}
    if concurrency is not None:
        settings["concurrency"] = concurrency
    if http_policy is not None:
        settings["http_policy"] = http_policy.value
    if http_allow:
        settings["http_allow"] = list(http_allow)
    try:
        config = EngineConfig(**settings)
    except (TypeError, ValueError) as exc:
        fail(f"invalid engine settings: {exc}", 2)
    return int(run_engine(config) or 0)


# --- demo -----------------------------------------------------------------------------------


@app.command()
def demo(
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Throw the demo database away and start over.")
    ] = False,
    no_tui: Annotated[
        bool,
        typer.Option("--no-tui", help="Keep the demo running and print its DSNs (Ctrl+C stops)."),
    ] = False,
) -> int:
    """Zero-setup demo: embedded PostgreSQL 18, engine, seeded workflows, then the TUI."""
    from dftui.demo import run_demo

    return run_demo(fresh=fresh, tui=not no_tui)


# --- entry point ----------------------------------------------------------------------------


def _usage_hint(exc: BaseException) -> str:
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", None) or PROG
    if path == f"{PROG} tui":  # the implicit default command: point at the main help
        path = PROG
    return f" (see '{path} --help')"


def _report(message: str) -> None:
    sys.stderr.write(f"{PROG}: {message}\n")
    sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point: run the command, map every failure to one line + exit code."""
    command = typer.main.get_command(app)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = command.main(args=args, prog_name=PROG, standalone_mode=False)
    except CliError as exc:
        _report(exc.message)
        return exc.code
    except admin.AdminError as exc:
        _report(str(exc))
        return 1
    except psycopg.Error as exc:
        _report(admin.one_line(exc))
        return 1
    except (KeyboardInterrupt, typer.Abort):
        _report("interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
        code = getattr(exc, "exit_code", None)
        if isinstance(code, int) and hasattr(exc, "format_message"):
            # click's usage errors (exit 2) and other click exceptions (exit 1).
            hint = _usage_hint(exc) if code == 2 else ""
            _report(f"{admin.one_line(Exception(exc.format_message()))}{hint}")
            return code
        client_error = _client_error_type()
        if client_error is not None and isinstance(exc, client_error):
            _report(admin.one_line(exc))
            return 1
        _report(f"unexpected error: {type(exc).__name__}: {admin.one_line(exc)}")
        return 1
    return result if isinstance(result, int) else 0


def _client_error_type() -> type[BaseException] | None:
    try:
        from dftui.client import ClientError
    except ImportError:
        return None
    return ClientError


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
