"""The data-access layer of the TUI and the scripting CLI: the only UI-side module that talks to
PostgreSQL.

Why one module: screens must stay presentation-only (testable, never blocking the UI thread on
psycopg), and the same typed operations serve `dftui ls/show/cancel/...`. Everything here is
synchronous psycopg 3; the TUI calls it from Textual thread workers.

Backends: dftui's own `df` schema ("dftui") and Microsoft's pg_durable extension ("pg_durable").
Both expose the same `df.instances` / `df.nodes` tables and user-facing functions, so listing reads
the tables directly (RLS applies: a role sees exactly its own rows) and actions call the df.*
functions. Features one backend lacks (df.retry, the df.node_runs views, df.engines, ...) are
detected once at connect time and reported in `Capabilities` with a human-readable reason.

Errors: every database failure becomes `ClientError(message)` carrying the server's message (never
a traceback); a dead connection becomes `ConnectionLost`, after which `reconnect()` may be tried.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from dataclasses import replace as dataclasses_replace
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg.types.json import set_json_dumps, set_json_loads

from dftui.vocabulary import COMPOSITE_NODE_TYPES, STATUSES, TERMINAL_STATUSES, step_text
from engine import jsonexact

# The TUI's screens and widgets use the exact JSON codec through the client (they may not import
# the engine): decode and encode user JSON (results, payloads) exactly, at any depth.
json_loads = jsonexact.loads
json_dumps = jsonexact.dumps

APPLICATION_NAME = "dftui"
# Status counts are exact up to this many rows per status; beyond it they are planner estimates.
COUNT_CAP = 1000
_ID_RE = re.compile(r"^[0-9a-f]{8}$")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
Params = Sequence[Any] | Mapping[str, Any] | None  # what psycopg binds to %s / %(name)s
# The composite node types as a SQL list, for "the current leaf step" queries.
_COMPOSITE_SQL = ", ".join(f"'{t}'" for t in sorted(COMPOSITE_NODE_TYPES))
_NOT_SINGLE = "the workflow expression must be a single expression, not statements"
_SECRET_RE = re.compile(r"token|secret|password|passwd|key", re.IGNORECASE)


class ClientError(Exception):
    """A database or validation error, carrying a one-line message fit to show to the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConnectionLost(ClientError):
    """The connection to the server is gone; `Client.reconnect()` may bring it back."""


class PasswordRequired(ClientError):
    """The server asked for a password and none was available (no PGPASSWORD, no ~/.pgpass)."""


class InputError(ClientError):
    """The input itself is wrong (a malformed id, a payload that is not JSON, an empty name):
    nothing was sent to the server. The CLI reports it as a usage error (exit 2)."""


# ------------------------------------------------------------------------------------------------
# Typed results
# ------------------------------------------------------------------------------------------------


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

    @property
    def finished_at(self) -> datetime | None:
        """When the instance reached a terminal state (updated_at is the best we have)."""
        if self.completed_at is not None:
            return self.completed_at
        return self.updated_at if self.status in TERMINAL_STATUSES else None


@dataclass(frozen=True)
class InstancePage:
    """A keyset page. `next_cursor` is None on the last page."""

    rows: list[InstanceSummary]
    next_cursor: tuple[datetime, str] | None


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


# Which statuses each action can act on; anything else is skipped with this reason.
def action_refusal(action: str, status: str) -> str | None:
    """Why `action` would do nothing on an instance in `status` (None: it applies).

    The same rules as df.cancel / df.retry / df.signal, checked before asking the server so a
    no-op is reported as one (df.cancel answers 'already completed', df.signal queues a signal
    no step will ever read)."""
    if action == "cancel" and status in TERMINAL_STATUSES:
        return f"already {status}; nothing to cancel"
    if action == "retry":
        if status == "completed":
            return "completed; only failed or cancelled instances can be retried"
        if status in ("pending", "running"):
            return f"{status}; only failed or cancelled instances can be retried"
    if action == "signal" and status in TERMINAL_STATUSES:
        return f"{status}; signals reach only pending or running instances"
    return None


@dataclass(frozen=True)
class Var:
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


# ------------------------------------------------------------------------------------------------
# The client
# ------------------------------------------------------------------------------------------------


