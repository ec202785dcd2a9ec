"""The console's views into PostgreSQL (sql/routines/console.sql): what a running step is doing
(its engine session, the locks it waits for, who blocks it), cancel/terminate of that session,
an instance's history, and a LISTEN connection for refresh hints.

The df functions decide themselves what the connected role may see (its own instances only;
never from inside a step or another function): the client only asks. Backends without them
(pg_durable, older dftui schemas) get a clear "not available" instead of an SQL error.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import kwargs_row

from dftui.client.errors import ClientError, ConnectionLost, user_message
from dftui.client.instances import check_id
from dftui.client.session import APPLICATION_NAME, Session
from dftui.vocabulary import COMPOSITE_NODE_TYPES, cron_text, http_target, signal_target

# -- the console: running steps inside PostgreSQL, instance history (sql/routines/console.sql) --

@dataclass(frozen=True)
class Blocker:
    """A session holding a lock a step waits for. query/state only when the role could see them
    in pg_stat_activity itself (its own sessions); pid, role and application are public there."""

    pid: int
    role: str | None
    application_name: str | None
    state: str | None = None
    wait_event: str | None = None
    query: str | None = None


@dataclass(frozen=True)
class StepActivity:
    """One running SQL step of an instance, as its engine session executes it now."""

    node_id: str
    node_type: str
    query: str | None
    backend_pid: int
    state: str | None
    wait_event_type: str | None
    wait_event: str | None
    query_start: datetime | None
    duration_ms: int | None
    xact_start: datetime | None
    waiting_for: list[dict[str, Any]] = field(default_factory=list)
    blocked_by: list[Blocker] = field(default_factory=list)

    @property
    def waiting(self) -> str:
        """`Lock/relation`, or "" when the session waits on nothing."""
        if not self.wait_event_type:
            return ""
        return f"{self.wait_event_type}/{self.wait_event}" if self.wait_event else self.wait_event_type


@dataclass(frozen=True)
class StepWait:
    """A running leaf step of an instance as the queue sees it, for the steps no engine session
    of this database is executing (df.step_activity lists those): a timer, a signal or cron
    wait, a queued or retrying step, an HTTP call, a step running in another database.

    `waiting_for` is df.waiting_instances' word ('timer', 'signal', 'schedule', 'queued',
    'retry backoff', 'loop iteration') or None when the step is not waiting in the queue (an
    engine holds it: it runs, or is being claimed or checkpointed). `target` is what it waits
    for or calls: the signal's name, the cron text, `METHOD host` of an HTTP call."""

    node_id: str
    node_type: str
    target: str | None
    waiting_for: str | None
    due_at: datetime | None
    deadline: datetime | None
    since: datetime | None
    database: str | None  # the database a SQL step runs in, when not this one


def _step_wait(*, node_id: str, node_type: str, query: str | None, waiting_for: str | None,
               due_at: datetime | None, deadline: datetime | None, since: datetime | None,
               database: str | None) -> StepWait:
    """Row factory target: a running leaf with its queue entry, its target read from its
    config (both config shapes, dftui.vocabulary)."""
    target = {"SIGNAL": lambda: signal_target(query), "WAIT_SCHEDULE": lambda: cron_text(query),
              "HTTP": lambda: http_target(query),
              "HTTP_MULTIPART": lambda: http_target(query)}.get(node_type, lambda: None)()
    return StepWait(node_id, node_type, target or None, waiting_for, due_at, deadline, since,
                    database)


@dataclass(frozen=True)
class HistoryEvent:
    """One event of an instance's history (df.instance_history)."""

    at: datetime
    event: str
    execution: int | None
    node_id: str | None
    node_type: str | None
    iteration: int | None
    attempt: int | None
    status: str | None
    actor: str | None
    detail: str | None

    def as_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "event": self.event, "execution": self.execution,
                "node_id": self.node_id, "node_type": self.node_type, "iteration": self.iteration,
                "attempt": self.attempt, "status": self.status, "actor": self.actor,
                "detail": self.detail or None}


def _blockers(value: Any) -> list[Blocker]:
    return [Blocker(pid=int(b["pid"]), role=b.get("role"), application_name=b.get("application_name"),
                    state=b.get("state"), wait_event=b.get("wait_event"), query=b.get("query"))
            for b in (value or [])]


# Channels the df schema notifies on (payloads are empty by design: hints only, docs/security.md):
# work queued (start, signal, retry, timers), an instance finished, an instance cancelled.
HINT_CHANNELS = ("df_work", "df_done", "df_cancel")


