"""pg_durable's own settings (``pg_durable.*``), honoured by the engine where they mean something.

An installation moved from pg_durable keeps its ``ALTER SYSTEM`` / ``ALTER DATABASE`` settings;
the engine reads them from the database it serves when it starts and uses them as defaults for
what the operator did not set explicitly (a flag or ``DFTUI_ENGINE_*`` variable wins):

* ``pg_durable.max_user_connections`` -> ``concurrency`` (the connection budget for steps);
* ``pg_durable.retention_days`` -> ``retention_days`` (terminal instances older are removed);
* ``pg_durable.reconcile_interval`` -> seconds between retention passes (0: none).

``pg_durable.enable_superuser_instances`` and ``pg_durable.list_instances_max_limit`` are read by
the SQL functions themselves. The others have no counterpart (docs/pg_durable.md, "Settings").
"""

from __future__ import annotations

import logging

import psycopg

from engine.config import EngineConfig

log = logging.getLogger("dftui.engine")

# pg_durable setting -> (engine config field, lowest accepted value)
MAPPED = {
    "pg_durable.max_user_connections": ("concurrency", 1),
    "pg_durable.retention_days": ("retention_days", 0),
    "pg_durable.reconcile_interval": ("reconcile_interval", 0),
}


def apply_database_settings(conn: psycopg.Connection, config: EngineConfig) -> list[str]:
    """Copy the pg_durable settings visible on `conn` into `config` where the operator did not
    set the field; returns one line per setting applied (for the log). A value that is not a
    whole number, or is out of range, is ignored with a warning rather than stopping the engine."""
    applied: list[str] = []
    for name, (field, lowest) in MAPPED.items():
        row = conn.execute("SELECT pg_catalog.current_setting(%s, true)", (name,)).fetchone()
        raw = (row[0] if row else None) or ""
        if not raw.strip() or field in config.explicit:
            continue
        try:
            value = int(raw.strip())
        except ValueError:
            log.warning("ignoring %s = %r: not a whole number", name, raw)
            continue
        if value < lowest:
            log.warning("ignoring %s = %d: must be at least %d", name, value, lowest)
            continue
        setattr(config, field, value)
        applied.append(f"{name} = {value} sets {field}")
    return applied
