"""Engines and health: engine heartbeats, waiting and long-running steps, step rate, queue
depth, per-role limits and df.metrics — all scoped to what the connected role may see.

What each backend kind can tell is the adapter's (dftui.client.backends); this module only
assembles it. Every query here is bounded (the views are indexed or capped), so the home
screen may poll `health_line` every few seconds.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg.rows import kwargs_row

from dftui.client.errors import ClientError
from dftui.client.instances import Instances
from dftui.client.models import EngineInfo, Health


def _engine(*, j: dict[str, Any]) -> EngineInfo:
    return EngineInfo(j)


class HealthQueries(Instances):
    """The Engines & health screen's queries (it extends Instances for the status counts)."""

    def engines(self) -> list[EngineInfo]:
        """df.engines rows, kept generic because the view's columns are backend-specific."""
        if not self.capabilities.has_engines:
            raise ClientError(self.capabilities.reasons.get("engines", "engines are not visible"))
        return self._fetch(kwargs_row(_engine), "SELECT to_jsonb(e) AS j FROM df.engines e")

    def health_line(self) -> dict[str, Any]:
        """The home screen's compact health: engines alive/running (stopped ones not counted),
        runnable steps, age of the
        oldest ready step (seconds), stuck instances — each None when this backend or role
        cannot see it. Bounded queries only (the views are indexed / capped)."""
        out: dict[str, Any] = {"alive": None, "engines": None, "runnable": None,
                               "oldest_s": None, "stuck": None}
        if self.capabilities.has_engines:
            # A cleanly stopped engine (an earlier run, a demo's) is gone, not dead: only the
            # engines still registered as running count, alive or stale.
            row = self._one("SELECT count(*) FILTER (WHERE e.state = 'alive') AS alive,"
                            " count(*) FILTER (WHERE e.state <> 'stopped') AS total"
                            " FROM df.engines e")
            if row:
                out["alive"], out["engines"] = int(row["alive"]), int(row["total"])
        backend = self._adapter()
        queue = backend.queue_line(self)
        if queue is not None:
            out["runnable"], out["oldest_s"] = queue
        out["stuck"] = backend.stuck_count(self)
        return out

    def engine_warning(self) -> str | None:
        """Why new work would not run, or None: no engine ever registered, none alive (all
        stopped, or stale: no heartbeat for 60 s). None too when engines are invisible here."""
        if not self.capabilities.has_engines:
            return None
        row = self._one(
            """
            SELECT count(*) FILTER (WHERE e.state = 'alive') AS alive,
                   count(*) FILTER (WHERE e.state = 'stale') AS stale,
                   count(*) AS total,
                   extract(epoch FROM pg_catalog.now() - max(e.heartbeat_at))::bigint AS age
              FROM df.engines e
            """
        )
        if row is None or row["alive"]:
            return None
        if row["stale"]:
            return (f"All engines are stale (no heartbeat for {row['age']}s): steps do not run. "
                    "Check the engine, or start one: dftui engine")
        if row["total"]:
            return "No engine is running: new work stays pending. Start one: dftui engine"
        return "No engine has ever run here: instances stay pending. Start one: dftui engine"

    def role_limits(self) -> list[dict[str, Any]]:
        """Per-role limit overrides (df.role_limits: an ordinary role sees its own row only), []
        on a backend without them."""
        return self._adapter().role_limits(self)

    def set_role_limits(self, role: str, *, max_running: int | None, max_pending: int | None,
                        step_timeout: str | None) -> None:
        """Set (or, all None, remove) a role's overrides: df.set_role_limits, administrators only."""
        self._rows("SELECT df.set_role_limits(%s, %s, %s, %s)",
                   (role, max_running, max_pending, step_timeout))

    def health(self, *, stuck_after_seconds: int = 600, limit: int = 50) -> Health:
        """Engines with heartbeats, waiting steps (signal/timer/cron), long-running steps, step
        rate and queue depth, as far as this backend records them."""
        backend = self._adapter()
        engines = self.engines() if self.capabilities.has_engines else []
        now_row = self._one("SELECT now() AS now")
        assert now_row is not None
        now: datetime = now_row["now"]
        return Health(
            engines,
            backend.waiting(self, limit),
            backend.stuck(self, stuck_after_seconds, limit),
            self.status_counts(),
            now,
            backend.step_rate(self, now),
            backend.queue(self),
            backend.role_limits(self),
        )

    def metrics(self) -> dict[str, Any]:
        """df.metrics() as a dict (its columns are backend-specific)."""
        if not self.capabilities.has_metrics:
            raise ClientError(self.capabilities.reasons.get("metrics", "metrics are not available"))
        row = self._one("SELECT * FROM df.metrics()")
        return dict(row or {})
