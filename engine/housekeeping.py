"""Housekeeping: the engine's periodic SQL, on a connection of its own.

Every HOUSEKEEPING_TICK: vacuum the queue when this engine has run VACUUM_QUEUE_EVERY more steps.
Every heartbeat: cancel steps of ended instances (the database is the truth, notifications only
hints), the engine's heartbeat rows, charging tasks that were running in an engine that died
(engine/journal.py), retention, and a wake-up when timers came due without a notification.
Every wait is bounded (HOUSEKEEPING_LOCK_TIMEOUT): a stopped heartbeat would make this engine
look dead.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING

import psycopg

from engine.db import connect
from engine.journal import reap as reap_inflight
from engine.keys import HOUSEKEEPING_LOCK_TIMEOUT
from engine.listener import cancel_dead_steps
from engine.retention import Retention

if TYPE_CHECKING:
    from engine.runner import Engine

log = logging.getLogger("dftui.engine")

# Housekeeping wakes this often; heartbeats go out every heartbeat_interval.
HOUSEKEEPING_TICK = 0.5
# Vacuum the queue after this many steps of this engine.
VACUUM_QUEUE_EVERY = 500


def housekeeping(engine: Engine) -> None:
    """The housekeeping thread's body: until the engine stops."""
    config = engine.config
    conn: psycopg.Connection | None = None
    next_beat = 0.0
    next_retention = 0.0
    retention = Retention()
    vacuumed_at_steps = 0
    can_vacuum: bool | None = None
    while not engine.wait_stopping(HOUSEKEEPING_TICK):
        try:
            if conn is None or conn.closed:
                conn = connect(config.dsn, "housekeeping")
                # A role may hold row locks on its own instances (e.g. FOR UPDATE on a
                # finished one the retention DELETE wants): never wait for them for long,
                # or the heartbeat would stop and this engine look dead.
                conn.execute(f"SET lock_timeout = '{HOUSEKEEPING_LOCK_TIMEOUT}'")
                can_vacuum = None
            if can_vacuum is None:
                row = conn.execute(
                    "SELECT pg_catalog.pg_has_role(c.relowner, 'MEMBER') FROM pg_catalog.pg_class c "
                    "WHERE c.oid = 'df_internal.tasks'::pg_catalog.regclass").fetchone()
                can_vacuum = bool(row and row[0])
            if can_vacuum and engine.steps_done - vacuumed_at_steps >= VACUUM_QUEUE_EVERY:
                # Every claim walks the queue from the head of its run_at index, where the
                # tasks just finished lie dead until vacuumed (autovacuum looks once a minute
                # at best): measured, a claim's scan went from 9 ms to 0.1 ms.
                vacuumed_at_steps = engine.steps_done
                conn.execute("VACUUM (SKIP_LOCKED) df_internal.tasks")
            if time.monotonic() < next_beat:
                continue
            next_beat = time.monotonic() + config.heartbeat_interval
            # The database is the truth, notifications only hints: a cancel whose
            # notification was missed (listener reconnecting) is still acted on.
            cancel_dead_steps(engine, conn)
            # A status the engine could not write into a held instance row goes in once the
            # row is free (sql/routines/02_published_status.sql); never waits for it.
            conn.execute("SELECT df_internal.publish_unpublished()")
            conn.execute("UPDATE df_internal.engines SET heartbeat_at = now(), steps_done = %s "
                         "WHERE id = %s", (engine.steps_done, engine.id))
            conn.execute("UPDATE df._worker_epoch SET last_seen_at = now() WHERE epoch_id = %s",
                         (engine.epoch_id,))
            engine.refresh_slices(conn)
            if reap_inflight(conn, config.max_task_faults):
                log.warning("tasks that were running in an engine that died were charged a "
                            "fault; they are retried later")
            interval = config.reconcile_interval
            if config.retention_days is not None and interval != 0 and (
                    interval is None or time.monotonic() >= next_retention):
                next_retention = time.monotonic() + (interval or 0)
                retention.run(conn, config.retention_days)  # pg_durable's rules: engine/retention.py
            # Timers that came due wake the workers even without a notification.
            row = conn.execute("SELECT EXISTS (SELECT 1 FROM df_internal.tasks "
                               "WHERE run_at <= now())").fetchone()
            if row and row[0]:
                engine.wake(1)
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError):
                engine.metrics.connection_error("housekeeping")
            log.warning("housekeeping: %s", exc)
            with contextlib.suppress(Exception):
                if conn is not None:
                    conn.close()
            conn = None
    if conn is not None:
        conn.close()
