"""SQL steps: from a claimed task to the one statement that runs it and writes its checkpoint.

`SqlSteps.plan` takes a SQL task through every stage, in order, and returns without calling
back: the identity re-check (Task.check_identity), variable and result substitution
(engine/substitute.py), the refusal of statement kinds that cannot run in a transaction, the
trampoline check, the result columns (describe cache, or `describe_<oid>` as the submitter) and
the result encoding (engine/results.py). What it returns is either a FusedStep — the step and
its checkpoint as one complete statement, run by the step transaction in one round trip
(exactly once) — or an Elsewhere step, for an instance that names another database: run there
by `run_elsewhere` in its own transaction, then checkpointed here (at least once).

User code only runs inside the submitter's trampolines (engine/identity.py): describing
(describe_<oid>) and executing (step_/rows_/exec_<oid>). The engine's own part of the
statement encodes rows with built-in functions only; the statement is parsed and planned
before any user code runs, so nothing the step does (search_path, temporary objects) can change
what the engine's part of it refers to.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from engine import jsonexact
from engine.activity import step_marker
from engine.claim import Task
from engine.config import EngineConfig
from engine.db import connect, scalar
from engine.errors import (
    EngineStatementError,
    StepFailure,
    is_error,
    pq_message,
    pq_state,
    raised_in_step,
    step_message,
)
from engine.identity import (
    Trampolines,
    describe_function,
    exec_function,
    reset_foreign_session,
    rows_function,
    step_function,
)
from engine.keys import DESCRIBE_PORTAL
from engine.leaves import Complete
from engine.results import (
    Column,
    TypeCache,
    UnsupportedType,
    encoding_query,
    generic_query,
    needs_generic_rows,
)
from engine.retry import failure_kind
from engine.sqltext import refused_statement, returns_no_rows
from engine.substitute import (
    SubstitutionError,
    parse_named,
    substitute_results,
    substitute_vars,
)

# Name of the fused statement's result column (complete_task's verdict).
CHECKPOINT_COLUMN = "checkpoint"


@dataclass
class FusedStep:
    """A local SQL step and its checkpoint as one statement (see SqlSteps.plan). The statement
    is complete, every value in it a quoted literal: it takes no parameters and is never
    %-formatted."""

    query: str
    text: str  # the step as run (recorded in history)
    key: tuple[int, str, str]  # describe-cache key
    cached: bool  # were the columns taken from the describe cache?


@dataclass(frozen=True)
class Elsewhere:
    """A SQL step of an instance that names another database (see SqlSteps.run_elsewhere)."""

    database: str
    role: str
    text: str  # substituted


# A step sharing its transaction with other claimed tasks runs at most this long (its own
# timeout when that is shorter): until the batch commits, the checkpoints of the steps before it
# and the row locks of the tasks after it wait on it, and a long step would hold every one of
# them hostage (a quick step queued behind pg_sleep(600) in one claim waited ten minutes). Past
# it the step gives way: rolled back to its savepoint, uncharged, it runs again alone.
BATCHED_STEP_CAP_MS = 1000

def capped_timeout_ms(own_ms: int, cap_ms: int) -> int:
    """The statement_timeout a step runs under: its own timeout (0: none; the claim read it with
    df_internal.step_timeout_for: engine default, role ceiling, workflow value), lowered to the
    batch cap when there is one. One rule for every place a step can run."""
    if cap_ms > 0 and (own_ms == 0 or own_ms > cap_ms):
        return cap_ms
    return own_ms


def step_timeout_sql(task: Task, cap_ms: int) -> str:
    """SET LOCAL statement_timeout for the step about to run in this transaction (an integer
    literal: nothing of it comes from a role; the next RESET ALL takes it away)."""
    return f"SET LOCAL statement_timeout = {int(capped_timeout_ms(task.step_timeout_ms, cap_ms))}"


class SqlSteps:
    """Plans and runs SQL steps for one worker (its describe cache, its side connections)."""

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
        # BATCHED_STEP_CAP_MS while the worker's transaction holds other tasks too, else 0
        self.batch_cap_ms = 0
        # Told the server session a step in another database runs on (the worker journals it:
        # the console finds the step's session there, engine/activity.py).
        self.on_side_session: Callable[[int], None] | None = None

    def plan(self, conn: psycopg.Connection, task: Task,
             started: datetime) -> FusedStep | Elsewhere:
        """How this SQL step runs: the exactly-once FusedStep, or Elsewhere (another database).
        Raises StepFailure when it cannot run at all (identity, substitution, a statement
        PostgreSQL refuses in a transaction block, a type it cannot encode)."""
        home = conn.info.dbname
        # 1. who runs it: the submitter, re-checked now (claim.py)
        role = task.check_identity(database=task.database or home)
        # 2. what runs: {vars}, then $results (substitute.py)
        text = substitute_vars(task.query or "", task.vars, task.instance_id, task.label)
        try:
            text = substitute_results(text, parse_named(task.named_results))
        except SubstitutionError as exc:
            raise StepFailure(str(exc), ran_sql=text) from exc
        refuse_non_transactional(text)
        elsewhere = task.database_elsewhere(home)
        if elsewhere:
            return Elsewhere(elsewhere, role, text)
        # 3. through which trampoline (made by the worker before the batch's transaction)
        if self.trampolines.search_path(home, task.role_oid) is None:
            problem = self.trampolines.problem(home, task.role_oid)
            if problem:
                raise StepFailure(problem, kind="identity")
            raise EngineStatementError("trampoline missing")  # ensured before BEGIN by the worker
        # 4. its result columns, 5. how they are encoded, 6. the checkpoint around it
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

    @staticmethod
    def live_only(conn: psycopg.Connection, fused: FusedStep, task: Task) -> str:
        """The fused statement, run only while its task is live: a one-time filter PostgreSQL
        evaluates before the statement's subqueries, so a step fenced earlier in its batch (a
        lost RACE, a failed JOIN) is not run at all; the statement then returns no row."""
        args = ", ".join(_literal(conn, v) for v in (task.instance_id, task.node_id, task.gen))
        return f"{fused.query} WHERE df_internal.task_is_live({args})"

    def fused_error(self, fused: FusedStep, exc: psycopg.Error) -> Exception:
        """What a failed fused statement means: the user's statement failed (StepFailure), or
        the engine's part did (EngineStatementError: roll back and try the task again)."""
        if not raised_in_step(exc):
            return EngineStatementError(str(exc), exc.sqlstate)
        if isinstance(exc, pg_errors.DatatypeMismatch) and "does not match function result type" in str(exc):
            # Either the statement's shape changed since it was described (re-describe), or
            # the column list cannot express its types (e.g. domains, which the protocol
            # reports as their base type): read its rows as jsonb instead.
            if not fused.cached:
                self.generic_keys.add(fused.key)
            self.describe_cache.drop(fused.key)
            return EngineStatementError("result shape changed; re-describing", retry_now=True)
        return StepFailure(step_message(exc, fused.text), kind=failure_kind(exc.sqlstate),
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
        columns = self._describe(conn, task, text, local_timeout=True)
        self.describe_cache.put(key, columns)
        return columns, False, key

    def _result_expression(self, conn: psycopg.Connection, task: Task, text: str,
                           columns: list[Column], types_cache: TypeCache,
                           generic: bool = False) -> str:
        """SQL expression that runs the step and yields the envelope (no placeholders: the
        step text is a literal in it). Values of user-defined types go through their output
        function (format('%s')), never to_jsonb, which would apply a user-defined cast."""
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

    def _describe(self, conn: psycopg.Connection, task: Task, text: str, *,
                  local_timeout: bool = False) -> list[Column]:
        """Result columns of the step, learnt without the engine parsing it as itself.

        describe_<oid> opens a cursor over the step as the submitter (parse analysis and
        planning can run user code); the engine describes that portal, then rolls the savepoint
        back, discarding the portal and anything planning did. Statements that return no rows
        cannot be opened as a cursor (InvalidCursorDefinition): they have no columns.

        Planning is part of the step: it folds IMMUTABLE functions with constant arguments, so
        a step can sleep while it is described. `local_timeout` (a step in the engine's
        database) sets the step's statement_timeout inside the savepoint first, in the same
        pipeline (its rollback takes it away again); a step in another database has it for its
        whole transaction there.
        """
        try:
            with conn.pipeline():
                conn.execute("SAVEPOINT describe")
                if local_timeout:
                    conn.execute(step_timeout_sql(task, self.batch_cap_ms))
                # (the marker first: the console finds the running step by it, activity.py)
                marker = step_marker(task.instance_id, task.node_id, task.gen)
                conn.execute(f"{marker} SELECT {describe_function(task.role_oid)}(%s::pg_catalog.text)",
                             (text,))
        except psycopg.Error as exc:
            conn.execute("ROLLBACK TO SAVEPOINT describe")
            if isinstance(exc, pg_errors.InvalidCursorDefinition):
                if "multi-query" in str(exc):
                    raise StepFailure(MULTI_STATEMENT, ran_sql=text) from exc
                return []
            raise StepFailure(step_message(exc, text), sqlstate=exc.sqlstate,
                              kind=failure_kind(exc.sqlstate), ran_sql=text) from exc
        try:
            res = conn.pgconn.describe_portal(DESCRIBE_PORTAL.encode())
            if res.status != psycopg.pq.ExecStatus.COMMAND_OK:
                raise StepFailure(pq_message(res), sqlstate=pq_state(res), ran_sql=text)
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
            # A new session may be to another database of the same name: nothing learnt
            # about the old one (its df_exec, trampolines, types) is trusted here.
            self.trampolines.forget(database)
            self._types_by_db.pop(database, None)
            self._side[database] = conn
        return conn

    def _wipe_or_drop(self, database: str, conn: psycopg.Connection) -> None:
        """Wipe a side session after a failed step (its transaction rolled back; dblink
        connections survive that); a session that cannot be wiped is never used again."""
        try:
            if conn.pgconn.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.execute("ROLLBACK")
            reset_foreign_session(conn)
        except psycopg.Error:
            self._discard_side(database, conn)

    def _discard_side(self, database: str, conn: psycopg.Connection) -> None:
        """Never use this side session again."""
        if self._side.get(database) is conn:
            del self._side[database]
        with contextlib.suppress(Exception):
            conn.close()

    def close_side_connections(self) -> None:
        for conn in self._side.values():
            with contextlib.suppress(Exception):
                conn.close()
        self._side.clear()

    def run_elsewhere(self, home: psycopg.Connection, step: Elsewhere, task: Task) -> Complete:
        """Run the step in another database: its own transaction there; the caller writes the
        checkpoint here. A crash between the two commits re-runs the step (documented
        at-least-once)."""
        database, role, text = step.database, step.role, step.text
        # The same per-step timeout as a local step (engine default, role ceiling, workflow),
        # decided in the home database, where the limits live; for the whole transaction there.
        timeout_ms = str(capped_timeout_ms(task.step_timeout_ms, self.batch_cap_ms))
        conn = self.side_connection(database)
        connect_check = ("SELECT pg_catalog.has_database_privilege(%s::oid, "
                         "pg_catalog.current_database(), 'CONNECT')")
        try:
            allowed = conn.execute(connect_check, (task.role_oid,)).fetchone()
        except psycopg.OperationalError:
            # A cached session the server ended while it sat idle (the database's
            # idle_session_timeout, a terminated backend, a restart): nothing of the step ran on
            # it, so open a new one once rather than charge the step for it.
            self._discard_side(database, conn)
            conn = self.side_connection(database)
            allowed = conn.execute(connect_check, (task.role_oid,)).fetchone()
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
                                  "trying again later", kind="lock_timeout",
                                  sqlstate=pg_errors.LockNotAvailable.sqlstate)
            raise StepFailure(f"the submitting role (oid {task.role_oid}) does not exist in "
                              f"database \"{database}\"", kind="identity")
        self.side_active = conn
        if self.on_side_session is not None:
            self.on_side_session(conn.info.backend_pid)
        wiped = False
        try:
            conn.execute("BEGIN")
            conn.execute("SELECT pg_catalog.set_config('statement_timeout', %s, true)", (timeout_ms,))
            columns = self._describe(conn, task, text)
            result_sql = self._result_expression(conn, task, text, columns, self.types_for(database))
            # (the marker first, as on the worker's session: the console finds the step by it)
            marker = step_marker(task.instance_id, task.node_id, task.gen)
            result = scalar(conn, f"{marker} SELECT {result_sql}")  # no params: nothing is %-formatted
            # Wipe the session inside the step's transaction, as the home database does: wiped
            # after the COMMIT, the step's committed state (temporary objects, session-level
            # settings) met a wipe that could fail on its own (DISCARD TEMP waiting for a lock
            # the database's owner holds, under her lock_timeout), and a failed wipe is rolled
            # back whole, RESET ALL included: the step's search_path stayed for the engine's
            # next statement there. Now the wipe fails the step, and the rollback undoes both.
            reset_foreign_session(conn)
            conn.execute("COMMIT")
            wiped = True
        except psycopg.Error as exc:  # (rolled back below, by _wipe_or_drop)
            raise StepFailure(step_message(exc, text), kind=failure_kind(exc.sqlstate),
                              sqlstate=exc.sqlstate, ran_sql=text) from exc
        finally:
            self.side_active = None
            if not wiped:
                self._wipe_or_drop(database, conn)
        details = ({"columns": [c.name for c in columns], "database": database}
                   if columns else {"database": database})
        return Complete(result, details, text)

    @property
    def default_timeout_ms(self) -> int:
        """The engine's default step timeout (--step-timeout), in milliseconds."""
        return int(self.config.step_timeout * 1000)

    def gave_way_to_batch(self, task: Task, sqlstate: str | None) -> bool:
        """Whether a step that failed with `sqlstate` was stopped by the batch cap (not by its
        own timeout, which it would meet alone as well): then it runs again alone, uncharged."""
        if self.batch_cap_ms <= 0 or not is_error(sqlstate, pg_errors.QueryCanceled):
            return False
        own = task.step_timeout_ms
        return capped_timeout_ms(own, self.batch_cap_ms) != own

    def types_for(self, database: str) -> TypeCache:
        cache = self._types_by_db.get(database)
        if cache is None:
            cache = self._types_by_db[database] = TypeCache()
        return cache


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


