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
"""

from __future__ import annotations

import dataclasses
import getpass
import re
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import psycopg
import typer
from typer.core import TyperGroup

from dftui import admin
from dftui.client.errors import user_message
from dftui.vocabulary import TERMINAL_STATUSES, InstanceStatus, status_symbol
from engine import __version__, jsonexact

if TYPE_CHECKING:
    from dftui.client import NodeInfo

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
            import difflib

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
    from dftui.app import run_app  # prompts for a password itself, before Textual starts

    return int(run_app(target, read_only) or 0)


# --- schema ---------------------------------------------------------------------------------


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
            from engine import privileges

            submitters = privileges.granted_submitters(conn, exclude=engine_role)
            try:
                notes = privileges.setup_engine_role(conn, engine_role, submitters=submitters)
            except privileges.PrivilegeSetupError as exc:
                fail(str(exc))
    from engine import schema

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


# --- engine ---------------------------------------------------------------------------------


class HttpPolicy(StrEnum):
    disabled = "disabled"
    allowlist = "allowlist"
    allow_all = "allow-all"


class LogFormat(StrEnum):
    text = "text"
    json = "json"


@app.command()
def engine(
    ctx: typer.Context,
    dsn: DsnOption = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency", min=1,
            help="Steps run at once (= step connections). Env: DFTUI_ENGINE_CONCURRENCY [8].",
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size", min=1, max=1000,
            help="Most steps one worker commits together when there is a backlog (1 = one "
            "transaction per step). Env: DFTUI_ENGINE_BATCH_SIZE [16].",
        ),
    ] = None,
    http_policy: Annotated[
        HttpPolicy | None,
        typer.Option(
            "--http-policy",
            help="Outbound HTTP for df.http steps. Env: DFTUI_ENGINE_HTTP_POLICY [disabled].",
        ),
    ] = None,
    http_allow: Annotated[
        list[str] | None,
        typer.Option(
            "--http-allow", metavar="SUFFIX",
            help="Domain suffix HTTP steps may reach; repeat for more (implies allowlist). "
            "Env: DFTUI_ENGINE_HTTP_ALLOW (comma-separated).",
        ),
    ] = None,
    role_max_running: Annotated[
        int | None,
        typer.Option(
            "--role-max-running", min=1,
            help="Most steps of one role running at once, across all engines (df.set_role_limits "
            "overrides it per role). Env: DFTUI_ENGINE_ROLE_MAX_RUNNING [all engines' workers - 1].",
        ),
    ] = None,
    step_timeout: Annotated[
        float | None,
        typer.Option(
            "--step-timeout", min=0,
            help="Default statement_timeout of a step, in seconds (0 = none; per role: "
            "df.set_role_limits, per workflow: SET df.step_timeout). Env: "
            "DFTUI_ENGINE_STEP_TIMEOUT [3600].",
        ),
    ] = None,
    retention_days: Annotated[
        float | None,
        typer.Option(
            "--retention-days", min=0,
            help="Delete finished instances older than this. Env: DFTUI_ENGINE_RETENTION_DAYS "
            "[keep forever].",
        ),
    ] = None,
    log_format: Annotated[
        LogFormat | None,
        typer.Option("--log-format", help="Log lines as text or JSON. Env: DFTUI_ENGINE_LOG_FORMAT."),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Run until no work is ready, then exit.")
    ] = False,
    metrics_addr: Annotated[
        str | None,
        typer.Option(
            "--metrics-addr", metavar="HOST:PORT",
            help="Serve Prometheus metrics at http://HOST:PORT/metrics (a bare PORT binds "
            "127.0.0.1; see docs/operations.md). Env: DFTUI_ENGINE_METRICS_ADDR [off].",
        ),
    ] = None,
) -> int:
    """Run the executor in the foreground (structured logs; SIGTERM stops it gracefully)."""
    conninfo = _resolve_dsn(ctx, dsn)
    if http_policy is None and http_allow:
        http_policy = HttpPolicy.allowlist
    if http_allow and http_policy is not HttpPolicy.allowlist:
        fail("--http-allow only makes sense with --http-policy allowlist", 2)
    try:
        from engine.config import EngineConfig  # noqa: I001
        from engine.runner import main as run_engine
    except ImportError as exc:
        fail(f"the engine is not available in this installation ({exc})")
    overrides: dict[str, Any] = {
        "dsn": conninfo,
        "once": once or None,
        "concurrency": concurrency,
        "batch_size": batch_size,
        "http_policy": http_policy.value if http_policy else None,
        "http_allow": list(http_allow) if http_allow else None,
        "retention_days": retention_days,
        "role_max_running": role_max_running,
        "step_timeout": step_timeout,
        "log_format": log_format.value if log_format else None,
        "metrics_addr": metrics_addr,
    }
    try:
        config = EngineConfig.from_env(**overrides)
    except (TypeError, ValueError) as exc:
        fail(f"invalid engine settings: {exc}", 2)
    if config.http_policy == HttpPolicy.allowlist and not config.http_allow:
        fail("--http-policy allowlist needs at least one --http-allow SUFFIX", 2)
    from engine.schema import SchemaError

    try:
        return int(run_engine(config) or 0)
    except (SchemaError, RuntimeError) as exc:  # e.g. schema missing and no right to install it
        fail(user_message(exc))


# --- scripting (through dftui.client, the same layer the TUI uses) ---------------------------


def _client(conninfo: str) -> Any:
    """A connected `dftui.client.Client`, prompting (hidden) for a password when needed."""
    from dftui import client as client_module

    prompt = ((lambda target: getpass.getpass(f"Password for {target}: "))
              if sys.stdin.isatty() else None)
    return client_module.connect(conninfo, password_prompt=prompt)


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


@app.command()
def start(
    ctx: typer.Context,
    expression: Annotated[
        str,
        typer.Argument(
            metavar="EXPR",
            help="A DSL expression, e.g. \"'SELECT 1' ~> 'SELECT 2'\" or \"df.sleep(5)\".",
        ),
    ],
    dsn: DsnOption = None,
    label: Annotated[str | None, typer.Option("--label", help="Label for the instance.")] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until the instance finishes; exit 1 unless it "
                           "completed, 3 when --timeout ran out first.")
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=0, help="With --wait: give up after this many seconds."),
    ] = None,
    as_json: JsonOption = False,
) -> int:
    """Start a workflow (df.start) and print its instance id."""
    with _client(_resolve_dsn(ctx, dsn)) as client:
        instance_id = client.start(expression, label)
        if not wait:
            if as_json:
                _print_json({"id": instance_id, "label": label})
            else:
                typer.echo(instance_id)
            return 0
        detail = _wait_for(client, instance_id, timeout)
    if as_json:
        _print_json(_jsonable(detail))
    else:
        typer.echo(f"{instance_id} {status_symbol(detail.status)} {detail.status}")
        text = detail.error if detail.status == "failed" and detail.error else detail.output
        if text:
            typer.echo(text)
    return 0 if detail.status == "completed" else 1


def _wait_for(client: Any, instance_id: str, timeout: float | None) -> Any:
    """Poll until the instance is terminal (the CLI may run outside a transaction, so no
    df.await_instance: it would hold one statement open for the whole wait)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.05
    while True:
        detail = client.instance(instance_id)
        if detail.status in TERMINAL_STATUSES:
            return detail
        if deadline is not None and time.monotonic() >= deadline:
            fail(f"timed out after {timeout:g}s waiting for {instance_id} (still {detail.status})",
                 EXIT_TIMEOUT)
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


