"""Screen 7: a running step, inside PostgreSQL — "what is this step doing right now?"

For each SQL step of the instance that an engine session is executing: the session's pid,
state, wait event, how long the statement has run, the locks it waits for and the sessions that
block it (df.step_activity, which shows a role only its own steps and only what it could see of
other sessions in pg_stat_activity itself). Refreshed every second while on top. `x` cancels
the step's statement (the step fails, or retries under its policy), `X` terminates the engine
session (its transaction rolls back and the step runs again); both ask first, and report what
the server says it did.

Every other running step of the instance is listed with what it is doing instead: sleeping
until a time, waiting for a signal or a cron schedule, queued for an engine worker, waiting
out a retry backoff, an HTTP call in flight. A SQL step that runs in another database is shown
like any other while it executes there (on the session the engine opened in that database).
"""

from __future__ import annotations

import time
from datetime import datetime

from rich.console import Group, RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Static

from dftui.client import Client, StepActivity, StepWait
from dftui.screens.base import AppHeader, BaseScreen
from dftui.screens.dialogs import ConfirmDialog
from dftui.widgets.format import STATUS_STYLES, format_duration, format_time, shorten
from dftui.widgets.keybar import KeyBar
from dftui.widgets.plain import PlainTable

BUSY_LIMIT = 10.0  # seconds after which a refresh that never answered is forgotten


