"""`dftui demo`: the zero-setup demo (embedded PostgreSQL, engine, seeded workflows, the TUI).

The demo (and through it Textual and the engine) is imported when the command runs, not when
the CLI starts.
"""

from __future__ import annotations

from typing import Annotated

import typer

from dftui.cli.common import app, fail


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
    from dftui.demo import DemoError, run_demo

    try:
        return run_demo(fresh=fresh, tui=not no_tui)
    except DemoError as exc:
        fail(str(exc))
