"""Screen 5: engines & health — engines with heartbeat age, throughput (steps/s, sparkline from
the engines' step counters sampled at each refresh), queue depth, stuck steps, and what waiting
instances wait for. Everything is scoped to what the role may see."""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Any

from croniter import croniter
from rich.console import Group
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Sparkline, Static

from dftui.client import Health, WaitingStep, parse_ts
from dftui.screens.base import AppHeader, BaseScreen
from dftui.vocabulary import cron_text
from dftui.widgets.format import STATUS_STYLES, age, format_time, shorten
from dftui.widgets.keybar import KeyBar
from dftui.widgets.plain import PlainTable

SAMPLES = 60  # throughput samples kept (one per refresh)


def _timeout(ms: Any) -> str:
    """A step timeout in milliseconds, for the engines table."""
    if ms is None:
        return "-"
    return "none" if int(ms) == 0 else f"{int(ms) / 1000:g}s"


def wait_due(step: WaitingStep, now: datetime) -> datetime | None:
    """When a timer fires: SLEEP = when it began + seconds; WAIT_SCHEDULE = next cron match (UTC).
    Signals have no due time (unless they time out, shown in the step text)."""
    if isinstance(step.details, dict) and step.details.get("due_at") is not None:
        return step.details["due_at"]  # the engine's own timer (dftui health views)
    if isinstance(step.details, dict) and step.details.get("deadline") is not None:
        return step.details["deadline"]
    try:
        if step.node_type == "SLEEP" and step.since is not None:
            return step.since + timedelta(seconds=float(step.query or 0))
        if step.node_type == "WAIT_SCHEDULE" and step.query:
            return croniter(cron_text(step.query), now.astimezone(UTC)).get_next(datetime)
    except (ValueError, KeyError):
        return None
    return None


class EnginesScreen(BaseScreen):
    """Engines & health."""

    HELP_TITLE = "Engines & health"
    CSS_PATH = "engines.tcss"
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("R", "refresh", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.health: Health | None = None
        self.rates: deque[float] = deque(maxlen=SAMPLES)
        self._last: tuple[datetime, int] | None = None

    def compose(self) -> ComposeResult:
        yield AppHeader()
        with VerticalScroll(id="health"):
            yield Static(id="engines")
            yield Static(Text("throughput (steps/s over the last 15 minutes)", style="bold"))
            yield Sparkline([0.0], id="throughput")
            yield Static(id="queues")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#engines", Static).update(Text("loading…", style="dim"))
        self.reload()
        self.start_live_refresh()

    def reload(self) -> None:
        self.dapp.run_db(self, lambda c: c.health(), self._apply, group="health")

    def _apply(self, health: Health) -> None:
        self.health = health
        now = health.server_now
        total = sum(int(e.data.get("steps_done") or 0) for e in health.engines
                    if e.data.get("state") == "alive")
        if self._last is not None:
            seconds = (now - self._last[0]).total_seconds()
            if seconds > 0:
                self.rates.append(max(total - self._last[1], 0) / seconds)
        self._last = (now, total)
        if health.step_rate is not None:  # the server's per-10s history (last 15 minutes)
            self.rates = deque(health.step_rate, maxlen=max(SAMPLES, len(health.step_rate)))
        self.query_one("#throughput", Sparkline).data = list(self.rates) or [0.0]

        reasons = self.dapp.client.capabilities.reasons
        table = PlainTable(title="Engines", title_justify="left", title_style="bold", expand=True,
                      show_edge=False)
        for col in ("id", "host:pid", "state", "heartbeat", "started", "concurrency",
                    "per role", "step timeout", "steps"):
            table.add_column(col)
        for e in health.engines:
            d = e.data
            state = str(d.get("state", "?"))
            style = {"alive": STATUS_STYLES["completed"], "stale": STATUS_STYLES["failed"]}.get(
                state, "dim")
            table.add_row(
                shorten(str(d.get("id", "")), 24),
                f"{d.get('host', '')}:{d.get('pid', '')}",
                Text(state, style=style),
                age(parse_ts(d.get("heartbeat_at")), now),
                format_time(parse_ts(d.get("started_at")), self.dapp.tz, now, short=True),
                str(d.get("concurrency") or ""),
                str(d.get("role_max_running") or "all − 1"),
                _timeout(d.get("step_timeout_ms")),
                # (NULL for an ordinary role: it counts every role's steps)
                "–" if d.get("steps_done") is None else str(d["steps_done"]),
            )
        parts: list = [table]
        if not health.engines:
            parts = [Text(reasons.get("engines", "No engine has registered yet — start one with "
                                                 "`dftui engine`."), style="yellow")]
        if health.limits:
            limits = PlainTable(title="Per-role limits", title_justify="left", title_style="bold",
                           expand=True, show_edge=False)
            for col in ("role", "max running", "max pending", "step timeout"):
                limits.add_column(col)
            for r in health.limits:
                limits.add_row(str(r["role"]), str(r["max_running"] or "default"),
                               str(r["max_pending"] if r["max_pending"] is not None else "-"),
                               _timeout(r["step_timeout_ms"]) if r["step_timeout_ms"] is not None
                               else "default")
            parts.append(limits)
        rate = f"{self.rates[-1]:.1f} steps/s" if self.rates else "measuring…"
        parts.append(Text(f"now: {rate}", style="dim"))
        self.query_one("#engines", Static).update(Group(*parts))

        counts = health.counts
        queues = PlainTable(show_edge=False, expand=True, title="Queues & waits", title_justify="left",
                       title_style="bold")
        queues.add_column("what")
        queues.add_column("instance")
        queues.add_column("label")
        queues.add_column("since")
        summary = Text()
        if health.queue is not None:
            summary.append(f"queue: {health.queue.get('runnable', 0)} runnable now · "
                           f"{health.queue.get('waiting', 0)} waiting")
            oldest = health.queue.get("oldest_due")
            if oldest:
                summary.append(f" · oldest due {age(oldest, now)}")
            summary.append("\n")
        summary.append(f"instances: {counts.label('pending')} pending · "
                       f"{counts.label('running')} running · {len(health.stuck)} stuck · "
                       f"{len(health.waiting)} waiting\n")
        for w in health.stuck:
            queues.add_row(Text(f"stuck {w.step}", style=STATUS_STYLES["failed"]), w.instance_id,
                           w.label or "", age(w.since, now))
        for w in health.waiting:
            due = wait_due(w, now)
            what = w.step + (f" (due {format_time(due, self.dapp.tz, now)})" if due else "")
            queues.add_row(what, w.instance_id, w.label or "", age(w.since, now))
        self.query_one("#queues", Static).update(Group(summary, queues))
