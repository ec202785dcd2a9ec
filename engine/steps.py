"""Leaf node handlers: what one claimed task does inside its transaction.

Every handler runs on a worker connection that is inside `BEGIN … SAVEPOINT step` with the task
row locked. It ends by calling df_internal.complete_task / park_task (the checkpoint, in the same
transaction) or by raising StepFailure, after which the worker rolls back to the savepoint and
records the failure. Orchestration (what runs next) happens in SQL (sql/0.1.0/040_machine.sql).
"""

from __future__ import annotations

import base64
import contextlib
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from croniter import croniter
from psycopg import sql

from engine import http as http_steps
from engine import jsonexact
from engine.activity import step_marker
from engine.config import EngineConfig
from engine.db import connect, scalar
from engine.identity import (
    DESCRIBE_PORTAL,
    Trampolines,
    describe_function,
    exec_function,
    reset_foreign_session,
    rows_function,
    step_function,
)
from engine.node_config import cron_expr, signal_config
from engine.results import (
    Column,
    TypeCache,
    UnsupportedType,
    encoding_query,
    generic_query,
    needs_generic_rows,
)
from engine.sqltext import refused_statement, returns_no_rows
from engine.substitute import (
    SubstitutionError,
    parse_named,
    substitute_results,
    substitute_vars,
)


@dataclass
class Task:
    """One claimed row of df_internal.tasks with everything needed to run it."""

    instance_id: str
    node_id: str
    gen: int
    kind: str
    phase: str
    deadline: datetime | None
    node_type: str | None
    query: str | None
    result_name: str | None
    submitted_by: str
    role_oid: int
    database: str | None
    vars: dict[str, Any]
    named_results: dict[str, Any]
    label: str | None
    attempts: int
    retry_policy: dict[str, Any] | None
    role_name: str | None = None
    role_can_login: bool = False
    role_is_super: bool = False
    superuser_allowed: bool = False
    role_has_usage: bool = False  # USAGE on schema df, now (df.revoke_usage stops the instance)
    # CONNECT on the database the step runs in, now (None: no such database)
    role_can_connect: bool | None = False
    load_error: str | None = None  # the claim row's user data could not be decoded

    def database_elsewhere(self, home: str) -> str | None:
        """The instance's database when it is not the engine's own (steps run there)."""
        return self.database if self.database and self.database != home else None


# Name of the fused statement's result column (complete_task's verdict).
CHECKPOINT_COLUMN = "checkpoint"


@dataclass
class FusedStep:
    """A local SQL step and its checkpoint as one statement (see StepRunner.plan_sql). The
    statement is complete, every value in it a quoted literal: it takes no parameters and is
    never %-formatted."""

    query: str
    text: str  # the step as run (recorded in history)
    key: tuple[int, str, str]  # describe-cache key
    cached: bool  # were the columns taken from the describe cache?


