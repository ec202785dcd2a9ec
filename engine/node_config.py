"""Reading the node configs stored in df.nodes.query.

They are pg_durable 0.2.6's shapes (what its DSL writes, so graphs built for pg_durable, or
inserted by hand, run unchanged): SIGNAL ``{"signal_name", "timeout_seconds"}``, WAIT_SCHEDULE
``{"cron_expr"}``. dftui 0.1.0 wrote ``{"name", "timeout_seconds"}`` and the bare cron text;
migration 0301 rewrites stored rows, but the readers accept both so a row inserted by hand with
the old shape still runs.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from engine import jsonexact


def _object(query: str | None) -> dict[str, Any]:
    if not query:
        return {}
    try:
        value = jsonexact.loads(query)  # exact numbers, any depth
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def signal_config(query: str | None) -> tuple[str | None, float | None]:
    """(signal name, timeout in seconds or None) of a SIGNAL node."""
    cfg = _object(query)
    name = cfg.get("signal_name", cfg.get("name"))
    timeout = cfg.get("timeout_seconds")
    return (name if isinstance(name, str) else None,
            float(timeout) if isinstance(timeout, int | float | Decimal) and not isinstance(timeout, bool)
            else None)


def cron_expr(query: str | None) -> str:
    """The cron expression of a WAIT_SCHEDULE node, whitespace-normalised."""
    text = (query or "").strip()
    if text.startswith("{"):
        value = _object(text).get("cron_expr")
        text = value if isinstance(value, str) else ""
    return " ".join(text.split())
