"""The dftui Textual application: connection state, database workers, header, palette, theme.

Structure (Harlequin-style): `dftui.client.Client` is the adapter (the only code that talks to
PostgreSQL); screens ask `DftuiApp.run_db` to run a client call in a thread worker and get the
result back on the UI thread. Database errors become notifications with the server's message; a
lost connection shows a banner in every header and reconnects with exponential backoff.
"""

from __future__ import annotations

import getpass
import sys
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from datetime import UTC, datetime, tzinfo
from typing import Any, TypeVar

from rich.text import Text
from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.dom import DOMNode
from textual.notifications import SeverityLevel
from textual.reactive import var
from textual.screen import ModalScreen, Screen
from textual.worker import Worker, get_current_worker

from dftui.client import (
    Client,
    ClientError,
    ConnectionInfo,
    ConnectionLost,
    PasswordRequired,
    connect,
)
from dftui.screens.base import (
    AppServices,
    BaseScreen,
    HeaderState,
    Reconnected,
    ThemeChanged,
    header_text,
)
from dftui.screens.dialogs import ConfirmDialog
from dftui.screens.engines import EnginesScreen
from dftui.screens.help import HelpScreen
from dftui.screens.instances import InstancesScreen
from dftui.screens.variables import VariablesScreen

T = TypeVar("T")

RECONNECT_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
WRITE_KEYS = ("c", "r", "s", "n", "a", "d", "e", "x", "X", "T")
HINT_MIN_GAP = 0.5  # seconds: the least time between two LISTEN-driven refreshes
DARK_THEME = "textual-dark"
LIGHT_THEME = "textual-light"


