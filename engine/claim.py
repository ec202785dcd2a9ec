"""Claiming tasks: the claim statement, its typed rows, and the Task a worker runs.

One pipelined round trip (`BEGIN; SELECT … FROM df_internal.claim_tasks(…)`,
sql/routines/queue.sql) locks due task rows FOR UPDATE SKIP LOCKED: the row lock *is* the lease
(an engine that dies releases it with its session). Rows arrive typed — psycopg's `class_row`
builds a ClaimRow per row — and each becomes a Task (load_task). The columns holding user data
(vars, named results, the retry policy) are read as text and decoded per task, so one
undecodable row is that task's fault, not the whole claim's.

The claim also re-reads the submitter's privileges for every step (df usage, CONNECT on the
step's database) alongside the role attributes claim_tasks returns; Task.check_identity turns
them into a clear, never-retried failure before anything runs as the submitter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row
from psycopg.types.string import TextLoader

from engine import jsonexact
from engine.errors import StepFailure

# claim_tasks plus the submitter's privileges as they are now. A dropped role or a missing
# database read as NULL / false, never as an error that would fail the whole claim.
CLAIM = """
SELECT c.*,
       CASE WHEN c.role_name IS NOT NULL
            THEN pg_catalog.has_schema_privilege(c.role_oid, 'df', 'USAGE') END AS role_has_usage,
       CASE WHEN c.role_name IS NOT NULL THEN
            pg_catalog.has_database_privilege(c.role_oid,
                (SELECT d.oid FROM pg_catalog.pg_database d
                  WHERE d.datname OPERATOR(pg_catalog.=)
                        COALESCE(c.database, pg_catalog.current_database())), 'CONNECT') END
            AS role_can_connect,
       -- the step's own timeout in ms (0: none), read with the claim rather than by a statement
       -- of its own in every step's round trip (issue 17)
       CASE WHEN c.kind OPERATOR(pg_catalog.=) 'run' AND c.node_type OPERATOR(pg_catalog.=) 'SQL'
            THEN df_internal.step_timeout_for(c.instance_id, %s)::pg_catalog.int8 END
            AS step_timeout_ms
  FROM df_internal.claim_tasks(%s, %s, %s, %s, %s) c