def _message(exc: BaseException) -> str:
    """The server's primary message (plus detail/hint when present), one line each."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = primary or str(exc).strip() or exc.__class__.__name__
    text = text.splitlines()[0] if primary is None else text
    if diag is not None and getattr(diag, "message_detail", None):
        text += f" ({diag.message_detail})"
    return text


def _needs_password(exc: psycopg.OperationalError) -> bool:
    text = str(exc)
    return "no password supplied" in text or "fe_sendauth" in text


class Client:
    """A connection to one database as one role, with typed df.* operations.

    Thread-safe: every operation holds a lock, so Textual workers may call it concurrently (they
    simply queue). The connection is autocommit; multi-statement operations open their own
    transaction.
    """

    def __init__(self, conninfo: str = "", *, password: str | None = None, connect_timeout: int = 10):
        self.conninfo = conninfo
        self._password = password
        self._connect_timeout = connect_timeout
        self._conn: psycopg.Connection | None = None
        self._lock = threading.RLock()
        self.info: ConnectionInfo | None = None

    # -- connection management ----------------------------------------------------------------

    def connect(self) -> ConnectionInfo:
        """Open the connection (libpq rules: conninfo/URI, PG* env, pgpass, service files).

        Raises PasswordRequired when the server wants a password we do not have, ClientError for
        every other failure.
        """
        kwargs: dict[str, Any] = {"autocommit": True, "application_name": APPLICATION_NAME}
        if self._password is not None:
            kwargs["password"] = self._password
        params = psycopg.conninfo.conninfo_to_dict(self.conninfo) if self.conninfo else {}
        if "connect_timeout" not in params:
            kwargs["connect_timeout"] = self._connect_timeout
        with self._lock:
            self._close_quietly()
            try:
                self._conn = psycopg.connect(self.conninfo, **kwargs)
            except psycopg.OperationalError as exc:
                if _needs_password(exc) and self._password is None:
                    raise PasswordRequired("the server requires a password") from None
                raise ClientError(_message(exc)) from None
            except psycopg.Error as exc:
                raise ClientError(_message(exc)) from None
            # results exactly as stored, at any depth (engine/jsonexact.py)
            set_json_loads(jsonexact.loads, self._conn)
            set_json_dumps(jsonexact.dumps, self._conn)
            self.info = self._detect()
            return self.info

    def set_password(self, password: str) -> None:
        """Use this password for this and later (re)connections; kept only in memory."""
        self._password = password

    def reconnect(self) -> ConnectionInfo:
        """Try once to re-open a lost connection. Raises ConnectionLost when it still fails."""
        try:
            return self.connect()
        except PasswordRequired:
            raise
        except ClientError as exc:
            raise ConnectionLost(exc.message) from None

    def close(self) -> None:
        with self._lock:
            self._close_quietly()

    def _close_quietly(self) -> None:
        if self._conn is not None:
            with suppress(Exception):  # closing a broken connection may fail; nothing to do
                self._conn.close()
            self._conn = None

    @property
    def connected(self) -> bool:
        conn = self._conn
        return conn is not None and not conn.closed and not conn.broken

    def backend_pid(self) -> int | None:
        """The server process id of our session (tests use it to simulate connection loss)."""
        conn = self._conn
        return conn.info.backend_pid if conn is not None and not conn.closed else None

    def __enter__(self) -> Client:
        if self._conn is None:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _cursor(self) -> Iterator[psycopg.Cursor[dict[str, Any]]]:
        """A dict-row cursor; psycopg errors become ClientError / ConnectionLost."""
        with self._lock:
            conn = self._conn
            if conn is None or conn.closed or conn.broken:
                raise ConnectionLost("not connected to the server")
            try:
                with conn.cursor(row_factory=dict_row) as cur:
                    yield cur
            except psycopg.Error as exc:
                if conn.closed or conn.broken or isinstance(
                    exc, pg_errors.AdminShutdown | pg_errors.ConnectionFailure
                ):
                    raise ConnectionLost(f"connection lost: {_message(exc)}") from None
                raise ClientError(_message(exc)) from None

    def _rows(self, query: str, params: Params = None) -> list[dict[str, Any]]:
        with self._cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []

    def _one(self, query: str, params: Params = None) -> dict[str, Any] | None:
        rows = self._rows(query, params)
        return rows[0] if rows else None

    # -- feature detection ---------------------------------------------------------------------

    def _detect(self) -> ConnectionInfo:
        row = self._one(
            """
            SELECT current_user AS role, current_database() AS database,
                   current_setting('server_version') AS server_version,
                   r.rolsuper AS is_superuser, r.rolbypassrls AS bypassrls,
                   EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                            WHERE n.nspname = 'df_internal' AND c.relname = 'schema_version')
                       AS dftui_schema,
                   (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_durable')
                       AS pg_durable_version,
                   EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'df') AS has_df,
                   (SELECT pg_catalog.has_schema_privilege(n.oid, 'USAGE')
                      FROM pg_catalog.pg_namespace n WHERE n.nspname = 'df') AS has_usage,
                   (SELECT c.relowner = r.oid FROM pg_catalog.pg_class c
                      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = 'df' AND c.relname = 'instances') AS owns_instances
              FROM pg_catalog.pg_roles r WHERE r.rolname = current_user
            """
        )
        assert row is not None
        if row["dftui_schema"]:
            backend = "dftui"
        elif row["pg_durable_version"] is not None or row["owns_instances"] is not None:
            # The pg_durable extension, or a df schema of its shape without the extension row
            # (restored from a dump into a server without the pg_durable library, a test fixture).
            backend = "pg_durable"
        else:
            backend = "none"
        backend_version = row["pg_durable_version"]
        if (backend == "dftui" or backend_version is None) and self._function_usable("df", "version"):
            try:
                backend_version = self._one("SELECT df.version()::text AS v")["v"]  # type: ignore[index]
            except ClientError:
                backend_version = None
        caps = self._capabilities(
            backend,
            can_see_others=bool(row["is_superuser"] or row["bypassrls"] or row["owns_instances"]),
        )
        return ConnectionInfo(
            role=row["role"],
            database=row["database"],
            server_version=row["server_version"].split(" ")[0],
            backend=backend,
            backend_version=backend_version,
            is_superuser=bool(row["is_superuser"]),
            capabilities=caps,
            has_usage=bool(row["has_usage"]),
        )

    def _function_usable(self, schema: str, name: str) -> bool:
        row = self._one(
            """
            SELECT bool_or(pg_catalog.has_function_privilege(p.oid, 'EXECUTE')
                           AND pg_catalog.has_schema_privilege(n.oid, 'USAGE')) AS ok
              FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = %s AND p.proname = %s
            """,
            (schema, name),
        )
        return bool(row and row["ok"])

    def _relation_usable(self, schema: str, name: str) -> bool:
        row = self._one(
            """
            SELECT pg_catalog.has_table_privilege(c.oid, 'SELECT')
                   AND pg_catalog.has_schema_privilege(n.oid, 'USAGE') AS ok
              FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = %s AND c.relname = %s
            """,
            (schema, name),
        )
        return bool(row and row["ok"])

    def _capabilities(self, backend: str, *, can_see_others: bool) -> Capabilities:
        reasons: dict[str, str] = {}

        def feature(key: str, ok: bool, why: str) -> bool:
            if not ok:
                reasons[key] = why
            return ok

        if backend == "none":
            why = "the df schema is not installed in this database (run `dftui install`)"
            return Capabilities(reasons={k: why for k in ("retry", "node_runs", "engines", "metrics")})
        can_retry = feature(
            "retry",
            self._function_usable("df", "retry"),
            "df.retry is not available on this backend"
            if backend == "pg_durable"
            else "this role may not execute df.retry",
        )
        has_node_runs = feature(
            "node_runs", self._relation_usable("df", "node_runs"),
            "per-node timing and attempts need dftui's df.node_runs view",
        )
        has_attempts = self._relation_usable("df", "node_attempt_history")
        has_loops = self._relation_usable("df", "loop_history")
        has_runtime = self._relation_usable("df", "instance_runtime")
        has_engines = feature(
            "engines", self._relation_usable("df", "engines"),
            "df.engines is not visible to this role or backend",
        )
        has_metrics = feature(
            "metrics", self._function_usable("df", "metrics"),
            "df.metrics is granted only to delegated admins",
        )
        has_explain = feature(
            "explain", self._function_usable("df", "explain"), "df.explain is not available"
        )
        return Capabilities(
            has_instance_info=self._function_usable("df", "instance_info"),
            has_instance_nodes=self._function_usable("df", "instance_nodes"),
            can_retry=can_retry,
            has_node_runs=has_node_runs,
            has_attempt_history=has_attempts,
            has_loop_history=has_loops,
            has_instance_runtime=has_runtime,
            has_engines=has_engines,
            has_metrics=has_metrics,
            has_explain=has_explain,
            can_see_others=can_see_others,
            reasons=reasons,
        )

    @property
    def capabilities(self) -> Capabilities:
        return self.info.capabilities if self.info else Capabilities()

    # -- listing -------------------------------------------------------------------------------

    def list_instances(
        self,
        *,
        status: str | None = None,
        label: str | None = None,
        text: str | None = None,
        since: datetime | None = None,
        after: tuple[datetime, str] | None = None,
        limit: int = 100,
        oldest_first: bool = False,
        label_like: str | None = None,
    ) -> InstancePage:
        """One keyset page, newest first (`created_at DESC, id ASC`, like df.list_instances).

        Reads df.instances directly (RLS applies) because the UI needs submitted_by and free-text
        filters that df.list_instances lacks (`label` is exact, `label_like` a case-insensitive
        substring, `text` a substring of the id, label, submitter, any step's SQL or error text).
        The redundant `created_at <= cursor` bound lets the
        planner start the index scan at the cursor, so page 10,000 is as cheap as page 1.
        """
        if status is not None and status not in STATUSES:
            raise ClientError(f"unknown status {status!r} (expected one of {', '.join(STATUSES)})")
        if limit < 1 or limit > 10_000:
            raise ClientError("limit must be between 1 and 10000")
        params: dict[str, Any] = {"limit": limit + 1}
        where = _filter_where(params, status=status, label=label, label_like=label_like,
                              text=text, since=since)
        if after is not None and not oldest_first:
            where.append(
                "i.created_at <= %(cts)s AND (i.created_at < %(cts)s OR i.id > %(cid)s)"
            )
            params["cts"], params["cid"] = after
        elif after is not None:  # the same index scanned backwards
            where.append(
                "i.created_at >= %(cts)s AND (i.created_at > %(cts)s OR i.id < %(cid)s)"
            )
            params["cts"], params["cid"] = after
        order = "i.created_at, i.id DESC" if oldest_first else "i.created_at DESC, i.id"
        rows = self._rows(
            f"""
            SELECT i.id, i.label, i.status, i.submitted_by::text AS submitted_by, i.created_at,
                   i.updated_at, i.completed_at,
                   s.node_type AS step_type, s.query AS step_query,
                   s.result_name AS step_name
              FROM df.instances i
              LEFT JOIN LATERAL (
                    SELECT n.node_type, pg_catalog.left(n.query, 300) AS query, n.result_name
                      FROM df.nodes n
                     WHERE i.status IN ('running', 'pending', 'failed')
                       AND n.instance_id = i.id
                       AND n.status = CASE i.status WHEN 'failed' THEN 'failed' ELSE 'running' END
                       AND n.node_type NOT IN ({_COMPOSITE_SQL})
                     ORDER BY n.updated_at DESC LIMIT 1) s ON TRUE
             WHERE {" AND ".join(where)}
             ORDER BY {order}
             LIMIT %(limit)s
            """,
            params,
        )
        page = [_summary(r) for r in rows[:limit]]
        next_cursor = (page[-1].created_at, page[-1].id) if len(rows) > limit else None
        return InstancePage(page, next_cursor)

    def refresh_instances(self, ids: list[str]) -> dict[str, InstanceSummary]:
        """Current state of the given (already listed) instances, for cheap live refresh."""
        if not ids:
            return {}
        rows = self._rows(
            """
            SELECT i.id, i.label, i.status, i.submitted_by::text AS submitted_by, i.created_at,
                   i.updated_at, i.completed_at, NULL::text AS current_step
              FROM df.instances i WHERE i.id = ANY(%s)
            """,
            (ids,),
        )
        return {r["id"]: InstanceSummary(**r) for r in rows}

    def status_counts(self, *, label: str | None = None, cap: int = COUNT_CAP,
                      label_like: str | None = None, text: str | None = None,
                      since: datetime | None = None) -> StatusCounts:
        """Per-status counts under the same filters as `list_instances`, without scanning the
        whole table.

        Each status is counted exactly up to `cap` rows through the (status, created_at, id)
        index; a status above the cap gets the planner's row estimate instead (RLS-aware, since
        the policy is part of the plan). Cost stays bounded with millions of instances.
        """
        params: dict[str, Any] = {"cap": cap}
        where = _filter_where(params, label=label, label_like=label_like, text=text, since=since)
        extra = "".join(f" AND {w}" for w in where[1:])
        # One branch per status with the status as a literal (from our fixed list), so each
        # branch is planned as a bounded scan of the (status, created_at, id) index.
        branches = [
            f"SELECT '{status}'::text AS status, (SELECT count(*) FROM (SELECT 1 FROM df.instances i"
            f" WHERE i.status = '{status}'{extra} LIMIT %(cap)s + 1) x) AS n"
            for status in STATUSES
        ]
        rows = self._rows(" UNION ALL ".join(branches), params)
        counts = {r["status"]: int(r["n"]) for r in rows}
        estimated: set[str] = set()
        for status, n in counts.items():
            if n > cap:
                counts[status] = max(self._estimate(status, extra, params), cap + 1)
                estimated.add(status)
        return StatusCounts(counts, frozenset(estimated))

    def _estimate(self, status: str, extra: str, params: dict[str, Any]) -> int:
        query = ("EXPLAIN (FORMAT JSON) SELECT 1 FROM df.instances i WHERE i.status = %(status)s"
                 + extra)
        with self._cursor() as cur:
            cur.execute(query, {**params, "status": status})
            plan = cur.fetchone()
        assert plan is not None
        value = next(iter(plan.values()))
        if isinstance(value, str):
            value = jsonexact.loads(value)
        return int(value[0]["Plan"]["Plan Rows"])

    def labels(self, limit: int = 200) -> list[str]:
        """Distinct labels (for the label filter), via the label index, bounded."""
        rows = self._rows(
            """
            WITH RECURSIVE l AS (
                (SELECT label FROM df.instances WHERE label IS NOT NULL ORDER BY label LIMIT 1)
                UNION ALL
                SELECT (SELECT i.label FROM df.instances i
                         WHERE i.label IS NOT NULL AND i.label > l.label
                         ORDER BY i.label LIMIT 1)
                  FROM l WHERE l.label IS NOT NULL)
            SELECT label FROM l WHERE label IS NOT NULL LIMIT %s
            """,
            (limit,),
        )
        return [r["label"] for r in rows]

    # -- one instance --------------------------------------------------------------------------

    def instance(self, instance_id: str) -> InstanceDetail:
        """The instance row plus df.instance_info's output (and runtime data when exposed)."""
        instance_id = _check_id(instance_id)
        row = self._one(
            """
            SELECT i.id, i.label, i.status, i.submitted_by::text AS submitted_by, i.database,
                   i.root_node, i.created_at, i.updated_at, i.completed_at
              FROM df.instances i WHERE i.id = %s
            """,
            (instance_id,),
        )
        if row is None:
            raise ClientError("Instance not found or access denied")
        if self.capabilities.has_instance_info:
            info = self._one(
                "SELECT output::text AS output FROM df.instance_info(%s)", (instance_id,)
            )
        else:  # older backends: the root node's result is the output
            info = self._one(
                "SELECT result::text AS output FROM df.nodes WHERE instance_id = %s AND id = %s",
                (instance_id, row["root_node"]),
            )
        row["output"] = info["output"] if info else None
        if self.capabilities.has_instance_runtime:
            runtime = self._json_row(
                "SELECT to_jsonb(r) AS j FROM df.instance_runtime r WHERE r.instance_id = %s",
                (instance_id,),
            )
            if runtime:
                row["started_at"] = parse_ts(runtime.get("started_at"))
                row["finished_at"] = parse_ts(runtime.get("finished_at"))
                row["error"] = runtime.get("error")
                row["cancel_reason"] = runtime.get("cancel_reason")
                row["execution"] = runtime.get("execution")
        if row["status"] == "failed" and not row.get("error"):
            row["error"] = row["output"]
        return InstanceDetail(**row)

    def _json_row(self, query: str, params: tuple) -> dict[str, Any] | None:
        row = self._one(query, params)
        return row["j"] if row else None

    def nodes(self, instance_id: str, detail: InstanceDetail | None = None) -> list[NodeInfo]:
        """df.instance_nodes (with inferred status), plus timing/attempts from df.node_runs and
        df.node_attempt_history when the backend has them, with true spans and distinct attempt
        numbers (dftui.timings). `detail` saves re-reading the instance."""
        instance_id = _check_id(instance_id)
        found = self._nodes(instance_id)
        if self.capabilities.has_node_runs and found:
            from dftui import timings

            parents = {n.id: (n.parent_id, n.slot) for n in found}
            timings.number_attempts(found, parents)
            timings.fix_timings(detail or self.instance(instance_id), found, parents)
        return found

    def _nodes(self, instance_id: str) -> list[NodeInfo]:
        if not self.capabilities.has_instance_nodes:
            rows = self._rows(
                """
                SELECT n.id, n.node_type, n.query, n.result_name, n.left_node, n.right_node,
                       n.status, n.result, n.status_details, n.status AS inferred_status,
                       NULL::text AS inferred_from, n.updated_at, n.error
                  FROM df.nodes n WHERE n.instance_id = %s ORDER BY n.created_at, n.id
                """,
                (instance_id,),
            )
            return self._with_runs(instance_id, {r["id"]: _node(r) for r in rows})
        rows = self._rows(
            """
            SELECT f.node_id AS id, f.node_type, f.query, f.result_name, f.left_node,
                   f.right_node, f.status, f.result, f.status_details,
                   f.inferred_status, f.inferred_status_from_ancestor_id AS inferred_from,
                   f.updated_at, n.error
              FROM df.instance_nodes(%s) f
              LEFT JOIN df.nodes n ON n.instance_id = %s AND n.id = f.node_id
            """,
            (instance_id, instance_id),
        )
        return self._with_runs(instance_id, {r["id"]: _node(r) for r in rows})

    def _with_runs(self, instance_id: str, nodes: dict[str, NodeInfo]) -> list[NodeInfo]:
        for each in nodes.values():
            each.result = ordered_result(each.result, each.status_details)
        caps = self.capabilities
        if caps.has_node_runs and nodes:
            for run in self._rows(
                "SELECT to_jsonb(r) AS j FROM df.node_runs r WHERE r.instance_id = %s",
                (instance_id,),
            ):
                data = run["j"]
                node = nodes.get(data.get("node_id") or data.get("id"))
                if node is None:
                    continue
                node.started_at = parse_ts(data.get("started_at"))
                node.finished_at = parse_ts(data.get("finished_at"))
                node.attempts = data.get("attempts")
                node.ran_sql = data.get("ran_sql")
                node.iteration = data.get("iteration")
                node.parent_id = data.get("parent_id")
                node.slot = data.get("slot")
                if not node.error and data.get("error"):
                    node.error = data.get("error")
        if caps.has_attempt_history and nodes:
            for hist in self._rows(
                "SELECT to_jsonb(h) AS j FROM df.node_attempt_history h WHERE h.instance_id = %s",
                (instance_id,),
            ):
                data = hist["j"]
                node = nodes.get(data.get("node_id"))
                if node is None:
                    continue
                node.attempt_history.append(
                    Attempt(
                        node_id=node.id,
                        attempt=int(data.get("attempt") or 0),
                        status=str(data.get("status") or ""),
                        started_at=parse_ts(data.get("started_at")),
                        finished_at=parse_ts(data.get("finished_at")),
                        error=data.get("error"),
                        ran_sql=data.get("ran_sql"),
                        iteration=data.get("iteration"),
                        kind=str(data.get("kind") or "attempt"),
                        requested_by=data.get("requested_by"),
                    )
                )
            for node in nodes.values():
                node.attempt_history.sort(
                    key=lambda a: (a.finished_at or a.started_at or datetime.min.replace(tzinfo=UTC))
                )
        if caps.has_loop_history and any(n.node_type == "LOOP" for n in nodes.values()):
            for loop in self._rows(
                "SELECT to_jsonb(l) AS j FROM df.loop_history l WHERE l.instance_id = %s"
                " ORDER BY l.loop_node_id, l.iteration",
                (instance_id,),
            ):
                data = loop["j"]
                node = nodes.get(data.get("loop_node_id"))
                if node is not None:
                    node.loop_iterations.append(data)
        return list(nodes.values())

    def explain(self, source: str) -> str:
        """df.explain of an instance id, a node envelope, DSL source text or plain SQL."""
        if not source.strip():
            raise ClientError("nothing to explain")
        row = self._one("SELECT df.explain(%s) AS e", (source,))
        return row["e"] if row else ""

    # -- actions -------------------------------------------------------------------------------

    def evaluate(self, expression: str) -> str:
        """Evaluate DSL source (e.g. `'SELECT 1' ~> 'SELECT 2' |=> 'x'`) to its node envelope.

        The expression is the caller's own SQL, so evaluating it grants nothing new; still it must
        be exactly one scalar expression: it runs with a bound parameter (the extended protocol
        refuses multiple statements), inside a READ ONLY transaction that is rolled back (builders
        are pure; nothing may write), and must yield one row with one column.
        """
        text = expression.strip()
        if not text:
            raise ClientError("the workflow expression is empty")
        if text.endswith(";"):
            text = text.rstrip(";").rstrip()
        with self._lock:
            conn = self._conn
            if conn is None or conn.closed or conn.broken:
                raise ConnectionLost("not connected to the server")
            try:
                with conn.transaction(force_rollback=True), conn.cursor() as cur:
                    cur.execute("SET TRANSACTION READ ONLY")
                    try:
                        cur.execute(f"SELECT (\n{text}\n)::text, %s::int", (1,))
                    except pg_errors.SyntaxError as exc:
                        msg = _message(exc)
                        if "multiple commands" in msg:
                            raise ClientError(_NOT_SINGLE) from None
                        raise ClientError(f"invalid workflow expression: {msg}") from None
                    if cur.description is None or len(cur.description) != 2:
                        raise ClientError(_NOT_SINGLE)
                    rows = cur.fetchall()
            except ClientError:
                raise
            except psycopg.Error as exc:
                if conn.closed or conn.broken:
                    raise ConnectionLost(f"connection lost: {_message(exc)}") from None
                raise ClientError(_message(exc)) from None
        if len(rows) != 1 or rows[0][0] is None:
            raise ClientError("the workflow expression must evaluate to one non-null value")
        return rows[0][0]

    def start(self, expression: str, label: str | None = None) -> str:
        """Evaluate DSL source safely (see `evaluate`) and start it; returns the instance id."""
        if label is not None and (label == "" or re.search(r"[\x00-\x1f\x7f]", label)):
            raise ClientError("invalid label: it must be non-empty and have no control characters")
        envelope = self.evaluate(expression)
        row = self._one("SELECT df.start(%s, %s) AS id", (envelope, label))
        assert row is not None
        return row["id"]

    def _targets(self, ids: Iterable[str]) -> list[tuple[str, str | None, str | None]]:
        """(id, label, status) of each id, in the given order, duplicates dropped; status None
        when the role cannot see it. Raises InputError on a malformed id (nothing is sent)."""
        wanted = list(dict.fromkeys(check_id(raw) for raw in ids))
        rows = {r["id"]: r for r in self._rows(
            "SELECT i.id, i.label, i.status FROM df.instances i WHERE i.id = ANY(%s)", (wanted,))}
        return [(i, (rows.get(i) or {}).get("label"), (rows.get(i) or {}).get("status"))
                for i in wanted]

    def _act(self, action: str, ids: Iterable[str],
             fn: Callable[[str], ActionResult | str]) -> list[ActionResult]:
        """Run `fn(id)` for every id the action applies to; the others are skipped with the
        reason. A database error on one id is reported for that id and does not stop the rest."""
        results = []
        for instance_id, label, status in self._targets(ids):
            if status is None:
                results.append(ActionResult(instance_id, False,
                                            "Instance not found or access denied", label))
                continue
            refusal = action_refusal(action, status)
            if refusal is not None:
                results.append(ActionResult(instance_id, False, refusal, label, skipped=True))
                continue
            try:
                outcome = fn(instance_id)
            except ConnectionLost:
                raise
            except ClientError as exc:
                results.append(ActionResult(instance_id, False, exc.message, label))
                continue
            if isinstance(outcome, ActionResult):
                outcome = dataclasses_replace(outcome, label=label)
            else:
                outcome = ActionResult(instance_id, True, outcome, label)
            results.append(outcome)
        return results

    def cancel(self, ids: Iterable[str], reason: str | None = None) -> list[ActionResult]:
        """df.cancel each id; one result per id. df.cancel's 'already <status>' (the instance
        finished meanwhile) is a skip, never a success."""
        # df.cancel is STRICT (as pg_durable's): never pass NULL, it would do nothing.
        reason = (reason or "").strip() or "Cancelled by user"

        def one(instance_id: str) -> ActionResult:
            row = self._one("SELECT df.cancel(%s, %s)::text AS r", (instance_id, reason))
            answer = (row or {}).get("r") or ""
            if answer.startswith("already "):
                return ActionResult(instance_id, False, f"{answer}; nothing to cancel",
                                    skipped=True)
            return ActionResult(instance_id, True, "cancelled")

        return self._act("cancel", ids, one)

    def retry(self, ids: Iterable[str]) -> list[ActionResult]:
        """df.retry each failed or cancelled id (dftui only; refused with the reason on backends
        without it); others are skipped with the reason."""
        if not self.capabilities.can_retry:
            raise ClientError(self.capabilities.reasons.get("retry", "retry is not available"))

        def one(instance_id: str) -> str:
            row = self._one("SELECT df.retry(%s)::text AS r", (instance_id,))
            return f"retried (now {(row or {}).get('r') or 'running'})"

        return self._act("retry", ids, one)

    def signal(self, ids: Iterable[str] | str, name: str, data: str | Any = "{}"
               ) -> list[ActionResult]:
        """df.signal each pending or running id, after validating the name and the JSON payload
        client-side (InputError: nothing sent). Finished instances are skipped: df.signal would
        queue a signal no step ever reads and still answer OK."""
        name = name.strip()
        if not name:
            raise InputError("signal name must not be empty")
        if isinstance(data, str):
            payload = data.strip() or "{}"
            try:
                jsonexact.loads(payload)
            except ValueError as exc:
                raise InputError(f"signal payload is not valid JSON: {exc}") from None
        else:
            payload = jsonexact.dumps(data)
        targets = [ids] if isinstance(ids, str) else list(ids)

        def one(instance_id: str) -> str:
            self._one("SELECT df.signal(%s, %s, %s)::text AS r", (instance_id, name, payload))
            return f"signal {name!r} sent"

        return self._act("signal", targets, one)

    # -- variables -----------------------------------------------------------------------------

    def vars(self) -> list[Var]:
        """The current role's df.vars."""
        return [Var(r["name"], r["value"]) for r in self._rows(
            "SELECT name, value FROM df.vars ORDER BY name"
        )]

    def set_var(self, name: str, value: str) -> None:
        problem = var_name_problem(name)
        if problem:
            raise InputError(problem)
        self._rows("SELECT df.setvar(%s, %s)", (name, value))

    def unset_var(self, name: str) -> None:
        self._rows("SELECT df.unsetvar(%s)", (name,))

    # -- engines & health ----------------------------------------------------------------------

    def engines(self) -> list[EngineInfo]:
        if not self.capabilities.has_engines:
            raise ClientError(self.capabilities.reasons.get("engines", "engines are not visible"))
        return [EngineInfo(r["j"]) for r in self._rows("SELECT to_jsonb(e) AS j FROM df.engines e")]

    def health_line(self) -> dict[str, Any]:
        """The home screen's compact health: engines alive/total, runnable steps, age of the
        oldest ready step (seconds), stuck instances — each None when this backend or role
        cannot see it. Bounded queries only (the views are indexed / capped)."""
        out: dict[str, Any] = {"alive": None, "engines": None, "runnable": None,
                               "oldest_s": None, "stuck": None}
        if self.capabilities.has_engines:
            row = self._one("SELECT count(*) FILTER (WHERE e.state = 'alive') AS alive,"
                            " count(*) AS total FROM df.engines e")
            if row:
                out["alive"], out["engines"] = int(row["alive"]), int(row["total"])
        if self._relation_usable("df", "queue_depth"):
            row = self._one("SELECT runnable, extract(epoch FROM pg_catalog.now() - oldest_due)"
                            "::float8 AS oldest_s FROM df.queue_depth")
            if row:
                out["runnable"], out["oldest_s"] = int(row["runnable"] or 0), row["oldest_s"]
        if self._relation_usable("df", "stuck_instances"):
            row = self._one("SELECT count(*) AS n FROM (SELECT 1 FROM df.stuck_instances"
                            " LIMIT 1000) s")
            out["stuck"] = int(row["n"]) if row else None
        return out

    def engine_warning(self) -> str | None:
        """Why new work would not run, or None: no engine ever registered, none alive (all
        stopped, or stale: no heartbeat for 60 s). None too when engines are invisible here."""
        if not self.capabilities.has_engines:
            return None
        row = self._one(
            """
            SELECT count(*) FILTER (WHERE e.state = 'alive') AS alive,
                   count(*) FILTER (WHERE e.state = 'stale') AS stale,
                   count(*) AS total,
                   extract(epoch FROM pg_catalog.now() - max(e.heartbeat_at))::bigint AS age
              FROM df.engines e
            """
        )
        if row is None or row["alive"]:
            return None
        if row["stale"]:
            return (f"All engines are stale (no heartbeat for {row['age']}s): steps do not run. "
                    "Check the engine, or start one: dftui engine")
        if row["total"]:
            return "No engine is running: new work stays pending. Start one: dftui engine"
        return "No engine has ever run here: instances stay pending. Start one: dftui engine"

    def role_limits(self) -> list[dict[str, Any]]:
        """Per-role limit overrides (df.role_limits: an ordinary role sees its own row only), []
        on a backend without them."""
        if not self._relation_usable("df", "role_limits"):
            return []
        return self._rows("SELECT role, max_running, max_pending, step_timeout_ms, updated_at "
                          "FROM df.role_limits ORDER BY role")

    def set_role_limits(self, role: str, *, max_running: int | None, max_pending: int | None,
                        step_timeout: str | None) -> None:
        """Set (or, all None, remove) a role's overrides: df.set_role_limits, administrators only."""
        self._rows("SELECT df.set_role_limits(%s, %s, %s, %s)",
                   (role, max_running, max_pending, step_timeout))

    def health(self, *, stuck_after_seconds: int = 600, limit: int = 50) -> Health:
        """Engines with heartbeats, waiting steps (signal/timer/cron), long-running steps, step
        rate and queue depth. Uses dftui's health views (df.waiting_instances, df.stuck_instances,
        df.step_rate, df.queue_depth) when the backend has them, else derives what it can."""
        engines = self.engines() if self.capabilities.has_engines else []
        now_row = self._one("SELECT now() AS now")
        assert now_row is not None
        now: datetime = now_row["now"]
        if self._relation_usable("df", "waiting_instances"):
            waiting = []
            for r in self._rows(
                """
                SELECT w.instance_id, w.label, w.node_type, w.waiting_for, w.detail, w.due_at,
                       w.deadline, w.waiting_since, n.query
                  FROM df.waiting_instances w
                  LEFT JOIN df.nodes n ON n.instance_id = w.instance_id AND n.id = w.node_id
                 ORDER BY w.due_at NULLS LAST, w.waiting_since LIMIT %s
                """,
                (limit,),
            ):
                step = step_text(r["node_type"], r["query"]) if r["node_type"] else r["waiting_for"]
                if r["waiting_for"] in ("retry backoff", "loop iteration", "queued"):
                    step = f"{r['waiting_for']}: {step}"
                waiting.append(WaitingStep(
                    r["instance_id"], r["label"], step, r["node_type"] or "", r["waiting_since"],
                    {"due_at": r["due_at"], "deadline": r["deadline"]}, r["query"]))
        else:
            waiting = [
                WaitingStep(r["instance_id"], r["label"], step_text(r["node_type"], r["query"]),
                            r["node_type"], r["since"], r["status_details"], r["query"])
                for r in self._rows(
                    """
                    SELECT n.instance_id, i.label, n.node_type, n.query, n.updated_at AS since,
                           n.status_details
                      FROM df.instances i
                      JOIN df.nodes n ON n.instance_id = i.id
                     WHERE i.status = 'running' AND n.status = 'running'
                       AND n.node_type IN ('SIGNAL', 'SLEEP', 'WAIT_SCHEDULE')
                     ORDER BY n.updated_at LIMIT %s
                    """,
                    (limit,),
                )
            ]
        stuck: list[WaitingStep] = []
        if self._relation_usable("df", "stuck_instances"):
            stuck = [
                WaitingStep(r["instance_id"], r["label"], r["reason"], r["node_type"] or "",
                            r["since"])
                for r in self._rows(
                    "SELECT instance_id, label, node_type, reason, since FROM df.stuck_instances"
                    " ORDER BY since LIMIT %s",
                    (limit,),
                )
            ]
        elif self.capabilities.has_node_runs:
            stuck = [
                WaitingStep(r["instance_id"], r["label"], step_text(r["node_type"], r["query"]),
                            r["node_type"], r["since"])
                for r in self._rows(
                    """
                    SELECT r.instance_id, i.label, r.node_type, n.query, r.started_at AS since
                      FROM df.node_runs r
                      JOIN df.instances i ON i.id = r.instance_id
                      JOIN df.nodes n ON n.instance_id = r.instance_id AND n.id = r.node_id
                     WHERE r.status = 'running' AND r.finished_at IS NULL
                       AND r.node_type IN ('SQL', 'HTTP', 'HTTP_MULTIPART')
                       AND r.started_at < now() - make_interval(secs => %s)
                     ORDER BY r.started_at LIMIT %s
                    """,
                    (stuck_after_seconds, limit),
                )
            ]
        step_rate = None
        if self._relation_usable("df", "step_rate"):
            buckets = {r["bucket"]: int(r["steps"]) for r in self._rows(
                "SELECT bucket, steps FROM df.step_rate")}
            # 90 buckets of 10 s = the last 15 minutes, empty buckets as zero.
            newest = datetime.fromtimestamp(int(now.timestamp()) // 10 * 10, tz=UTC)
            step_rate = []
            for k in range(89, -1, -1):
                bucket = datetime.fromtimestamp(newest.timestamp() - 10 * k, tz=UTC)
                step_rate.append(buckets.get(bucket, 0) / 10.0)
        queue = None
        if self._relation_usable("df", "queue_depth"):
            queue = self._one("SELECT runnable, waiting, oldest_due FROM df.queue_depth")
        return Health(engines, waiting, stuck, self.status_counts(), now, step_rate, queue,
                      self.role_limits())

    def metrics(self) -> dict[str, Any]:
        if not self.capabilities.has_metrics:
            raise ClientError(self.capabilities.reasons.get("metrics", "metrics are not available"))
        row = self._one("SELECT * FROM df.metrics()")
        return dict(row or {})


def _like(text: str) -> str:
    """`text` as a LIKE pattern matching itself anywhere."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _filter_where(params: dict[str, Any], *, status: str | None = None, label: str | None = None,
                  label_like: str | None = None, text: str | None = None,
                  since: datetime | None = None) -> list[str]:
    """The WHERE terms (and their parameters, added to `params`) shared by the list and the
    status counts, so the counts always follow the filter."""
    where = ["TRUE"]
    if status:
        where.append("i.status = %(status)s")
        params["status"] = status
    if label:
        where.append("i.label = %(label)s")
        params["label"] = label
    if label_like:
        where.append("i.label ILIKE %(label_like)s")
        params["label_like"] = _like(label_like)
    if text:
        # Steps are searched by their SQL (df.nodes.query) and error text; RLS applies there too.
        where.append(
            "(i.id LIKE %(prefix)s OR i.label ILIKE %(pattern)s"
            " OR i.submitted_by::text ILIKE %(pattern)s"
            " OR EXISTS (SELECT 1 FROM df.nodes n WHERE n.instance_id = i.id"
            " AND (n.query ILIKE %(pattern)s OR n.error ILIKE %(pattern)s)))"
        )
        params["prefix"] = _like(text.lower())[1:]
        params["pattern"] = _like(text)
    if since is not None:
        where.append("i.created_at >= %(since)s")
        params["since"] = since
    return where


def var_name_problem(name: str) -> str | None:
    """Why `name` cannot be a df.vars name (None: it can): a letter or _ then letters, digits,
    _ — what {name} substitution recognises."""
    if not name:
        return "the name must not be empty"
    if not _NAME_RE.match(name):
        return (f"{name!r} is not a valid name: use a letter or _ followed by letters, digits "
                "or _ (e.g. api_url)")
    return None


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


def _node(row: dict[str, Any]) -> NodeInfo:
    row["result"] = json_value(row.get("result"))
    row["status_details"] = json_value(row.get("status_details"))
    return NodeInfo(**row)


def _summary(row: dict[str, Any]) -> InstanceSummary:
    step_type = row.pop("step_type", None)
    step_query = row.pop("step_query", None)
    step_name = row.pop("step_name", None)
    row["current_step"] = step_text(step_type, step_query, step_name) if step_type else None
    return InstanceSummary(**row)


def check_id(instance_id: str) -> str:
    """The normalised id; InputError when it is not 8 hex digits."""
    value = (instance_id or "").strip().lower()
    if not _ID_RE.match(value):
        raise InputError(f"invalid instance id {instance_id!r} (expected 8 hex digits)")
    return value


_check_id = check_id


def parse_ts(value: Any) -> datetime | None:
    """Timestamps come back as ISO text when read through to_jsonb(); None or bad text -> None.

    Shared with the screens that read timestamps out of JSON details."""
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


PASSWORD_TRIES = 3


def password_target(conninfo: str) -> str:
    """`user@host:port/dbname` as libpq will resolve it (conninfo, then PG* variables), so a
    password prompt says which password it wants."""
    import getpass
    import os

    try:
        params = psycopg.conninfo.conninfo_to_dict(conninfo) if conninfo else {}
    except psycopg.Error:
        params = {}
    user = params.get("user") or os.environ.get("PGUSER") or getpass.getuser()
    host = params.get("host") or os.environ.get("PGHOST") or "local socket"
    port = params.get("port") or os.environ.get("PGPORT") or "5432"
    dbname = params.get("dbname") or os.environ.get("PGDATABASE") or user
    return f"{user}@{host}:{port}/{dbname}"


def connect(conninfo: str = "", *,
            password_prompt: Callable[[str], str] | None = None) -> Client:
    """Open a Client; when the server asks for a password, ask `password_prompt(target)`
    (target = `user@host:port/db`), up to PASSWORD_TRIES times while the password is wrong.

    Used by the CLI and the TUI launcher (with getpass, before Textual takes the terminal).
    """
    client = Client(conninfo)
    try:
        client.connect()
        return client
    except PasswordRequired:
        if password_prompt is None:
            raise
    target = password_target(conninfo)
    for attempt in range(PASSWORD_TRIES):
        client.set_password(password_prompt(target))
        try:
            client.connect()
            return client
        except ClientError as exc:
            wrong = "password authentication failed" in exc.message
            if not wrong or attempt == PASSWORD_TRIES - 1:
                raise
            import sys

            print(f"dftui: wrong password for {target}; try again", file=sys.stderr)
    return client
