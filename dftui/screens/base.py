"""What every dftui screen and dialog shares, without importing the app (no import circle).

The app (dftui/app.py) imports the screens; the screens import this module, never the app.
What a screen needs of the running app is the `AppServices` protocol below (run a client call
in a worker, the write-permission rules, the clock, the refresh interval) — `DftuiApp`
satisfies it, checked by mypy at the bottom of app.py. The app talks back to the screens with
Textual messages (`Reconnected`, `ThemeChanged`), never by probing them with getattr.

Also here: the header every screen composes (`AppHeader`), the vim-style cursor keys of the list
screens, the one live-refresh helper (`BaseScreen.start_live_refresh`) and the typed base of
the modal dialogs (`Dialog[T]`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any, ClassVar, Protocol, TypeVar, cast

from rich.text import Text
from textual import on
from textual.app import SystemCommand
from textual.binding import Binding, BindingType
from textual.dom import DOMNode
from textual.message import Message
from textual.reactive import reactive
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Static
from textual.worker import Worker

from dftui.client import Client, ClientError, ConnectionInfo

T = TypeVar("T")
R = TypeVar("R")

SHORT_HEIGHT = 32  # below this many rows dialogs use their compact layout (-short)
# Longest pause between two live refreshes, however slow the last one was.
MAX_REFRESH_INTERVAL = 60.0

# Vim-style list navigation shared by the list screens (each implements the four actions).
CURSOR_BINDINGS: list[BindingType] = [
    Binding("j", "cursor_down", "Down", show=False),
    Binding("k", "cursor_up", "Up", show=False),
    Binding("g", "cursor_top", "Top", show=False),
    Binding("G", "cursor_bottom", "Bottom", show=False),
]


class AppServices(Protocol):
    """What screens, dialogs and widgets use of the running app (DftuiApp)."""

    client: Client
    read_only: bool
    tz: tzinfo | None
    refresh_interval: float | None
    header_state: HeaderState

    @property
    def info(self) -> ConnectionInfo | None: ...

    @property
    def connected(self) -> bool: ...

    def now(self) -> datetime: ...

    def run_db(self, owner: DOMNode, call: Callable[[Client], R], on_done: Callable[[R], Any],
               *, group: str, on_error: Callable[[ClientError], Any] | None = None,
               exclusive: bool = True, what: str | None = None) -> Worker[None]: ...

    def notify_error(self, exc: ClientError | str) -> None: ...

    def write_state(self, capability: str | None = None) -> bool | None: ...

    def explain_disabled(self, capability: str | None = None) -> str | None: ...


def services(node: DOMNode) -> AppServices:
    """The running app as AppServices (every dftui screen runs inside DftuiApp)."""
    return cast(AppServices, node.app)


# -- messages from the app to its screens -------------------------------------------------------


class Reconnected(Message):
    """The connection came back after a loss: re-read what is shown."""


class ThemeChanged(Message):
    """The light/dark theme changed: re-render what carries theme colours."""


# -- the header ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeaderState:
    """Everything the header shows: the connection, read-only mode, the no-engine warning and
    the connection-lost banner (with the reconnect attempt). The app holds the current one
    (`DftuiApp.header_state`, a reactive attribute) and every header follows it."""

    info: ConnectionInfo | None = None
    read_only: bool = False
    engine_warning: str | None = None
    disconnected: str | None = None  # the loss message while reconnecting
    reconnect_attempt: int = 0


def header_text(state: HeaderState, width: int) -> Text:
    """The header for `state` at `width` columns (the retry reason wraps below 120)."""
    info = state.info
    text = Text()
    text.append("dftui ", style="bold")
    if info is None:
        text.append("not connected", style="red")
        return text
    text.append(f" {info.role}@{info.database} ", style="bold reverse")
    text.append(f"  PostgreSQL {info.server_version}")
    backend = info.backend + (f" {info.backend_version}" if info.backend_version else "")
    text.append(f"  backend {backend}")
    if info.is_superuser:
        text.append("  superuser", style="bold yellow")
    if state.read_only:
        text.append("  READ-ONLY", style="bold reverse yellow")
    reasons = info.capabilities.reasons
    if "retry" in reasons:
        text.append("\n" if width < 120 else "  ")
        text.append(f"retry disabled: {reasons['retry']}", style="dim")
    if state.engine_warning and state.disconnected is None:
        text.append("\n")
        text.append(f"⚠ {state.engine_warning}", style="bold black on yellow")
    if state.disconnected is not None:
        text.append("\n")
        wait = f" (attempt {state.reconnect_attempt})" if state.reconnect_attempt else ""
        text.append(f"⚠ Connection lost: {state.disconnected} — reconnecting{wait}…",
                    style="bold white on red")
    return text


class AppHeader(Static):
    """Who we are connected as (role@database, server version, backend), disabled features and
    the connection-lost banner. Every screen composes one; each follows the app's
    `header_state` (a reactive attribute: a change redraws every header, nobody calls them)."""

    DEFAULT_CSS = """
    AppHeader { dock: top; height: auto; background: $panel; color: $foreground; padding: 0 1; }
    AppHeader.-disconnected { background: $error 30%; }
    """

    state: reactive[HeaderState] = reactive(HeaderState, init=False)

    def on_mount(self) -> None:
        self.watch(self.app, "header_state", self._follow)

    def _follow(self, state: HeaderState) -> None:
        self.state = state

    def watch_state(self) -> None:
        self._redraw()

    def on_resize(self) -> None:
        self._redraw()

    def _redraw(self) -> None:
        self.update(header_text(self.state, self.size.width or self.app.size.width))
        self.set_class(self.state.disconnected is not None, "-disconnected")


# -- screens ------------------------------------------------------------------------------------


class BaseScreen(Screen[None]):
    """A full screen of dftui: its help title, its extra palette commands, `reload` (called on
    `R`, on reconnect and by the live refresh) and the one live-refresh schedule."""

    HELP_TITLE: ClassVar[str | None] = None  # the help screen's title (default: the class name)
    HOME: ClassVar[bool] = False  # the home screen: `q` quits here, goes back elsewhere
    # A screen whose content changes by the second (a running step's waits) refreshes at this
    # fixed interval instead of the app's refresh interval (and also where the app has none).
    LIVE_INTERVAL: ClassVar[float | None] = None
    # The screen's write actions, each with the backend capability it needs (None: any backend).
    # They are shown disabled in read-only mode, while disconnected, or without the capability.
    WRITE_ACTIONS: ClassVar[dict[str, str | None]] = {}

    def __init__(self) -> None:
        super().__init__()
        self.refresh_cost = 0.0  # seconds the last live refresh took (slows the schedule down)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Write actions (WRITE_ACTIONS) are enabled only when a write can be made now."""
        if action in self.WRITE_ACTIONS:
            return self.dapp.write_state(self.WRITE_ACTIONS[action])
        return True

    @property
    def dapp(self) -> AppServices:
        """The running app's services, typed (run_db, write_state, tz, ...)."""
        return services(self)

    def reload(self) -> None:
        """Re-read everything shown. Subclasses override."""

    def live_refresh(self) -> None:
        """What the live refresh re-reads (default: everything, `reload`)."""
        self.reload()

    def hint_refresh(self) -> bool:
        """The database hinted that something changed (LISTEN, DftuiApp._listen): refresh now,
        as the live refresh would, when this screen is on top. True when it did."""
        if self.app.screen is not self or not self.dapp.connected:
            return False
        self.live_refresh()
        return True

    def refresh_factor(self) -> float:
        """How much slower than the app's interval this screen refreshes now (default 1)."""
        return 1.0

    def palette_commands(self) -> Iterable[SystemCommand]:
        """Commands this screen adds to the command palette besides its key bindings."""
        return ()

    def help_title(self) -> str:
        return self.HELP_TITLE or type(self).__name__.removesuffix("Screen")

    def action_refresh(self) -> None:
        """`R` on every screen that binds it: re-read now."""
        self.reload()

    def action_back(self) -> None:
        """Back (escape) on every screen but the home screen."""
        self.app.pop_screen()

    # -- the one live-refresh helper -------------------------------------------------------------

    def start_live_refresh(self) -> None:
        """Call `live_refresh` every refresh interval (the app's, or the screen's own
        LIVE_INTERVAL, times `refresh_factor`, and at least ten times what the last refresh
        cost, at most a minute), paused while another screen is on top or the connection is
        down. No interval (tests, where the app has none): never."""
        interval = self.LIVE_INTERVAL or self.dapp.refresh_interval
        if not interval:
            return
        interval *= self.refresh_factor()
        interval = max(interval, min(self.refresh_cost * 10, MAX_REFRESH_INTERVAL))
        self.set_timer(interval, self._live_tick)

    def _live_tick(self) -> None:
        if self.app.screen is self and self.dapp.connected:
            self.live_refresh()
        self.start_live_refresh()

    @on(Reconnected)
    def _reconnected(self) -> None:
        self.reload()