class StepFailure(Exception):
    """The step failed. `kind` feeds the retry classification; `ran_sql` is kept for history."""

    def __init__(self, message: str, *, kind: str = "error", sqlstate: str | None = None,
                 ran_sql: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.sqlstate = sqlstate
        self.ran_sql = ran_sql


class EngineStatementError(Exception):
    """The engine's own checkpoint statement failed: roll back the step and charge the task a
    fault (retried with backoff, failed at the limit: see _Worker._fault). `retry_now`: a
    self-correcting condition (the result shape changed): run it again at once."""

    def __init__(self, message: str, sqlstate: str | None = None, *, retry_now: bool = False) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.retry_now = retry_now


# -- retry policy -----------------------------------------------------------------------------

DEFAULT_RETRYABLE = {
    "serialization_failure", "deadlock", "lock_timeout", "connection",
    "http_5xx", "http_timeout", "http_connection",
}
_SQLSTATE_KINDS = {
    "40001": "serialization_failure",
    "40P01": "deadlock",
    "55P03": "lock_timeout",
    "57P01": "connection",
    "57P02": "connection",
    "57P03": "connection",
}


def failure_kind(sqlstate: str | None) -> str:
    if sqlstate is None:
        return "error"
    if sqlstate.startswith("08"):
        return "connection"
    return _SQLSTATE_KINDS.get(sqlstate, "error")


def retry_delay(policy: dict[str, Any] | None, attempt: int, failure: StepFailure) -> float | None:
    """Seconds until the next attempt, or None when the node should fail now.

    `attempt` is the number of the attempt that just failed (1-based). Exponential backoff with
    full jitter in [50 %, 100 %] of the step, capped at max_backoff_seconds.
    """
    if not policy:
        return None
    max_attempts = int(policy.get("max_attempts") or 1)
    if attempt >= max_attempts:
        return None
    retry_on = policy.get("retry_on")
    allowed = set(retry_on) if retry_on else DEFAULT_RETRYABLE
    if not ({"any", "all", "*"} & allowed or failure.kind in allowed
            or (failure.sqlstate and failure.sqlstate in allowed)):
        return None
    backoff = policy.get("backoff_seconds")
    base = float(backoff if backoff is not None else 1.0)
    cap = float(policy.get("max_backoff_seconds") or 60.0)
    step = min(cap, base * (2 ** (attempt - 1)))
    return step * random.uniform(0.5, 1.0)


# -- handlers ---------------------------------------------------------------------------------

class StepRunner:
    """Runs leaf nodes for one worker connection."""

    def __init__(self, config: EngineConfig, engine_id: str, trampolines: Trampolines,
                 types: TypeCache) -> None:
        self.config = config
        self.engine_id = engine_id
        self.trampolines = trampolines
        self.types = types
        self.describe_cache = DescribeCache()
        # statements whose rows a column definition list cannot describe (read as jsonb);
        # shared by every worker of the process
        self.generic_keys = _GENERIC_KEYS
        self._side: dict[str, psycopg.Connection] = {}
        self._types_by_db: dict[str, TypeCache] = {}
        self.side_active: psycopg.Connection | None = None  # cancelled along with the worker
        self.parked = False  # the last run() parked its task (timer, signal) instead of completing

    # Checkpoints ------------------------------------------------------------------------------
    def complete(self, conn: psycopg.Connection, task: Task, result: Any,
                 details: dict[str, Any] | None, ran_sql: str | None, started: datetime) -> None:
        try:
            conn.execute(
                "SELECT df_internal.complete_task(%s, %s, %s, %s::jsonb, %s::jsonb, %s, %s, %s)",
                (task.instance_id, task.node_id, task.gen, jsonexact.dumps(result),
                 jsonexact.dumps(details) if details is not None else None, ran_sql, self.engine_id, started),
            )
        except psycopg.Error as exc:
            raise EngineStatementError(str(exc), exc.sqlstate) from exc

    def park(self, conn: psycopg.Connection, task: Task, until: datetime | str,
             deadline: datetime | None) -> None:
        self.parked = True
        try:
            conn.execute("SELECT df_internal.park_task(%s, %s, %s, %s, %s)",
                         (task.instance_id, task.node_id, task.gen, until, deadline))
        except psycopg.Error as exc:
            raise EngineStatementError(str(exc)) from exc

    # Dispatch -----------------------------------------------------------------------------------
    def run(self, conn: psycopg.Connection, task: Task, started: datetime) -> None:
        handler = {
            "SQL": self.run_sql,
            "SLEEP": self.run_sleep,
            "WAIT_SCHEDULE": self.run_schedule,
            "SIGNAL": self.run_signal,
            "HTTP": self.run_http,
            "HTTP_MULTIPART": self.run_http,
        }.get(task.node_type or "")
        if handler is None:
            raise StepFailure(f"node type {task.node_type} cannot be run by the engine")
        self.parked = False
        handler(conn, task, started)

    def run_sleep(self, conn: psycopg.Connection, task: Task, started: datetime) -> None:
        # pg_durable's SLEEP result.
        seconds = int((task.query or "0").strip() or 0)
        self.complete(conn, task, {"slept": True, "seconds": seconds}, None, None, started)

    def run_schedule(self, conn: psycopg.Connection, task: Task, started: datetime) -> None:
        cron = cron_expr(task.query)
        if task.phase == "waiting":
            self.complete(conn, task, {"scheduled": True}, None, None, started)  # pg_durable's result
            return
        now = datetime.now(UTC)
        try:
            fire = croniter(cron, now).get_next(datetime)
        except (ValueError, KeyError) as exc:
            raise StepFailure(f"invalid cron expression {cron!r}: {exc}") from exc
        self.park(conn, task, fire, fire)

    def run_signal(self, conn: psycopg.Connection, task: Task, started: datetime) -> None:
        name, timeout = signal_config(task.query)
        try:
            row = conn.execute("SELECT df_internal.take_signal(%s, %s, %s)",
                               (task.instance_id, task.node_id, name)).fetchone()
        except psycopg.Error as exc:
            raise EngineStatementError(str(exc)) from exc
        if row and row[0] is not None:
            self.complete(conn, task, row[0], None, None, started)
            return
        now = datetime.now(UTC)
        if task.phase == "waiting" and task.deadline is not None and now >= task.deadline:
            self.complete(conn, task, {"signal_name": name, "timed_out": True, "data": None},
                          None, None, started)
            return
        if task.phase == "start" and timeout is not None:
            deadline = now + timedelta(seconds=float(timeout))
            self.park(conn, task, deadline, deadline)
        else:
            self.park(conn, task, task.deadline or "infinity", task.deadline)

    @staticmethod
    def identity_problem(task: Task) -> str | None:
        """Why no step may run as the task's submitter, or None: the role must still exist, log
        in, and not be a superuser (unless superuser instances are enabled)."""
        if task.role_name is None:
            return (f"the submitting role (oid {task.role_oid}) no longer exists; "
                    "the step was not run")
        if not task.role_can_login:
            return f"role \"{task.role_name}\" can no longer LOGIN; the step was not run"
        if task.role_is_super and not task.superuser_allowed:
            return (f"role \"{task.role_name}\" is a superuser; superuser instances are disabled "
                    "(pg_durable.enable_superuser_instances)")
        if not task.role_has_usage:
            return (f"role \"{task.role_name}\" no longer has USAGE on schema df (its usage was "
                    "revoked); the step was not run")
        return None

    def check_identity(self, task: Task, *, database: str | None = None) -> str:
        """The submitter's role name, or StepFailure (never retried) when it may not run steps.

        Checked again before every step the engine runs for the submitter (privileges read by
        the claim, in the step's own transaction): the role still exists, may LOGIN, still has
        df usage, is not a superuser (unless enabled) and, for a SQL step (`database` given),
        may CONNECT to the database the step runs in."""
        problem = self.identity_problem(task)
        if problem is not None or task.role_name is None:
            raise StepFailure(problem or "the submitting role no longer exists", kind="identity")
        if database is not None and task.role_can_connect is False:
            raise StepFailure(
                f"role \"{task.role_name}\" does not have CONNECT privilege on database "
                f"\"{database}\"; the step was not run", kind="identity")
        return task.role_name

    def _prepare_sql(self, task: Task, home: str) -> tuple[str, str]:
        """The submitter's role name and the step's text with variables and results filled in."""
        role = self.check_identity(task, database=task.database or home)
        named = parse_named(task.named_results)
        text = substitute_vars(task.query or "", task.vars, task.instance_id, task.label)
        try:
            return role, substitute_results(text, named)
        except SubstitutionError as exc:
            raise StepFailure(str(exc), ran_sql=text) from exc

    def run_sql(self, conn: psycopg.Connection, task: Task, started: datetime) -> None:
        """A step of an instance that names another database: its own transaction there, then
        the checkpoint here (see plan_sql for the others)."""
        role, text = self._prepare_sql(task, conn.info.dbname)
        elsewhere = task.database_elsewhere(conn.info.dbname)
        if not elsewhere:
            raise EngineStatementError("a step in the engine's database must run through plan_sql")
        # The same per-step timeout as a local step (engine default, role ceiling, workflow),
        # decided here in the home database, where the limits live.
        timeout = scalar(conn, "SELECT df_internal.step_timeout_for(%s, %s)",
                         (task.instance_id, int(self.config.step_timeout * 1000)))
        result, details = self._run_in_database(elsewhere, task, role, text, str(timeout or "0"))
        self.complete(conn, task, result, details, text, started)

    def plan_sql(self, conn: psycopg.Connection, task: Task,
                 started: datetime) -> FusedStep | None:
        """How a SQL step runs: None for a step in another database (run_sql); else the
        exactly-once path, the step and its checkpoint as one statement (FusedStep).
        A statement PostgreSQL refuses in a transaction block is refused (StepFailure).

        User code only runs inside the submitter's trampolines: describing (describe_<oid>) and
        executing (step_/rows_/exec_<oid>). The engine's own part of the statement encodes rows
        with built-in functions only: values of user-defined types go through their output
        function (format('%s')), never to_jsonb, which would apply a user-defined cast to json.
        The statement is parsed and planned before any user code runs, so nothing the step does
        (search_path, temporary objects) can change what the engine's part of it refers to.
        """
        if task.node_type != "SQL":
            return None
        _role, text = self._prepare_sql(task, conn.info.dbname)
        refuse_non_transactional(text)
        if task.database_elsewhere(conn.info.dbname):
            return None
        if self.trampolines.search_path(conn.info.dbname, task.role_oid) is None:
            problem = self.trampolines.problem(conn.info.dbname, task.role_oid)
            if problem:
                raise StepFailure(problem, kind="identity")
            raise EngineStatementError("trampoline missing")  # ensured before BEGIN by the worker
        columns, cached, key = self._columns(conn, task, text, _cache_text(task.query or "", text))
        details = {"columns": [c.name for c in columns]} if columns else None
        result_sql = self._result_expression(conn, task, text, columns, self.types,
                                             generic=key in self.generic_keys)
        args = ", ".join(_literal(conn, value) for value in (task.instance_id, task.node_id, task.gen))
        rest = ", ".join(_literal(conn, value) for value in (text, self.engine_id, started))
        query = (f"SELECT df_internal.complete_task({args}, {result_sql}, "
                 f"{_literal(conn, jsonexact.dumps(details) if details else None)}::jsonb, {rest}) "
                 f"AS {CHECKPOINT_COLUMN}")
        return FusedStep(query, text, key, cached)

    def fused_error(self, fused: FusedStep, exc: psycopg.Error) -> Exception:
        """What a failed fused statement means: the user's statement failed (StepFailure), or
        the engine's part did (EngineStatementError: roll back and try the task again)."""
        if not _raised_in_step(exc):
            return EngineStatementError(str(exc), exc.sqlstate)
        if exc.sqlstate == "42804" and "does not match function result type" in str(exc):
            # Either the statement's shape changed since it was described (re-describe), or
            # the column list cannot express its types (e.g. domains, which the protocol
            # reports as their base type): read its rows as jsonb instead.
            if not fused.cached:
                self.generic_keys.add(fused.key)
            self.describe_cache.drop(fused.key)
            return EngineStatementError("result shape changed; re-describing", retry_now=True)
        return StepFailure(_message(exc, fused.text), kind=failure_kind(exc.sqlstate),
                           sqlstate=exc.sqlstate, ran_sql=fused.text)

    def _columns(self, conn: psycopg.Connection, task: Task, text: str,
                 cache_text: str) -> tuple[list[Column], bool, tuple[int, str, str]]:
        path = self.trampolines.search_path(conn.info.dbname, task.role_oid) or ""
        key = (task.role_oid, f"{conn.info.dbname}:{path}", cache_text)
        columns = self.describe_cache.get(key)
        if columns is not None:
            return columns, True, key
        if returns_no_rows(text):
            return [], True, key
        columns = self._describe(conn, task, text)
        self.describe_cache.put(key, columns)
        return columns, False, key

    def _result_expression(self, conn: psycopg.Connection, task: Task, text: str,
                           columns: list[Column], types_cache: TypeCache,
                           generic: bool = False) -> str:
        """SQL expression that runs the step and yields the envelope (no placeholders: the
        step text is a literal in it)."""
        step = f"{_literal(conn, text)}::pg_catalog.text"
        if not columns:
            return (f"(SELECT pg_catalog.jsonb_build_object('rows', '[]'::jsonb, 'row_count', 0) "
                    f"FROM (SELECT {exec_function(task.role_oid)}({step})) AS x)")
        types = types_cache.lookup(conn, {c.type_oid for c in columns})
        try:
            if generic or needs_generic_rows(columns, types):
                enc = generic_query(f"{rows_function(task.role_oid)}({step})")
            else:
                enc = encoding_query(columns, types, f"{step_function(task.role_oid)}({step})", conn)
        except UnsupportedType as exc:
            raise StepFailure(str(exc), ran_sql=text) from exc
        return f"({enc})"

    def _describe(self, conn: psycopg.Connection, task: Task, text: str) -> list[Column]:
        """Result columns of the step, learnt without the engine parsing it as itself.

        describe_<oid> opens a cursor over the step as the submitter (parse analysis and
        planning can run user code); the engine describes that portal, then rolls the savepoint
        back, discarding the portal and anything planning did. Statements that return no rows
        cannot be opened as a cursor (42P11): they have no columns.
        """
        try:
            with conn.pipeline():
                conn.execute("SAVEPOINT describe")
                # (the marker first: the console finds the running step by it, activity.py)
                marker = step_marker(task.instance_id, task.node_id, task.gen)
                conn.execute(f"{marker} SELECT {describe_function(task.role_oid)}(%s::pg_catalog.text)",
                             (text,))
        except psycopg.Error as exc:
            conn.execute("ROLLBACK TO SAVEPOINT describe")
            if exc.sqlstate == "42P11" and "multi-query" in str(exc):
                raise StepFailure(MULTI_STATEMENT, ran_sql=text) from exc
            if exc.sqlstate == "42P11":
                return []
            raise StepFailure(_message(exc, text), sqlstate=exc.sqlstate,
                              kind=failure_kind(exc.sqlstate), ran_sql=text) from exc
        try:
            res = conn.pgconn.describe_portal(DESCRIBE_PORTAL.encode())
            if res.status != psycopg.pq.ExecStatus.COMMAND_OK:
                raise StepFailure(_pq_message(res), sqlstate=_pq_state(res), ran_sql=text)
            enc = conn.info.encoding
            return [
                Column((res.fname(i) or b"?column?").decode(enc), res.ftype(i))
                for i in range(res.nfields)
            ]
        finally:
            conn.execute("ROLLBACK TO SAVEPOINT describe")

    # -- steps that cannot share the checkpoint's transaction (at-least-once) -------------------
    def side_connection(self, database: str) -> psycopg.Connection:
        """An autocommit connection to `database` (cached per worker)."""
        conn = self._side.get(database)
        if conn is None or conn.closed:
            try:
                conn = connect(self.config.dsn, "step", dbname=database)
            except psycopg.OperationalError as exc:
                first = str(exc).strip().splitlines()[-1]
                kind = "identity" if "does not exist" in first else "connection"
                raise StepFailure(f"cannot run the step in database \"{database}\": {first}",
                                  kind=kind) from exc
            self._side[database] = conn
        return conn

    def close_side_connections(self) -> None:
        for conn in self._side.values():
            with contextlib.suppress(Exception):
                conn.close()
        self._side.clear()

    def _run_in_database(self, database: str, task: Task, role: str, text: str,
                         timeout_ms: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Run the step in another database: its own transaction there, then the checkpoint
        here. A crash between the two commits re-runs the step (documented at-least-once).
        `timeout_ms` is the step's statement_timeout, for the whole transaction there."""
        conn = self.side_connection(database)
        allowed = conn.execute(
            "SELECT pg_catalog.has_database_privilege(%s::oid, pg_catalog.current_database(), 'CONNECT')",
            (task.role_oid,)).fetchone()
        if not allowed or not allowed[0]:
            raise StepFailure(f"role \"{role}\" does not have CONNECT privilege on database "
                              f"\"{database}\"", kind="identity")
        path = self.trampolines.ensure(conn, task.role_oid)
        if not path:
            problem = self.trampolines.problem(database, task.role_oid)
            if problem:
                raise StepFailure(problem, kind="identity")
            if self.trampolines.needs_setup(database, task.role_oid):
                raise StepFailure(f"the step's setup in database \"{database}\" is blocked; "
                                  "trying again later", kind="lock_timeout", sqlstate="55P03")
            raise StepFailure(f"the submitting role (oid {task.role_oid}) does not exist in "
                              f"database \"{database}\"", kind="identity")
        self.side_active = conn
        try:
            conn.execute("BEGIN")
            conn.execute("SELECT pg_catalog.set_config('statement_timeout', %s, true)", (timeout_ms,))
            columns = self._describe(conn, task, text)
            result_sql = self._result_expression(conn, task, text, columns, self.types_for(database))
            result = scalar(conn, f"SELECT {result_sql}")  # no params: nothing is %-formatted
            conn.execute("COMMIT")
        except StepFailure:
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")
            raise
        except psycopg.Error as exc:
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")
            raise StepFailure(_message(exc, text), kind=failure_kind(exc.sqlstate),
                              sqlstate=exc.sqlstate, ran_sql=text) from exc
        finally:
            self.side_active = None
            with contextlib.suppress(psycopg.Error):
                reset_foreign_session(conn)
        return result, ({"columns": [c.name for c in columns], "database": database}
                        if columns else {"database": database})

    def types_for(self, database: str) -> TypeCache:
        cache = self._types_by_db.get(database)
        if cache is None:
            cache = self._types_by_db[database] = TypeCache()
        return cache

    def run_http(self, conn: psycopg.Connection, task: Task, started: datetime) -> None:
        role = self.check_identity(task)
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
        try:
            result = http_steps.perform(req, self.config, key)
        except http_steps.HttpPolicyError as exc:
            raise StepFailure(str(exc), kind="http_policy", ran_sql=f"{req.method} {url}") from exc
        except http_steps.HttpTransientError as exc:
            raise StepFailure(str(exc), kind=exc.kind, ran_sql=f"{req.method} {url}") from exc
        self.complete(conn, task, result, None, f"{req.method} {url}", started)


_USER_VAR = re.compile(r"\{(?!sys_instance_id\}|sys_label\})[A-Za-z_][A-Za-z0-9_]*\}")


def _cache_text(template: str, substituted: str) -> str:
    """Key for the describe cache. Scalar substitutions ($name, {sys_…}) change values, not the
    result's columns, so steps share one description per template; user {vars} and $name.*
    relations can change columns, so those are keyed by the substituted text. A stale entry is
    caught anyway: the trampoline refuses rows whose types differ (42804) and we re-describe."""
    if ".*" in template or _USER_VAR.search(template):
        return substituted
    return "template:" + template


def refuse_non_transactional(text: str) -> None:
    """Refuse a step containing a statement PostgreSQL will not run inside a transaction block
    or a function (VACUUM, CREATE INDEX CONCURRENTLY, ...).

    The engine can only guarantee the submitter's identity inside the SECURITY DEFINER
    trampoline, where PostgreSQL forbids changing it. Running such a statement outside one
    would mean a plain SET ROLE on the engine's privileged session, which any user code the
    statement triggers (an index expression, a cast in a table rewrite, a function) could undo
    with RESET ROLE; the engine cannot log in as the submitter instead (it has no credentials).
    So these statements are refused with a clear message and never retried. The check is a
    convenience (a readable error): missed, the statement would reach the trampoline and
    PostgreSQL would refuse it there.
    """
    kind = refused_statement(text)
    if kind:
        raise StepFailure(
            f"{kind} cannot run as a workflow step: it cannot run inside a transaction block, and "
            "the engine runs every step inside one, as the submitting role; run it outside "
            "the workflow (e.g. from a scheduled job of the role itself)",
            kind="unsupported", ran_sql=text)


# pg_durable runs a step as one prepared statement (sqlx), which PostgreSQL refuses for several
# statements; here the describe cursor refuses them ("cannot open multi-query plan as cursor").
MULTI_STATEMENT = ("a step must be a single SQL statement; this one has several (split it into "
                   "steps with ~>, or wrap the statements in a DO block or a function)")
# An unknown $reference is left in the text and PostgreSQL reports a syntax error at "$".
_LEFT_OVER_REF = re.compile(r"(?<![\w$])\$([A-Za-z_][A-Za-z0-9_]*)(?![A-Za-z0-9_$])")


def _unknown_reference(text: str) -> str | None:
    """The first $name left in substituted step text (known names were all replaced)."""
    match = _LEFT_OVER_REF.search(text)
    return match.group(1) if match else None


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


def _raised_in_step(exc: psycopg.Error) -> bool:
    """Did the error come from the user's statement (inside the trampoline)?"""
    context = exc.diag.context or ""
    return "df_exec." in context


_GENERIC_KEYS: set[tuple[int, str, str]] = set()


class DescribeCache:
    """(role, search_path, statement) → result columns. Bounded; one per worker."""

    def __init__(self, size: int = 512) -> None:
        self._items: dict[tuple[int, str, str], list[Column]] = {}
        self._size = size

    def get(self, key: tuple[int, str, str]) -> list[Column] | None:
        return self._items.get(key)

    def put(self, key: tuple[int, str, str], columns: list[Column]) -> None:
        if len(self._items) >= self._size:
            self._items.pop(next(iter(self._items)))
        self._items[key] = columns

    def drop(self, key: tuple[int, str, str]) -> None:
        self._items.pop(key, None)


def _literal(conn: psycopg.Connection, value: Any) -> str:
    """`value` as a SQL literal quoted for `conn` (NULL for None)."""
    return sql.Literal(value).as_string(conn)


def _message(exc: psycopg.Error, text: str | None = None) -> str:
    """The error as one line. A syntax error at a `$` left in the step (`text`, substituted)
    names the result it refers to: no earlier step was named that."""
    diag = exc.diag
    msg = diag.message_primary or str(exc).strip().splitlines()[0]
    if diag.message_detail:
        msg += f" ({diag.message_detail})"
    if text is not None and exc.sqlstate == "42601" and 'at or near "$' in msg:
        name = _unknown_reference(text)
        if name is not None:
            msg = (f"${name} refers to no named result: no earlier step of this workflow is named "
                   f"\"{name}\" (name one with |=> '{name}' or df.as) [{msg}]")
    return msg


def _pq_message(res: psycopg.pq.abc.PGresult) -> str:
    raw = res.error_field(psycopg.pq.DiagnosticField.MESSAGE_PRIMARY) or res.error_message
    return raw.decode(errors="replace").strip()


def _pq_state(res: psycopg.pq.abc.PGresult) -> str | None:
    raw = res.error_field(psycopg.pq.DiagnosticField.SQLSTATE)
    return raw.decode() if raw else None
