"""`dftui [CONNINFO]`: the TUI (the default command), and `--version`.

The TUI is imported when its command runs, not when the CLI starts: every other command would
otherwise pay for loading Textual.
"""

from __future__ import annotations

from typing import Annotated

import typer

from dftui.cli.common import (
    DsnOption,
    _resolve_dsn,
    app,
)
from engine import __version__


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
    from dftui.app import run_app  # prompts for a password itself, before Textual starts

    return int(run_app(target, read_only) or 0)