class Notifications:
    """A LISTEN connection of its own: `wait(timeout)` answers whether the database hinted that
    something changed. A hint says nothing about what (and any role may NOTIFY): the screens only
    re-read what they show, through RLS, as their poll would — sooner."""

    def __init__(self, conninfo: str, password: str | None = None) -> None:
        self._conninfo = conninfo
        self._password = password
        self._conn: psycopg.Connection | None = None

    def open(self) -> None:
        """Connect and LISTEN. Raises ClientError (the poll then carries on alone)."""
        self.close()
        kwargs: dict[str, Any] = {"autocommit": True, "application_name": APPLICATION_NAME,
                                  "connect_timeout": 10}
        if self._password is not None:
            kwargs["password"] = self._password
        try:
            conn = psycopg.connect(self._conninfo, **kwargs)
            for channel in HINT_CHANNELS:
                conn.execute(f"LISTEN {channel}")
        except psycopg.Error as exc:
            raise ClientError(user_message(exc)) from None
        self._conn = conn

    def wait(self, timeout: float) -> bool:
        """True when a hint arrived within `timeout` seconds (a burst is drained: one refresh
        for many hints). Raises ConnectionLost when the connection died."""
        if self._conn is None:
            self.open()
        assert self._conn is not None
        try:
            got = False
            for _note in self._conn.notifies(timeout=timeout, stop_after=1):
                got = True
            if got:
                for _note in self._conn.notifies(timeout=0.05):
                    pass
            return got
        except psycopg.Error as exc:
            self.close()
            raise ConnectionLost(user_message(exc)) from None

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None


def _console_missing(exc: ClientError, function: str) -> ClientError:
    """A backend without the console's df functions (pg_durable, an older dftui schema)."""
    if "does not exist" in exc.message and function in exc.message:
        return ClientError(f"{function} is not available on this backend (it needs dftui's df "
                           "schema 0.3 or later: run `dftui upgrade`)")
    return exc


class Console(Session):
    """The console's df functions (see the module doc)."""

    def step_activity(self, instance_id: str) -> list[StepActivity]:
        """What each running SQL step of the instance is doing in its engine session now."""
        try:
            rows = self._rows("SELECT * FROM df.step_activity(%s)", (check_id(instance_id),))
        except ClientError as exc:
            raise _console_missing(exc, "df.step_activity") from None
        return [StepActivity(**{**r, "blocked_by": _blockers(r["blocked_by"]),
                                "waiting_for": list(r["waiting_for"] or [])}) for r in rows]

    def step_waits(self, instance_id: str) -> list[StepWait]:
        """Every running leaf step of the instance with what the queue says of it (for the
        steps df.step_activity does not show: see StepWait). RLS applies: another role's
        instance has none."""
        composites = ", ".join(f"'{t}'" for t in sorted(COMPOSITE_NODE_TYPES))
        waits = ("LEFT JOIN df.waiting_instances w ON w.instance_id = n.instance_id"
                 " AND w.node_id = n.id" if self.capabilities.has_waiting_instances else
                 "LEFT JOIN (SELECT NULL::text AS waiting_for, NULL::timestamptz AS due_at,"
                 " NULL::timestamptz AS deadline, NULL::timestamptz AS waiting_since) w ON TRUE")
        return self._fetch(kwargs_row(_step_wait), f"""
            SELECT n.id AS node_id, n.node_type, n.query, w.waiting_for, w.due_at, w.deadline,
                   COALESCE(w.waiting_since, n.updated_at) AS since,
                   CASE WHEN n.node_type = 'SQL' AND i.database IS NOT NULL
                             AND i.database <> pg_catalog.current_database()
                        THEN i.database END AS database
              FROM df.nodes n
              JOIN df.instances i ON i.id = n.instance_id
              {waits}
             WHERE n.instance_id = %s AND n.status = 'running'
               AND i.status IN ('pending', 'running')
               AND n.node_type NOT IN ({composites})
             ORDER BY n.id
            """, (check_id(instance_id),))

    def signal_step_backend(self, instance_id: str, node_id: str | None, *,
                            terminate: bool) -> str:
        """Cancel (or terminate) the engine session running the instance's step: the server's
        account of what it did. Refusals (not running any more, not yours, other roles' steps
        in the same transaction) raise ClientError with the reason."""
        function = "df.terminate_step_backend" if terminate else "df.cancel_step_backend"
        try:
            row = self._one(f"SELECT {function}(%s, %s) AS message", (check_id(instance_id), node_id))
        except ClientError as exc:
            raise _console_missing(exc, function) from None
        return str(row["message"]) if row else "nothing was done"

    def history(self, instance_id: str) -> list[HistoryEvent]:
        """Every event of the instance, oldest first (df.instance_history)."""
        try:
            rows = self._rows("SELECT * FROM df.instance_history(%s)", (check_id(instance_id),))
        except ClientError as exc:
            raise _console_missing(exc, "df.instance_history") from None
        return [HistoryEvent(**r) for r in rows]

    def notifications(self) -> Notifications:
        """A LISTEN connection for refresh hints, with this client's conninfo and password."""
        return Notifications(self.conninfo, self._password)