class ActivityScreen(BaseScreen):
    """The running steps of one instance, as PostgreSQL sees them."""

    HELP_TITLE = "Running step activity"
    LIVE_INTERVAL = 1.0  # seconds between refreshes of a running step's activity
    WRITE_ACTIONS = {"cancel_backend": None, "terminate_backend": None}
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("x", "cancel_backend", "Cancel statement"),
        Binding("X", "terminate_backend", "Terminate session"),
        Binding("tab", "next_step", "Next step", show=False),
        Binding("R", "refresh", "Refresh"),
    ]

    def __init__(self, instance_id: str, label: str | None = None) -> None:
        super().__init__()
        self.instance_id = instance_id
        self.label = label
        self.steps: list[StepActivity] = []
        self.waits: list[StepWait] = []  # the running steps no engine session executes now
        self.index = 0
        self.loaded = False
        self.problem: str | None = None
        # When the refresh in flight began (a slow server must not have each one cancelled by
        # the next tick); 0 = none. Forgotten after BUSY_LIMIT (a lost connection drops it).
        self._busy = 0.0

    def compose(self) -> ComposeResult:
        yield AppHeader()
        with VerticalScroll(id="activity-scroll"):
            yield Static(id="activity")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#activity", Static).update(Text("loading…", style="dim"))
        self.reload()
        self.start_live_refresh()

    def live_refresh(self) -> None:
        """Every LIVE_INTERVAL (BaseScreen's live refresh), unless the last refresh has not
        answered yet: a slow server must not have each one cancelled by the next."""
        if time.monotonic() - self._busy > BUSY_LIMIT:
            self.reload()

    def reload(self) -> None:
        instance_id = self.instance_id

        def call(client: Client) -> tuple[list[StepActivity], list[StepWait]]:
            return client.step_activity(instance_id), client.step_waits(instance_id)

        self._busy = time.monotonic()
        self.dapp.run_db(self, call, self._apply, group="activity", on_error=self._failed)

    def _failed(self, exc) -> None:
        self._busy = 0.0
        self.problem = str(exc)
        self.loaded = True
        self._redraw()

    def _apply(self, result: tuple[list[StepActivity], list[StepWait]]) -> None:
        steps, waits = result
        self._busy = 0.0
        self.problem = None
        self.loaded = True
        current = self.current.node_id if self.current else None
        self.steps = steps
        executing = {s.node_id for s in steps}
        self.waits = [w for w in waits if w.node_id not in executing]
        ids = [s.node_id for s in steps]
        self.index = ids.index(current) if current in ids else 0
        self._redraw()
        self.refresh_bindings()

    @property
    def current(self) -> StepActivity | None:
        return self.steps[self.index] if 0 <= self.index < len(self.steps) else None

    # -- rendering -----------------------------------------------------------------------------

    def _title(self) -> Text:
        name = f"{self.instance_id} ({self.label})" if self.label else self.instance_id
        return Text(f"instance {name} — running steps inside PostgreSQL", style="bold")

    def _redraw(self) -> None:
        parts: list[RenderableType] = [self._title(), Text("")]
        if self.problem:
            parts.append(Text(self.problem, style=STATUS_STYLES["failed"]))
        elif not self.steps and not self.waits:
            parts.append(Text("No step of this instance is running (it finished, or has not "
                              "started).", style="dim"))
        elif not self.steps:
            parts.append(Text("No step of this instance is executing in an engine session now.",
                              style="dim"))
        for i, step in enumerate(self.steps):
            parts.extend(self._step(step, selected=i == self.index and len(self.steps) > 1))
        if self.waits and not self.problem:
            parts.append(Text(""))
            for wait in self.waits:
                line = Text()
                line.append(f"node {wait.node_id} ", style="bold")
                line.append(f"{wait.node_type}  ")
                line.append(self._doing(wait), style="yellow")
                parts.append(line)
        self.query_one("#activity", Static).update(Group(*parts))

    def _when(self, moment: datetime | None) -> str:
        """`12:00:03 (in 2m)` / `11:58:01 (3m ago)` in the app's time zone."""
        if moment is None:
            return "?"
        now = self.dapp.now()
        seconds = (moment - now).total_seconds()
        relative = (f"in {format_duration(seconds)}" if seconds >= 0
                    else f"{format_duration(-seconds)} ago")
        return f"{format_time(moment, self.dapp.tz, now)} ({relative})"

    def _doing(self, w: StepWait) -> str:
        """What a running step that no engine session executes here is doing, in words."""
        if w.database:
            return (f"runs in database {w.database!r} on the engine's connection there; no "
                    "statement of it is executing at this moment (it is being set up there, "
                    "or its result is being checkpointed here)")
        if w.waiting_for == "timer":
            return f"sleeping until {self._when(w.due_at)}"
        if w.waiting_for == "signal":
            timeout = (f", times out at {self._when(w.deadline or w.due_at)}"
                       if (w.deadline or w.due_at) else ", no timeout")
            return f"waiting for the signal {w.target or '?'!r}{timeout}"
        if w.waiting_for == "schedule":
            return f"waiting for the schedule {w.target or '?'!r}, next at {self._when(w.due_at)}"
        if w.waiting_for == "retry backoff":
            return f"failed; retried at {self._when(w.due_at)} (its retry policy)"
        if w.waiting_for == "loop iteration":
            return f"the loop's next iteration at {self._when(w.due_at)}"
        if w.waiting_for == "queued":  # (not due yet: put back after a lock conflict)
            return f"queued, due at {self._when(w.due_at)}"
        if w.node_type.startswith("HTTP"):
            return (f"HTTP call {w.target or '?'}: in flight in an engine worker, or ready and "
                    f"waiting for one (since {self._when(w.since)}; an HTTP call has no "
                    "database session to show)")
        return (f"ready since {self._when(w.since)}: waiting for a free engine worker (or "
                "being claimed or checkpointed this moment)")

    def _step(self, s: StepActivity, *, selected: bool) -> list[RenderableType]:
        width = max((self.size.width or 80) - 4, 40)
        head = Text()
        head.append("▶ " if selected else "", style="bold cyan")
        head.append(f"node {s.node_id} ", style="bold")
        head.append(f"{s.node_type}  ")
        head.append(f"backend pid {s.backend_pid}  ", style="bold")
        head.append(s.state or "-", style="green" if s.state == "active" else "yellow")
        head.append(f"  running {format_duration((s.duration_ms or 0) / 1000)}")
        if s.waiting:
            head.append(f"  waiting on {s.waiting}", style="bold yellow")
        out: list[RenderableType] = [head]
        if s.query:
            out.append(Text(f"  {shorten(' '.join(s.query.split()), width * 2)}", style="dim"))
        if s.waiting_for:
            locks = PlainTable(title="waits for", title_justify="left", show_edge=False, expand=False)
            for col in ("lock", "mode", "on"):
                locks.add_column(col)
            for lock in s.waiting_for:
                target = (lock.get("relation") or lock.get("transactionid")
                          or lock.get("virtualxid") or "")
                if lock.get("tuple"):
                    target = f"{target} tuple {lock['tuple']}"
                locks.add_row(str(lock.get("locktype") or ""), str(lock.get("mode") or ""),
                              str(target))
            out.append(locks)
        if s.blocked_by:
            blockers = PlainTable(title="blocked by", title_justify="left", show_edge=False,
                             expand=False)
            for col in ("pid", "role", "application", "state", "query"):
                blockers.add_column(col)
            for b in s.blocked_by:
                blockers.add_row(str(b.pid), b.role or "?", shorten(b.application_name or "-", 24),
                                 b.state or "(not yours)",
                                 shorten(" ".join((b.query or "").split()), max(width - 50, 20)))
            out.append(blockers)
        elif s.waiting_for:
            out.append(Text("  (no blocking session found: the lock may be about to be granted)",
                            style="dim"))
        out.append(Text(""))
        return out

    # -- actions -------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.WRITE_ACTIONS and self.current is None:
            return False  # (no step session to act on)
        return super().check_action(action, parameters)

    def action_next_step(self) -> None:
        if self.steps:
            self.index = (self.index + 1) % len(self.steps)
            self._redraw()

    def action_cancel_backend(self) -> None:
        self._signal(terminate=False)

    def action_terminate_backend(self) -> None:
        self._signal(terminate=True)

    def _signal(self, *, terminate: bool) -> None:
        step = self.current
        if step is None:
            self.notify("No step is executing now", severity="warning")
            return
        if terminate:
            question = (f"Terminate session {step.backend_pid} (node {step.node_id})? "
                        "It rolls back; the step runs again.")
            button = "Terminate session"
        else:
            question = (f"Cancel the statement of node {step.node_id} (pid {step.backend_pid})? "
                        "The step fails.")
            button = "Cancel statement"
        instance_id, node_id = self.instance_id, step.node_id

        def confirmed(ok: bool | None) -> None:
            if not ok:
                return

            def call(client: Client) -> str:
                return client.signal_step_backend(instance_id, node_id, terminate=terminate)

            def done(message: str) -> None:
                self.notify(message, timeout=10)
                self.reload()

            self.dapp.run_db(self, call, done, group="action", exclusive=False,
                             what="Terminate" if terminate else "Cancel statement")

        self.app.push_screen(ConfirmDialog(question, button), confirmed)
