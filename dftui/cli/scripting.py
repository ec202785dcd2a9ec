"""Scripting df.* from the shell through dftui.client, the layer the TUI uses: start, ls, show,
cancel, retry, signal, explain and limits. Exit codes and one-line errors: dftui/cli/__init__.py.
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any

import typer

from dftui.cli.common import (
    EXIT_TIMEOUT,
    DsnOption,
    JsonOption,
    _client,
    _duration,
    _json_or_text,
    _jsonable,
    _print_json,
    _report,
    _resolve_dsn,
    _when,
    app,
    fail,
)
from dftui.client import InputError, NodeInfo, check_id
from dftui.client.errors import user_message
from dftui.graph import GraphItem, build_graph, item_label
from dftui.vocabulary import TERMINAL_STATUSES, InstanceStatus, status_symbol
from engine import jsonexact


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
    if timeout is not None and not wait:  # (it was ignored: a script thought it waited)
        fail("--timeout applies to --wait: add --wait, or drop --timeout", 2)
    with _client(_resolve_dsn(ctx, dsn)) as client:
        instance_id = client.start(expression, label)
        if not wait:
            if as_json:
                _print_json({"id": instance_id, "label": label})
            else:
                typer.echo(instance_id)
            return 0
        try:
            detail = _wait_for(client, instance_id, timeout)
        except KeyboardInterrupt:  # (its id was never printed: the instance runs on, unnamed)
            _report(f"interrupted; instance {instance_id} keeps running (dftui show {instance_id})")
            raise
    if as_json:
        instance = _jsonable(detail)
        instance["output"] = _json_or_text(detail.output)  # data, as in `show --json`
        _print_json(instance)
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
        shown = r.shown_status  # as the TUI and --status say: running while its first step runs
        symbol = status_symbol(shown)
        label_text = (r.label or "")[:28]
        typer.echo(
            f"{r.id:<8}  {symbol} {shown:<9}  {label_text:<28}  {_when(r.created_at):<19}  "
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
    (dftui.widgets.graph.build_graph), one `slot symbol text` line per node."""

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
    # df.explain answers an id it cannot show with a text, as pg_durable's does: an error here
    if re.fullmatch(r"(Instance|No nodes found for instance) '[0-9A-Fa-f]{8}'( not found)?", text):
        fail(text)
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


# (the limits are integer columns: a larger value reached the server as bigint and came back
# as 'function df.set_role_limits(unknown, bigint, ...) does not exist')
INT4_MAX = 2_147_483_647


@app.command()
def limits(
    ctx: typer.Context,
    role: Annotated[
        str | None, typer.Argument(metavar="[ROLE]", help="Show (or set) this role's limits only.")
    ] = None,
    dsn: DsnOption = None,
    max_running: Annotated[
        int | None, typer.Option("--max-running", min=1, max=INT4_MAX,
                                 help="Set: most steps of ROLE running at once.")
    ] = None,
    max_pending: Annotated[
        int | None, typer.Option("--max-pending", min=0, max=INT4_MAX,
                                 help="Set: most pending + running instances of ROLE.")
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
