"""What each worker is running, remembered where an engine crash cannot erase it.

A claim, its step and its checkpoint share one transaction, so when the engine process dies
(killed, out of memory, a crash in native code, perhaps caused by the task itself) PostgreSQL
rolls everything back and nothing records that the task was being run: a task that kills its
engine would be claimed, and kill the next engine, forever. So before running a batch each
worker writes the batch's task keys to df_internal.inflight, committed on a connection of its
own (one per engine, shared by its workers). When that connection's server session is gone,
df_internal.reap_inflight (called at start-up and by housekeeping) charges the tasks still
queued: a task that was running alone gets a fault (df_internal.task_fault: retried with
backoff, failed at the limit); tasks of a larger batch become suspects, which claims take
alone from then on, so a culprit is isolated and then counted.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence

import psycopg

from engine.db import connect

log = logging.getLogger("dftui.engine")


class Journal:
    """The engine's in-flight record (one connection, serialised between workers)."""

    def __init__(self, dsn: str, engine_id: str) -> None:
        self._dsn = dsn
        self._engine_id = engine_id
        self._conn: psycopg.Connection | None = None
        self._session: tuple[int, object] | None = None  # (backend pid, backend start)
        self._lock = threading.Lock()
        self._recorded: set[int] = set()  # workers whose row lists tasks

    def _connection(self) -> tuple[psycopg.Connection, tuple[int, object]]:
        if self._conn is None or self._conn.closed or self._session is None:
            self._conn = connect(self._dsn, "journal")
            row = self._conn.execute(
                "SELECT a.pid, a.backend_start FROM pg_catalog.pg_stat_activity a "
                "WHERE a.pid = pg_catalog.pg_backend_pid()").fetchone()
            if row is None:
                raise psycopg.OperationalError("the journal session is not in pg_stat_activity")
            self._session = (row[0], row[1])
        return self._conn, self._session

    def record(self, worker: int, keys: Sequence[tuple[str, str, int]],
               worker_pid: int | None = None) -> None:
        """Remember (committed) that `worker` is about to run these tasks, on the server session
        `worker_pid` (the console finds a running step's session there: engine/activity.py).

        Raises psycopg errors: the worker then does not run the batch (it is rolled back and
        claimed again later), since a crash while running it could not be attributed."""
        with self._lock:
            try:
                conn, (pid, started) = self._connection()
                conn.execute(
                    "INSERT INTO df_internal.inflight AS f (engine_id, worker, backend_pid, "
                    "backend_start, instance_ids, node_ids, gens, worker_pid, worker_backend_start) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, (SELECT a.backend_start FROM "
                    "pg_catalog.pg_stat_get_activity(%s) a)) "
                    "ON CONFLICT (engine_id, worker) DO UPDATE SET backend_pid = EXCLUDED.backend_pid, "
                    "backend_start = EXCLUDED.backend_start, instance_ids = EXCLUDED.instance_ids, "
                    "node_ids = EXCLUDED.node_ids, gens = EXCLUDED.gens, "
                    "worker_pid = EXCLUDED.worker_pid, worker_backend_start = EXCLUDED.worker_backend_start, "
                    "side_pid = NULL, side_backend_start = NULL, recorded_at = pg_catalog.now()",
                    (self._engine_id, worker, pid, started, [k[0] for k in keys],
                     [k[1] for k in keys], [k[2] for k in keys], worker_pid, worker_pid))
            except psycopg.Error:
                self._close()
                raise
            self._recorded.add(worker)

    def side_session(self, worker: int, pid: int) -> None:
        """`worker`'s current step runs on server session `pid` in another database (see
        SqlSteps.run_elsewhere): where the console finds it. Best effort: a step is not held
        back because the console could not be told where it runs."""
        with self._lock:
            if worker not in self._recorded:
                return
            try:
                conn, _ = self._connection()
                conn.execute(
                    "UPDATE df_internal.inflight SET side_pid = %s, side_backend_start = (SELECT "
                    "a.backend_start FROM pg_catalog.pg_stat_get_activity(%s) a) "
                    "WHERE engine_id = %s AND worker = %s", (pid, pid, self._engine_id, worker))
            except psycopg.Error as exc:
                log.warning("journal: %s", exc)
                self._close()

    def clear(self, worker: int) -> None:
        """`worker` runs nothing now (it went idle): forget its last batch."""
        with self._lock:
            if worker not in self._recorded:
                return
            try:
                conn, _ = self._connection()
                conn.execute("DELETE FROM df_internal.inflight WHERE engine_id = %s AND worker = %s",
                             (self._engine_id, worker))
                self._recorded.discard(worker)
            except psycopg.Error as exc:
                log.warning("journal: %s", exc)
                self._close()

    def close(self) -> None:
        """A clean stop: nothing of this engine is in flight any more."""
        with self._lock:
            with contextlib.suppress(psycopg.Error):
                conn, _ = self._connection()
                conn.execute("DELETE FROM df_internal.inflight WHERE engine_id = %s", (self._engine_id,))
            self._close()

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None
        self._session = None


def reap(conn: psycopg.Connection, limit: int) -> int:
    """Charge the tasks that were in flight in engine sessions that are gone (see module doc)."""
    row = conn.execute("SELECT df_internal.reap_inflight(%s)", (limit,)).fetchone()
    return int(row[0]) if row and row[0] else 0
