"""The client layer's typed rows: what every operation returns, as dataclasses.

Operations build these straight from psycopg row factories (`class_row`, `kwargs_row` in the
job modules), never from positional tuples. Pure data plus the small presentation properties
the TUI and the CLI share (a name for an instance, a count label, a masked secret); no SQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from dftui.vocabulary import TERMINAL_STATUSES
from engine import jsonexact

# The TUI's screens and widgets use the exact JSON codec through the client (they may not import
# the engine): decode and encode user JSON (results, payloads) exactly, at any depth.
json_loads = jsonexact.loads
json_dumps = jsonexact.dumps

_SECRET_RE = re.compile(r"token|secret|password|passwd|key", re.IGNORECASE)
# Status counts are exact up to this many rows per status; beyond it they are planner estimates.
COUNT_CAP = 1000


@dataclass(frozen=True)
class Capabilities:
    """What the connected backend and role can do. `reasons` explains every disabled feature."""

    can_retry: bool = False
    has_node_runs: bool = False
    has_attempt_history: bool = False
    has_loop_history: bool = False
    has_instance_runtime: bool = False
    has_engines: bool = False
    has_metrics: bool = False
    has_explain: bool = False
    has_instance_info: bool = False
    has_instance_nodes: bool = False
    has_version: bool = False
    # dftui's health views (df.waiting_instances, df.stuck_instances, df.step_rate,
    # df.queue_depth, df.role_limits), each readable by this role:
    has_waiting_instances: bool = False
    has_stuck_instances: bool = False
    has_step_rate: bool = False
    has_queue_depth: bool = False
    has_role_limits: bool = False
    can_see_others: bool = False
    reasons: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ConnectionInfo:
    """Who we are connected as, where, and to which backend."""

    role: str
    database: str
    server_version: str
    backend: str  # "dftui", "pg_durable" or "none"
    backend_version: str | None
    is_superuser: bool
    capabilities: Capabilities
    has_usage: bool = True  # USAGE on schema df (false: the role was never granted df usage)

    @property
    def title(self) -> str:
        return f"{self.role}@{self.database}"

    @property
    def unusable(self) -> str | None:
        """Why this session cannot use df at all (no schema, no usage), in one line; None when
        it can. Said the same by the TUI and the CLI before they show or do anything."""
        if self.backend == "none":
            return "the df schema is not installed in this database (run `dftui install`)"
        if not self.has_usage:
            return (f"role {self.role} may not use the df schema "
                    f"(an admin can run `dftui grant {self.role}`)")
        return None


@dataclass(frozen=True)
class InstanceSummary:
    """One row of the instance list."""

    id: str
    label: str | None
    status: str
    submitted_by: str
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    current_step: str | None = None
    # A step of this 'pending' instance is executing right now (df.instance_runtime.step_running)
    step_running: bool = False

    @property
    def shown_status(self) -> str:
        """What the console shows: 'running' while the first step of a 'pending' instance
        executes (df.status reads 'pending' until that step's checkpoint commits)."""
        return "running" if self.step_running and self.status == "pending" else self.status

    @property
    def finished_at(self) -> datetime | None:
        """When the instance reached a terminal state (updated_at is the best we have)."""
        if self.completed_at is not None:
            return self.completed_at
        return self.updated_at if self.status in TERMINAL_STATUSES else None


@dataclass(frozen=True)
class InstancePage:
    """A keyset page. `next_cursor` is None on the last page: (created_at, id) of the last row
    in the list's default order, the last row's sort keys then (created_at, id) in another."""

    rows: list[InstanceSummary]
    next_cursor: tuple[Any, ...] | None


@dataclass(frozen=True)
class StatusCounts:
    """Per-status counts; a status in `estimated` holds a planner estimate (more than COUNT_CAP)."""

    counts: dict[str, int]
    estimated: frozenset[str] = frozenset()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def label(self, status: str | None) -> str:
        """Display text: `12`, or `~1.2M` for estimates."""
        if status is None:
            value, approx = self.total, bool(self.estimated)
        else:
            value, approx = self.counts.get(status, 0), status in self.estimated
        return ("~" if approx else "") + _human_count(value)


@dataclass(frozen=True)
class InstanceDetail:
    """Everything the detail header shows about one instance."""

    id: str
    label: str | None
    status: str
    submitted_by: str
    database: str | None
    root_node: str
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    output: str | None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    cancel_reason: str | None = None
    execution: int | None = None
    step_running: bool = False  # as InstanceSummary.step_running

    @property
    def shown_status(self) -> str:
        """As InstanceSummary.shown_status."""
        return "running" if self.step_running and self.status == "pending" else self.status


@dataclass
class Attempt:
    """One execution attempt of a node (df.node_attempt_history). `run`, `execution` and
    `loop_iteration` are filled in by dftui.timings.number_attempts so attempts stay distinct
    across retries (the backend's `attempt` restarts at 1) and loop iterations."""

    node_id: str
    attempt: int
    status: str
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    ran_sql: str | None
    iteration: int | None = None
    kind: str = "attempt"  # "attempt", or "retry" for a df.retry that resumed at this node
    requested_by: str | None = None
    run: int = 0  # 1.. in time order over all of the node's attempts
    execution: int = 1  # 1 + the df.retry calls before this attempt
    loop_iteration: int | None = None  # of the nearest enclosing LOOP


@dataclass
class NodeInfo:
    """One node of an instance graph, with engine run data when the backend exposes it."""

    id: str
    node_type: str
    query: str | None
    result_name: str | None
    left_node: str | None
    right_node: str | None
    status: str
    result: Any
    status_details: Any
    inferred_status: str
    inferred_from: str | None
    updated_at: datetime | None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int | None = None
    ran_sql: str | None = None
    iteration: int | None = None
    attempt_history: list[Attempt] = field(default_factory=list)
    # LOOP nodes: archived iterations from df.loop_history ({iteration, started_at, finished_at,
    # nodes: [{node_id, status, result, error}]}), oldest first.
    loop_iterations: list[dict[str, Any]] = field(default_factory=list)
    parent_id: str | None = None
    slot: str | None = None
    stopped_with_instance: bool = False  # unfinished when its instance ended (end = instance's)

    @property
    def config(self) -> dict[str, Any]:
        """The JSON config of IF/JOIN/LOOP/SIGNAL/HTTP nodes ({} when absent or not JSON)."""
        if not self.query or self.node_type == "SQL":
            return {}
        try:
            value = jsonexact.loads(self.query)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class ActionResult:
    """Outcome of an action on one instance (bulk actions return one per id).

    `ok` is True only when the action was really applied; `skipped` marks a deliberate no-op
    with its reason in `message` (already completed, not waiting, ...), so no caller can
    report a no-op as done."""

    id: str
    ok: bool
    message: str
    label: str | None = None
    skipped: bool = False

    @property
    def name(self) -> str:
        return instance_name(self.id, self.label)


def instance_name(instance_id: str, label: str | None) -> str:
    """How an instance is named to operators: `nightly-etl (a1b2c3d4)`, or the bare id."""
    return f"{label} ({instance_id})" if label else instance_id


@dataclass(frozen=True)
class Var:
    """One df.vars row of the connected role."""


    name: str
    value: str | None

    @property
    def looks_secret(self) -> bool:
        """Names like *token*, *secret*, *password*, *key* are masked in the TUI until revealed."""
        return bool(_SECRET_RE.search(self.name))


@dataclass(frozen=True)
class EngineInfo:
    """A row of df.engines, kept generic because the view's columns are backend-specific."""

    data: dict[str, Any]


@dataclass(frozen=True)
class WaitingStep:
    """A running instance parked on a signal, timer or schedule (or stuck in a long step)."""

    instance_id: str
    label: str | None
    step: str
    node_type: str
    since: datetime | None
    details: Any = None
    query: str | None = None


@dataclass(frozen=True)
class Health:
    """The Engines & health screen's data, all scoped to what the role may see."""

    engines: list[EngineInfo]
    waiting: list[WaitingStep]
    stuck: list[WaitingStep]
    counts: StatusCounts
    server_now: datetime
    # From dftui's health views when present (None on other backends):
    step_rate: list[float] | None = None  # steps/s per 10-second bucket, last 15 min, oldest first
    queue: dict[str, Any] | None = None  # df.queue_depth: runnable, waiting, oldest_due
    limits: list[dict[str, Any]] = field(default_factory=list)  # df.role_limits rows


def _human_count(value: int) -> str:
    if value < 10_000:
        return str(value)
    if value < 1_000_000:
        return f"{value / 1000:.0f}k"
    return f"{value / 1_000_000:.1f}M"


def mask_secret(value: str | None) -> str:
    """What a secret-looking variable shows until revealed."""
    if not value:
        return ""
    return "•" * min(len(value), 8)


def parse_ts(value: Any) -> datetime | None:
    """Timestamps come back as ISO text when read through to_jsonb(); None or bad text -> None.

    Shared with the screens that read timestamps out of JSON details."""
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def json_value(value: Any) -> Any:
    """A stored JSON value as data, whichever way the backend returns it: pg_durable's (and
    dftui's since 0.2) df.instance_nodes give result/status_details as JSON *text*, older dftui
    schemas and df.nodes give jsonb (already decoded by psycopg). Text that is not JSON is kept."""
    if isinstance(value, str):
        try:
            return jsonexact.loads(value)
        except ValueError:
            return value
    return value


def result_columns(details: Any) -> list[str] | None:
    """The statement's column order the engine recorded with a result, if any."""
    columns = details.get("columns") if isinstance(details, dict) else None
    return columns if isinstance(columns, list) else None


def borrow_column_orders(nodes: list[NodeInfo]) -> list[NodeInfo]:
    """Composite nodes (THEN, IF, LOOP, JOIN's parts) hold a copy of a child's row-set result
    but no column list of their own, so jsonb's sorted keys showed through ('SELECT z, a'
    read a, z at the THEN above it and in the instance's output): each takes the order of the
    node whose result it copied (an equal result that has a column list)."""
    known = [(n.result, cols) for n in nodes
             if isinstance(n.result, dict) and (cols := result_columns(n.status_details))]
    if not known:
        return nodes

    def order(result: Any) -> Any:
        if isinstance(result, list):
            return [order(r) for r in result]
        for candidate, cols in known:
            if isinstance(result, dict) and candidate == result:
                return ordered_result(result, {"columns": cols})
        return result

    return [n if result_columns(n.status_details) else replace(n, result=order(n.result))
            for n in nodes]


def ordered_result(result: Any, details: Any) -> Any:
    """A row-set result with each row's keys in the statement's column order.

    Results are stored as jsonb, which sorts object keys; the engine records the statement's
    column names in status_details.columns, so the order `SELECT b, a` asked for is restored."""
    columns = details.get("columns") if isinstance(details, dict) else None
    if not (isinstance(columns, list) and isinstance(result, dict)
            and isinstance(result.get("rows"), list)):
        return result
    def order(row: Any) -> Any:
        if not isinstance(row, dict):
            return row
        ordered = {c: row[c] for c in columns if isinstance(c, str) and c in row}
        ordered.update({k: v for k, v in row.items() if k not in ordered})
        return ordered
    return {**result, "rows": [order(r) for r in result["rows"]]}
