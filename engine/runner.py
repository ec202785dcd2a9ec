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
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg

from engine import __version__, schema
from engine.config import EngineConfig
from engine.db import connect
from engine.identity import Trampolines, reset_session
from engine.results import TypeCache
from engine.steps import EngineStatementError, StepFailure, StepRunner, Task, retry_delay

log = logging.getLogger("dftui.engine")

class Engine:
    """One engine process. `start()` returns once the workers run; `stop()` shuts down."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.trampolines = Trampolines()
        self.types = TypeCache()
        self._stopping = threading.Event()
        self._wake = threading.Condition()
        self._pending_wakeups = 0
        self._threads: list[threading.Thread] = []
        self._workers: list[_Worker] = []
        self.steps_done = 0
        self._steps_lock = threading.Lock()
        self._checkpoint_failures: dict[tuple[str, str, int], int] = {}
        self.started = threading.Event()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        with connect(self.config.dsn, "setup") as conn:
            if self.config.install:
                change = schema.install(conn)
                if change.applied:
                    log.info("schema: %s", change.describe())
            elif schema.installed_version(conn) is None:
                raise RuntimeError("the df schema is not installed in this database (run `dftui install`)")
            conn.execute(
                "INSERT INTO df_internal.engines (id, host, pid, version, concurrency) "
                "VALUES (%s, %s, %s, %s, %s)",
                (self.id, socket.gethostname(), os.getpid(), __version__, self.config.concurrency),
            )
            conn.execute("INSERT INTO df._worker_epoch (epoch_id) VALUES (%s) ON CONFLICT DO NOTHING",
                         (self.id,))
            conn.execute("INSERT INTO df_internal._worker_ready (schema_version) VALUES (%s)",
                         (schema.latest_version(),))
        listener = threading.Thread(target=self._listen, name="dftui-listener", daemon=True)
        listener.start()
        self._threads.append(listener)
        for n in range(self.config.concurrency):
            worker = _Worker(self, n)
            self._workers.append(worker)
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
        self.wake(len(self._workers) + 1)
        deadline = time.monotonic() + grace
        for worker in self._workers:
            worker.thread_done.wait(max(0.0, deadline - time.monotonic()))
        for worker in self._workers:
            if not worker.thread_done.is_set():
                worker.cancel_statement()
        for worker in self._workers:
            worker.thread_done.wait(5)
        with contextlib.suppress(psycopg.Error), connect(self.config.dsn, "shutdown") as conn:
            conn.execute("UPDATE df_internal.engines SET stopped_at = now(), steps_done = %s "
                         "WHERE id = %s", (self.steps_done, self.id))
        log.info("engine %s stopped after %d steps", self.id, self.steps_done)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

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
            if self.config.once and self._idle():
                break
        self.stop()
        return 0

    def _idle(self) -> bool:
        if any(w.busy for w in self._workers):
            return False
        with connect(self.config.dsn, "once") as conn:
            row = conn.execute("SELECT count(*) FROM df_internal.tasks WHERE run_at <= now() + interval '1 second'").fetchone()
            return bool(row) and row[0] == 0

    # -- wake-ups ----------------------------------------------------------------------------
    def wake(self, n: int = 1) -> None:
        with self._wake:
            self._pending_wakeups = min(self._pending_wakeups + n, len(self._workers) + 1)
            self._wake.notify(n)

    def wait_for_work(self, timeout: float) -> None:
        with self._wake:
            if self._pending_wakeups == 0 and not self._stopping.is_set():
                self._wake.wait(timeout)
            if self._pending_wakeups > 0:
                self._pending_wakeups -= 1

    def checkpoint_failed(self, key: tuple[str, str, int]) -> bool:
        """Count a failed checkpoint; True once the same task has failed three times."""
        with self._steps_lock:
            self._checkpoint_failures[key] = self._checkpoint_failures.get(key, 0) + 1
            if len(self._checkpoint_failures) > 10000:
                self._checkpoint_failures.clear()
            return self._checkpoint_failures[key] >= 3

    def count_step(self) -> None:
        with self._steps_lock:
            self.steps_done += 1

    # -- listener ----------------------------------------------------------------------------
    def _listen(self) -> None:
        backoff = 0.2
        while not self._stopping.is_set():
            try:
                with connect(self.config.dsn, "listen") as conn:
                    conn.execute("LISTEN df_work")
                    conn.execute("LISTEN df_cancel")
                    conn.execute("LISTEN df_abandon")
                    backoff = 0.2
                    self.wake(len(self._workers))  # catch up on anything missed while away
                    while not self._stopping.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self._on_notify(note.channel, note.payload)
            except psycopg.OperationalError as exc:
                if self._stopping.is_set():
                    return
                log.warning("listener connection lost (%s); reconnecting in %.1fs", exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    def _on_notify(self, channel: str, payload: str) -> None:
        if channel == "df_work":
            self.wake(1)
        elif channel == "df_cancel":
            for worker in self._workers:
                if worker.current and worker.current[0] == payload:
                    log.info("cancelling running step of cancelled instance %s", payload)
                    worker.cancel_statement()
        elif channel == "df_abandon":
            try:
                data = json.loads(payload)
            except ValueError:
                return
            nodes = set(data.get("nodes") or [])
            for worker in self._workers:
                if worker.current and worker.current[0] == data.get("instance_id") and worker.current[1] in nodes:
                    log.info("cancelling abandoned step %s/%s", *worker.current)
                    worker.cancel_statement()

    # -- housekeeping ------------------------------------------------------------------------
    def _housekeeping(self) -> None:
        conn: psycopg.Connection | None = None
        while not self._stopping.wait(self.config.heartbeat_interval):
            try:
                if conn is None or conn.closed:
                    conn = connect(self.config.dsn, "housekeeping")
                conn.execute("UPDATE df_internal.engines SET heartbeat_at = now(), steps_done = %s "
                             "WHERE id = %s", (self.steps_done, self.id))
                conn.execute("UPDATE df._worker_epoch SET last_seen_at = now() WHERE epoch_id = %s",
                             (self.id,))
                if self.config.retention_days is not None:
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
        self.current: tuple[str, str] | None = None
        self.busy = False
        self.thread_done = threading.Event()
        self.runner = StepRunner(engine.config, engine.id, engine.trampolines, engine.types)
        self._needs_discard = False
        self.more_work = True

    def cancel_statement(self) -> None:
        for conn in (self.conn, self.runner.side_active):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.cancel_safe(timeout=2.0)

    def run(self) -> None:
        backoff = 0.2
        try:
            while not self.engine.stopping:
                try:
                    if self.conn is None or self.conn.closed:
                        self.conn = connect(self.engine.config.dsn, f"worker {self.number}")
                        self._needs_discard = False
                    self.more_work = True
                    found = self.step_once(self.conn)
                    backoff = 0.2
                    if found:
                        if self.more_work:
                            self.engine.wake(1)  # more is due: chain-wake another worker
                    else:
                        self.engine.wait_for_work(self._idle_timeout())
                except psycopg.OperationalError as exc:
                    if self.engine.stopping:
                        break
                    log.warning("worker %d: connection problem (%s); retrying in %.1fs",
                                self.number, exc, backoff)
                    self._drop_connection()
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
                except Exception:  # noqa: BLE001 - a worker must survive anything
                    log.exception("worker %d: unexpected error", self.number)
                    self._drop_connection()
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
        self.busy = False

    def _idle_timeout(self) -> float:
        timeout = self.engine.config.poll_interval
        conn = self.conn
        if conn is not None and not conn.closed:
            with contextlib.suppress(psycopg.Error):
                row = conn.execute(
                    "SELECT pg_catalog.date_part('epoch', pg_catalog.min(run_at) "
                    "OPERATOR(pg_catalog.-) pg_catalog.now()) FROM df_internal.tasks").fetchone()
                if row and row[0] is not None:
                    timeout = max(0.005, min(timeout, row[0] + 0.002))
        return timeout

    def step_once(self, conn: psycopg.Connection) -> bool:
        """Claim and run one task. Returns False when nothing was due."""
        if self._needs_discard:
            reset_session(conn)
        with conn.pipeline():
            conn.execute("BEGIN")
            cur = conn.execute("SELECT * FROM df_internal.claim_task(%s)", (self.engine.id,))
            conn.execute("SAVEPOINT step")
        self._needs_discard = False
        row = cur.fetchone()
        if row is None:
            conn.execute("ROLLBACK")
            return False
        task = Task(
            instance_id=row[0], node_id=row[1], gen=row[2], kind=row[3], phase=row[4],
            deadline=row[5], node_type=row[6], query=row[7], result_name=row[8],
            submitted_by=str(row[9]), role_oid=int(row[10] or 0), database=row[11], vars=row[12] or {},
            named_results=row[13] or {}, label=row[14], attempts=row[15], retry_policy=row[16],
            role_name=row[17], role_can_login=bool(row[18]), role_is_super=bool(row[19]),
            superuser_allowed=bool(row[20]),
        )
        self.more_work = bool(row[21]) if row[21] is not None else True
        self.busy = True
        self.current = (task.instance_id, task.node_id)
        try:
            if task.kind == "started":
                conn.execute("COMMIT")
                return True
            if task.kind == "iterate":
                conn.execute("SELECT df_internal.loop_iterate(%s, %s)", (task.instance_id, task.node_id))
                conn.execute("COMMIT")
                return True
            if (task.node_type == "SQL" and not task.database_elsewhere(conn.info.dbname)
                    and self.engine.trampolines.needs_setup(conn.info.dbname, task.role_oid)):
                # Create the submitter's trampolines outside the step's transaction; a dropped
                # role is remembered so the step itself fails with a clear message.
                conn.execute("ROLLBACK")
                self.engine.trampolines.ensure(conn, task.role_oid)
                return True
            self._run_leaf(conn, task)
            return True
        finally:
            self.busy = False
            self.current = None

    def _run_leaf(self, conn: psycopg.Connection, task: Task) -> None:
        """Run one leaf. After a SQL step, whatever happened, the session is wiped with
        reset_session() (DISCARD ALL minus plans) before the engine sends anything else on this connection: user code may have
        changed search_path, created temporary objects or prepared statements."""
        self._needs_discard = task.node_type == "SQL"
        try:
            self._run_leaf_transaction(conn, task)
        finally:
            if self._needs_discard and not conn.closed and (
                    conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE):
                reset_session(conn)
                self._needs_discard = False

    def _run_leaf_transaction(self, conn: psycopg.Connection, task: Task) -> None:
        started = datetime.now(UTC)
        self.runner.committed = False
        try:
            self.runner.run(conn, task, started)
        except StepFailure as failure:
            conn.execute("ROLLBACK TO SAVEPOINT step")
            self._record_failure(conn, task, failure, started)
            return
        except EngineStatementError as exc:
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")
            if exc.sqlstate == "55P03":
                self._defer(conn, task, str(exc))
                return
            if self.engine.checkpoint_failed((task.instance_id, task.node_id, task.gen)):
                # The same checkpoint keeps failing: give up on the node rather than spin.
                log.error("checkpoint of %s/%s keeps failing (%s); failing the node",
                          task.instance_id, task.node_id, exc)
                self._fail_after_engine_error(conn, task, str(exc), started)
                return
            log.warning("checkpoint of %s/%s failed (%s); will retry", task.instance_id, task.node_id, exc)
            time.sleep(0.05)
            return
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            # An engine statement failed (e.g. cancelled by df.cancel while checkpointing).
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")
            log.info("step %s/%s interrupted: %s", task.instance_id, task.node_id, exc)
            return
        if not self.runner.committed:
            conn.execute("COMMIT")
        self.engine.count_step()

    def _defer(self, conn: psycopg.Connection, task: Task, why: str) -> None:
        """Somebody (normally the submitter) holds a lock the checkpoint needs: put the task back
        a little later instead of blocking this worker, so other instances keep running."""
        log.warning("checkpoint of %s/%s is blocked (%s); retrying in 5 s", task.instance_id,
                    task.node_id, why.splitlines()[0])
        conn.execute("UPDATE df_internal.tasks SET run_at = pg_catalog.now() + interval '5 seconds' "
                     "WHERE instance_id = %s AND node_id = %s AND gen = %s",
                     (task.instance_id, task.node_id, task.gen))

    def _fail_after_engine_error(self, conn: psycopg.Connection, task: Task, error: str,
                                 started: datetime) -> None:
        conn.execute("BEGIN")
        conn.execute("SELECT 1 FROM df_internal.tasks WHERE instance_id = %s AND node_id = %s FOR UPDATE",
                     (task.instance_id, task.node_id))
        self._record_failure(conn, task, StepFailure(error), started)

    def _record_failure(self, conn: psycopg.Connection, task: Task, failure: StepFailure,
                        started: datetime) -> None:
        attempt = task.attempts + 1
        delay = None if failure.kind in ("identity", "http_policy") else retry_delay(
            task.retry_policy, attempt, failure)
        try:
            conn.execute(
                "SELECT df_internal.fail_task(%s, %s, %s, %s, %s, %s, %s, CASE WHEN %s::float8 IS NULL "
                "THEN NULL ELSE pg_catalog.make_interval(secs => %s::float8) END)",
                (task.instance_id, task.node_id, task.gen, str(failure), failure.ran_sql,
                 self.engine.id, started, delay, delay),
            )
        except psycopg.errors.LockNotAvailable as exc:
            conn.execute("ROLLBACK")
            self._defer(conn, task, str(exc))
            return
        conn.execute("COMMIT")
        self.engine.count_step()


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
