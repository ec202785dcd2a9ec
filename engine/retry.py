"""Which failures a retry policy retries, and after how long (pure logic: tests/unit).

A failure's kind comes from its psycopg error class (or, for class 08, its SQLSTATE class:
psycopg has no common base for connection exceptions); a policy's `retry_on` may name kinds,
SQLSTATEs or "any".
"""

from __future__ import annotations

import random
from typing import Any

from psycopg import errors as pg_errors

from engine.errors import StepFailure, error_class

DEFAULT_RETRYABLE = frozenset({
    "serialization_failure", "deadlock", "lock_timeout", "connection",
    "http_5xx", "http_timeout", "http_connection",
})
# Failures no retry policy retries: the step can never run (identity, privileges, refused
# statement kinds, the HTTP policy).
NEVER_RETRIED = frozenset({"identity", "http_policy", "unsupported"})

_KINDS: tuple[tuple[type[Exception] | tuple[type[Exception], ...], str], ...] = (
    (pg_errors.SerializationFailure, "serialization_failure"),
    (pg_errors.DeadlockDetected, "deadlock"),
    (pg_errors.LockNotAvailable, "lock_timeout"),
    ((pg_errors.AdminShutdown, pg_errors.CrashShutdown, pg_errors.CannotConnectNow), "connection"),
)


def failure_kind(sqlstate: str | None) -> str:
    """The retry classification of a failed statement's SQLSTATE."""
    if sqlstate is None:
        return "error"
    if sqlstate.startswith("08"):  # class 08: connection exception
        return "connection"
    cls = error_class(sqlstate)
    if cls is not None:
        for classes, kind in _KINDS:
            if issubclass(cls, classes):
                return kind
    return "error"


def retry_delay(policy: dict[str, Any] | None, attempt: int, failure: StepFailure) -> float | None:
    """Seconds until the next attempt, or None when the node should fail now.

    `attempt` is the number of the attempt that just failed (1-based). Exponential backoff with
    full jitter in [50 %, 100 %] of the step, capped at max_backoff_seconds.
    """
    if not policy or failure.kind in NEVER_RETRIED:
        return None
    max_attempts = int(policy.get("max_attempts") or 1)
    if attempt >= max_attempts:
        return None
    retry_on = policy.get("retry_on")
    allowed = set(retry_on) if retry_on else DEFAULT_RETRYABLE
    if not ({"any", "all", "*"} & allowed or failure.kind in allowed
            or (failure.sqlstate and failure.sqlstate in allowed)):
        return None
    backoff = policy.get("backoff_seconds")
    base = float(backoff if backoff is not None else 1.0)
    cap = float(policy.get("max_backoff_seconds") or 60.0)
    step = min(cap, base * (2 ** (attempt - 1)))
    return step * random.uniform(0.5, 1.0)
