"""The leaf kinds that are not SQL: SLEEP, WAIT_SCHEDULE, SIGNAL, HTTP and HTTP_MULTIPART.

Each handler runs inside the task's transaction (behind savepoint `step`, its row locked) and
*returns* what the checkpoint is — Complete (a result) or Park (wait until a time) — which the
step transaction writes (engine/transaction.py); a handler never writes a checkpoint itself, so
a task's path is claim → transaction → handler → transaction, and back to the worker. A step
that cannot run raises StepFailure. SQL steps are engine/sql_steps.py.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from croniter import croniter

from engine import http as http_steps
from engine import jsonexact
from engine.claim import Task
from engine.config import EngineConfig
from engine.errors import EngineStatementError, StepFailure
from engine.node_config import cron_expr, signal_config
from engine.substitute import SubstitutionError, parse_named, substitute_results, substitute_vars


@dataclass(frozen=True)
class Complete:
    """The node finished with `result` (df_internal.complete_task)."""

    result: Any
    details: dict[str, Any] | None = None
    ran_sql: str | None = None  # what ran, for the attempt history


@dataclass(frozen=True)
class Park:
    """The node waits: its task runs again at `until` (df_internal.park_task)."""

    until: datetime | str  # a time, or 'infinity' (a signal without a timeout)
    deadline: datetime | None


Checkpoint = Complete | Park


class Leaves:
    """Runs the non-SQL leaves for one worker."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config

    def run(self, conn: psycopg.Connection, task: Task) -> Checkpoint:
        handler = {
            "SLEEP": self.run_sleep,
            "WAIT_SCHEDULE": self.run_schedule,
            "SIGNAL": self.run_signal,
            "HTTP": self.run_http,
            "HTTP_MULTIPART": self.run_http,
        }.get(task.node_type or "")
        if handler is None:
            raise StepFailure(f"node type {task.node_type} cannot be run by the engine")
        return handler(conn, task)

    @staticmethod
    def run_sleep(_conn: psycopg.Connection, task: Task) -> Checkpoint:
        # A workflow's first sleep comes at once to be parked until its end (the deadline the
        # interpreter gave it: the instance is taken up, so it reads running); any other
        # sleep's task comes due when the timer ends: the wait is over.
        if task.phase == "start" and task.deadline is not None and datetime.now(UTC) < task.deadline:
            return Park(task.deadline, None)
        seconds = int((task.query or "0").strip() or 0)
        return Complete({"slept": True, "seconds": seconds})  # pg_durable's SLEEP result

    @staticmethod
    def run_schedule(_conn: psycopg.Connection, task: Task) -> Checkpoint:
        cron = cron_expr(task.query)
        if task.phase == "waiting":
            return Complete({"scheduled": True})  # pg_durable's result
        try:
            fire = croniter(cron, datetime.now(UTC)).get_next(datetime)
        except (ValueError, KeyError) as exc:
            raise StepFailure(f"invalid cron expression {cron!r}: {exc}") from exc
        return Park(fire, fire)

    @staticmethod
    def run_signal(conn: psycopg.Connection, task: Task) -> Checkpoint:
        name, timeout = signal_config(task.query)
        try:
            row = conn.execute("SELECT df_internal.take_signal(%s, %s, %s)",
                               (task.instance_id, task.node_id, name)).fetchone()
        except psycopg.Error as exc:
            raise EngineStatementError(str(exc)) from exc
        if row and row[0] is not None:
            return Complete(row[0])
        now = datetime.now(UTC)
        if task.phase == "waiting" and task.deadline is not None and now >= task.deadline:
            return Complete({"signal_name": name, "timed_out": True, "data": None})
        if task.phase == "start" and timeout is not None:
            deadline = now + timedelta(seconds=float(timeout))
            return Park(deadline, deadline)
        return Park(task.deadline or "infinity", task.deadline)

    def run_http(self, conn: psycopg.Connection, task: Task) -> Checkpoint:
        role = task.check_identity()
        fn = ("df.http(text,text,text,jsonb,integer)" if task.node_type == "HTTP"
              else "df.http_multipart(text,text,jsonb,jsonb,integer)")
        allowed = conn.execute(
            "SELECT pg_catalog.has_function_privilege(%s::oid, "
            "pg_catalog.to_regprocedure(%s), 'EXECUTE')", (task.role_oid, fn)
        ).fetchone()
        if not allowed or not allowed[0]:
            raise StepFailure(f"role \"{role}\" does not have EXECUTE privilege on {fn}", kind="identity")
        cfg = jsonexact.loads(task.query or "{}")
        named = parse_named(task.named_results)

        def sub(value: str | None) -> str | None:
            if value is None:
                return None
            value = substitute_vars(value, task.vars, task.instance_id, task.label)
            return substitute_results(value, named, raw=True)

        try:
            url = sub(cfg.get("url")) or ""
            body = cfg.get("body")
            body = sub(body if isinstance(body, str) or body is None else jsonexact.dumps(body))
            headers = {str(k): sub(str(v)) or "" for k, v in (cfg.get("headers") or {}).items()}
            parts = [_resolve_part(p, named) for p in cfg["parts"]] if cfg.get("parts") else None
        except SubstitutionError as exc:
            raise StepFailure(str(exc)) from exc
        req = http_steps.HttpRequest(
            url=url, method=(cfg.get("method") or "POST").upper(), body=body, headers=headers,
            timeout=float(cfg.get("timeout_seconds") or 30), parts=parts,
        )
        key = f"dftui-{task.instance_id}-{task.node_id}-{task.gen}"
        ran = f"{req.method} {url}"
        try:
            result = http_steps.perform(req, self.config, key)
        except http_steps.HttpPolicyError as exc:
            raise StepFailure(str(exc), kind="http_policy", ran_sql=ran) from exc
        except http_steps.HttpTransientError as exc:
            raise StepFailure(str(exc), kind=exc.kind, ran_sql=ran) from exc
        return Complete(result, None, ran)


_WHOLE_REF = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)(?:\.([A-Za-z_][A-Za-z0-9_]*))?\??$")


def _resolve_part(part: dict[str, Any], named: dict[str, Any]) -> dict[str, Any]:
    """A multipart part's data_b64 is base64, or one whole-value reference like "$resp.body":
    an HTTP body already base64-encoded is used as is, any other value is encoded here."""
    data = part.get("data_b64") or ""
    match = _WHOLE_REF.match(data)
    if match and match.group(1) in named:
        ref = named[match.group(1)].result
        if (isinstance(ref, dict) and match.group(2) == "body"
                and ref.get("encoding") == "base64"):
            data = ref.get("body") or ""
        else:
            text = substitute_results(data, named, raw=True)
            data = base64.b64encode(text.encode()).decode()
    return {**part, "data_b64": data}
