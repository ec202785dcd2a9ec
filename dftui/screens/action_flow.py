"""Cancel, retry and signal from a screen: plan → dialog → client call → report → reload.

Why a module of its own: the list screen (its selection or cursor row) and the detail screen
(its one instance) must act the same way — skip what an action cannot apply to before asking,
ask with the same dialogs, send in a worker that does not block the screen, and report what
really happened — and differ only in what they act on and what they do afterwards. Each keeps
an `ActionFlow` built with those two differences.
"""

from __future__ import annotations

from collections.abc import Callable

from dftui.client import ActionResult, Client
from dftui.screens.actions import Plan, Target, plan, report
from dftui.screens.base import BaseScreen
from dftui.screens.dialogs import CancelDialog, RetryDialog, SignalDialog


class ActionFlow:
    """The instance actions of one screen.

    `targets` says what an action is about now; when it is empty, `nothing` (formatted with
    the action) says why nothing happens. `after` runs once an action was sent (before the
    screen reloads), e.g. to clear the list's selection."""

    def __init__(self, screen: BaseScreen, targets: Callable[[], list[Target]], *,
                 nothing: str = "No instance to {action}",
                 after: Callable[[], None] = lambda: None) -> None:
        self.screen = screen
        self.targets = targets
        self.nothing = nothing
        self.after = after

    def plan(self, action: str) -> Plan | None:
        """What `action` will touch; None (after saying why) when it would touch nothing."""
        targets = self.targets()
        if not targets:
            self.screen.notify(self.nothing.format(action=action), severity="warning")
            return None
        planned = plan(action, targets)
        if not planned.apply:
            self.screen.notify(planned.nothing_text(), severity="warning", timeout=8)
            return None
        return planned

    def cancel(self) -> None:
        planned = self.plan("cancel")
        if planned is None:
            return

        def confirmed(reason: str | None) -> None:
            if reason is not None:
                self._send("cancel", lambda c: c.cancel(planned.ids, reason), planned)

        self.screen.app.push_screen(CancelDialog(planned), confirmed)

    def retry(self) -> None:
        planned = self.plan("retry")
        if planned is None:
            return

        def confirmed(ok: bool | None) -> None:
            if ok:
                self._send("retry", lambda c: c.retry(planned.ids), planned)

        self.screen.app.push_screen(RetryDialog(planned), confirmed)

    def signal(self, waited: Callable[[Plan], str]) -> None:
        """The signal dialog, its name prefilled with `waited(plan)` (the signal the planned
        instances wait for, "" when unknown). The dialog sends it itself."""
        planned = self.plan("signal")
        if planned is None:
            return

        def sent(results: list[ActionResult] | None) -> None:
            if results is not None:
                report(self.screen.app, "signal", results, planned)
                self.after()
            self.screen.reload()

        self.screen.app.push_screen(SignalDialog(planned, waited(planned)), sent)

    def _send(self, action: str, call: Callable[[Client], list[ActionResult]],
              planned: Plan) -> None:
        def done(results: list[ActionResult]) -> None:
            report(self.screen.app, action, results, planned)
            self.after()
            self.screen.reload()

        self.screen.dapp.run_db(self.screen, call, done, group="action", exclusive=False,
                                what=action.capitalize())