@app.command("ls")
def list_instances(
    ctx: typer.Context,
    dsn: DsnOption = None,
    status: Annotated[
        InstanceStatus | None, typer.Option("--status", help="Only instances in this status.")
    ] = None,
    label: Annotated[str | None, typer.Option("--label", help="Only this label.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10000, help="At most N rows.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List instances visible to the connected role, newest first."""
    with _client(_resolve_dsn(ctx, dsn)) as client:
        page = client.list_instances(
            status=status.value if status else None, label=label, limit=limit
        )
    rows = page.rows
    if as_json:
        _print_json([_jsonable(r) for r in rows])
        return
    if not rows:
        typer.echo("no instances", err=True)
        return
    typer.echo(
        f"{'ID':<8}  {'STATUS':<11}  {'LABEL':<28}  {'CREATED':<19}  {'DURATION':>8}  SUBMITTED_BY"
    )
    for r in rows:
        symbol = status_symbol(r.status)
        label_text = (r.label or "")[:28]
        typer.echo(
            f"{r.id:<8}  {symbol} {r.status:<9}  {label_text:<28}  {_when(r.created_at):<19}  "
            f"{_duration(r.created_at, r.finished_at):>8}  {r.submitted_by}"
        )
    if page.next_cursor is not None:
        typer.echo(f"(more than {limit} instances; use --limit or filters)", err=True)


@app.command()
def show(
    ctx: typer.Context,
    instance_id: Annotated[str, typer.Argument(metavar="ID", help="Instance id (8 hex digits).")],
    dsn: DsnOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one instance: its status and the node tree with per-node status."""
    with _client(_resolve_dsn(ctx, dsn)) as client:
        detail = client.instance(instance_id)
        nodes = client.nodes(detail.id, detail)
        tree = client.explain(detail.id) if client.capabilities.has_explain else ""
    if not tree:
        tree = render_tree(nodes, detail.root_node, detail.status)
    if as_json:
        instance = _jsonable(detail)
        instance["output"] = _json_or_text(detail.output)  # data, not a JSON string in JSON
        _print_json({"instance": instance, "nodes": [_jsonable(n) for n in nodes]})
        return
    # df.explain already heads its tree with id, label, status and output; add what it lacks.
    explained = tree.lstrip().startswith("Instance:")
    if not explained:
        symbol = status_symbol(detail.status)
        typer.echo(f"instance {detail.id}  {symbol} {detail.status}")
        if detail.label:
            typer.echo(f"label:        {detail.label}")
    terminal = detail.status in TERMINAL_STATUSES
    # pg_durable sets completed_at only for completed instances: a failed or cancelled one ended
    # at its last update (without this its duration would keep growing).
    finished = detail.finished_at or detail.completed_at or (detail.updated_at if terminal else None)
    details = [
        ("submitted_by", detail.submitted_by),
        ("created", _when(detail.created_at)),
        ("finished", _when(finished or detail.updated_at) if terminal else None),
        ("duration",
         _duration(detail.started_at or detail.created_at, finished if terminal else None)),
        ("cancelled", detail.cancel_reason),
    ]
    if detail.status == "failed" and detail.error:
        details.append(("error", detail.error))
    elif detail.output and not explained:
        details.append(("output", detail.output))
    block = "\n".join(f"{k + ':':<13} {v}" for k, v in details if v)
    if explained:
        typer.echo(tree.rstrip("\n"))
        typer.echo("")
        typer.echo(block)
    else:
        typer.echo(block)
        typer.echo("")
        typer.echo(tree.rstrip("\n"))


def render_tree(nodes: list[NodeInfo], root: str, instance_status: str) -> str:
    """The instance graph as indented text, for backends without df.explain: the TUI's tree
    (dftui.graph.build_graph), one `slot symbol text` line per node."""
    from dftui.graph import GraphItem, build_graph, item_label

    lines: list[str] = []

    def emit(item: GraphItem, depth: int) -> None:
        symbol, text, _ = item_label(item, instance_status)
        slot = f"{item.slot} " if item.slot else ""
        lines.append(f"{'  ' * depth}{slot}{symbol} {text}")
        for child in item.children:
            emit(child, depth + 1)

    emit(build_graph(nodes, root), 0)
    return "\n".join(lines)


def _actions(results: list[Any], as_json: bool) -> int:
    """Print what really happened to each instance; exit 1 unless every one was acted on."""
    if as_json:
        _print_json([{**_jsonable(r), "name": r.name} for r in results])
    for r in results:
        if r.ok and not as_json:
            typer.echo(f"{r.name}: {r.message}")
        elif not r.ok:
            _report(f"{r.name}: {'skipped: ' if r.skipped else ''}{r.message}")
    return 0 if results and all(r.ok for r in results) else 1


def _ids(ids: list[str]) -> list[str]:
    """Validate ids before connecting: a malformed one is a usage error (exit 2)."""
    from dftui.client import InputError, check_id

    try:
        return [check_id(i) for i in ids]
    except InputError as exc:
        fail(exc.message, 2)


IdsArgument = Annotated[
    list[str], typer.Argument(metavar="ID...", help="One or more instance ids.")
]


@app.command()
def cancel(
    ctx: typer.Context,
    ids: IdsArgument,
    dsn: DsnOption = None,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why (recorded with the instance).")
    ] = None,
    as_json: JsonOption = False,
) -> int:
    """Cancel pending or running instances (df.cancel); running steps are stopped. Exit 1 when
    any instance was not cancelled (already finished, not visible)."""
    wanted = _ids(ids)
    with _client(_resolve_dsn(ctx, dsn)) as client:
        results = client.cancel(wanted, reason)
    return _actions(results, as_json)


@app.command()
def retry(
    ctx: typer.Context,
    ids: IdsArgument,
    dsn: DsnOption = None,
    as_json: JsonOption = False,
) -> int:
    """Retry failed or cancelled instances (df.retry): completed steps are kept. Exit 1 when
    any instance was not retried."""
    wanted = _ids(ids)
    with _client(_resolve_dsn(ctx, dsn)) as client:
        results = client.retry(wanted)
    return _actions(results, as_json)


@app.command()
def signal(
    ctx: typer.Context,
    instance_id: Annotated[str, typer.Argument(metavar="ID", help="Instance id.")],
    name: Annotated[str, typer.Argument(help="Signal name the workflow waits for.")],
    data: Annotated[
        str, typer.Argument(help="JSON payload (default {}).", show_default=False)
    ] = "{}",
    dsn: DsnOption = None,
    as_json: JsonOption = False,
) -> int:
    """Send a signal to a pending or running instance (df.signal); it is queued until a wait
    consumes it. Exit 1 when the instance has finished (nothing would ever read it)."""
    wanted = _ids([instance_id])
    if not name.strip():
        fail("signal name must not be empty", 2)
    try:
        jsonexact.loads(data.strip() or "{}")
    except ValueError as exc:
        fail(f"signal payload is not valid JSON: {exc}", 2)
    with _client(_resolve_dsn(ctx, dsn)) as client:
        results = client.signal(wanted, name, data)
    return _actions(results, as_json)


@app.command()
def explain(
    ctx: typer.Context,
    source: Annotated[
        str,
        typer.Argument(metavar="EXPR|ID", help="A DSL expression, a node envelope or an instance id."),
    ],
    dsn: DsnOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print the graph of a DSL expression or an instance as a tree (df.explain)."""
    with _client(_resolve_dsn(ctx, dsn)) as client:
        if client.capabilities.has_explain:
            text = client.explain(source)
        elif re.fullmatch(r"[0-9a-f]{8}", source.strip()):
            # A backend without df.explain (e.g. a pg_durable build without it): the same tree
            # `dftui show` draws from df.instance_nodes.
            detail = client.instance(source.strip())
            text = render_tree(client.nodes(detail.id), detail.root_node, detail.status)
        else:
            fail(client.capabilities.reasons.get("explain", "df.explain is not available")
                 + "; only instance ids can be explained here")
    if text.startswith("Invalid durable function graph"):
        fail(user_message(Exception(text)))
    if as_json:
        _print_json({"source": source, "tree": text.rstrip("\n"),
                     "lines": text.rstrip("\n").splitlines()})
        return
    typer.echo(text.rstrip("\n"))


@app.command()
def history(
    ctx: typer.Context,
    instance_id: Annotated[str, typer.Argument(metavar="ID", help="Instance id.")],
    dsn: DsnOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every event of an instance in time order, kept across retries: submitted, started, each
    attempt with its outcome, each execution's end, retries, cancels and signals with who asked."""
    wanted = _ids([instance_id])[0]
    with _client(_resolve_dsn(ctx, dsn)) as client:
        events = client.history(wanted)
    if as_json:
        _print_json([e.as_json() for e in events])
        return
    for e in events:
        where = f" {e.node_type or 'node'} {e.node_id}" if e.node_id else ""
        if e.iteration:
            where += f" iteration {e.iteration}"
        if e.attempt:
            where += f" attempt {e.attempt}"
        who = f" by {e.actor}" if e.actor else ""
        detail = f" — {e.detail}" if e.detail else ""
        typer.echo(f"{_when(e.at)}  #{e.execution}  {e.event}{where}{who}{detail}")


@app.command()
def activity(
    ctx: typer.Context,
    instance_id: Annotated[str, typer.Argument(metavar="ID", help="Instance id.")],
    dsn: DsnOption = None,
    as_json: JsonOption = False,
    cancel_backend: Annotated[bool, typer.Option(
        "--cancel", help="Cancel the running step's statement (the step fails).")] = False,
    terminate_backend: Annotated[bool, typer.Option(
        "--terminate", help="Terminate the step's engine session (rolled back; runs again).")] = False,
    node: Annotated[str | None, typer.Option(
        "--node", help="Which running node (when several run).")] = None,
) -> int:
    """What the instance's running SQL steps are doing inside PostgreSQL: engine session, state,
    wait event, duration, the locks they wait for and who blocks them. Exit 1 when none runs."""
    wanted = _ids([instance_id])[0]
    if cancel_backend and terminate_backend:
        fail("use --cancel or --terminate, not both", 2)
    with _client(_resolve_dsn(ctx, dsn)) as client:
        if cancel_backend or terminate_backend:
            typer.echo(client.signal_step_backend(wanted, node, terminate=terminate_backend))
            return 0
        steps = client.step_activity(wanted)
    if as_json:
        _print_json([_jsonable(s) | {"blocked_by": [_jsonable(b) for b in s.blocked_by]} for s in steps])
        return 0 if steps else 1
    if not steps:
        _report(f"{wanted}: no step is executing in an engine session now")
        return 1
    for s in steps:
        typer.echo(f"node {s.node_id} ({s.node_type})  backend pid {s.backend_pid}  {s.state or '-'}"
                   f"  running {_ms(s.duration_ms)}" + (f"  waiting on {s.waiting}" if s.waiting else ""))
        if s.query:
            typer.echo(f"  sql: {s.query}")
        for lock in s.waiting_for:
            what = lock.get("relation") or lock.get("transactionid") or lock.get("virtualxid") or ""
            typer.echo(f"  waits for {lock.get('mode')} on {lock.get('locktype')} {what}".rstrip())
        for b in s.blocked_by:
            extra = f"  {b.state}: {b.query}" if b.query else ""
            typer.echo(f"  blocked by pid {b.pid} ({b.role or '?'}, {b.application_name or '-'}){extra}")
    return 0


def _ms(value: Any) -> str:
    if value is None:
        return "-"
    if int(value) == 0:
        return "none"
    seconds = int(value) / 1000
    return f"{seconds:g}s"


@app.command()
def limits(
    ctx: typer.Context,
    role: Annotated[
        str | None, typer.Argument(metavar="[ROLE]", help="Show (or set) this role's limits only.")
    ] = None,
    dsn: DsnOption = None,
    max_running: Annotated[
        int | None, typer.Option("--max-running", min=1, help="Set: most steps of ROLE running at once.")
    ] = None,
    max_pending: Annotated[
        int | None, typer.Option("--max-pending", min=0, help="Set: most pending + running instances of ROLE.")
    ] = None,
    step_timeout: Annotated[
        str | None, typer.Option("--step-timeout", metavar="DURATION",
                                 help="Set: statement_timeout ceiling of ROLE's steps ('30s', '5min', 0 = none).")
    ] = None,
    reset: Annotated[bool, typer.Option("--reset", help="Remove ROLE's overrides (engine defaults apply).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Fairness limits: the engines' defaults and per-role overrides (df.set_role_limits).

    With --max-running / --max-pending / --step-timeout / --reset, set ROLE's overrides first
    (administrators only); options not given are left at the engines' default."""
    setting = reset or any(v is not None for v in (max_running, max_pending, step_timeout))
    if setting and role is None:
        fail("name the ROLE whose limits to set", 2)
    if reset and any(v is not None for v in (max_running, max_pending, step_timeout)):
        fail("--reset cannot be combined with new values", 2)
    with _client(_resolve_dsn(ctx, dsn)) as client:
        if setting:
            assert role is not None
            client.set_role_limits(role, max_running=max_running, max_pending=max_pending,
                                   step_timeout=step_timeout)
        overrides = [r for r in client.role_limits() if role is None or r["role"] == role]
        engines = [e.data for e in client.engines()] if client.capabilities.has_engines else []
    alive = [e for e in engines if e.get("state") == "alive"]
    defaults = [{"engine": e.get("id"), "concurrency": e.get("concurrency"),
                 "role_max_running": e.get("role_max_running"),
                 "step_timeout_ms": e.get("step_timeout_ms")} for e in alive]
    if as_json:
        _print_json({"engines": _jsonable(defaults), "roles": _jsonable(overrides)})
        return
    typer.echo("engine defaults (alive engines):" if defaults else "no engine is running")
    for d in defaults:
        typer.echo(f"  {d['engine']}: concurrency {d['concurrency']}, per-role running steps "
                   f"{d['role_max_running'] if d['role_max_running'] is not None else 'all workers - 1'}, "
                   f"step timeout {_ms(d['step_timeout_ms'])}")
    if not overrides:
        typer.echo(f"no per-role overrides{' for ' + role if role else ''} (engine defaults apply)")
        return
    typer.echo(f"{'role':<24} {'max running':>11} {'max pending':>11} {'step timeout':>12}")
    for r in overrides:
        typer.echo(f"{r['role']:<24} {r['max_running'] if r['max_running'] is not None else '-':>11} "
                   f"{r['max_pending'] if r['max_pending'] is not None else '-':>11} "
                   f"{_ms(r['step_timeout_ms']):>12}")


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
    from dftui.client import mask_secret

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
        if sys.stdin.isatty():
            value = getpass.getpass(f"{name}: ")
        else:
            value = sys.stdin.read().rstrip("\n")
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
        client.unset_var(name)
    typer.echo(f"unset {name}")


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
    from dftui.demo import DemoError, run_demo

    try:
        return run_demo(fresh=fresh, tui=not no_tui)
    except DemoError as exc:
        fail(str(exc))


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
        client_error = _client_error_type()
        if client_error is not None and isinstance(exc, client_error):
            _report(user_message(exc))
            from dftui.client import InputError

            return 2 if isinstance(exc, InputError) else 1
        _report(f"unexpected error: {type(exc).__name__}: {user_message(exc)}")
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