class DftuiApp(App[int]):
    """The TUI. `client` must already be connected (see `run_app`).

    The connection's state is reactive: assigning `disconnected`, `reconnect_attempt` or
    `engine_warning` publishes a new `header_state`, which every screen's header follows."""

    CSS_PATH = "app.tcss"
    TITLE = "dftui"
    ENABLE_COMMAND_PALETTE = True
    BINDINGS = [
        Binding("q", "back_or_quit", "Quit"),
        Binding("question_mark", "help", "Help"),
        Binding("colon", "command_palette", "Commands", show=False),
        Binding("v", "variables", "Vars", show=False),
        Binding("e", "engines", "Engines", show=False),
        Binding("ctrl+t", "toggle_theme", "Light/dark", show=False),
        # Reached only when the screen's own binding for the key is disabled (read-only mode,
        # disconnected, a backend without the feature): say why instead of doing nothing.
        *[Binding(key, f"refused('{key}')", show=False) for key in WRITE_KEYS],
    ]

    def __init__(
        self,
        client: Client,
        *,
        read_only: bool = False,
        clock: Callable[[], datetime] | None = None,
        tz: tzinfo | None = None,
        refresh_interval: float | None = 2.0,
        reconnect_delays: Iterable[float] = RECONNECT_DELAYS,
        theme: str | None = None,
        quit_warning: str | None = None,
        listen: bool = True,
    ) -> None:
        super().__init__()
        self.client = client
        self.read_only = read_only
        # What quitting stops besides the TUI (the demo's engine and server): asked before quit.
        self.quit_warning = quit_warning
        self.clock = clock or (lambda: datetime.now(UTC))
        self.tz = tz
        self.refresh_interval = refresh_interval
        self.reconnect_delays = tuple(reconnect_delays)
        self.disconnections = 0  # how many times the connection was lost (shown in tests/logs)
        self._last_error: str | None = None
        self._last_error_at = 0.0
        # LISTEN-driven refresh (a hint only; the poll stays as the fallback): see _listen.
        self.listen = listen and bool(refresh_interval)
        self.listening = False  # the LISTEN connection is up
        self.hints = 0  # hints acted on (tests, logs)
        self._last_hint = 0.0
        self._hint_timer: Any = None
        self._stop_listening = threading.Event()
        if theme:
            self.theme = theme

    # -- lifecycle -----------------------------------------------------------------------------

    # The loss message while reconnecting (None: connected), the reconnect attempt, and why new
    # work would not run (no live engine serves the database).
    disconnected: var[str | None] = var(None, init=False)
    reconnect_attempt: var[int] = var(0, init=False)
    engine_warning: var[str | None] = var(None, init=False)
    header_state: var[HeaderState] = var(HeaderState, init=False)

    def on_mount(self) -> None:
        self._publish_header()
        self.push_screen(InstancesScreen())
        self.check_engines()
        self.set_interval(max(self.refresh_interval or 0, 10.0), self._engines_tick)
        if self.listen:
            self.run_worker(self._listen, thread=True, group="listen", exit_on_error=False)

    def on_unmount(self) -> None:
        self._stop_listening.set()

    # -- live without polling: LISTEN ----------------------------------------------------------

    def _listen(self) -> None:
        """Thread: wait for the df schema's notifications (df_work, df_done, df_cancel) on a
        connection of its own and hint the screen on top to refresh now. Payloads are empty by
        design and anyone may NOTIFY: a hint only makes the screen re-read what it shows (RLS
        applies), at most once per HINT_MIN_GAP. Connection trouble: back off and try again;
        the poll carries on meanwhile."""
        notes = self.client.notifications()
        backoff = 1.0
        try:
            while not self._stop_listening.is_set():
                try:
                    if notes.wait(1.0):
                        self._from_thread(self._hinted)
                    if not self.listening:
                        self.listening = True
                    backoff = 1.0
                except ClientError:
                    self.listening = False
                    if self._stop_listening.wait(backoff):
                        return
                    backoff = min(backoff * 2, 30.0)
        finally:
            notes.close()
            self.listening = False

    def _hinted(self) -> None:
        """A hint arrived: refresh the screen on top now, or when the minimum gap has passed
        (a burst of hints gives one refresh, never a refresh storm)."""
        wait = self._last_hint + HINT_MIN_GAP - time.monotonic()
        if wait > 0:
            if self._hint_timer is None:
                self._hint_timer = self.set_timer(wait, self._hint_now)
            return
        self._hint_now()

    def _hint_now(self) -> None:
        self._hint_timer = None
        self._last_hint = time.monotonic()
        screen = self.screen
        if isinstance(screen, BaseScreen) and self.connected and screen.hint_refresh():
            self.hints += 1

    def _engines_tick(self) -> None:
        if self.refresh_interval and self.connected:
            self.check_engines()

    def check_engines(self) -> None:
        """Refresh the no-engine banner (every screen's header shows it)."""

        def done(warning: str | None) -> None:
            self.engine_warning = warning

        self.run_db(self, lambda c: c.engine_warning(), done, group="engines-check",
                    on_error=lambda exc: None)

    @property
    def info(self) -> ConnectionInfo | None:
        return self.client.info

    def now(self) -> datetime:
        return self.clock()

    # -- header --------------------------------------------------------------------------------

    def header_text(self, width: int) -> Text:
        """The header every screen shows now, at `width` columns."""
        return header_text(self.header_state, width)

    def _header_now(self) -> HeaderState:
        return HeaderState(info=self.info, read_only=self.read_only,
                           engine_warning=self.engine_warning, disconnected=self.disconnected,
                           reconnect_attempt=self.reconnect_attempt)

    def _publish_header(self) -> None:
        """One of the header's inputs changed: a new header_state (every header follows)."""
        self.header_state = self._header_now()

    def watch_disconnected(self) -> None:
        self._publish_header()

    def watch_reconnect_attempt(self) -> None:
        self._publish_header()

    def watch_engine_warning(self) -> None:
        self._publish_header()

    def watch_header_state(self) -> None:
        """Writes are disabled while the connection is down: re-check every screen's keys."""
        for screen in self.screen_stack:
            screen.refresh_bindings()

    # -- database workers ----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.disconnected is None

    def run_db(
        self,
        owner: DOMNode,
        call: Callable[[Client], T],
        on_done: Callable[[T], Any],
        *,
        group: str,
        on_error: Callable[[ClientError], Any] | None = None,
        exclusive: bool = True,
        what: str | None = None,
    ) -> Worker[None]:
        """Run `call(client)` in a thread worker owned by `owner`; deliver the result with
        `on_done` on the UI thread. Results of cancelled (superseded) workers are dropped.

        Errors: ConnectionLost starts the reconnect loop; other ClientErrors go to `on_error`, or
        become an error notification with the server's message. `what` names a write action
        ("Cancel"): when the connection is lost under it, the user is told it was not done
        (through `on_error` too) instead of the action silently vanishing.
        """
        if what is not None and self.disconnected is not None:
            lost = ClientError(f"{what} not sent: not connected ({self.disconnected})")
            (on_error or self.notify_error)(lost)
            return owner.run_worker(lambda: None, thread=True, group=group)

        def job() -> None:
            worker = get_current_worker()
            try:
                result = call(self.client)
            except ConnectionLost as exc:
                self._from_thread(self.connection_lost, exc.message)
                if what is not None:
                    lost = ClientError(f"{what} not done: {exc.message}")
                    self._from_thread(on_error or self.notify_error, lost)
                return
            except ClientError as exc:
                if not worker.is_cancelled:
                    self._from_thread(on_error or self.notify_error, exc)
                return
            except Exception as exc:  # a bug, not a database error: one line, no traceback
                self.log.error("unexpected error in a database worker", exc_info=exc)
                self._from_thread(self.notify_error, f"internal error: {exc.__class__.__name__}: {exc}")
                return
            if not worker.is_cancelled:
                self._from_thread(on_done, result)

        return owner.run_worker(job, thread=True, exclusive=exclusive, group=group,
                                exit_on_error=False)

    def _from_thread(self, callback: Callable[..., Any], *args: Any) -> None:
        with suppress(RuntimeError):  # the app is shutting down; nobody to tell
            self.call_from_thread(callback, *args)

    def notify(self, message: str, *, title: str = "", severity: SeverityLevel = "information",
               timeout: float | None = None, markup: bool = False) -> None:
        """Every notification is plain text: it names labels and carries the server's messages
        (a role's SQL, its errors), so markup in them must not be read (a label '[/]x' raised
        MarkupError). Widgets' notify() passes markup=True explicitly; it is ignored."""
        del markup
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=False)

    def notify_error(self, exc: ClientError | str) -> None:
        """The server's message as a notification; the same message is not repeated while it is
        still on screen (a failing live refresh would otherwise stack one every 2 s)."""
        message = exc.message if isinstance(exc, ClientError) else exc
        now = time.monotonic()
        if self._last_error == message and now - self._last_error_at < 8:
            return
        self._last_error, self._last_error_at = message, now
        self.notify(message, title="Database error", severity="error", timeout=8)

    # -- connection loss -----------------------------------------------------------------------

    def connection_lost(self, message: str) -> None:
        """Show the banner and start reconnecting (once, however many workers noticed)."""
        if self.disconnected is not None:
            return
        self.disconnected = message.removeprefix("connection lost: ")
        self.disconnections += 1
        self.reconnect_attempt = 0
        self._reconnect()

    @work(thread=True, exclusive=True, group="reconnect", exit_on_error=False)
    def _reconnect(self) -> None:
        worker = get_current_worker()
        attempt = 0
        while not worker.is_cancelled:
            delay = self.reconnect_delays[min(attempt, len(self.reconnect_delays) - 1)]
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline:
                if worker.is_cancelled:
                    return
                time.sleep(0.05)
            attempt += 1
            self._from_thread(self._set_attempt, attempt)
            try:
                self.client.reconnect()
            except PasswordRequired:
                self._from_thread(self._set_attempt, attempt, "the server now requires a password")
                continue
            except ClientError as exc:
                self._from_thread(self._set_attempt, attempt, exc.message)
                continue
            self._from_thread(self.connection_restored)
            return

    def _set_attempt(self, attempt: int, message: str | None = None) -> None:
        self.reconnect_attempt = attempt
        if message and self.disconnected is not None:
            self.disconnected = message

    def connection_restored(self) -> None:
        self.reconnect_attempt = 0
        self.disconnected = None
        self._publish_header()  # the reconnected session's info (role, capabilities) too
        self.notify("Reconnected to the server", title="Connection")
        for screen in self.screen_stack:
            screen.post_message(Reconnected())

    # -- permissions ---------------------------------------------------------------------------

    def write_state(self, capability: str | None = None) -> bool | None:
        """check_action result for a write action: None (shown disabled) in read-only mode,
        while disconnected, or when the backend lacks the capability, else True."""
        if self.read_only or self.disconnected is not None:
            return None
        if capability == "retry" and not self.client.capabilities.can_retry:
            return None
        return True

    def explain_disabled(self, capability: str | None = None) -> str | None:
        """Why a write action is disabled (for notifications and help)."""
        if self.read_only:
            return "read-only mode (--read-only)"
        if self.disconnected is not None:
            return f"not connected to the server ({self.disconnected}); reconnecting"
        if capability == "retry" and not self.client.capabilities.can_retry:
            return self.client.capabilities.reasons.get("retry", "retry is not available")
        return None

    # -- actions -------------------------------------------------------------------------------

    def action_refused(self, key: str) -> None:
        """A write key whose screen binding is disabled: explain why (never silently nothing)."""
        active = self.screen.active_bindings.get(key)
        if active is None or active.enabled or not active.binding.description:
            return
        description = active.binding.description
        capability = "retry" if active.binding.action == "retry" else None
        reason = self.explain_disabled(capability) or "not available here"
        self.notify(f"{description} is disabled: {reason}", severity="warning")

    def action_back_or_quit(self) -> None:
        """`q`: back from inner screens; on the home screen quit, asking first when quitting
        stops more than the TUI (the demo's engine and server)."""
        screen = self.screen
        if isinstance(screen, ModalScreen):
            screen.dismiss(None)
            return
        if not isinstance(screen, InstancesScreen) and len(self.screen_stack) > 2:
            self.pop_screen()
            return
        if not self.quit_warning:
            self.exit(0)
            return

        def answered(ok: bool | None) -> None:
            if ok:
                self.exit(0)

        self.push_screen(ConfirmDialog(f"Quit? {self.quit_warning}", "Quit"), answered)

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen(self.screen))

    def action_variables(self) -> None:
        if not isinstance(self.screen, VariablesScreen | ModalScreen):
            self.push_screen(VariablesScreen())

    def action_engines(self) -> None:
        if not isinstance(self.screen, EnginesScreen | ModalScreen):
            self.push_screen(EnginesScreen())

    def action_toggle_theme(self) -> None:
        self.theme = LIGHT_THEME if self.current_theme.dark else DARK_THEME

    def watch_theme(self, theme: str) -> None:
        for screen in self.screen_stack:
            screen.post_message(ThemeChanged())

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """The palette offers every enabled binding of the current screen, plus the system
        commands (theme, quit, keys, screenshot)."""
        yield from super().get_system_commands(screen)
        yield SystemCommand("Toggle light/dark theme", "ctrl+t", self.action_toggle_theme)
        seen: set[str] = set()
        for active in screen.active_bindings.values():
            binding = active.binding
            if not active.enabled or not binding.description or binding.action in seen:
                continue
            if active.node is not screen and active.node is not self:
                continue  # widget navigation keys (cursor moves, scrolling) stay out of the palette
            if binding.action in ("quit", "command_palette"):
                continue
            seen.add(binding.action)
            yield SystemCommand(
                binding.description,
                f"key: {self.get_key_display(binding)}",
                _action_runner(self, active.node, binding.action),
            )
        if isinstance(screen, BaseScreen):
            yield from screen.palette_commands()


