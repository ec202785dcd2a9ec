"""The `dftui` command line (typer).

`dftui [CONNINFO]` opens the TUI; subcommands install the schema, manage grants, run the engine,
start the zero-setup demo and script df.* from the shell. Conventions every command follows:

* connection: a libpq conninfo string or URI via `--dsn` (or `$DFTUI_DSN`); empty means libpq's
  own environment (PG* variables, ~/.pgpass, service files). Passwords are never accepted on the
  command line (they would show up in `ps`); when the server wants one, we prompt for it.
* exit codes: 0 ok, 1 the action failed or did nothing (a no-op is never success), 2 the
  command line was wrong (including a malformed id or payload), 3 `start --wait --timeout`
  gave up waiting.
* errors: one line on stderr, `dftui: <message>` (the server's own message for database
  errors), never a traceback.
* `--json` on commands whose result is data.

The commands live in one module per group (common: the app and shared options; tui: the TUI,
--version; schema; grants; engine_command; scripting; demo_command; variables); importing them
here registers them on `app`, in the order `dftui --help` lists them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import psycopg
import typer

from dftui import admin

# Imported for their side effect: each registers its commands on `app`, in the order
# `dftui --help` lists them (so not sorted).
# isort: off
from dftui.cli import tui  # noqa: F401
from dftui.cli import schema  # noqa: F401
from dftui.cli import grants  # noqa: F401
from dftui.cli import engine_command  # noqa: F401
from dftui.cli import scripting  # noqa: F401
from dftui.cli import demo_command  # noqa: F401
from dftui.cli import variables  # noqa: F401
# isort: on
from dftui.cli.common import PROG, CliError, _report, app
from dftui.client import ClientError, InputError
from dftui.client.errors import user_message


def _usage_hint(exc: BaseException) -> str:
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", None) or PROG
    if path == f"{PROG} tui":  # the implicit default command: point at the main help
        path = PROG
    return f" (see '{path} --help')"


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
        _report(user_message(exc))
        return 1
    except (KeyboardInterrupt, typer.Abort):
        _report("interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
        code = getattr(exc, "exit_code", None)
        if isinstance(code, int) and hasattr(exc, "format_message"):
            # click's usage errors (exit 2) and other click exceptions (exit 1).
            hint = _usage_hint(exc) if code == 2 else ""
            _report(f"{user_message(Exception(exc.format_message()))}{hint}")
            return code
        if isinstance(exc, ClientError):
            _report(user_message(exc))
            return 2 if isinstance(exc, InputError) else 1
        _report(f"unexpected error: {type(exc).__name__}: {user_message(exc)}")
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
