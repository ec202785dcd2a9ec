"""Engine settings: CLI flags, environment variables (DFTUI_ENGINE_*) and defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from engine.metrics import parse_address

HTTP_POLICIES = ("disabled", "allowlist", "allow-all")


@dataclass
class EngineConfig:
    """Everything that shapes one engine process.

    `concurrency` is the connection budget for steps: at most that many steps (and therefore
    step connections) run at once. Two more connections are used for LISTEN and housekeeping.
    """

    dsn: str = ""
    concurrency: int = 8
    batch_size: int = 16  # most tasks one worker claims and commits together (1 = no batching)
    http_policy: str = "disabled"
    http_allow: list[str] = field(default_factory=list)
    http_allow_private: bool = False  # allow loopback/private targets (tests, on-prem services)
    http_max_request_bytes: int = 1 << 20
    http_max_response_bytes: int = 5 << 20
    poll_interval: float = 5.0  # safety-net poll; wake-ups normally come from NOTIFY
    heartbeat_interval: float = 2.0
    engine_dead_after: float = 15.0
    shutdown_grace: float = 10.0
    retention_days: float | None = None  # delete terminal instances older than this (None = keep)
    # Fairness (docs/operations.md "Limits"): most steps of one role running at once across all
    # engines (None = all live engines' workers - 1, at least 1: one role never takes every worker), and
    # the default statement_timeout of a step in seconds (0 = none). Both overridable per role
    # (df.set_role_limits); the timeout also per workflow (df.step_timeout).
    role_max_running: int | None = None
    step_timeout: float = 3600.0
    stuck_after: float = 600.0  # a step running longer than this is reported as stuck
    # times the engine tries a task it cannot process (an exception in its own handling, or its
    # process dying while running it) before failing the node; tries back off 1 s, 2 s, 4 s, ...
    max_task_faults: int = 3
    install: bool = True  # install/upgrade the df schema on start
    once: bool = False  # exit when no work is left (tests, cron-style runs)
    log_format: str = "text"  # text | json
    metrics_addr: str | None = None  # HOST:PORT to serve Prometheus metrics on (None = off)
    # Seconds between retention passes (None: every heartbeat; 0: never), as pg_durable's
    # reconcile_interval.
    reconcile_interval: float | None = None
    # Fields the operator set (flag or environment): pg_durable.* settings do not override them
    # (engine/pg_settings.py).
    explicit: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not 1 <= self.batch_size <= 1000:
            raise ValueError("batch size must be between 1 and 1000")
        if self.role_max_running is not None and self.role_max_running < 1:
            raise ValueError("role max running must be at least 1")
        if self.step_timeout < 0:
            raise ValueError("step timeout must not be negative")
        if self.http_policy not in HTTP_POLICIES:
            raise ValueError(f"http policy must be one of {', '.join(HTTP_POLICIES)}")
        if self.max_task_faults < 1:
            raise ValueError("max task faults must be at least 1")
        if self.metrics_addr is not None:
            parse_address(self.metrics_addr)

    @classmethod
    def from_env(cls, **overrides: object) -> EngineConfig:
        """Defaults, then DFTUI_ENGINE_* environment variables, then explicit overrides."""
        env = os.environ
        values: dict[str, object] = {}
        if "DFTUI_ENGINE_CONCURRENCY" in env:
            values["concurrency"] = int(env["DFTUI_ENGINE_CONCURRENCY"])
        if "DFTUI_ENGINE_BATCH_SIZE" in env:
            values["batch_size"] = int(env["DFTUI_ENGINE_BATCH_SIZE"])
        if "DFTUI_ENGINE_HTTP_POLICY" in env:
            values["http_policy"] = env["DFTUI_ENGINE_HTTP_POLICY"]
        if "DFTUI_ENGINE_HTTP_ALLOW" in env:
            values["http_allow"] = [s for s in env["DFTUI_ENGINE_HTTP_ALLOW"].split(",") if s]
        if "DFTUI_ENGINE_ROLE_MAX_RUNNING" in env:
            values["role_max_running"] = int(env["DFTUI_ENGINE_ROLE_MAX_RUNNING"])
        if "DFTUI_ENGINE_STEP_TIMEOUT" in env:
            values["step_timeout"] = float(env["DFTUI_ENGINE_STEP_TIMEOUT"])
        if "DFTUI_ENGINE_RETENTION_DAYS" in env:
            values["retention_days"] = float(env["DFTUI_ENGINE_RETENTION_DAYS"])
        if "DFTUI_ENGINE_LOG_FORMAT" in env:
            values["log_format"] = env["DFTUI_ENGINE_LOG_FORMAT"]
        if env.get("DFTUI_ENGINE_METRICS_ADDR"):
            values["metrics_addr"] = env["DFTUI_ENGINE_METRICS_ADDR"]
        if "DFTUI_ENGINE_MAX_TASK_FAULTS" in env:
            values["max_task_faults"] = int(env["DFTUI_ENGINE_MAX_TASK_FAULTS"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["explicit"] = frozenset(k for k in values if k != "dsn")
        return cls(**values)  # type: ignore[arg-type]
