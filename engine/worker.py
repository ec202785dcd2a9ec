"""A worker: one thread, one connection, and the batch policy around each claim.

The loop: claim (engine/claim.py) → make missing trampolines (outside the transaction) →
journal the batch (engine/journal.py) → run each task (engine/transaction.py) → commit → adapt
the next claim's size. Batch policy:

* claim a batch only when no other worker of this engine is idle — with a short queue every
  task gets a worker of its own, with a backlog one commit serves many steps — and no bigger
  than it will run within its time budget (engine/pacing.py: the sizes and budgets);
* a batch stops taking on its claimed tasks after its time budget (the rest are released by
  its commit), short while another worker is idle, and a batch that stopped early (slow steps,
  steps that gave way to the batch's locks) halves the next claim, one that ran to the end
  doubles it;
* a task whose checkpoint shares its instance's lock with parallel branches commits at once;
* a step of a batch runs at most BATCHED_STEP_CAP_MS (engine/sql_steps.py): a longer one gives
  way, the batch commits what ran before it, and the next claim takes one task, so the slow step
  runs alone and holds no other task's checkpoint or row lock.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING

import psycopg

from engine import schema
from engine.claim import Task, claim
from engine.db import connect
from engine.identity import SESSION_RESET, reset_session
from engine.pacing import BatchPacer
from engine.sql_steps import BATCHED_STEP_CAP_MS, SqlSteps
from engine.transaction import Outcome, StepTransaction

if TYPE_CHECKING:
    from engine.runner import Engine

log = logging.getLogger("dftui.engine")

# A worker whose claim found due tasks it could not take waits this long before it looks again
# (doubling up to the maximum while that goes on), unless a df_work notification comes first.
BLOCKED_BACKOFF_MIN = 0.02
BLOCKED_BACKOFF_MAX = 0.5


class Worker:
    """One worker thread and its connection."""

    def __init__(self, engine: Engine, number: int) -> None:
        self.engine = engine
        self.number = number
        self.conn: psycopg.Connection | None = None
        self.current: tuple[str, str, int] | None = None  # (instance, node, gen) running now
        self.task: Task | None = None  # the task being handled (charged if the handling blows up)
        self.busy = False
        self.thread_done = threading.Event()
        self.sql = SqlSteps(engine.config, engine.id, engine.trampolines, engine.types)
        self.sql.on_side_session = lambda pid: engine.journal.side_session(number, pid)
        self.steps = StepTransaction(engine.config, engine.id, number, self.sql)
        self.steps.stopping = lambda: engine.stopping
        self.more_work = True
        self.pacer = BatchPacer(engine.config.batch_size)
        # While backing off after a claim that could take none of the due tasks: the roles of
        # those tasks (their slots or rows are held elsewhere). Another role's work it could run.
        self.blocked_on: frozenset[int] | None = None
        self.claim_alone = False  # the next claim takes one task (see _free_worker_for)

    def cancel_statement(self) -> None:
        for conn in (self.conn, self.sql.side_active):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.cancel_safe(timeout=2.0)

    def run(self) -> None:
        backoff = 0.2
        blocked_backoff = BLOCKED_BACKOFF_MIN
        try:
            while not self.engine.stopping:
                try:
                    if self.conn is None or self.conn.closed:
                        self.conn = connect(self.engine.config.dsn, f"worker {self.number}")
                        self.steps.needs_discard = False  # a fresh session holds nothing
                    self.more_work = True
                    found = self.step_batch(self.conn)
                    backoff = 0.2
                    if found:
                        blocked_backoff = BLOCKED_BACKOFF_MIN
                        if self.more_work:
                            self.engine.wake(1)  # more is due: chain-wake another worker
                    else:
                        timeout, blocked = self._idle_timeout()
                        if blocked is not None:
                            self.blocked_on = blocked
                            try:
                                self.engine.wait_blocked(blocked_backoff)
                            finally:
                                self.blocked_on = None
                            # (the other workers backing off with it are free as well, and may
                            # be claiming right now, unseen by _free_worker_for: take one task)
                            self.claim_alone = True
                            blocked_backoff = min(blocked_backoff * 2, BLOCKED_BACKOFF_MAX)
                        else:
                            blocked_backoff = BLOCKED_BACKOFF_MIN
                            self.engine.wait_for_work(timeout)
                except psycopg.errors.ObjectNotInPrerequisiteState as exc:
                    if schema.LEVEL_MISMATCH_MESSAGE not in str(exc):
                        raise
                    # The schema was upgraded (or downgraded) under this engine: stop cleanly.
                    self.engine.fail(exc.diag.message_primary or str(exc))
                    break
                except psycopg.OperationalError as exc:
                    if self.engine.stopping:
                        break
                    self.engine.metrics.connection_error("worker")
                    log.warning("worker %d: connection problem (%s); retrying in %.1fs",
                                self.number, exc, backoff)
                    self._drop_connection()
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
                except Exception as exc:  # noqa: BLE001 - a worker must survive anything
                    log.exception("worker %d: unexpected error", self.number)
                    task = self.task
                    self._drop_connection()
                    if task is not None:  # never the same blow-up forever: charge the task
                        self.steps.fault_alone(task, exc)
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
        finally:
            self._drop_connection()
            self.thread_done.set()

    def _drop_connection(self) -> None:
        self.sql.close_side_connections()
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None
        self.current = None
        self.task = None
        self.busy = False

    def _idle_timeout(self) -> tuple[float, frozenset[int] | None]:
        """How long to wait after an empty claim (until the next timer is due, or the safety
        poll), and, when tasks are due all the same (the claim could take none of them: their
        role's slots are all held, or other batches hold their rows), the roles of those tasks:
        the worker then backs off (Engine.wait_blocked) instead."""
        timeout = self.engine.config.poll_interval
        conn = self.conn
        if conn is not None and not conn.closed:
            with contextlib.suppress(psycopg.Error):
                row = conn.execute(
                    "SELECT pg_catalog.date_part('epoch', pg_catalog.min(run_at) "
                    "OPERATOR(pg_catalog.-) pg_catalog.now()), "
                    "pg_catalog.array_agg(DISTINCT role_oid) FILTER (WHERE run_at OPERATOR(pg_catalog.<=) "
                    "pg_catalog.now() AND role_oid IS NOT NULL) FROM df_internal.tasks").fetchone()
                if row and row[0] is not None:
                    if row[0] <= 0:
                        return timeout, frozenset(int(oid) for oid in row[1] or ())
                    timeout = max(0.005, min(timeout, row[0] + 0.002))
        return timeout, None

    def _free_worker_for(self, role_oid: int) -> bool:
        """Is another worker of this engine free to run this role's steps now? One backing off
        on other roles' tasks is (it waits on the blocked condition, so it is not counted as
        idle). A batch would run this role's claimed steps one after another on this worker
        while it stays free: a role with long steps, two free slots and two free workers got
        one. One blocked on this role's own tasks (its cap, rows held by other batches), or one
        that could not tell which roles blocked it, is not: a one-role backlog still batches."""
        return any(w is not self and w.blocked_on and role_oid not in w.blocked_on
                   for w in self.engine.workers)

    def step_batch(self, conn: psycopg.Connection) -> bool:
        """Claim due tasks (up to `batch`, see claim_tasks) and run them in one transaction, each
        behind its own savepoint, then commit them together. Returns False when nothing was due.

        Each step and its checkpoint still commit atomically (exactly-once); a failed step rolls
        back to its savepoint and is recorded without disturbing the others. Tasks not reached
        within the time budget (a slow step) are released by the commit for any worker to take.
        """
        engine = self.engine
        self.task = None
        if self.steps.needs_discard:
            reset_session(conn)
            self.steps.needs_discard = False
        # Batch only when no other worker is idle: with a short queue every task gets a worker
        # of its own; with a backlog (everyone busy) one commit serves many steps.
        # (and, see _free_worker_for, when another worker would take this role's work)
        limit = 1 if self.claim_alone else self.pacer.claim_size(engine.idle_workers > 0)
        self.claim_alone = False
        claim_started = time.perf_counter()
        claimed = claim(conn, engine.schema_level, engine.id, limit,
                        engine.slice_base + self.number, engine.slices,
                        self.sql.default_timeout_ms)
        engine.metrics.claimed(time.perf_counter() - claim_started, claimed.rows)
        if not claimed.rows:
            engine.journal.clear(self.number)
            return False
        self.more_work = claimed.more
        tasks = claimed.tasks
        if self._set_up_trampolines(conn, tasks):
            return True
        if len(tasks) > 1 and self._free_worker_for(tasks[0].role_oid):
            conn.execute("ROLLBACK")  # (the claim's tasks are free again: claim one of them)
            self.claim_alone = True
            return True
        if tasks:
            try:
                engine.journal.record(self.number, [t.key for t in tasks], conn.info.backend_pid)
            except psycopg.Error as exc:
                # Unrecorded, a crash in these steps could not be charged to them: not now.
                conn.execute("ROLLBACK")
                raise psycopg.OperationalError(f"cannot record the tasks in flight: {exc}") from exc
        self.busy = True
        batch_started = time.monotonic()
        handled = 0  # tasks taken on (run or not), for the time per task
        last_started = batch_started
        ran = 0
        stopped_early = False
        tally = engine.metrics.tally()  # outcomes, published once the transaction ended
        seen: set[str] = set()  # instances with a task earlier in this batch
        # (a step that shares the transaction with other tasks must not hold them hostage: it
        # runs under the batch cap, past which it gives way)
        self.sql.batch_cap_ms = BATCHED_STEP_CAP_MS if len(tasks) > 1 else 0
        try:
            for index, task in enumerate(tasks):
                if index and self.pacer.over_budget(
                        time.monotonic() - batch_started,
                        engine.idle_workers > 0 or self._free_worker_for(task.role_oid)):
                    stopped_early = True
                    break
                handled += 1
                last_started = time.monotonic()
                self.current = task.key
                self.task = task
                kind = tally.started(task.node_type, task.kind)
                outcome = self.steps.run(conn, task, first=index == 0,
                                         commit=index == len(tasks) - 1,
                                         sibling=task.instance_id in seen)
                seen.add(task.instance_id)
                tally.finished(kind, self.steps.outcome, outcome in (Outcome.RAN, Outcome.RAN_LAST))
                if outcome is Outcome.ABORTED:
                    tally.roll_back()
                    self.pacer.aborted()
                    return True  # the whole transaction was rolled back; its tasks stay queued
                if outcome in (Outcome.RAN, Outcome.RAN_LAST):
                    ran += 1
                # (tasks of one instance are claimed next to each other: commit after the
                # last of them, while siblings outside the batch wait for its lock)
                if (outcome is Outcome.RAN_LAST and index < len(tasks) - 1
                        and tasks[index + 1].instance_id != task.instance_id):
                    self.more_work = True
                    break
                if outcome is Outcome.CONFLICT:
                    stopped_early = True
                    self.claim_alone = self.claim_alone or self.steps.gave_way
                    break
            if conn.pgconn.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                # (a last fused step commits in its own round trip; a batch that stopped before
                # its last task wipes the steps' session state, dblink connections included,
                # before it commits: one round trip either way)
                if self.steps.needs_discard:
                    conn.execute(f"{SESSION_RESET}; COMMIT")
                    self.steps.needs_discard = False
                else:
                    conn.execute("COMMIT")
        except BaseException:
            tally.roll_back()
            raise
        finally:
            self.busy = False
            self.current = None
        self.task = None
        tally.publish()
        engine.count_steps(ran)
        self.pacer.finished(handled, last_started - batch_started, stopped_early)
        if stopped_early:
            self.more_work = True
        return True

    def _set_up_trampolines(self, conn: psycopg.Connection, tasks: list[Task]) -> bool:
        """Create the submitters' trampolines this batch still needs, outside the steps'
        transaction (once per role and process): the claim is rolled back and True returned
        (claim again). Only for submitters that may run steps at all: a superuser (with
        superuser instances off), a role that cannot log in or a dropped role fails in
        check_identity without a SECURITY DEFINER function ever being created for it."""
        home = conn.info.dbname
        trampolines = self.engine.trampolines
        setup = {t.role_oid for t in tasks if t.node_type == "SQL" and not t.database_elsewhere(home)
                 and t.identity_problem() is None and trampolines.needs_setup(home, t.role_oid)}
        if not setup:
            return False
        conn.execute("ROLLBACK")
        for role_oid in setup:
            trampolines.ensure(conn, role_oid)  # a dropped role is remembered: a clear failure
        return True
