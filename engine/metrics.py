"""Prometheus metrics of one engine process, served on `--metrics-addr` (off by default).

Two kinds of figures, kept apart on purpose:
* what this process did — counters and histograms in memory, moved by the runner's hook calls
  (a counter increment costs about a microsecond; nothing here talks to the database);
* what the database shows — queue depth, age of the oldest due task, timers due, engines alive —
  read by `_QueueCollector` when Prometheus scrapes, on a connection of its own, at most once per
  `DB_READ_EVERY` seconds and under a statement timeout: nobody scraping costs nothing, and a slow
  database can delay a scrape but never a worker. Every engine of a database reports the same
  queue figures; aggregate them with max(), not sum() (docs/operations.md).

Step outcomes are counted when they are final — after the transaction that recorded them
committed (or rolled back: then the step is `requeued`) — so `steps_started` minus the sum of
`steps_finished` is the number of steps in flight.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from engine import __version__
from engine.db import connect
from engine.keys import LISTENED_CHANNELS

log = logging.getLogger("dftui.engine")

DEFAULT_HOST = "127.0.0.1"
DB_READ_EVERY = 1.0  # seconds a database reading is reused (several scrapers, one query)
DB_STATEMENT_TIMEOUT = "5s"

# What became of a step (the `outcome` label). Bounded: one of these, always.
OUTCOMES = ("completed", "failed", "retried", "waiting", "deferred", "requeued", "stale")
# Step types (the `type` label): node types as the engine runs them, bounded.
_TYPES = {"SQL": "sql", "HTTP": "http", "HTTP_MULTIPART": "http", "SLEEP": "sleep",
          "WAIT_SCHEDULE": "schedule", "SIGNAL": "signal"}
# Threads whose connections the engine keeps (the `thread` label of connection errors).
THREADS = ("worker", "listener", "housekeeping", "metrics")
CHANNELS = LISTENED_CHANNELS

# Durations of steps: from a sub-millisecond UPDATE to a multi-minute HTTP call.
STEP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                5.0, 10.0, 30.0, 60.0, 300.0)
CLAIM_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000)


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` or `PORT` (host 127.0.0.1), `[v6]:PORT`; ValueError says what is wrong."""
    value = text.strip()
    host, sep, port_text = value.rpartition(":")
    if not sep:
        host, port_text = "", value
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"metrics address {text!r}: write an IPv6 host in brackets, e.g. [::1]:9187")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"metrics address {text!r}: expected HOST:PORT with a port 0-65535")
    return host or DEFAULT_HOST, int(port_text)


def step_type(node_type: str | None, kind: str) -> str:
    """The bounded `type` label of a task."""
    if kind == "iterate":
        return "loop"
    return _TYPES.get(node_type or "", "other")


class EngineMetrics:
    """The metrics of one engine process, in a registry of their own (several engines may share
    a Python process, as in the tests)."""

    def __init__(self, dsn: str, engine_id: str, concurrency: int,
                 busy_workers: Callable[[], int], dead_after: float) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # first, so a failure to read the database shows in this scrape's error counter
        self.queue = _QueueCollector(dsn, dead_after, self)
        r.register(self.queue)
        self.steps_started = Counter(
            "dftui_engine_steps_started", "Steps (and LOOP iterations) this engine began to run.",
            ["type"], registry=r)
        self.steps_finished = Counter(
            "dftui_engine_steps_finished",
            "Steps this engine finished, by outcome, counted once their transaction ended: "
            "completed, failed (no retry left), retried (failed, retry scheduled), waiting (parked "
            "on a timer or signal), deferred (checkpoint blocked by a lock, put back 5 s), "
            "requeued (rolled back, runs again), stale (its instance ended or node was fenced).",
            ["type", "outcome"], registry=r)
        self.step_seconds = Histogram(
            "dftui_engine_step_duration_seconds",
            "Time from a step's start to its checkpoint (or recorded failure), on this engine.",
            ["type"], buckets=STEP_BUCKETS, registry=r)
        self.claim_seconds = Histogram(
            "dftui_engine_claim_duration_seconds",
            "Round trip of one claim (BEGIN + df_internal.claim_tasks), empty claims included.",
            buckets=CLAIM_BUCKETS, registry=r)
        self.batch_size = Histogram(
            "dftui_engine_batch_size", "Tasks claimed by one non-empty claim (run in one transaction).",
            buckets=BATCH_BUCKETS, registry=r)
        self.notifications = Counter(
            "dftui_engine_notifications", "Notifications received by the engine's listener.",
            ["channel"], registry=r)
        self.connection_errors = Counter(
            "dftui_engine_connection_errors",
            "Database connections lost or refused, by the engine thread that noticed.",
            ["thread"], registry=r)
        workers = Gauge("dftui_engine_workers", "Worker threads (--concurrency).", registry=r)
        workers.set(concurrency)
        busy = Gauge("dftui_engine_workers_busy", "Workers running a step right now.", registry=r)
        busy.set_function(lambda: float(busy_workers()))
        info = Gauge("dftui_engine_info", "This engine process (value 1).", ["engine_id", "version"],
                     registry=r)
        info.labels(engine_id, __version__).set(1)
        for t in THREADS:
            self.connection_errors.labels(t)
        for c in CHANNELS:
            self.notifications.labels(c)
        ProcessCollector(registry=r)
        self._server: Any = None
        self._server_thread: threading.Thread | None = None
        self.address: tuple[str, int] | None = None

    # -- hooks called by the runner ---------------------------------------------------------
    def claimed(self, seconds: float, tasks: int) -> None:
        self.claim_seconds.observe(seconds)
        if tasks:
            self.batch_size.observe(tasks)

    def tally(self) -> StepTally:
        """A tally for the steps of one transaction (publish or roll_back it when it ends)."""
        return StepTally(self)

    def notification(self, channel: str) -> None:
        if channel in CHANNELS:
            self.notifications.labels(channel).inc()

    def connection_error(self, thread: str) -> None:
        self.connection_errors.labels(thread).inc()

    # -- serving ----------------------------------------------------------------------------
    def serve(self, address: str) -> tuple[str, int]:
        """Serve /metrics on `address` (see parse_address) in a daemon thread; returns the bound
        host and port (port 0 picks a free one). OSError (e.g. port in use) says which address."""
        host, port = parse_address(address)
        try:
            self._server, self._server_thread = start_http_server(port, addr=host,
                                                                  registry=self.registry)
        except OSError as exc:
            raise OSError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
        self.address = (host, int(self._server.server_address[1]))
        return self.address

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.queue.close()


