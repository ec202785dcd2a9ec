"""Retention of finished instances, with pg_durable 0.2.6's meaning (its USER_GUIDE, "Automatic
Reconciliation", and src/worker.rs select_expired_instance_ids_tx).

A terminal instance (completed, failed or cancelled) is kept only while it is both among the
newest TERMINAL_KEEP terminal instances and younger than the retention window. Its age runs from
`completed_at` when set, else from `created_at` — never from `updated_at`, which every granted
role may write on its own rows (the manual grants' `UPDATE (status, updated_at)`), so a role
cannot make its history outlive the window or jump the queue. Running and pending instances are
never removed.

Each pass deletes at most BATCH rows and only those it can lock at once: a role may hold
FOR UPDATE on its own finished instance, and waiting for it made the whole DELETE time out on
every pass, so nobody's history was purged; a skipped row goes on a later pass. The cap's
boundary is a bounded top-N sort over the terminal rows, so it is looked up at most every
CAP_EVERY seconds (pg_durable reconciles hourly by default; dftui's default pass is every
heartbeat).
"""

from __future__ import annotations

import time

import psycopg

# pg_durable's TERMINAL_INSTANCE_MAX_KEEP: a fixed cap, not a setting.
TERMINAL_KEEP = 10_000
BATCH = 500
CAP_EVERY = 60.0

_TERMINAL = "status IN ('completed', 'failed', 'cancelled')"


class Retention:
    """One engine's retention passes (state: when the cap was last looked at)."""

    def __init__(self) -> None:
        self._cap_checked_at: float | None = None

    def run(self, conn: psycopg.Connection, retention_days: float) -> int:
        """One pass: expired by age, then beyond the cap. Returns the rows deleted."""
        seconds = retention_days * 86400
        # coalesce(completed_at, created_at) >= created_at, so created_at < cutoff is implied
        # and lets the (status, created_at) index bound the scan.
        deleted = conn.execute(
            f"DELETE FROM df.instances WHERE id IN (SELECT id FROM df.instances "
            f"WHERE {_TERMINAL} "
            f"AND created_at < now() - make_interval(secs => %s) "
            f"AND coalesce(completed_at, created_at) < now() - make_interval(secs => %s) "
            f"LIMIT {BATCH} FOR UPDATE SKIP LOCKED)", (seconds, seconds)).rowcount
        now = time.monotonic()
        if self._cap_checked_at is not None and now - self._cap_checked_at < CAP_EVERY:
            return deleted
        self._cap_checked_at = now
        boundary = conn.execute(
            f"SELECT coalesce(completed_at, created_at), id FROM df.instances WHERE {_TERMINAL} "
            f"ORDER BY coalesce(completed_at, created_at) DESC, id DESC "
            f"OFFSET {TERMINAL_KEEP} LIMIT 1").fetchone()
        if boundary is None:
            return deleted
        beyond = conn.execute(
            f"DELETE FROM df.instances WHERE id IN (SELECT id FROM df.instances "
            f"WHERE {_TERMINAL} "
            f"AND (coalesce(completed_at, created_at), id) <= (%s::timestamptz, %s::text) "
            f"LIMIT {BATCH} FOR UPDATE SKIP LOCKED)", boundary).rowcount
        if beyond == BATCH:  # more to go: look again on the next pass
            self._cap_checked_at = None
        return deleted + beyond
