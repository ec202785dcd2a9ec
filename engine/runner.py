"""The engine process: registration, wake-ups, workers, heartbeats, graceful shutdown.

Threads, each with its own connection:
* listener — LISTEN df_work / df_cancel / df_abandon on a dedicated connection (sharing it with
  queries delays notifications), wakes workers and cancels statements of cancelled instances
  and race losers;
* workers (``concurrency`` of them) — claim a due task with FOR UPDATE SKIP LOCKED, run it and
  write its checkpoint in the same transaction;
* housekeeping — heartbeat, retention, dead-engine bookkeeping.
PostgreSQL is the only coordinator: any number of engine processes can serve one database.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.string import TextLoader

from engine import __version__, jsonexact, schema
from engine.activity import step_marker
from engine.config import EngineConfig
from engine.db import connect, scalar
from engine.identity import SESSION_RESET, Trampolines, reset_session
from engine.journal import Journal
from engine.journal import reap as reap_inflight
from engine.metrics import EngineMetrics
from engine.pg_settings import apply_database_settings
from engine.results import TypeCache
from engine.steps import (
    CHECKPOINT_COLUMN,
    EngineStatementError,
    StepFailure,
    StepRunner,
    Task,
    retry_delay,
)

log = logging.getLogger("dftui.engine")

# A batch stops taking on more of its claimed tasks after this long (the rest are released by its
# commit), so one slow step holds at most the tasks claimed behind it, and only while it runs.
BATCH_TIME_BUDGET = 0.05
# Errors of a batched step that waited behind locks (lock_timeout, deadlock, serialization): it
# gives way and runs again alone (see _Worker._run_task).
BATCH_CONFLICTS = frozenset({"55P03", "40P01", "40001"})
BATCH_LOCK_TIMEOUT = "SET LOCAL lock_timeout = '50ms'"
# pg_durable settings whose value in this engine's own session (server configuration, never a
# user's SET) is published in df_internal.engines.settings for df._setting (settings.sql).
PUBLISHED_SETTINGS = (
    "pg_durable.enable_superuser_instances", "pg_durable.list_instances_max_limit",
    "pg_durable.http_security", "pg_durable.http_allowed_domains",
)
# Failures no retry policy retries: the step can never run (identity, privileges, refused
# statement kinds, the HTTP policy).
NEVER_RETRIED = frozenset({"identity", "http_policy", "unsupported"})


# Housekeeping wakes this often; heartbeats go out every heartbeat_interval.
HOUSEKEEPING_TICK = 0.5
# The readiness level written to df_internal._worker_ready, pg_durable's WORKER_SCHEMA_VERSION.
WORKER_SCHEMA_VERSION = 1

# A worker whose claim found due tasks it could not take waits this long before it looks again
# (doubling up to the maximum while that goes on), unless a df_work notification comes first.
BLOCKED_BACKOFF_MIN = 0.02
BLOCKED_BACKOFF_MAX = 0.5

# Vacuum the queue after this many steps of this engine (see _housekeeping).
VACUUM_QUEUE_EVERY = 500


class _Outcome(enum.Enum):
    RAN = "ran"  # the checkpoint (or the recorded failure) is in the batch's transaction
    RAN_LAST = "ran_last"  # ran; the batch commits now (see complete_task), or already did
    CONFLICT = "conflict"  # rolled back to its savepoint, still queued; the batch stops here
    ABORTED = "aborted"  # the whole transaction was rolled back

class Engine:
    """One engine process. `start()` returns once the workers run; `stop()` shuts down."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.step_timeout_ms = int(config.step_timeout * 1000)
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # pg_durable's df._worker_epoch row of this engine (a uuid there, as pg_durable's).
        self.epoch_id = str(uuid.uuid4())
        self.trampolines = Trampolines()
        self.types = TypeCache()
        self._stopping = threading.Event()
        self._wake = threading.Condition()
        self._pending_wakeups = 0
        self.idle_workers = 0  # workers waiting for work (read without the lock: a hint)
        # Workers whose last claim found due tasks it could not take (its role's running-step
        # slots all held, or the tasks row-locked by other batches): they back off here, woken
        # only by df_work notifications (a new task, maybe of another role) or their timeout.
        # Not counted as idle (others keep batching) and not chain-woken by every batch: each
        # wake-up would be another fruitless scan of the queue (measured: a capped worker
        # polling every 5 ms cost more server CPU than the steps themselves).
        self._blocked = threading.Condition()
        self._blocked_generation = 0
        self._threads: list[threading.Thread] = []
        self.workers: list[_Worker] = []
        self.steps_done = 0
        self._steps_lock = threading.Lock()
        self.journal = Journal(config.dsn, self.id)
        self.started = threading.Event()
        self.fatal_error: str | None = None
        self.schema_level = schema.schema_level()
        self.metrics = EngineMetrics(config.dsn, self.id, config.concurrency,
                                     lambda: sum(w.busy for w in self.workers),
                                     config.engine_dead_after)

    # -- lifecycle ---------------------------------------------------------------------------
    def _register(self) -> None:
        """Check (or install) the schema and register this engine in the database."""
        with connect(self.config.dsn, "setup") as conn:
            if self.config.install:
                change = schema.install(conn)
                if change.applied:
                    log.info("schema: %s", change.describe())
            schema.check_compatible(conn)
            for line in apply_database_settings(conn, self.config):
                log.info("setting: %s", line)
            # The HTTP policy is recorded so df.http() applies it when a graph is built.
            conn.execute(
                "INSERT INTO df_internal.engines (id, host, pid, version, concurrency, http_policy,"
                " http_allow, http_allow_private, role_max_running, step_timeout_ms, settings)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
                " (SELECT pg_catalog.jsonb_object_agg(n, pg_catalog.current_setting(n, true))"
                "    FROM pg_catalog.unnest(%s::text[]) n))",
                (self.id, socket.gethostname(), os.getpid(), __version__, self.config.concurrency,
                 self.config.http_policy, list(self.config.http_allow),
                 self.config.http_allow_private, self.config.role_max_running,
                 self.step_timeout_ms, list(PUBLISHED_SETTINGS)),
            )
            conn.execute("INSERT INTO df._worker_epoch (epoch_id) VALUES (%s) ON CONFLICT DO NOTHING",
                         (self.epoch_id,))
            # pg_durable's readiness sentinel (its tools poll `schema_version >= 1`): one row,
            # rewritten only when the version changes, so initialized_at says since when.
            conn.execute(
                "INSERT INTO df_internal._worker_ready (sentinel, schema_version) "
                "VALUES (true, %s) ON CONFLICT (sentinel) DO UPDATE "
                "SET schema_version = excluded.schema_version, initialized_at = now() "
                "WHERE df_internal._worker_ready.schema_version <> excluded.schema_version",
                (WORKER_SCHEMA_VERSION,))
            # Before any claim: a task that was running when an engine died (perhaps killing it)
            # is charged now, so it cannot take this engine down straight away as well.
            reaped = reap_inflight(conn, self.config.max_task_faults)
            if reaped:
                log.warning("%d task(s) were running in an engine that died; retried later "
                            "(failed once it happens %d times)", reaped, self.config.max_task_faults)

    def start(self) -> None:
        if self.config.metrics_addr is not None:
            try:
                host, port = self.metrics.serve(self.config.metrics_addr)
            except OSError as exc:
                raise RuntimeError(str(exc)) from None
            log.info("metrics: http://%s:%d/metrics", f"[{host}]" if ":" in host else host, port)
        try:
            self._register()
        except BaseException:
            self.metrics.close()
            raise
        listener = threading.Thread(target=self._listen, name="dftui-listener", daemon=True)
        listener.start()
        self._threads.append(listener)
        for n in range(self.config.concurrency):
            worker = _Worker(self, n)
            self.workers.append(worker)
            t = threading.Thread(target=worker.run, name=f"dftui-worker-{n}", daemon=True)
            t.start()
            self._threads.append(t)
        hk = threading.Thread(target=self._housekeeping, name="dftui-housekeeping", daemon=True)
        hk.start()
        self._threads.append(hk)
        self.started.set()
        log.info("engine %s started: concurrency=%d http_policy=%s", self.id,
                 self.config.concurrency, self.config.http_policy)
        self.wake(self.config.concurrency)

    def stop(self, grace: float | None = None) -> None:
        """Stop claiming; let running steps finish up to `grace` seconds, then cancel them."""
        if self._stopping.is_set():
            return
        grace = self.config.shutdown_grace if grace is None else grace
        self._stopping.set()
        self.wake(len(self.workers) + 1)
        self.wake_blocked()
        deadline = time.monotonic() + grace
        for worker in self.workers:
            worker.thread_done.wait(max(0.0, deadline - time.monotonic()))
        for worker in self.workers:
            if not worker.thread_done.is_set():
                worker.cancel_statement()
        for worker in self.workers:
            worker.thread_done.wait(5)
        self.journal.close()
        with contextlib.suppress(psycopg.Error), connect(self.config.dsn, "shutdown") as conn:
            conn.execute("UPDATE df_internal.engines SET stopped_at = now(), steps_done = %s "
                         "WHERE id = %s", (self.steps_done, self.id))
        self.metrics.close()
        log.info("engine %s stopped after %d steps", self.id, self.steps_done)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def fail(self, reason: str) -> None:
        """Stop claiming for good (the engine cannot go on, e.g. the schema changed under it);
        run_forever then shuts down and exits non-zero. Logged once."""
        with self._steps_lock:
            if self.fatal_error is not None:
                return
            self.fatal_error = reason
        log.error("stopping: %s", reason)
        self.wake(len(self.workers) + 1)
        self.wake_blocked()

    def run_forever(self) -> int:
        """Foreground mode for `dftui engine`: until SIGTERM/SIGINT (or no work, with --once)."""
        stop = threading.Event()

        def handle(signum: int, _frame: Any) -> None:
            log.info("received %s; shutting down", signal.Signals(signum).name)
            stop.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
        self.start()
        while not stop.wait(0.5):
            if self.fatal_error is not None or (self.config.once and self._idle()):
                break
        self.stop()
        return 0 if self.fatal_error is None else 1

    def _idle(self) -> bool:
        if any(w.busy for w in self.workers):
            return False
        with connect(self.config.dsn, "once") as conn:
            row = conn.execute("SELECT count(*) FROM df_internal.tasks WHERE run_at <= now() + interval '1 second'").fetchone()
            return row is not None and row[0] == 0

    # -- wake-ups ----------------------------------------------------------------------------
    def wake(self, n: int = 1) -> None:
        with self._wake:
            self._pending_wakeups = min(self._pending_wakeups + n, len(self.workers) + 1)
            self._wake.notify(n)

    def wait_for_work(self, timeout: float) -> None:
        with self._wake:
            if self._pending_wakeups == 0 and not self._stopping.is_set():
                self.idle_workers += 1
                try:
                    self._wake.wait(timeout)
                finally:
                    self.idle_workers -= 1
            if self._pending_wakeups > 0:
                self._pending_wakeups -= 1

    def wait_blocked(self, timeout: float) -> None:
        """Back off after a claim that found due tasks it could not take (see _blocked)."""
        with self._blocked:
            generation = self._blocked_generation
            if not self._stopping.is_set():
                self._blocked.wait_for(lambda: self._blocked_generation != generation
                                       or self._stopping.is_set(), timeout)

    def wake_blocked(self) -> None:
        """Something new may be claimable (a df_work notification, shutdown)."""
        with self._blocked:
            self._blocked_generation += 1
            self._blocked.notify_all()

    def count_steps(self, n: int = 1) -> None:
        with self._steps_lock:
            self.steps_done += n

    # -- listener ----------------------------------------------------------------------------
    # Any role can LISTEN on and NOTIFY any channel, so notifications are wake-up hints only: a
    # payload is never trusted (nor needed). On df_cancel / df_abandon the listener asks the
    # database which of the steps running in this engine right now belong to an instance that
    # is no longer running or to a node generation that was fenced (abandoned race branches,
    # superseded loop iterations), and cancels exactly those. A forged notification therefore
    # costs one cheap query; a malformed one nothing. The listener survives any error.
    def _listen(self) -> None:
        backoff = 0.2
        while not self._stopping.is_set():
            try:
                with connect(self.config.dsn, "listen") as conn:
                    conn.execute("LISTEN df_work")
                    conn.execute("LISTEN df_cancel")
                    conn.execute("LISTEN df_abandon")
                    backoff = 0.2
                    self.wake(len(self.workers))  # catch up on anything missed while away
                    while not self._stopping.is_set():
                        # the first notification promptly, then whatever else is queued already:
                        # a flood of (forged) notifications costs one check per round
                        notes = list(conn.notifies(timeout=1.0, stop_after=1))
                        if notes:
                            notes += list(conn.notifies(timeout=0.001))
                        check = False
                        work = False
                        for note in notes:
                            self.metrics.notification(note.channel)
                            if note.channel == "df_work":
                                self.wake(1)
                                work = True
                            elif note.channel in ("df_cancel", "df_abandon"):
                                check = True
                        if work:
                            self.wake_blocked()
                        if check:
                            self.cancel_dead_steps(conn)
            except Exception as exc:  # noqa: BLE001 - the listener must survive anything
                if self._stopping.is_set():
                    return
                self.metrics.connection_error("listener")
                log.warning("listener: %s; reconnecting in %.1fs", exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    def cancel_dead_steps(self, conn: psycopg.Connection) -> int:
        """Cancel the running steps of this engine whose instance is no longer running or whose
        node generation is no longer the live one, as the database says. Returns how many."""
        running = [(w, w.current) for w in self.workers if w.current is not None]
        if not running:
            return 0
        keys = [cur for _w, cur in running if cur is not None]
        rows = conn.execute(
            """
            SELECT k.i, k.n, k.g
              FROM unnest(%s::text[], %s::text[], %s::int[]) AS k(i, n, g)  -- (multi-array form: unqualified)
              LEFT JOIN df.instances x ON x.id OPERATOR(pg_catalog.=) k.i
              LEFT JOIN df_internal.node_meta m
                     ON m.instance_id OPERATOR(pg_catalog.=) k.i AND m.node_id OPERATOR(pg_catalog.=) k.n
             WHERE x.id IS NULL OR x.status <> ALL ('{pending,running}'::text[])
                OR m.gen IS DISTINCT FROM k.g
            """, ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys])).fetchall()
        dead = {(r[0], r[1], r[2]) for r in rows}
        cancelled = 0
        for worker, cur in running:
            if cur in dead and worker.current == cur:
                log.info("cancelling the running step %s/%s (instance ended or node superseded)",
                         cur[0], cur[1])
                worker.cancel_statement()
                cancelled += 1
        return cancelled

    # -- housekeeping ------------------------------------------------------------------------
    def _housekeeping(self) -> None:
        conn: psycopg.Connection | None = None
        next_beat = 0.0
        next_retention = 0.0
        vacuumed_at_steps = 0
        can_vacuum: bool | None = None
        while not self._stopping.wait(HOUSEKEEPING_TICK):
            try:
                if conn is None or conn.closed:
                    conn = connect(self.config.dsn, "housekeeping")
                    # A role may hold row locks on its own instances (e.g. FOR UPDATE on a
                    # finished one the retention DELETE wants): never wait for them for long,
                    # or the heartbeat would stop and this engine look dead.
                    conn.execute("SET lock_timeout = '5s'")
                    can_vacuum = None
                if can_vacuum is None:
                    row = conn.execute(
                        "SELECT pg_catalog.pg_has_role(c.relowner, 'MEMBER') FROM pg_catalog.pg_class c "
                        "WHERE c.oid = 'df_internal.tasks'::pg_catalog.regclass").fetchone()
                    can_vacuum = bool(row and row[0])
                if can_vacuum and self.steps_done - vacuumed_at_steps >= VACUUM_QUEUE_EVERY:
                    # Every claim walks the queue from the head of its run_at index, where the
                    # tasks just finished lie dead until vacuumed (autovacuum looks once a minute
                    # at best): measured, a claim's scan went from 9 ms to 0.1 ms.
                    vacuumed_at_steps = self.steps_done
                    conn.execute("VACUUM (SKIP_LOCKED) df_internal.tasks")
                if time.monotonic() < next_beat:
                    continue
                next_beat = time.monotonic() + self.config.heartbeat_interval
                # The database is the truth, notifications only hints: a cancel whose
                # notification was missed (listener reconnecting) is still acted on.
                self.cancel_dead_steps(conn)
                conn.execute("UPDATE df_internal.engines SET heartbeat_at = now(), steps_done = %s "
                             "WHERE id = %s", (self.steps_done, self.id))
                conn.execute("UPDATE df._worker_epoch SET last_seen_at = now() WHERE epoch_id = %s",
                             (self.epoch_id,))
                if reap_inflight(conn, self.config.max_task_faults):
                    log.warning("tasks that were running in an engine that died were charged a "
                                "fault; they are retried later")
                interval = self.config.reconcile_interval
                if self.config.retention_days is not None and interval != 0 and (
                        interval is None or time.monotonic() >= next_retention):
                    next_retention = time.monotonic() + (interval or 0)
                    conn.execute(
                        "DELETE FROM df.instances WHERE id IN (SELECT id FROM df.instances "
                        "WHERE status IN ('completed', 'failed', 'cancelled') "
                        "AND updated_at < now() - make_interval(secs => %s) LIMIT 500)",
                        (self.config.retention_days * 86400,),
                    )
                # Timers that came due wake the workers even without a notification.
                row = conn.execute("SELECT EXISTS (SELECT 1 FROM df_internal.tasks "
                                   "WHERE run_at <= now())").fetchone()
                if row and row[0]:
                    self.wake(1)
            except psycopg.Error as exc:
                if isinstance(exc, psycopg.OperationalError):
                    self.metrics.connection_error("housekeeping")
                log.warning("housekeeping: %s", exc)
                with contextlib.suppress(Exception):
                    if conn is not None:
                        conn.close()
                conn = None
        if conn is not None:
            conn.close()