class TableScreen(BaseScreen):
    """A list screen around one DataTable, which the vim-style cursor keys (CURSOR_BINDINGS)
    move: the four cursor actions, once (they were written in each list screen)."""

    def cursor_table(self) -> DataTable:
        """The table the cursor keys move (the screen's only one)."""
        return self.query_one(DataTable)

    def action_cursor_down(self) -> None:
        self.cursor_table().action_cursor_down()

    def action_cursor_up(self) -> None:
        self.cursor_table().action_cursor_up()

    def action_cursor_top(self) -> None:
        self.cursor_table().move_cursor(row=0)

    def action_cursor_bottom(self) -> None:
        table = self.cursor_table()
        table.move_cursor(row=max(table.row_count - 1, 0))


def operator_description(screen: Screen, binding: Binding) -> str:
    """A binding's description as operators read it: `q` quits only from the home screen;
    everywhere else it goes back."""
    if binding.action == "back_or_quit" and not (isinstance(screen, BaseScreen) and screen.HOME):
        return "Back"
    return binding.description


# -- dialogs ------------------------------------------------------------------------------------


class Dialog(ModalScreen[T]):
    """A modal dialog with one result type `T`: `esc` or Back dismisses with `aborted` (None
    unless a dialog says otherwise: ConfirmDialog answers False), the confirm path with a T.
    Callers pass push_screen a callback typed by that result."""

    CSS_PATH = "dialogs.tcss"  # beside this module, as are the dialogs that extend it
    BINDINGS = [Binding("escape", "close", "Close")]
    aborted: ClassVar[Any] = None

    @property
    def dapp(self) -> AppServices:
        """The running app's services, typed (run_db, write_state, tz, ...)."""
        return services(self)

    def on_screen_resume(self) -> None:
        self._fit()

    def on_resize(self) -> None:
        self._fit()

    def _fit(self) -> None:
        """The compact layout on short terminals (`-short`): buttons always fit."""
        self.set_class(self.app.size.height < SHORT_HEIGHT, "-short")

    def action_close(self) -> None:
        self.dismiss(self.aborted)

    @on(Button.Pressed, "#back")
    def _back(self) -> None:
        self.dismiss(self.aborted)
