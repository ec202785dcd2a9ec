"""What can go wrong with a task, as exceptions and psycopg error classes (never SQLSTATE literals).

Three kinds, each with its own fate (engine/transaction.py decides it):
* StepFailure — the step itself failed (the user's statement, an identity re-check, the HTTP
  policy, a refused statement kind): recorded on the node, retried only by a retry policy.
* EngineStatementError — the engine's own statement around the step (the checkpoint) failed:
  rolled back and charged to the task as a fault (retried with backoff, failed at the limit).
* EngineFault — the engine could not even load the task (undecodable claim row).
Anything else raised while handling a task is a fault too (fault_reason makes it readable).
"""

from __future__ import annotations

import re

import psycopg
from psycopg import errors as pg_errors

# A batched step that met a lock (held by its batch's earlier steps, another batch or anyone):
# it gives way and runs again alone, not charged as an attempt (see StepTransaction.run). Only
# the errors batching itself can cause: the batch's lock_timeout and a deadlock with the batch's
# own locks. A serialization failure is not one of them (steps run at READ COMMITTED, so it can
# only come from the step's own code) and counts against the retry policy like any error.
CONFLICTS: tuple[type[psycopg.Error], ...] = (pg_errors.LockNotAvailable, pg_errors.DeadlockDetected)
# An engine statement that was interrupted rather than failed: cancelled (df.cancel, shutdown)
# or a lock or serialization conflict. The task simply stays queued and runs again.
INTERRUPTED: tuple[type[psycopg.Error], ...] = (
    pg_errors.QueryCanceled, *CONFLICTS, pg_errors.SerializationFailure)


def error_class(sqlstate: str | None) -> type[psycopg.Error] | None:
    """psycopg's exception class for a SQLSTATE (None when unknown or absent)."""
    if not sqlstate:
        return None
    try:
        return pg_errors.lookup(sqlstate)
    except KeyError:
        return None


def is_error(sqlstate: str | None, classes: type[psycopg.Error] | tuple[type[psycopg.Error], ...]) -> bool:
    """Is this SQLSTATE one of `classes` (psycopg.errors classes, subclasses included)?"""
    cls = error_class(sqlstate)
    return cls is not None and issubclass(cls, classes)


class StepFailure(Exception):
    """The step failed. `kind` feeds the retry classification; `ran_sql` is kept for history."""

    def __init__(self, message: str, *, kind: str = "error", sqlstate: str | None = None,
                 ran_sql: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.sqlstate = sqlstate
        self.ran_sql = ran_sql


class EngineStatementError(Exception):
    """The engine's own checkpoint statement failed: roll back the step and charge the task a
    fault (retried with backoff, failed at the limit: see StepTransaction.fault). `retry_now`: a
    self-correcting condition (the result shape changed): run it again at once."""

    def __init__(self, message: str, sqlstate: str | None = None, *, retry_now: bool = False) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.retry_now = retry_now


class EngineFault(Exception):
    """A task the engine cannot even load (see claim.load_task)."""


def fault_reason(exc: BaseException) -> str:
    """A readable one-line reason for a fault, bounded in size."""
    if isinstance(exc, EngineStatementError | EngineFault):
        text = str(exc)
    elif isinstance(exc, psycopg.Error):
        text = f"an engine statement failed: {exc.diag.message_primary or exc}"
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    text = " ".join(text.replace("\x00", "").split())
    if len(text) > 500:
        text = text[:500] + "…"
    return f"the engine could not process this step: {text}"


# An unknown $reference is left in the text and PostgreSQL reports a syntax error at "$".
_LEFT_OVER_REF = re.compile(r"(?<![\w$])\$([A-Za-z_][A-Za-z0-9_]*)(?![A-Za-z0-9_$])")


def _unknown_reference(text: str) -> str | None:
    """The first $name left in substituted step text (known names were all replaced)."""
    match = _LEFT_OVER_REF.search(text)
    return match.group(1) if match else None


def step_message(exc: psycopg.Error, text: str | None = None) -> str:
    """A step's error as one line. A syntax error at a `$` left in the step (`text`,
    substituted) names the result it refers to: no earlier step was named that."""
    diag = exc.diag
    msg = diag.message_primary or str(exc).strip().splitlines()[0]
    if diag.message_detail:
        msg += f" ({diag.message_detail})"
    if text is not None and isinstance(exc, pg_errors.SyntaxError) and 'at or near "$' in msg:
        name = _unknown_reference(text)
        if name is not None:
            msg = (f"${name} refers to no named result: no earlier step of this workflow is named "
                   f"\"{name}\" (name one with |=> '{name}' or df.as) [{msg}]")
    return msg


def raised_in_step(exc: psycopg.Error) -> bool:
    """Did the error come from the user's statement (inside the trampoline)?"""
    context = exc.diag.context or ""
    return "df_exec." in context


def pq_message(res: psycopg.pq.abc.PGresult) -> str:
    """The primary message of a failed low-level (libpq) result."""
    raw = res.error_field(psycopg.pq.DiagnosticField.MESSAGE_PRIMARY) or res.error_message
    return raw.decode(errors="replace").strip()


def pq_state(res: psycopg.pq.abc.PGresult) -> str | None:
    """The SQLSTATE of a failed low-level (libpq) result."""
    raw = res.error_field(psycopg.pq.DiagnosticField.SQLSTATE)
    return raw.decode() if raw else None
