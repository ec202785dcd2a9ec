"""The engine process: registration, threads, wake-ups, graceful shutdown.

Threads, each with its own connection:
* listener (engine/listener.py) — LISTEN df_work / df_cancel / df_abandon, wakes workers and
  cancels statements of cancelled instances and race losers;
* workers (engine/worker.py, ``concurrency`` of them) — claim due tasks (engine/claim.py) and
  run each with its checkpoint in the same transaction (engine/transaction.py);
* housekeeping (engine/housekeeping.py) — heartbeat, retention, dead-engine bookkeeping.
PostgreSQL is the only coordinator (engine/keys.py lists what the engine coordinates by): any
number of engine processes can serve one database.
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
from engine.housekeeping import housekeeping
from engine.identity import Trampolines
from engine.journal import Journal
from engine.journal import reap as reap_inflight
from engine.listener import listen
from engine.metrics import EngineMetrics
from engine.pg_settings import apply_database_settings
from engine.results import TypeCache
from engine.worker import Worker

log = logging.getLogger("dftui.engine")

# pg_durable settings whose value in this engine's own session (server configuration, never a
# user's SET) is published in df_internal.engines.settings for df._setting (settings.sql).
PUBLISHED_SETTINGS = (
    "pg_durable.enable_superuser_instances", "pg_durable.list_instances_max_limit",
    "pg_durable.http_security", "pg_durable.http_allowed_domains",
)
# The readiness level written to df_internal._worker_ready, pg_durable's WORKER_SCHEMA_VERSION.
WORKER_SCHEMA_VERSION = 1


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
        self.workers: list[Worker] = []
        self.steps_done = 0
        self._steps_lock = threading.Lock()
        self.journal = Journal(config.dsn, self.id)
        self.started = threading.Event()
        self.fatal_error: str | None = None
        self.schema_level = schema.schema_level()
        # This engine's workers' first slices of the queue among every live engine's workers
        # (claim_tasks looks there first): refreshed every heartbeat (see refresh_slices).
        self.slice_base = 0
        self.slices = config.concurrency
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
            self.refresh_slices(conn)
            # Before any claim: a task that was running when an engine died (perhaps killing it)
            # is charged now, so it cannot take this engine down straight away as well.
            reaped = reap_inflight(conn, self.config.max_task_faults)
            if reaped:
                log.warning("%d task(s) were running in an engine that died; retried later "
                            "(failed once it happens %d times)", reaped, self.config.max_task_faults)

    def refresh_slices(self, conn: psycopg.Connection) -> None:
        """Number this engine's workers among the workers of every live engine, so that each
        worker of every engine first looks at a slice of the queue of its own (claim_tasks):
        workers of two engines would otherwise share slices and contend for the same rows.
        Only a hint — engines that disagree for a heartbeat merely contend a little; every
        claim still looks at the whole queue when its own slice runs dry."""
        row = conn.execute(
            "SELECT COALESCE(sum(e.concurrency) FILTER (WHERE e.id < %s), 0), "
            "COALESCE(sum(e.concurrency), 0) FROM df_internal.engines e "
            "WHERE e.id = %s OR (e.stopped_at IS NULL AND e.heartbeat_at > "
            "pg_catalog.now() - pg_catalog.make_interval(secs => %s))",
            (self.id, self.id, float(self.config.engine_dead_after))).fetchone()
        if row is not None:
            base, total = int(row[0]), int(row[1])
            self.slice_base, self.slices = base, max(total, base + self.config.concurrency)

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
        listener = threading.Thread(target=listen, args=(self,), name="dftui-listener", daemon=True)
        listener.start()
        self._threads.append(listener)
        for n in range(self.config.concurrency):
            worker = Worker(self, n)
            self.workers.append(worker)
            t = threading.Thread(target=worker.run, name=f"dftui-worker-{n}", daemon=True)
            t.start()
            self._threads.append(t)
        hk = threading.Thread(target=housekeeping, args=(self,), name="dftui-housekeeping", daemon=True)
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

    def wait_stopping(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds; True as soon as the engine is stopping."""
        return self._stopping.wait(timeout)

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