def _action_runner(app: App, node: DOMNode, action: str) -> Callable[[], Any]:
    """A palette callback running `action` with `node` (the screen or the app) as its namespace."""

    async def run() -> None:
        await app.run_action(action, node)

    return run


def _prompt_password(target: str) -> str:
    if sys.stdin is None or not sys.stdin.isatty():
        raise ClientError("the server requires a password (set PGPASSWORD or use ~/.pgpass)")
    return getpass.getpass(f"Password for {target}: ")


# DftuiApp is what the screens see through AppServices (dftui/screens/base.py): checked here.
_SERVICES: type[AppServices] = DftuiApp


def run_app(conninfo: str, read_only: bool = False, quit_warning: str | None = None) -> int:
    """Connect (asking for a hidden password when the server wants one, before Textual takes the
    terminal), run the TUI, and return the process exit code."""
    try:
        client = connect(conninfo, password_prompt=_prompt_password)
    except ClientError as exc:
        print(f"dftui: {exc.message}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, EOFError):
        print("dftui: cancelled", file=sys.stderr)
        return 1
    try:
        problem = client.info.unusable if client.info is not None else None
        if problem:
            print(f"dftui: {problem}", file=sys.stderr)
            return 1
        if sys.stdin is None or not sys.stdin.isatty():  # (no keyboard: it ran until killed)
            print("dftui: the TUI needs a terminal to read keys from; in scripts use the data "
                  "commands (dftui ls, show, start, ... see dftui --help)", file=sys.stderr)
            return 2
        app = DftuiApp(client, read_only=read_only, quit_warning=quit_warning)
        result = app.run()
        return int(result or app.return_code or 0)
    finally:
        client.close()
