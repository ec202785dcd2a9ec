"""Capability detection and one adapter per backend kind.

Two backends expose the same `df` public API: dftui's own schema (sql/) and Microsoft's
pg_durable extension. Both have `df.instances` / `df.nodes` and the user-facing functions, so the
job modules (instances, actions, health, vars) read and act through those. What differs — how a
node's run data, the health views and the schema version are read — lives here, in one adapter
class per kind, chosen once at connect time by `detect`:

- `PgDurableBackend`: pg_durable 0.2.6's public API only (df.instance_info, df.instance_nodes;
  waiting steps derived from running SIGNAL/SLEEP/WAIT_SCHEDULE nodes; no run history).
- `DftuiBackend`: adds dftui's security-barrier views (df.node_runs, df.node_attempt_history,
  df.loop_history, df.instance_runtime) and health views (df.waiting_instances,
  df.stuck_instances, df.step_rate, df.queue_depth, df.role_limits).
- `NoBackend`: no df schema in this database; every feature reports why it is off.

What the connected *role* may use (a revoked grant, df.metrics for delegated admins only) is
still checked per feature and reported in `Capabilities` with a reason, since that is privilege,
not backend kind. The adapters never open connections or catch errors: they run on the caller's
`Session`, whose translation turns every failure into a ClientError.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from psycopg.rows import kwargs_row

from dftui.client.errors import ClientError
from dftui.client.models import (
    Attempt,
    Capabilities,
    ConnectionInfo,
    NodeInfo,
    WaitingStep,
    json_value,
    ordered_result,
    parse_ts,
)
from dftui.vocabulary import step_text

if TYPE_CHECKING:  # the adapters run on a Session; the session module imports this one
    from dftui.client.session import Session

_NO_SCHEMA = "the df schema is not installed in this database (run `dftui install`)"

_DETECT_SQL = """
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


def _node(**row: Any) -> NodeInfo:
    """Row factory target: a df.nodes / df.instance_nodes row as a NodeInfo (JSON text decoded,
    row-set results in the statement's column order)."""
    row["result"] = json_value(row.get("result"))
    row["status_details"] = json_value(row.get("status_details"))
    row["result"] = ordered_result(row["result"], row["status_details"])
    return NodeInfo(**row)


