"""`dftui grant / revoke`: df usage for a role (df.grant_usage / df.revoke_usage)."""

from __future__ import annotations

from typing import Annotated

import typer

from dftui import admin
from dftui.cli.common import (
    DsnOption,
    _connect,
    _resolve_dsn,
    app,
)


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
        note = admin.operator_visibility_note(conn, role)
    extras = [x for x, on in (("HTTP", http), ("WITH GRANT OPTION", with_grant)) if on]
    suffix = f" ({', '.join(extras)})" if extras else ""
    typer.echo(f"granted df usage to {role}{suffix}")
    if note:
        typer.echo(f"warning: {note}", err=True)


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