"""


@dataclass(frozen=True)
class ClaimRow:
    """One row of CLAIM, column for column (df_internal.claim_tasks's RETURNS TABLE, then the
    two privilege columns). jsonb columns arrive as text (see claim)."""

    instance_id: str
    node_id: str
    gen: int
    kind: str  # 'run', 'iterate', … or 'started' (a hand-made instance started by the claim)
    phase: str
    deadline: datetime | None
    node_type: str | None
    query: str | None
    result_name: str | None
    submitted_by: str | None
    role_oid: int | None
    database: str | None
    vars: str | None
    named_results: str | None
    label: str | None
    attempts: int
    retry_policy: str | None
    role_name: str | None
    role_can_login: bool | None
    role_is_super: bool | None
    superuser_allowed: bool | None
    more: bool | None  # more is due than this claim took
    role_has_usage: bool | None
    role_can_connect: bool | None
    step_timeout_ms: int | None = None  # SQL steps only (df_internal.step_timeout_for)


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
    # The step's own statement_timeout in ms, 0 for none (engine default, role ceiling, workflow
    # value: df_internal.step_timeout_for), as of the claim, in the step's own transaction.
    step_timeout_ms: int = 0
    load_error: str | None = None  # the claim row's user data could not be decoded

    @property
    def key(self) -> tuple[str, str, int]:
        """(instance, node, generation): what fences, journals and cancels name a task by."""
        return (self.instance_id, self.node_id, self.gen)

    def database_elsewhere(self, home: str) -> str | None:
        """The instance's database when it is not the engine's own (steps run there)."""
        return self.database if self.database and self.database != home else None

    def identity_problem(self) -> str | None:
        """Why no step may run as the task's submitter, or None: the role must still exist, log
        in, have df usage and not be a superuser (unless superuser instances are enabled)."""
        if self.role_name is None:
            return (f"the submitting role (oid {self.role_oid}) no longer exists; "
                    "the step was not run")
        if not self.role_can_login:
            return (f"role \"{self.role_name}\" can no longer log in (NOLOGIN, a VALID UNTIL "
                    "that has passed, or CONNECTION LIMIT 0); the step was not run")
        if self.role_is_super and not self.superuser_allowed:
            return (f"role \"{self.role_name}\" is a superuser; superuser instances are disabled "
                    "(pg_durable.enable_superuser_instances)")
        if not self.role_has_usage:
            return (f"role \"{self.role_name}\" no longer has USAGE on schema df (its usage was "
                    "revoked); the step was not run")
        return None

    def check_identity(self, *, database: str | None = None) -> str:
        """The submitter's role name, or StepFailure (never retried) when it may not run steps.

        Checked again before every step the engine runs for the submitter (privileges read by
        the claim, in the step's own transaction): the role still exists, may LOGIN, still has
        df usage, is not a superuser (unless enabled) and, for a SQL step (`database` given),
        may CONNECT to the database the step runs in."""
        problem = self.identity_problem()
        if problem is not None or self.role_name is None:
            raise StepFailure(problem or "the submitting role no longer exists", kind="identity")
        if database is not None and self.role_can_connect is False:
            raise StepFailure(
                f"role \"{self.role_name}\" does not have CONNECT privilege on database "
                f"\"{database}\"; the step was not run", kind="identity")
        return self.role_name


def _json_column(value: str | None, default: Any) -> Any:
    """A jsonb column of a claim row, read as text."""
    return default if value is None else jsonexact.loads(value)


def load_task(row: ClaimRow) -> Task:
    """A claim row as a Task. A row whose user data cannot be decoded still becomes a Task (its
    key), marked with load_error: the step transaction charges it a fault."""
    try:
        vars_ = _json_column(row.vars, {})
        named = _json_column(row.named_results, {})
        policy = _json_column(row.retry_policy, None)
        load_error = None
    except Exception as exc:  # noqa: BLE001 - whatever the data, the task gets a clear fault
        vars_, named, policy = {}, {}, None
        load_error = f"its variables or named results cannot be read: {type(exc).__name__}: {exc}"
    return Task(
        instance_id=row.instance_id, node_id=row.node_id, gen=row.gen, kind=row.kind,
        phase=row.phase, deadline=row.deadline, node_type=row.node_type, query=row.query,
        result_name=row.result_name, submitted_by=str(row.submitted_by),
        role_oid=int(row.role_oid or 0), database=row.database, vars=vars_ or {},
        named_results=named or {}, label=row.label, attempts=row.attempts, retry_policy=policy,
        load_error=load_error, role_name=row.role_name, role_can_login=bool(row.role_can_login),
        role_is_super=bool(row.role_is_super), superuser_allowed=bool(row.superuser_allowed),
        role_has_usage=bool(row.role_has_usage),
        role_can_connect=None if row.role_can_connect is None else bool(row.role_can_connect),
        step_timeout_ms=int(row.step_timeout_ms or 0),
    )


@dataclass
class Claim:
    """What one claim took: the tasks to run (rows of started hand-made instances left out; the
    claim processed them) and whether more is due (a hint to wake another worker)."""

    rows: int
    tasks: list[Task]
    more: bool


def claim(conn: psycopg.Connection, level: str, engine_id: str, limit: int, slice_: int,
          slices: int, default_timeout_ms: int) -> Claim:
    """Open the batch's transaction and claim up to `limit` due tasks in it (one round trip).

    `slice_`/`slices`: where in the queue this claimer looks first (see claim_tasks).
    `default_timeout_ms`: the engine's --step-timeout, for each SQL step's own timeout. When
    nothing was due the transaction is rolled back; otherwise it stays open, the tasks locked.
    """
    cur = conn.cursor(row_factory=class_row(ClaimRow))
    cur.adapters.register_loader("jsonb", TextLoader)  # user data: decoded per task
    with conn.pipeline():
        conn.execute("BEGIN")
        cur.execute(CLAIM, (default_timeout_ms, level, engine_id, limit, slice_, slices))
    rows = cur.fetchall()
    if not rows:
        conn.execute("ROLLBACK")
        return Claim(0, [], False)
    return Claim(len(rows), [load_task(r) for r in rows if r.kind != "started"],
                 any(r.more for r in rows))