class Backend:
    """What every backend kind answers the same way: pg_durable's public df API.

    Subclasses override what their kind does differently; a method here is the behaviour of a
    backend that has only the public API."""

    kind = "pg_durable"

    functions: tuple[str, ...] = ("instance_info", "instance_nodes", "retry", "metrics",
                                  "explain", "version")
    relations: tuple[str, ...] = ("engines",)

    def capabilities(self, s: Session, *, can_see_others: bool) -> Capabilities:
        """The features this backend has and this role may use, each off with a reason."""
        usable = s._usable(self.functions, self.relations)
        return self._capabilities(usable, can_see_others=can_see_others)

    def _capabilities(self, usable: frozenset[str], *, can_see_others: bool) -> Capabilities:
        reasons: dict[str, str] = {}

        def feature(key: str, name: str, why: str) -> bool:
            if name not in usable:
                reasons[key] = why
            return name in usable

        reasons["node_runs"] = "per-node timing and attempts need dftui's df.node_runs view"
        return Capabilities(
            has_instance_info="instance_info" in usable,
            has_instance_nodes="instance_nodes" in usable,
            can_retry=feature("retry", "retry", "df.retry is not available on this backend"),
            has_engines=feature("engines", "engines",
                                "df.engines is not visible to this role or backend"),
            has_metrics=feature("metrics", "metrics",
                                "df.metrics is granted only to delegated admins"),
            has_explain=feature("explain", "explain", "df.explain is not available"),
            has_version="version" in usable,
            can_see_others=can_see_others,
            reasons=reasons,
        )

    def version(self, s: Session, caps: Capabilities, extension_version: str | None) -> str | None:
        """The backend's version: the extension's, else what df.version() says."""
        if extension_version is not None or not caps.has_version:
            return extension_version
        try:
            row = s._one("SELECT df.version()::text AS v")
        except ClientError:
            return None
        return row["v"] if row else None

    # -- one instance --------------------------------------------------------------------------

    def output(self, s: Session, instance_id: str, root_node: str) -> str | None:
        """The instance's output: df.instance_info's, else (older versions) the root's result."""
        if s.capabilities.has_instance_info:
            info = s._one("SELECT output::text AS output FROM df.instance_info(%s)", (instance_id,))
        else:
            info = s._one(
                "SELECT result::text AS output FROM df.nodes WHERE instance_id = %s AND id = %s",
                (instance_id, root_node),
            )
        return info["output"] if info else None

    def step_running_sql(self, s: Session) -> str:
        """A SQL expression over list row `i`: is a step of this pending instance executing
        now? Unknowable from the public API alone."""
        return "false"

    def runtime(self, s: Session, instance_id: str) -> dict[str, Any] | None:
        """Engine-side runtime of an instance (start, end, error, cancel reason): none here."""
        return None

    def nodes(self, s: Session, instance_id: str) -> dict[str, NodeInfo]:
        """The instance's nodes by id, with the inferred status df.instance_nodes gives."""
        if not s.capabilities.has_instance_nodes:
            found = s._fetch(kwargs_row(_node), """
                SELECT n.id, n.node_type, n.query, n.result_name, n.left_node, n.right_node,
                       n.status, n.result, n.status_details, n.status AS inferred_status,
                       NULL::text AS inferred_from, n.updated_at, n.error
                  FROM df.nodes n WHERE n.instance_id = %s ORDER BY n.created_at, n.id
                """, (instance_id,))
        else:
            found = s._fetch(kwargs_row(_node), """
                SELECT f.node_id AS id, f.node_type, f.query, f.result_name, f.left_node,
                       f.right_node, f.status, f.result, f.status_details,
                       f.inferred_status, f.inferred_status_from_ancestor_id AS inferred_from,
                       f.updated_at, n.error
                  FROM df.instance_nodes(%s) f
                  LEFT JOIN df.nodes n ON n.instance_id = %s AND n.id = f.node_id
                """, (instance_id, instance_id))
        return {n.id: n for n in found}

    def add_run_data(self, s: Session, instance_id: str, nodes: dict[str, NodeInfo]) -> None:
        """Fill in per-node timing, attempts and loop iterations: not recorded here."""

    # -- health --------------------------------------------------------------------------------

    def waiting(self, s: Session, limit: int) -> list[WaitingStep]:
        """Running instances parked on a signal, a timer or a schedule, derived from df.nodes."""
        return s._fetch(kwargs_row(_waiting_node), """
            SELECT n.instance_id, i.label, n.node_type, n.query, n.updated_at AS since,
                   n.status_details
              FROM df.instances i
              JOIN df.nodes n ON n.instance_id = i.id
             WHERE i.status = 'running' AND n.status = 'running'
               AND n.node_type IN ('SIGNAL', 'SLEEP', 'WAIT_SCHEDULE')
             ORDER BY n.updated_at LIMIT %s
            """, (limit,))

    def stuck(self, s: Session, stuck_after_seconds: int, limit: int) -> list[WaitingStep]:
        """Steps running for too long: unknowable without run data."""
        return []

    def step_rate(self, s: Session, now: datetime) -> list[float] | None:
        return None

    def queue(self, s: Session) -> dict[str, Any] | None:
        return None

    def queue_line(self, s: Session) -> tuple[int, float | None] | None:
        """(runnable steps, age of the oldest ready step in seconds), None when unknown."""
        return None

    def stuck_count(self, s: Session) -> int | None:
        return None

    def role_limits(self, s: Session) -> list[dict[str, Any]]:
        return []


def _waiting_node(*, instance_id: str, label: str | None, node_type: str, query: str | None,
                  since: datetime | None, status_details: Any) -> WaitingStep:
    return WaitingStep(instance_id, label, step_text(node_type, query), node_type, since,
                       status_details, query)


def _waiting_view(*, instance_id: str, label: str | None, node_type: str | None,
                  waiting_for: str, detail: Any, due_at: datetime | None,
                  deadline: datetime | None, waiting_since: datetime | None,
                  query: str | None) -> WaitingStep:
    step = step_text(node_type, query) if node_type else waiting_for
    if waiting_for in ("retry backoff", "loop iteration", "queued"):
        step = f"{waiting_for}: {step}"
    return WaitingStep(instance_id, label, step, node_type or "", waiting_since,
                       {"due_at": due_at, "deadline": deadline}, query)


