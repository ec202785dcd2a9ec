"""`dftui vars [set|unset]`: the connected role's df.vars."""

from __future__ import annotations

import getpass
import sys
from typing import Annotated

import typer

from dftui import admin
from dftui.cli.common import (
    DsnOption,
    JsonOption,
    _client,
    _from_command_line,
    _print_json,
    _resolve_dsn,
    app,
    fail,
)
from dftui.client import mask_secret

vars_app = typer.Typer(
    help="Show or change the connected role's variables ({name} in step text).",
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(vars_app, name="vars")


@vars_app.callback(invoke_without_command=True)
def vars_list(
    ctx: typer.Context,
    dsn: DsnOption = None,
    reveal: Annotated[
        bool, typer.Option("--reveal", help="Show values of secret-looking variables.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """List the variables (secret-looking values masked unless --reveal)."""
    ctx.obj = {"dsn": dsn, "dsn_from_command_line": _from_command_line(ctx, "dsn")}
    if ctx.invoked_subcommand is not None:
        return
    with _client(_resolve_dsn(ctx, dsn)) as client:
        variables = client.vars()
    shown = [
        (v.name, v.value if reveal or not v.looks_secret else mask_secret(v.value))
        for v in variables
    ]
    if as_json:
        _print_json([{"name": n, "value": value} for n, value in shown])
        return
    for n, value in shown:
        typer.echo(f"{n}={value if value is not None else ''}")


def _vars_dsn(ctx: typer.Context, dsn: str | None) -> str:
    """--dsn may be given before (`vars --dsn X set`) or after the subcommand."""
    parent = ctx.obj or {}
    if dsn is None and parent.get("dsn") is not None:
        dsn = parent["dsn"]
        if parent.get("dsn_from_command_line") and admin.conninfo_has_password(dsn):
            fail("refusing a password on the command line; use ~/.pgpass or PGPASSWORD", 2)
    return _resolve_dsn(ctx, dsn)


@vars_app.command("set")
def vars_set(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Variable name (an identifier).")],
    value: Annotated[
        str | None,
        typer.Argument(help="Value; omit it to read from stdin (keeps secrets out of `ps`)."),
    ] = None,
    dsn: DsnOption = None,
) -> None:
    """Set a variable (df.setvar)."""
    if value is None:
        if sys.stdin is None:
            fail(f"no value for {name}: give it as an argument or on stdin", 2)
        if sys.stdin.isatty():
            value = getpass.getpass(f"{name}: ")
        else:
            value = sys.stdin.read().rstrip("\n")
            if not value:  # (an empty or closed stdin stored "" and said "set")
                fail(f"no value for {name} on stdin (to store an empty value, pass '' as VALUE)", 2)
    with _client(_vars_dsn(ctx, dsn)) as client:
        client.set_var(name, value)
    typer.echo(f"set {name}")


@vars_app.command("unset")
def vars_unset(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Variable name.")],
    dsn: DsnOption = None,
) -> None:
    """Remove a variable (df.unsetvar)."""
    with _client(_vars_dsn(ctx, dsn)) as client:
        if not client.unset_var(name):
            fail(f"no variable {name!r}: nothing unset")
    typer.echo(f"unset {name}")