class _Worker:
    """One worker thread and its connection."""

    def __init__(self, engine: Engine, number: int) -> None:
        self.engine = engine
        self.number = number
        self.conn: psycopg.Connection | None = None
        self.current: tuple[str, str, int] | None = None  # (instance, node, gen) running now
        self.task: Task | None = None  # the task being handled (charged if the handling blows up)
        self.busy = False
        self.thread_done = threading.Event()
        self.runner = StepRunner(engine.config, engine.id, engine.trampolines, engine.types)
        self._needs_discard = False
        self.more_work = True
        self.batch = engine.config.batch_size
        self._outcome: str | None = None  # what became of the running step, when not obvious

    def cancel_statement(self) -> None:
        for conn in (self.conn, self.runner.side_active):
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
                        self._needs_discard = False
                    self.more_work = True
                    found = self.step_batch(self.conn)
                    backoff = 0.2
                    if found:
                        blocked_backoff = BLOCKED_BACKOFF_MIN
                        if self.more_work:
                            self.engine.wake(1)  # more is due: chain-wake another worker
                    else:
                        timeout, blocked = self._idle_timeout()
                        if blocked:
                            self.engine.wait_blocked(blocked_backoff)
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
                        self._fault_alone(task, exc)
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
        finally:
            self._drop_connection()
            self.thread_done.set()

    def _drop_connection(self) -> None:
        self.runner.close_side_connections()
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None
        self.current = None
        self.task = None
        self.busy = False

    def _idle_timeout(self) -> tuple[float, bool]:
        """How long to wait after an empty claim, and whether tasks are due all the same (the
        claim could take none of them: its role's slots are all held, or other batches hold
        their rows), in which case the worker backs off (Engine.wait_blocked) instead."""
        timeout = self.engine.config.poll_interval
        conn = self.conn
        if conn is not None and not conn.closed:
            with contextlib.suppress(psycopg.Error):
                row = conn.execute(
                    "SELECT pg_catalog.date_part('epoch', pg_catalog.min(run_at) "
                    "OPERATOR(pg_catalog.-) pg_catalog.now()) FROM df_internal.tasks").fetchone()
                if row and row[0] is not None:
                    if row[0] <= 0:
                        return timeout, True
                    timeout = max(0.005, min(timeout, row[0] + 0.002))
        return timeout, False

    def step_batch(self, conn: psycopg.Connection) -> bool:
        """Claim due tasks (up to `batch`, see claim_tasks) and run them in one transaction, each
        behind its own savepoint, then commit them together. Returns False when nothing was due.

        Each step and its checkpoint still commit atomically (exactly-once); a failed step rolls
        back to its savepoint and is recorded without disturbing the others. Tasks not reached
        within the time budget (a slow step) are released by the commit for any worker to take.
        """
        self.task = None
        if self._needs_discard:
            reset_session(conn)
            self._needs_discard = False
        # Batch only when no other worker is idle: with a short queue every task gets a worker
        # of its own; with a backlog (everyone busy) one commit serves many steps.
        claim = 1 if self.engine.idle_workers else self.batch
        claim_started = time.perf_counter()
        # jsonb columns (vars, named results: user data) come as text and are decoded per task
        # (_task_from_row), so one undecodable task is that task's fault, not the whole claim's.
        cur = conn.cursor()
        cur.adapters.register_loader("jsonb", TextLoader)
        with conn.pipeline():
            conn.execute("BEGIN")
            cur.execute(CLAIM, (self.engine.schema_level, self.engine.id, claim, self.number,
                                len(self.engine.workers)))
        rows = cur.fetchall()
        self.engine.metrics.claimed(time.perf_counter() - claim_started, len(rows))
        if not rows:
            conn.execute("ROLLBACK")
            self.engine.journal.clear(self.number)
            return False
        self.more_work = any(row[21] for row in rows)
        tasks = [_task_from_row(row) for row in rows if row[3] != "started"]
        home = conn.info.dbname
        # Only for submitters that may run steps at all: a superuser (with superuser instances
        # off), a role that cannot log in or a dropped role fails in check_identity without a
        # SECURITY DEFINER function ever being created for it.
        setup = {t.role_oid for t in tasks if t.node_type == "SQL" and not t.database_elsewhere(home)
                 and self.runner.identity_problem(t) is None
                 and self.engine.trampolines.needs_setup(home, t.role_oid)}
        if setup:
            # Create the submitters' trampolines outside the steps' transaction (once per role
            # and process); a dropped role is remembered so its step fails with a clear message.
            conn.execute("ROLLBACK")
            for role_oid in setup:
                self.engine.trampolines.ensure(conn, role_oid)
            return True
        if tasks:
            try:
                self.engine.journal.record(self.number, [(t.instance_id, t.node_id, t.gen)
                                                         for t in tasks], conn.info.backend_pid)
            except psycopg.Error as exc:
                # Unrecorded, a crash in these steps could not be charged to them: not now.
                conn.execute("ROLLBACK")
                raise psycopg.OperationalError(f"cannot record the tasks in flight: {exc}") from exc
        self.busy = True
        budget_end = time.monotonic() + BATCH_TIME_BUDGET
        ran = 0
        stopped_early = False
        tally = self.engine.metrics.tally()  # outcomes, published once the transaction ended
        try:
            for index, task in enumerate(tasks):
                if index and time.monotonic() > budget_end:
                    stopped_early = True
                    break
                self.current = (task.instance_id, task.node_id, task.gen)
                self.task = task
                kind = tally.started(task.node_type, task.kind)
                self._outcome = None
                outcome = self._run_task(conn, task, first=index == 0,
                                         commit=index == len(tasks) - 1)
                tally.finished(kind, self._outcome, outcome in (_Outcome.RAN, _Outcome.RAN_LAST))
                if outcome is _Outcome.ABORTED:
                    tally.roll_back()
                    self.batch = 1
                    return True  # the whole transaction was rolled back; its tasks stay queued
                if outcome in (_Outcome.RAN, _Outcome.RAN_LAST):
                    ran += 1
                if outcome is _Outcome.RAN_LAST and index < len(tasks) - 1:
                    self.more_work = True
                    break
                if outcome is _Outcome.CONFLICT:
                    stopped_early = True
                    break
            if conn.pgconn.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.execute("COMMIT")  # (a last fused step commits in its own round trip)
        except BaseException:
            tally.roll_back()
            raise
        finally:
            self.busy = False
            self.current = None
        self.task = None
        tally.publish()
        self.engine.count_steps(ran)
        self._adapt_batch(shrink=stopped_early)
        if stopped_early:
            self.more_work = True
        return True

    def _adapt_batch(self, shrink: bool) -> None:
        """Grow the claim while batches run to the end within the time budget; shrink it when
        one did not (slow steps, or steps conflicting with the batch's locks), so such steps
        are claimed, and hold others back, one or two at a time."""
        limit = self.engine.config.batch_size
        self.batch = max(1, self.batch // 2) if shrink else min(limit, self.batch * 2)

    def _run_task(self, conn: psycopg.Connection, task: Task, *, first: bool,
                  commit: bool) -> _Outcome:
        """Run one claimed task inside the batch's transaction, behind savepoint `step`.

        `commit` rides on the last task's round trip. A step after the first of a batch runs
        with a short lock_timeout: alone it would not wait behind the locks this batch (or
        another) holds for earlier steps, so rather than wait (or deadlock) there it gives way
        (CONFLICT) and runs again, unbatched, in a later transaction.
        """
        started = datetime.now(UTC)
        in_savepoint = False
        sql_step = task.node_type == "SQL"
        try:
            if task.load_error is not None:
                raise EngineFault(task.load_error)
            if task.kind == "iterate":
                in_savepoint = True
                _script(conn, "SAVEPOINT step", "SELECT df_internal.loop_iterate(%s, %s)",
                        "RELEASE SAVEPOINT step", "COMMIT" if commit else None,
                        params=(task.instance_id, task.node_id))
                return _Outcome.RAN
            fused = self.runner.plan_sql(conn, task, started)
            if fused is not None:  # the exactly-once path
                in_savepoint = True
                # One round trip; an error skips the rest of the script, COMMIT included.
                try:
                    # (the marker first: the console finds the running step by it, activity.py)
                    marker = step_marker(task.instance_id, task.node_id, task.gen)
                    with _script(conn, f"{marker} SAVEPOINT step", None if first else BATCH_LOCK_TIMEOUT,
                                 _step_timeout(conn, task.instance_id, self.engine.step_timeout_ms),
                                 fused.query, "RELEASE SAVEPOINT step", SESSION_RESET,
                                 "COMMIT" if commit else None) as cur:
                        verdict = _checkpoint_verdict(cur)
                except psycopg.Error as exc:
                    if conn.broken:
                        raise
                    raise self.runner.fused_error(fused, exc) from exc
                if verdict == "stale":
                    self._outcome = "stale"
                # Parallel branches of this instance will want its lock, now held by this
                # transaction: commit now rather than at the end of the batch.
                return _Outcome.RAN_LAST if verdict == "shared" else _Outcome.RAN
            conn.execute("SAVEPOINT step")
            in_savepoint = True
            self.runner.run(conn, task, started)
            if self.runner.parked:
                self._outcome = "waiting"
            _script(conn, "RELEASE SAVEPOINT step", SESSION_RESET if sql_step else None)
            return _Outcome.RAN
        except StepFailure as failure:
            if not self._rollback_step(conn, in_savepoint):
                return _Outcome.ABORTED
            if not first and failure.sqlstate in BATCH_CONFLICTS:
                log.debug("step %s/%s gave way to the batch's locks (%s); runs again alone",
                          task.instance_id, task.node_id, failure.sqlstate)
                return _Outcome.CONFLICT
            # (describing a SQL step ran user code too: wipe the session after it)
            return self._in_savepoint(conn, task, self._record_failure, task, failure, started,
                                      sql_step)
        except EngineStatementError as exc:
            if exc.sqlstate == "55P03":
                if not self._rollback_step(conn, in_savepoint):
                    return _Outcome.ABORTED
                return self._in_savepoint(conn, task, self._defer, task, str(exc))
            if exc.retry_now:  # (self-healing, at most twice: see fused_error)
                log.info("step %s/%s: %s", task.instance_id, task.node_id, exc)
                return _Outcome.CONFLICT if self._rollback_step(conn, in_savepoint) else _Outcome.ABORTED
            return self._fault(conn, task, exc, started, in_savepoint)
        except psycopg.Error as exc:
            if conn.broken:
                raise
            if exc.sqlstate in TRANSIENT_STATES:
                # An engine statement was interrupted (df.cancel while checkpointing, a lock or
                # serialization conflict): the task stays queued and runs again.
                log.info("step %s/%s interrupted: %s", task.instance_id, task.node_id, exc)
                if self._rollback_step(conn, in_savepoint):
                    return _Outcome.CONFLICT
                return _Outcome.ABORTED
            return self._fault(conn, task, exc, started, in_savepoint)
        except Exception as exc:  # noqa: BLE001 - the engine's own handling of this task failed
            return self._fault(conn, task, exc, started, in_savepoint)

    def _fault(self, conn: psycopg.Connection, task: Task, exc: BaseException,
               started: datetime, in_savepoint: bool) -> _Outcome:
        """The engine could not process this task (planning, describing, substitution, result
        encoding, checkpoint: anything but the step's own failure). Undo it and charge the task
        a fault (df_internal.task_fault): it is retried after a backoff, out of every claim in
        the meantime, and its node fails with the reason once it has happened max_task_faults
        times. Never an endless loop, never a silent pending, the worker free for other work."""
        reason = fault_reason(exc)
        log.error("cannot process step %s/%s: %s", task.instance_id, task.node_id, reason,
                  exc_info=not isinstance(exc, EngineStatementError | psycopg.Error))
        self._outcome = "fault"
        if not self._rollback_step(conn, in_savepoint):
            self._fault_alone(task, exc)  # the batch is gone: charge it in its own transaction
            return _Outcome.ABORTED
        return self._in_savepoint(conn, task, self._record_fault, task, reason, started)

    def _record_fault(self, conn: psycopg.Connection, task: Task, reason: str,
                      started: datetime | None) -> None:
        verdict = scalar(conn, "SELECT df_internal.task_fault(%s, %s, %s, %s, %s, %s, %s)",
                         (task.instance_id, task.node_id, task.gen, reason, self.engine.id,
                          started, self.engine.config.max_task_faults))
        if verdict == "failed":
            log.error("step %s/%s failed: the engine could not process it %d times",
                      task.instance_id, task.node_id, self.engine.config.max_task_faults)
        if task.node_type == "SQL":
            conn.execute(SESSION_RESET)  # describing may have run user code

    def _fault_alone(self, task: Task, exc: BaseException) -> None:
        """Charge a fault outside any batch (the batch's transaction or connection is gone)."""
        try:
            with connect(self.engine.config.dsn, f"worker {self.number} fault") as conn:
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
        self._abort(conn)
        return False

    def _in_savepoint(self, conn: psycopg.Connection, task: Task,
                      action: Callable[..., None], *args: Any) -> _Outcome:
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
            return _Outcome.RAN
        except psycopg.Error as exc:
            if conn.broken:
                raise
            log.warning("could not record the outcome of %s/%s (%s); will retry",
                        task.instance_id, task.node_id, exc)
            self._abort(conn)
            if action != self._record_fault:  # (never the same failure forever: a fault)
                self._fault_alone(task, exc)
            return _Outcome.ABORTED

    def _abort(self, conn: psycopg.Connection) -> None:
        """Roll the whole batch back; its tasks stay queued. The steps' session leftovers go
        with the next reset_session."""
        with contextlib.suppress(psycopg.Error):
            conn.execute("ROLLBACK")
        self._needs_discard = True

    def _defer(self, conn: psycopg.Connection, task: Task, why: str) -> None:
        """Somebody (normally the submitter) holds a lock the checkpoint needs: put the task back
        a little later instead of blocking this worker, so other instances keep running."""
        log.warning("checkpoint of %s/%s is blocked (%s); retrying in 5 s", task.instance_id,
                    task.node_id, why.splitlines()[0])
        conn.execute("UPDATE df_internal.tasks SET run_at = pg_catalog.now() + interval '5 seconds' "
                     "WHERE instance_id = %s AND node_id = %s AND gen = %s",
                     (task.instance_id, task.node_id, task.gen))
        self._outcome = "deferred"

    def _record_failure(self, conn: psycopg.Connection, task: Task, failure: StepFailure,
                        started: datetime, wipe: bool) -> None:
        attempt = task.attempts + 1
        delay = None if failure.kind in NEVER_RETRIED else retry_delay(
            task.retry_policy, attempt, failure)
        conn.execute(
            "SELECT df_internal.fail_task(%s, %s, %s, %s, %s, %s, %s, CASE WHEN %s::float8 IS NULL "
            "THEN NULL ELSE pg_catalog.make_interval(secs => %s::float8) END)",
            (task.instance_id, task.node_id, task.gen, str(failure), failure.ran_sql,
             self.engine.id, started, delay, delay),
        )
        self._outcome = "failed" if delay is None else "retried"
        if wipe:
            conn.execute(SESSION_RESET)


def _step_timeout(conn: psycopg.Connection, instance_id: str, default_ms: int) -> str:
    """The statement setting the step's statement_timeout (engine default, role ceiling, workflow
    value: see df_internal.step_timeout_for) for the fused statement that follows it, as complete
    SQL (values as literals); SESSION_RESET's RESET ALL takes it away before the next step."""
    return sql.SQL("SELECT pg_catalog.set_config('statement_timeout', "
                   "df_internal.step_timeout_for({}, {}), true)").format(
        sql.Literal(instance_id), sql.Literal(int(default_ms))).as_string(conn)


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


# The claim, plus the submitter's privileges as they are now (re-checked for every step, see
# StepRunner.check_identity): df usage and CONNECT on the step's database. A dropped role or a
# missing database read as NULL / false, never as an error that would fail the whole claim.
CLAIM = """
SELECT c.*,
       CASE WHEN c.role_name IS NOT NULL
            THEN pg_catalog.has_schema_privilege(c.role_oid, 'df', 'USAGE') END,
       CASE WHEN c.role_name IS NOT NULL THEN
            pg_catalog.has_database_privilege(c.role_oid,
                (SELECT d.oid FROM pg_catalog.pg_database d
                  WHERE d.datname OPERATOR(pg_catalog.=)
                        COALESCE(c.database, pg_catalog.current_database())), 'CONNECT') END
  FROM df_internal.claim_tasks(%s, %s, %s, %s, %s) c
"""


# SQLSTATEs of an engine statement that was interrupted rather than failed: cancelled (df.cancel,
# shutdown), a lock or serialization conflict. The task simply runs again.
TRANSIENT_STATES = frozenset({"57014", "55P03", "40001", "40P01"})


class EngineFault(Exception):
    """A task the engine cannot even load (see _task_from_row)."""


def fault_reason(exc: BaseException) -> str:
    """A readable one-line reason for a fault, bounded in size."""
    if isinstance(exc, EngineStatementError | EngineFault):
        text = str(exc)
    elif isinstance(exc, psycopg.Error):
        text = f"an engine statement failed: {exc.diag.message_primary or exc}"
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    text = " ".join(text.replace("\x00", "").split())
    if len(text) > 500:
        text = text[:500] + "…"
    return f"the engine could not process this step: {text}"


def _json_column(value: Any, default: Any) -> Any:
    """A jsonb column of a claim row, read as text (see step_batch)."""
    return default if value is None else jsonexact.loads(value)


def _task_from_row(row: tuple[Any, ...]) -> Task:
    """A row of df_internal.claim_tasks as a Task. A row whose user data cannot be decoded
    still becomes a Task (its key), marked with load_error: _run_task charges it a fault."""
    try:
        vars_, named, policy = (_json_column(row[12], {}), _json_column(row[13], {}),
                                _json_column(row[16], None))
        load_error = None
    except Exception as exc:  # noqa: BLE001 - whatever the data, the task gets a clear fault
        vars_, named, policy = {}, {}, None
        load_error = f"its variables or named results cannot be read: {type(exc).__name__}: {exc}"
    return Task(
        instance_id=row[0], node_id=row[1], gen=row[2], kind=row[3], phase=row[4],
        deadline=row[5], node_type=row[6], query=row[7], result_name=row[8],
        submitted_by=str(row[9]), role_oid=int(row[10] or 0), database=row[11], vars=vars_ or {},
        named_results=named or {}, label=row[14], attempts=row[15], retry_policy=policy,
        load_error=load_error,
        role_name=row[17], role_can_login=bool(row[18]), role_is_super=bool(row[19]),
        superuser_allowed=bool(row[20]), role_has_usage=bool(row[22]),
        role_can_connect=None if row[23] is None else bool(row[23]),
    )


def configure_logging(fmt: str = "text", level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        class _Json(logging.Formatter):
            def format(self, record: logging.LogRecord) -> str:
                return json.dumps({"ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
                                   "level": record.levelname.lower(), "logger": record.name,
                                   "msg": record.getMessage()})
        handler.setFormatter(_Json())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("dftui")
    root.handlers[:] = [handler]
    root.setLevel(level)


def main(config: EngineConfig) -> int:
    """Entry point of `dftui engine`."""
    configure_logging(config.log_format)
    engine = Engine(config)
    return engine.run_forever()