def _stuck_view(*, instance_id: str, label: str | None, node_type: str | None, reason: str,
                since: datetime | None) -> WaitingStep:
    return WaitingStep(instance_id, label, reason, node_type or "", since)


class PgDurableBackend(Backend):
    """Microsoft's pg_durable (0.2.6): exactly the public API the base class reads."""

    kind = "pg_durable"


class DftuiBackend(Backend):
    """dftui's own schema: the public API plus its run-history and health views."""

    kind = "dftui"

    relations = (*Backend.relations, "node_runs", "node_attempt_history", "loop_history",
                 "instance_runtime", "waiting_instances", "stuck_instances", "step_rate",
                 "queue_depth", "role_limits")

    def _capabilities(self, usable: frozenset[str], *, can_see_others: bool) -> Capabilities:
        caps = super()._capabilities(usable, can_see_others=can_see_others)
        reasons = dict(caps.reasons)
        del reasons["node_runs"]
        if "retry" in reasons:
            reasons["retry"] = "this role may not execute df.retry"
        if "node_runs" not in usable:
            reasons["node_runs"] = "per-node timing and attempts need dftui's df.node_runs view"
        return replace(
            caps,
            reasons=reasons,
            has_node_runs="node_runs" in usable,
            has_attempt_history="node_attempt_history" in usable,
            has_loop_history="loop_history" in usable,
            has_instance_runtime="instance_runtime" in usable,
            has_waiting_instances="waiting_instances" in usable,
            has_stuck_instances="stuck_instances" in usable,
            has_step_rate="step_rate" in usable,
            has_queue_depth="queue_depth" in usable,
            has_role_limits="role_limits" in usable,
        )

    def step_running_sql(self, s: Session) -> str:
        """df.instance_runtime.step_running of list row `i`, read through to_jsonb so a schema
        from before the column (0.3.0) answers false instead of failing the list; looked up
        only for 'pending' rows (CASE evaluates in order)."""
        if not s.capabilities.has_instance_runtime:
            return super().step_running_sql(s)
        return ("CASE WHEN i.status = 'pending' THEN COALESCE((SELECT (pg_catalog.to_jsonb(r)"
                " ->> 'step_running')::boolean FROM df.instance_runtime r"
                " WHERE r.instance_id = i.id::text), false) ELSE false END")

    def runtime(self, s: Session, instance_id: str) -> dict[str, Any] | None:
        if not s.capabilities.has_instance_runtime:
            return None
        row = s._one("SELECT to_jsonb(r) AS j FROM df.instance_runtime r WHERE r.instance_id = %s",
                     (instance_id,))
        return row["j"] if row else None

    def add_run_data(self, s: Session, instance_id: str, nodes: dict[str, NodeInfo]) -> None:
        """df.node_runs (timing, attempts, ran_sql, tree position), df.node_attempt_history and
        df.loop_history, read as JSON so a view that gains columns never breaks the client."""
        caps = s.capabilities
        if not nodes:
            return
        if caps.has_node_runs:
            for run in s._rows("SELECT to_jsonb(r) AS j FROM df.node_runs r WHERE r.instance_id = %s",
                               (instance_id,)):
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
        if caps.has_attempt_history:
            for hist in s._rows(
                "SELECT to_jsonb(h) AS j FROM df.node_attempt_history h WHERE h.instance_id = %s",
                (instance_id,),
            ):
                data = hist["j"]
                node = nodes.get(data.get("node_id"))
                if node is None:
                    continue
                node.attempt_history.append(Attempt(
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
                ))
            for node in nodes.values():
                node.attempt_history.sort(
                    key=lambda a: (a.finished_at or a.started_at or datetime.min.replace(tzinfo=UTC))
                )
        if caps.has_loop_history and any(n.node_type == "LOOP" for n in nodes.values()):
            for loop in s._rows(
                "SELECT to_jsonb(l) AS j FROM df.loop_history l WHERE l.instance_id = %s"
                " ORDER BY l.loop_node_id, l.iteration",
                (instance_id,),
            ):
                data = loop["j"]
                node = nodes.get(data.get("loop_node_id"))
                if node is not None:
                    node.loop_iterations.append(data)

    def waiting(self, s: Session, limit: int) -> list[WaitingStep]:
        """df.waiting_instances: also retry backoffs, loop iterations and queued work."""
        if not s.capabilities.has_waiting_instances:
            return super().waiting(s, limit)
        return s._fetch(kwargs_row(_waiting_view), """
            SELECT w.instance_id, w.label, w.node_type, w.waiting_for, w.detail, w.due_at,
                   w.deadline, w.waiting_since, n.query
              FROM df.waiting_instances w
              LEFT JOIN df.nodes n ON n.instance_id = w.instance_id AND n.id = w.node_id
             ORDER BY w.due_at NULLS LAST, w.waiting_since LIMIT %s
            """, (limit,))

    def stuck(self, s: Session, stuck_after_seconds: int, limit: int) -> list[WaitingStep]:
        if not s.capabilities.has_stuck_instances:
            return []
        return s._fetch(kwargs_row(_stuck_view),
                        "SELECT instance_id, label, node_type, reason, since FROM df.stuck_instances"
                        " ORDER BY since LIMIT %s", (limit,))

    def step_rate(self, s: Session, now: datetime) -> list[float] | None:
        """Steps/s per 10-second bucket over the last 15 minutes, oldest first, empty as 0."""
        if not s.capabilities.has_step_rate:
            return None
        buckets = {r["bucket"]: int(r["steps"])
                   for r in s._rows("SELECT bucket, steps FROM df.step_rate")}
        newest = datetime.fromtimestamp(int(now.timestamp()) // 10 * 10, tz=UTC)
        return [buckets.get(datetime.fromtimestamp(newest.timestamp() - 10 * k, tz=UTC), 0) / 10.0
                for k in range(89, -1, -1)]

    def queue(self, s: Session) -> dict[str, Any] | None:
        if not s.capabilities.has_queue_depth:
            return None
        return s._one("SELECT runnable, waiting, oldest_due FROM df.queue_depth")

    def queue_line(self, s: Session) -> tuple[int, float | None] | None:
        if not s.capabilities.has_queue_depth:
            return None
        row = s._one("SELECT runnable, extract(epoch FROM pg_catalog.now() - oldest_due)"
                     "::float8 AS oldest_s FROM df.queue_depth")
        return (int(row["runnable"] or 0), row["oldest_s"]) if row else None

    def stuck_count(self, s: Session) -> int | None:
        if not s.capabilities.has_stuck_instances:
            return None
        row = s._one("SELECT count(*) AS n FROM (SELECT 1 FROM df.stuck_instances LIMIT 1000) s")
        return int(row["n"]) if row else None

    def role_limits(self, s: Session) -> list[dict[str, Any]]:
        if not s.capabilities.has_role_limits:
            return []
        return s._rows("SELECT role, max_running, max_pending, step_timeout_ms, updated_at "
                       "FROM df.role_limits ORDER BY role")


class NoBackend(Backend):
    """No df schema here: every feature is off, with the reason."""

    kind = "none"

    def capabilities(self, s: Session, *, can_see_others: bool) -> Capabilities:
        return Capabilities(reasons={k: _NO_SCHEMA for k in ("retry", "node_runs", "engines",
                                                             "metrics")})

    def version(self, s: Session, caps: Capabilities, extension_version: str | None) -> str | None:
        return extension_version


def detect(s: Session) -> tuple[ConnectionInfo, Backend]:
    """Who we are, where, and which backend kind answers: dftui's schema (it records its
    version in df_internal.schema_version), pg_durable (the extension, or a df schema of its
    shape without the extension row: restored from a dump, a test fixture) or none."""
    row = s._one(_DETECT_SQL)
    assert row is not None
    backend: Backend
    if row["dftui_schema"]:
        backend = DftuiBackend()
    elif row["pg_durable_version"] is not None or row["owns_instances"] is not None:
        backend = PgDurableBackend()
    else:
        backend = NoBackend()
    caps = backend.capabilities(
        s, can_see_others=bool(row["is_superuser"] or row["bypassrls"] or row["owns_instances"]))
    info = ConnectionInfo(
        role=row["role"],
        database=row["database"],
        server_version=row["server_version"].split(" ")[0],
        backend=backend.kind,
        backend_version=backend.version(s, caps, row["pg_durable_version"]),
        is_superuser=bool(row["is_superuser"]),
        capabilities=caps,
        has_usage=bool(row["has_usage"]),
    )
    return info, backend
