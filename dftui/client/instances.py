"""Reading instances: the list (keyset pages, filters, status counts, labels) and one instance
with its nodes. Everything goes through df.instances / df.nodes, which RLS filters to what the
connected role may see; per-backend differences are the adapter's (dftui.client.backends).
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime
from typing import Any

from psycopg.rows import class_row, dict_row, kwargs_row

from dftui import timings
from dftui.client.errors import ClientError, InputError
from dftui.client.models import (
    COUNT_CAP,
    InstanceDetail,
    InstancePage,
    InstanceSummary,
    NodeInfo,
    StatusCounts,
    borrow_column_orders,
    json_value,
    ordered_result,
    parse_ts,
)
from dftui.client.session import Session
from dftui.vocabulary import COMPOSITE_NODE_TYPES, STATUSES, step_text
from engine import jsonexact

_ID_RE = re.compile(r"^[0-9a-f]{8}$")
# The list's server-side orders besides "started" (created_at): each column as the SQL key(s)
# rows are ordered by, over list row `i` and its current leaf step `s`, never NULL (a row
# comparison with a NULL is NULL, which would end the keyset walk); empty values sort last.
# Ties are broken by (created_at, id), so every order is total and pages never overlap.
SORT_KEYS: dict[str, tuple[str, ...]] = {
    "id": ("i.id",),
    "label": ("i.label IS NULL", "COALESCE(pg_catalog.lower(i.label), '')"),
    "status": ("i.status",),
    "step": ("s.node_type IS NULL", "COALESCE(s.node_type, '')",
             "COALESCE(pg_catalog.lower(s.query), '')"),
    "duration": ("pg_catalog.date_part('epoch', COALESCE(i.completed_at, CASE WHEN i.status IN"
                 " ('completed', 'failed', 'cancelled') THEN i.updated_at END, pg_catalog.now())"
                 " - i.created_at)",),
    "by": ("i.submitted_by::text",),
}
# The composite node types as a SQL list, for "the current leaf step" queries.
_COMPOSITE_SQL = ", ".join(f"'{t}'" for t in sorted(COMPOSITE_NODE_TYPES))


def check_id(instance_id: str) -> str:
    """The normalised id; InputError when it is not 8 hex digits."""
    value = (instance_id or "").strip().lower()
    if not _ID_RE.match(value):
        raise InputError(f"invalid instance id {instance_id!r} (expected 8 hex digits)")
    return value


def _summary(*, step_type: str | None, step_query: str | None, step_name: str | None,
             **row: Any) -> InstanceSummary:
    """Row factory target: a list row, its current leaf step rendered as text."""
    current = step_text(step_type, step_query, step_name) if step_type else None
    return InstanceSummary(**row, current_step=current)


class Instances(Session):
    """List, filter, count and show instances."""

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
        sort: str | None = None,
        descending: bool = False,
    ) -> InstancePage:
        """One keyset page, newest first (`created_at DESC, id ASC`, like df.list_instances),
        or ordered by another column (`sort`, one of SORT_KEYS; `descending` reverses it) over
        every matching row — the server sorts, so page 2 continues page 1's order.

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
        if sort is not None and sort not in SORT_KEYS:
            raise ClientError(f"unknown sort {sort!r} (expected one of {', '.join(SORT_KEYS)})")
        params: dict[str, Any] = {"limit": limit + 1}
        where = _filter_where(params, label=label, label_like=label_like, text=text, since=since)
        if status is not None:
            where.append(self._status_where(status, where, params))
        if sort is not None:
            return self._sorted_page(where, params, sort, descending, after, limit)
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
        rows = self._fetch(
            kwargs_row(_summary),
            f"""{self._list_select()}
             WHERE {" AND ".join(where)}
             ORDER BY {order}
             LIMIT %(limit)s
            """,
            params,
        )
        page = rows[:limit]
        next_cursor = (page[-1].created_at, page[-1].id) if len(rows) > limit else None
        return InstancePage(page, next_cursor)

    def _list_select(self, extra: str = "") -> str:
        """The list's SELECT … FROM: each row with its current leaf step `s` (the running one,
        or the failed one of a failed instance)."""
        step_running = self._adapter().step_running_sql(self)
        return f"""
            SELECT i.id, i.label, i.status, i.submitted_by::text AS submitted_by, i.created_at,
                   i.updated_at, i.completed_at,
                   s.node_type AS step_type, s.query AS step_query,
                   s.result_name AS step_name, {step_running} AS step_running{extra}
              FROM df.instances i
              LEFT JOIN LATERAL (
                    SELECT n.node_type, pg_catalog.left(n.query, 300) AS query, n.result_name
                      FROM df.nodes n
                     WHERE i.status IN ('running', 'pending', 'failed')
                       AND n.instance_id = i.id
                       AND n.status = CASE i.status WHEN 'failed' THEN 'failed' ELSE 'running' END
                       AND n.node_type NOT IN ({_COMPOSITE_SQL})
                     ORDER BY n.updated_at DESC LIMIT 1) s ON TRUE"""

    def _sorted_page(self, where: list[str], params: dict[str, Any], sort: str,
                     descending: bool, after: tuple[Any, ...] | None,
                     limit: int) -> InstancePage:
        """A keyset page in `sort`'s order: the row (keys…, created_at, id) ascending, or all
        of it descending. The cursor is that row of the page's last instance."""
        keys = [*SORT_KEYS[sort], "i.created_at", "i.id"]
        names = [f"sort_k{n}" for n in range(len(keys))]
        direction = "DESC" if descending else "ASC"
        outer = []
        if after is not None:
            if len(after) != len(keys):
                raise ClientError("the list's position does not match its order; reload it")
            marks = ", ".join(f"%(after{n})s" for n in range(len(keys)))
            outer.append(f"({', '.join(names)}) {'<' if descending else '>'} ({marks})")
            params.update({f"after{n}": value for n, value in enumerate(after)})
        extra = "".join(f", {key} AS {name}" for key, name in zip(keys, names, strict=True))
        rows = self._rows(
            f"""SELECT * FROM ({self._list_select(extra)}
             WHERE {" AND ".join(where)}) q
             WHERE {" AND ".join(outer) or "TRUE"}
             ORDER BY {", ".join(f"{name} {direction}" for name in names)}
             LIMIT %(limit)s
            """,
            params,
        )
        page = [_summary(**{k: v for k, v in r.items() if not k.startswith("sort_k")})
                for r in rows[:limit]]
        last = rows[limit - 1] if len(rows) > limit else None
        next_cursor = tuple(last[name] for name in names) if last is not None else None
        return InstancePage(page, next_cursor)

    def refresh_instances(self, ids: list[str]) -> dict[str, InstanceSummary]:
        """Current state of the given (already listed) instances, for cheap live refresh."""
        if not ids:
            return {}
        rows = self._fetch(
            class_row(InstanceSummary),
            """
            SELECT i.id, i.label, i.status, i.submitted_by::text AS submitted_by, i.created_at,
                   i.updated_at, i.completed_at, NULL::text AS current_step
              FROM df.instances i WHERE i.id = ANY(%s)
            """,
            (ids,),
        )
        return {r.id: r for r in rows}

    def shown_running(self, where: list[str], params: dict[str, Any]) -> list[str]:
        """The 'pending' instances matching `where` whose first step is executing now: the
        console shows them running (InstanceSummary.shown_status), so the Running tab lists
        and counts them and the Pending tab does not. Looked for among the COUNT_CAP oldest
        pending ones (a bounded index scan; claims favour the oldest work); none where the
        backend cannot tell (pg_durable)."""
        expr = self._adapter().step_running_sql(self)
        if expr == "false":
            return []
        rows = self._rows(
            f"""SELECT i.id FROM (SELECT i.* FROM df.instances i
                 WHERE i.status = 'pending' AND {" AND ".join(where)}
                 ORDER BY i.created_at LIMIT %(shown_scan)s) i
               WHERE {expr}""",
            {**params, "shown_scan": COUNT_CAP},
        )
        return [r["id"] for r in rows]

    def _status_where(self, status: str, where: list[str], params: dict[str, Any]) -> str:
        """The WHERE term of a status filter as the console shows statuses: 'running' takes in
        the pending instances shown running (`shown_running`), 'pending' leaves them out."""
        params["status"] = status
        shown = self.shown_running(where, params) if status in ("running", "pending") else []
        if not shown:
            return "i.status = %(status)s"
        params["shown_running"] = shown
        if status == "running":
            return "(i.status = %(status)s OR i.id = ANY(%(shown_running)s))"
        return "i.status = %(status)s AND i.id <> ALL(%(shown_running)s)"

    def status_counts(self, *, label: str | None = None, cap: int = COUNT_CAP,
                      label_like: str | None = None, text: str | None = None,
                      since: datetime | None = None) -> StatusCounts:
        """Per-status counts under the same filters as `list_instances`, without scanning the
        whole table.

        Each status is counted exactly up to `cap` rows through the (status, created_at, id)
        index; a status above the cap gets the planner's row estimate instead (RLS-aware, since
        the policy is part of the plan). Cost stays bounded with millions of instances.
        A pending instance shown running (`shown_running`) is counted as running, as the
        Running tab lists it.
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
        moved = len(self.shown_running(where, params)) if counts.get("pending") else 0
        if moved:
            counts["pending"] = max(counts["pending"] - moved, 0)
            counts["running"] = counts.get("running", 0) + moved
        return StatusCounts(counts, frozenset(estimated))

    def _estimate(self, status: str, extra: str, params: dict[str, Any]) -> int:
        query = ("EXPLAIN (FORMAT JSON) SELECT 1 FROM df.instances i WHERE i.status = %(status)s"
                 + extra)
        with self._cursor(dict_row) as cur:
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
        """The instance row plus its output (and the engine's runtime data when exposed)."""
        instance_id = check_id(instance_id)
        found = self._fetch(
            class_row(InstanceDetail),
            """
            SELECT i.id, i.label, i.status, i.submitted_by::text AS submitted_by, i.database,
                   i.root_node, i.created_at, i.updated_at, i.completed_at, NULL::text AS output
              FROM df.instances i WHERE i.id = %s
            """,
            (instance_id,),
        )
        if not found:
            raise ClientError("Instance not found or access denied")
        backend = self._adapter()
        row = replace(found[0], output=self._ordered_output(
            instance_id, backend.output(self, instance_id, found[0].root_node)))
        runtime = backend.runtime(self, instance_id)
        if runtime:
            row = replace(
                row,
                started_at=parse_ts(runtime.get("started_at")),
                finished_at=parse_ts(runtime.get("finished_at")),
                error=runtime.get("error"),
                cancel_reason=runtime.get("cancel_reason"),
                execution=runtime.get("execution"),
                step_running=bool(runtime.get("step_running")),
            )
        if row.status == "failed" and not row.error:
            row = replace(row, error=row.output)
        return row

    def nodes(self, instance_id: str, detail: InstanceDetail | None = None) -> list[NodeInfo]:
        """The instance's nodes (with inferred status), plus timing, attempts and loop
        iterations where the backend records them, with true spans and distinct attempt
        numbers (dftui.timings). `detail` saves re-reading the instance."""
        instance_id = check_id(instance_id)
        backend = self._adapter()
        by_id = backend.nodes(self, instance_id)
        backend.add_run_data(self, instance_id, by_id)
        found = borrow_column_orders(list(by_id.values()))
        if self.capabilities.has_node_runs and found:
            parents = {n.id: (n.parent_id, n.slot) for n in found}
            timings.number_attempts(found, parents)
            timings.fix_timings(detail or self.instance(instance_id), found, parents)
        return found

    def _ordered_output(self, instance_id: str, output: str | None) -> str | None:
        """The output with its rows' keys in the statement's column order: it is a jsonb copy
        of a node's result (keys sorted), and the node that produced it has the column list
        (borrow_column_orders). Unchanged when no node records one (pg_durable's backend)."""
        if not output or '"rows"' not in output:
            return output
        try:
            found = self._one(
                "SELECT n.status_details::text AS details FROM df.nodes n "
                "WHERE n.instance_id = %s AND n.result = %s::jsonb "
                "AND jsonb_typeof(n.status_details -> 'columns') = 'array' "
                "ORDER BY n.updated_at DESC LIMIT 1", (instance_id, output))
        except ClientError:
            return output
        if not found:
            return output
        value = json_value(output)
        ordered = ordered_result(value, json_value(found["details"]))
        return output if ordered is value else jsonexact.dumps(ordered, ensure_ascii=False)

    def explain(self, source: str) -> str:
        """df.explain of an instance id, a node envelope, DSL source text or plain SQL."""
        if not source.strip():
            raise ClientError("nothing to explain")
        row = self._one("SELECT df.explain(%s) AS e", (source,))
        return row["e"] if row else ""


def _like(text: str) -> str:
    """`text` as a LIKE pattern matching itself anywhere."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _filter_where(params: dict[str, Any], *, label: str | None = None,
                  label_like: str | None = None, text: str | None = None,
                  since: datetime | None = None) -> list[str]:
    """The WHERE terms (and their parameters, added to `params`) shared by the list and the
    status counts, so the counts always follow the filter (the status term is the list's:
    `Instances._status_where`)."""
    where = ["TRUE"]
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
