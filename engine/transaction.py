"""The step transaction: one claimed task, from its savepoint to its checkpoint, in one place.

A worker (engine/worker.py) claims a batch in one transaction and hands each task to
`StepTransaction.run`, which reads top to bottom as the task's whole life:

1. a task whose claim row could not be decoded is a fault (EngineFault);
2. a LOOP iteration is one SQL call (df_internal.loop_iterate);
3. a SQL step is planned (engine/sql_steps.py: identity, substitution, describe, encoding) and
   run with its checkpoint as **one statement** in one round trip — exactly once; a step of
   an instance that names another database runs there first, then is checkpointed here;
4. any other leaf (engine/leaves.py) returns its checkpoint (Complete / Park), written here;
5. whatever went wrong is sorted here, once: the step's own failure (recorded, perhaps a
   retry: engine/retry.py), a conflict with the batch's locks (gives way, runs again alone),
   a blocked checkpoint (deferred), an interrupted engine statement (stays queued), or the
   engine's own fault (charged to the task: retried with backoff, failed at the limit).

Every outcome is written inside the batch's transaction while the task row is still locked; the
Outcome returned tells the worker whether the batch goes on, commits now or was rolled back.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg

from engine import jsonexact
from engine.activity import step_marker
from engine.claim import Task
from engine.config import EngineConfig
from engine.db import connect, scalar
from engine.errors import (
    CONFLICTS,
    INTERRUPTED,
    EngineFault,
    EngineStatementError,
    StepFailure,
    fault_reason,
    is_error,
)
from engine.identity import SESSION_RESET, STEP_RESET
from engine.keys import BATCH_LOCK_TIMEOUT
from engine.leaves import Checkpoint, Complete, Leaves, Park
from engine.retry import retry_delay
from engine.sql_steps import CHECKPOINT_COLUMN, FusedStep, SqlSteps, step_timeout_sql

log = logging.getLogger("dftui.engine")

_BATCH_LOCK_TIMEOUT = f"SET LOCAL lock_timeout = '{BATCH_LOCK_TIMEOUT}'"


class Outcome(enum.Enum):
    RAN = "ran"  # the checkpoint (or the recorded failure) is in the batch's transaction
    RAN_LAST = "ran_last"  # ran; the batch commits now (see complete_task), or already did
    CONFLICT = "conflict"  # rolled back to its savepoint, still queued; the batch stops here
    ABORTED = "aborted"  # the whole transaction was rolled back


class StepTransaction:
    """Runs claimed tasks on one worker's connection (see the module docstring)."""

    def __init__(self, config: EngineConfig, engine_id: str, worker: int,
                 sql_steps: SqlSteps) -> None:
        self.config = config
        self.engine_id = engine_id
        self.worker = worker
        self.sql = sql_steps
        self.leaves = Leaves(config)
        # what became of the last task, when not obvious from the Outcome (metrics label)
        self.outcome: str | None = None
        # The session may hold what a step left in it (the transaction was rolled back, or a
        # step's dblink connections, which only SESSION_RESET closes, see STEP_RESET): the
        # worker resets it before its batch commits, or before the next claim at the latest.
        self.needs_discard = False
        # Is the engine shutting down? Then a step cancelled by the shutdown (its grace over) is
        # not a failure of the step: it stays queued and runs again on the next engine (set by
        # the worker).
        self.stopping: Callable[[], bool] = lambda: False
        # The last task ran past the batch cap (SqlSteps.batch_cap_ms) and gave way: the
        # worker's next claim takes one task, so the step can run alone.
        self.gave_way = False

    # -- 1–5: one task ---------------------------------------------------------------------------
    def run(self, conn: psycopg.Connection, task: Task, *, first: bool, commit: bool,
            sibling: bool = False) -> Outcome:
        """Run one claimed task inside the batch's transaction, behind savepoint `step`.

        `commit` rides on the last task's round trip. `sibling`: an earlier task of this batch
        belongs to the same instance, and its checkpoint may have fenced this one (a RACE won,
        a JOIN failed): a SQL step then runs only if its task is still live. A step after the first of a batch runs
        with a short lock_timeout: alone it would not wait behind the locks this batch (or
        another) holds for earlier steps, so rather than wait (or deadlock) there it gives way
        (CONFLICT) and runs again, unbatched, in a later transaction.
        """
        self.outcome = None
        self.gave_way = False
        started = datetime.now(UTC)
        in_savepoint = False
        sql_step = task.node_type == "SQL"
        if sql_step:
            self.needs_discard = True  # user code may run from here on (describing runs it)
        try:
            if task.load_error is not None:
                raise EngineFault(task.load_error)
            if task.kind == "iterate":
                in_savepoint = True
                _script(conn, "SAVEPOINT step", "SELECT df_internal.loop_iterate(%s, %s)",
                        "RELEASE SAVEPOINT step", "COMMIT" if commit else None,
                        params=(task.instance_id, task.node_id))
                return Outcome.RAN
            plan = self.sql.plan(conn, task, started) if sql_step else None
            if isinstance(plan, FusedStep):  # the exactly-once path
                in_savepoint = True
                return self._run_fused(conn, task, plan, first=first, commit=commit,
                                       sibling=sibling)
            conn.execute("SAVEPOINT step")
            in_savepoint = True
            checkpoint = (self.leaves.run(conn, task) if plan is None
                          else self.sql.run_elsewhere(conn, plan, task))
            self._write_checkpoint(conn, task, checkpoint, started)
            _script(conn, "RELEASE SAVEPOINT step", SESSION_RESET if sql_step else None)
            if sql_step:
                self.needs_discard = False
            return Outcome.RAN
        except StepFailure as failure:
            if not self._rollback_step(conn, in_savepoint):
                return Outcome.ABORTED
            if self.stopping() and is_error(failure.sqlstate, psycopg.errors.QueryCanceled):
                log.info("step %s/%s interrupted by the shutdown; it runs again",
                         task.instance_id, task.node_id)
                return Outcome.CONFLICT  # (rolled back to its savepoint: it stays queued)
            if self.sql.gave_way_to_batch(task, failure.sqlstate):
                log.info("step %s/%s ran past the batch's %d ms while other tasks waited on its "
                         "transaction; it runs again alone", task.instance_id, task.node_id,
                         self.sql.batch_cap_ms)
                self.gave_way = True
                return Outcome.CONFLICT
            if not first and is_error(failure.sqlstate, CONFLICTS):
                log.debug("step %s/%s gave way to the batch's locks (%s); runs again alone",
                          task.instance_id, task.node_id, failure.sqlstate)
                return Outcome.CONFLICT
            # (describing a SQL step ran user code too: wipe the session after it)
            return self._in_savepoint(conn, task, self._record_failure, task, failure, started,
                                      sql_step)
        except EngineStatementError as exc:
            if is_error(exc.sqlstate, psycopg.errors.LockNotAvailable):
                if not self._rollback_step(conn, in_savepoint):
                    return Outcome.ABORTED
                return self._in_savepoint(conn, task, self._defer, task, str(exc))
            if exc.retry_now:  # (self-healing, at most twice: see SqlSteps.fused_error)
                log.info("step %s/%s: %s", task.instance_id, task.node_id, exc)
                return Outcome.CONFLICT if self._rollback_step(conn, in_savepoint) else Outcome.ABORTED
            return self.fault(conn, task, exc, started, in_savepoint)
        except psycopg.Error as exc:
            if conn.broken:
                raise
            if isinstance(exc, INTERRUPTED):
                # An engine statement was interrupted (df.cancel while checkpointing, a lock or
                # serialization conflict): the task stays queued and runs again.
                log.info("step %s/%s interrupted: %s", task.instance_id, task.node_id, exc)
                if self._rollback_step(conn, in_savepoint):
                    return Outcome.CONFLICT
                return Outcome.ABORTED
            return self.fault(conn, task, exc, started, in_savepoint)
        except Exception as exc:  # noqa: BLE001 - the engine's own handling of this task failed
            return self.fault(conn, task, exc, started, in_savepoint)

    def _run_fused(self, conn: psycopg.Connection, task: Task, fused: FusedStep, *, first: bool,
                   commit: bool, sibling: bool) -> Outcome:
        """The step and its checkpoint in one round trip; an error skips the rest of the
        script, COMMIT included. A sibling's statement is gated on its task being live (a
        one-time filter, evaluated before the step: a fenced step does not run at all). The
        batch's last step wipes the whole session (SESSION_RESET) before its COMMIT; the others
        leave their dblink connections for the batch's end (STEP_RESET)."""
        # (the marker first: the console finds the running step by it, activity.py)
        marker = step_marker(task.instance_id, task.node_id, task.gen)
        try:
            with _script(conn, f"{marker} SAVEPOINT step", None if first else _BATCH_LOCK_TIMEOUT,
                         step_timeout_sql(task, self.sql.batch_cap_ms),
                         self.sql.live_only(conn, fused, task) if sibling else fused.query,
                         "RELEASE SAVEPOINT step", SESSION_RESET if commit else STEP_RESET,
                         "COMMIT" if commit else None) as cur:
                verdict = _checkpoint_verdict(cur)
            if commit:
                self.needs_discard = False
        except psycopg.Error as exc:
            if conn.broken:
                raise
            raise self.sql.fused_error(fused, exc) from exc
        if verdict == "stale" or (sibling and verdict is None):  # (None: gated out: fenced)
            self.outcome = "stale"
        # Parallel branches of this instance will want its lock, now held by this
        # transaction: commit now rather than at the end of the batch.
        return Outcome.RAN_LAST if verdict == "shared" else Outcome.RAN

    # -- checkpoints -------------------------------------------------------------------------------
    def _write_checkpoint(self, conn: psycopg.Connection, task: Task, checkpoint: Checkpoint,
                          started: datetime) -> None:
        """df_internal.complete_task (the node's result) or park_task (wait until a time)."""
        if isinstance(checkpoint, Park):
            self.outcome = "waiting"
            try:
                conn.execute("SELECT df_internal.park_task(%s, %s, %s, %s, %s)",
                             (task.instance_id, task.node_id, task.gen, checkpoint.until,
                              checkpoint.deadline))
            except psycopg.Error as exc:
                raise EngineStatementError(str(exc)) from exc
            return
        assert isinstance(checkpoint, Complete)
        details = checkpoint.details
        try:
            conn.execute(
                "SELECT df_internal.complete_task(%s, %s, %s, %s::jsonb, %s::jsonb, %s, %s, %s)",
                (task.instance_id, task.node_id, task.gen, jsonexact.dumps(checkpoint.result),
                 jsonexact.dumps(details) if details is not None else None, checkpoint.ran_sql,
                 self.engine_id, started),
            )
        except psycopg.Error as exc:
            raise EngineStatementError(str(exc), exc.sqlstate) from exc

    def _record_failure(self, conn: psycopg.Connection, task: Task, failure: StepFailure,
                        started: datetime, wipe: bool) -> None:
        """The step failed: df_internal.fail_task fails the node or, under a retry policy,
        schedules the next attempt as a durable timer."""
        delay = retry_delay(task.retry_policy, task.attempts + 1, failure)
        conn.execute(
            "SELECT df_internal.fail_task(%s, %s, %s, %s, %s, %s, %s, CASE WHEN %s::float8 IS NULL "
            "THEN NULL ELSE pg_catalog.make_interval(secs => %s::float8) END)",
            (task.instance_id, task.node_id, task.gen, str(failure), failure.ran_sql,
             self.engine_id, started, delay, delay),
        )
        self.outcome = "failed" if delay is None else "retried"
        if wipe:
            conn.execute(SESSION_RESET)
            self.needs_discard = False

    def _defer(self, conn: psycopg.Connection, task: Task, why: str) -> None:
        """Somebody (normally the submitter) holds a lock the checkpoint needs: put the task back
        a little later instead of blocking this worker, so other instances keep running."""
        log.warning("checkpoint of %s/%s is blocked (%s); retrying in 5 s", task.instance_id,
                    task.node_id, why.splitlines()[0])
        conn.execute("UPDATE df_internal.tasks SET run_at = pg_catalog.now() + interval '5 seconds' "
                     "WHERE instance_id = %s AND node_id = %s AND gen = %s",
                     (task.instance_id, task.node_id, task.gen))
        self.outcome = "deferred"

    # -- faults: the engine's own handling of the task failed ----------------------------------------
    def fault(self, conn: psycopg.Connection, task: Task, exc: BaseException,
              started: datetime, in_savepoint: bool) -> Outcome:
        """The engine could not process this task (planning, describing, substitution, result
        encoding, checkpoint: anything but the step's own failure). Undo it and charge the task
        a fault (df_internal.task_fault): it is retried after a backoff, out of every claim in
        the meantime, and its node fails with the reason once it has happened max_task_faults
        times. Never an endless loop, never a silent pending, the worker free for other work."""
        reason = fault_reason(exc)
        log.error("cannot process step %s/%s: %s", task.instance_id, task.node_id, reason,
                  exc_info=not isinstance(exc, EngineStatementError | psycopg.Error))
        self.outcome = "fault"
        if not self._rollback_step(conn, in_savepoint):
            self.fault_alone(task, exc)  # the batch is gone: charge it in its own transaction
            return Outcome.ABORTED
        return self._in_savepoint(conn, task, self._record_fault, task, reason, started)

    def _record_fault(self, conn: psycopg.Connection, task: Task, reason: str,
                      started: datetime | None) -> None:
        verdict = scalar(conn, "SELECT df_internal.task_fault(%s, %s, %s, %s, %s, %s, %s)",
                         (task.instance_id, task.node_id, task.gen, reason, self.engine_id,
                          started, self.config.max_task_faults))
        if verdict == "failed":
            log.error("step %s/%s failed: the engine could not process it %d times",
                      task.instance_id, task.node_id, self.config.max_task_faults)
        if task.node_type == "SQL":
            conn.execute(SESSION_RESET)  # describing may have run user code
            self.needs_discard = False

    def fault_alone(self, task: Task, exc: BaseException) -> None:
        """Charge a fault outside any batch (the batch's transaction or connection is gone)."""
        try:
            with connect(self.config.dsn, f"worker {self.worker} fault") as conn:
                conn.execute("BEGIN")
                locked = conn.execute(
                    "SELECT 1 FROM df_internal.tasks WHERE instance_id = %s AND node_id = %s "
                    "AND gen = %s FOR UPDATE SKIP LOCKED", (task.instance_id, task.node_id, task.gen)
                ).fetchone()
                if locked is not None:
                    conn.execute("SAVEPOINT fault")
                    try:
                        self._record_fault(conn, task, fault_reason(exc), None)
                    except psycopg.Error as error:
                        # Even failing the node fails (an error in the interpreter itself): keep
                        # the task out of the way and say why, rather than retry it at once.
                        conn.execute("ROLLBACK TO SAVEPOINT fault")
                        log.error("could not record the fault of %s/%s (%s); retrying it in "
                                  "5 minutes", task.instance_id, task.node_id, error)
                        conn.execute(
                            "UPDATE df_internal.tasks SET run_at = pg_catalog.now() + interval "
                            "'5 minutes', last_fault = %s WHERE instance_id = %s AND node_id = %s",
                            (f"{fault_reason(exc)}; recording it failed: {fault_reason(error)}",
                             task.instance_id, task.node_id))
                conn.execute("COMMIT")
        except psycopg.Error as error:
            log.warning("could not record the fault of %s/%s (%s)", task.instance_id,
                        task.node_id, error)

    # -- savepoints ---------------------------------------------------------------------------------
    def _rollback_step(self, conn: psycopg.Connection, in_savepoint: bool) -> bool:
        """Undo the current task's work. When its savepoint cannot be rolled back to (the error
        hit outside it, or the commit failed) the whole transaction is rolled back: False."""
        status = conn.pgconn.transaction_status
        if not in_savepoint and status == psycopg.pq.TransactionStatus.INTRANS:
            return True  # nothing was sent for this task yet
        if in_savepoint:
            try:
                _script(conn, "ROLLBACK TO SAVEPOINT step", "RELEASE SAVEPOINT step")
                return True
            except psycopg.Error:
                if conn.broken:
                    raise
        self.abort(conn)
        return False

    def _in_savepoint(self, conn: psycopg.Connection, task: Task,
                      action: Callable[..., None], *args: Any) -> Outcome:
        """Record an outcome (failure, deferral) in its own savepoint, so a lock timeout on the
        instance defers just this task."""
        try:
            conn.execute("SAVEPOINT outcome")
            try:
                action(conn, *args)
            except psycopg.errors.LockNotAvailable as exc:
                conn.execute("ROLLBACK TO SAVEPOINT outcome")
                self._defer(conn, task, str(exc))
            conn.execute("RELEASE SAVEPOINT outcome")
            return Outcome.RAN
        except psycopg.Error as exc:
            if conn.broken:
                raise
            log.warning("could not record the outcome of %s/%s (%s); will retry",
                        task.instance_id, task.node_id, exc)
            self.abort(conn)
            if action != self._record_fault:  # (never the same failure forever: a fault)
                self.fault_alone(task, exc)
            return Outcome.ABORTED

    def abort(self, conn: psycopg.Connection) -> None:
        """Roll the whole batch back; its tasks stay queued. The steps' session leftovers go
        with the next reset_session."""
        with contextlib.suppress(psycopg.Error):
            conn.execute("ROLLBACK")
        self.needs_discard = True


def _script(conn: psycopg.Connection, *statements: str | None,
            params: Sequence[Any] | None = None) -> psycopg.ClientCursor[Any]:
    """Run statements (None skipped) as one simple query: one round trip. psycopg binds
    `params` client-side (quoted); an error skips the rest of the script."""
    cur = psycopg.ClientCursor(conn)
    cur.execute("; ".join(s for s in statements if s), params)
    return cur


def _checkpoint_verdict(cur: psycopg.Cursor[Any]) -> str | None:
    """complete_task's verdict among the results of a fused step's statements."""
    while True:
        if cur.description and cur.description[0].name == CHECKPOINT_COLUMN:
            row = cur.fetchone()
            return str(row[0]) if row else None
        if not cur.nextset():
            return None
