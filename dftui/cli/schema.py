"""`dftui install / upgrade / uninstall`: the df schema (dftui/admin.py does the work;
`--engine-role` sets up least-privilege mode through engine.privileges)."""

from __future__ import annotations

from typing import Annotated

import typer

from dftui import admin
from dftui.cli.common import (
    DsnOption,
    JsonOption,
    _connect,
    _jsonable,
    _print_json,
    _resolve_dsn,
    app,
    fail,
)
from engine import privileges, schema


@app.command()
def install(
    ctx: typer.Context,
    dsn: DsnOption = None,
    engine_role: Annotated[
        str | None,
        typer.Option("--engine-role", metavar="ROLE",
                     help="Least-privilege mode: make this existing non-superuser role own the df "
                     "schemas and run the engine as it (see docs/security.md). Re-run after "
                     "upgrades and after granting new roles."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Install the df schema (idempotent; one transaction): as a superuser or the database's admin."""
    submitters: list[str] = []
    with _connect(_resolve_dsn(ctx, dsn)) as conn:
        change = admin.install(conn, upgrade=False)
        if engine_role is not None:
            submitters = privileges.granted_submitters(conn, exclude=engine_role)
            try:
                notes = privileges.setup_engine_role(conn, engine_role, submitters=submitters)
            except privileges.PrivilegeSetupError as exc:
                fail(str(exc))
    latest = schema.latest_version()
    if as_json:
        _print_json({**_jsonable(change), "message": change.describe(), "latest": latest,
                     "engine_role": engine_role,
                     "engine_role_submitters": submitters if engine_role else None})
        return
    typer.echo(change.describe())
    if engine_role is not None:
        for note in notes:
            typer.echo(f"note: {note}")
    if engine_role is not None:
        typer.echo(f"engine role {engine_role} owns the df schemas and may run steps as: "
                   f"{', '.join(submitters) or '(no granted roles yet)'}")
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
            f"removed df schema {removed.version} (schemas df, df_internal, df_exec and the DSL "
            "operators)"
        )
        if removed.dropped:
            typer.echo("also removed df_exec (cross-database step functions) from: "
                       + ", ".join(removed.dropped))
        for left in removed.left:
            typer.echo(f"left df_exec in database {left}")
