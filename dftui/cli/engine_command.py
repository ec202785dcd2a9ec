"""`dftui engine`: run the executor in the foreground.

The engine is imported when the command runs (it is the heaviest part of the installation and
may be absent from a UI-only one), not when the CLI starts.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from dftui.cli.common import (
    DsnOption,
    _resolve_dsn,
    app,
    fail,
)
from dftui.client.errors import user_message
from engine.schema import SchemaError


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
    try:
        return int(run_engine(config) or 0)
    except (SchemaError, RuntimeError) as exc:  # e.g. schema missing and no right to install it
        fail(user_message(exc))