class StepTally:
    """Outcomes of the steps of one transaction, held back until it commits or rolls back."""

    def __init__(self, metrics: EngineMetrics) -> None:
        self._metrics = metrics
        self._steps: list[tuple[str, str, float]] = []
        self._started = 0.0
        self._done = False

    def started(self, node_type: str | None, kind: str) -> str:
        """A step begins; returns its `type` label for `finished`."""
        label = step_type(node_type, kind)
        self._metrics.steps_started.labels(label).inc()
        self._started = time.perf_counter()
        return label

    def finished(self, label: str, outcome: str | None, ran: bool) -> None:
        """The step ended with `outcome` (None: completed if it `ran`, else requeued)."""
        if outcome is None:
            outcome = "completed" if ran else "requeued"
        self._steps.append((label, outcome, time.perf_counter() - self._started))

    def roll_back(self) -> None:
        """The transaction was rolled back: every step in it runs again."""
        self._steps = [(label, "requeued", seconds) for label, _, seconds in self._steps]
        self.publish()

    def publish(self) -> None:
        if self._done:
            return
        self._done = True
        m = self._metrics
        for label, outcome, seconds in self._steps:
            m.steps_finished.labels(label, outcome).inc()
            if outcome != "requeued":
                m.step_seconds.labels(label).observe(seconds)


_QUEUE_SQL = """
SELECT count(*) FILTER (WHERE t.phase = 'start'),
       count(*) FILTER (WHERE t.phase = 'waiting'),
       pg_catalog.date_part('epoch', pg_catalog.now() OPERATOR(pg_catalog.-)
                            pg_catalog.min(t.run_at)),
       (SELECT count(*) FROM df_internal.tasks f WHERE f.run_at > pg_catalog.now()),
       (SELECT count(*) FROM df_internal.engines e WHERE e.stopped_at IS NULL
           AND e.heartbeat_at > pg_catalog.now() OPERATOR(pg_catalog.-)
               pg_catalog.make_interval(secs => %s))
  FROM df_internal.tasks t
 WHERE t.run_at <= pg_catalog.now()
"""


class _QueueCollector(Collector):
    """Database-wide gauges, read at scrape time (see the module docstring)."""

    def __init__(self, dsn: str, dead_after: float, metrics: EngineMetrics) -> None:
        self._dsn = dsn
        self._dead_after = dead_after
        self._metrics = metrics
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None
        self._read_at = 0.0
        self._row: tuple[Any, ...] | None = None

    def describe(self) -> list[Any]:
        return []  # read only at scrape time, never while registering

    def collect(self) -> Iterator[GaugeMetricFamily]:
        row = self._read()
        up = GaugeMetricFamily("dftui_database_up",
                               "1 when this engine could read the queue figures just now.")
        up.add_metric([], 0.0 if row is None else 1.0)
        yield up
        if row is None:
            return
        ready, timers, oldest, scheduled, alive = row
        for name, doc, value in (
            ("dftui_queue_ready_tasks", "Steps due to run and not yet claimed (whole database).", ready),
            ("dftui_queue_timers_due", "Timers, signal timeouts and cron waits that came due and "
             "are not yet handled (whole database).", timers),
            ("dftui_queue_scheduled_tasks", "Tasks not due yet: future timers, retries in backoff, "
             "signal waits (whole database).", scheduled),
            ("dftui_queue_oldest_ready_age_seconds", "How long the oldest due task (step or timer) "
             "has been due; 0 when none is (whole database).", max(0.0, float(oldest or 0.0))),
            ("dftui_engines_alive", "Engines registered on this database with a heartbeat within "
             "the engine-dead-after window (this one included).", alive),
        ):
            family = GaugeMetricFamily(name, doc)
            family.add_metric([], float(value or 0))
            yield family

    def _read(self) -> tuple[Any, ...] | None:
        with self._lock:
            if self._row is not None and time.monotonic() - self._read_at < DB_READ_EVERY:
                return self._row
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = connect(self._dsn, "metrics")
                    self._conn.execute(f"SET statement_timeout = '{DB_STATEMENT_TIMEOUT}'")
                self._row = self._conn.execute(_QUEUE_SQL, (self._dead_after,)).fetchone()
                self._read_at = time.monotonic()
                return self._row
            except psycopg.Error as exc:
                log.warning("metrics: cannot read the queue figures (%s)", exc)
                if isinstance(exc, psycopg.OperationalError):
                    self._metrics.connection_error("metrics")
                self._drop()
                self._row = None
                return None

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None

    def close(self) -> None:
        with self._lock:
            self._drop()
