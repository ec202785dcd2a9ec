"""Screen 3: the action dialogs (modal). Each one confirms a write action and says what it
touches: cancel (with a reason), retry (showing what will re-run), signal (name + JSON payload,
validated before sending) and start a new run (DSL editor with a live df.explain preview).

Dialogs return what the user confirmed through `dismiss`; the calling screen runs the action,
except Signal and Start, which report the server's answer inline so a mistake can be corrected
without retyping.
"""

from __future__ import annotations

import json

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.timer import Timer
from textual.widgets import Button, Input, Label, OptionList, Static, TextArea
from textual.widgets.option_list import Option

from dftui.client import ActionResult, Client, ClientError, NodeInfo, json_dumps, json_loads
from dftui.graph import display_status, node_summary
from dftui.screens.actions import Plan, names_text
from dftui.screens.base import Dialog
from dftui.vocabulary import is_composite
from dftui.widgets.format import STATUS_STYLES, status_symbol

MAX_LISTED = 8


def _count(ids: list) -> str:
    return f"{len(ids)} instance{'s' if len(ids) != 1 else ''}"


def _targets_text(planned: Plan) -> Text:
    """The instances an action will touch, by label and id, then those skipped and why."""
    text = Text(names_text([t.name for t in planned.apply], MAX_LISTED))
    if planned.skip:
        text.append(f"\nskipped {len(planned.skip)}: ", style="bold yellow")
        shown = [f"{t.name} ({why})" for t, why in planned.skip[:3]]
        more = f" and {len(planned.skip) - 3} more" if len(planned.skip) > 3 else ""
        text.append("; ".join(shown) + more, style="yellow")
    return text


class CancelDialog(Dialog[str | None]):
    """Confirm cancelling one or more instances; returns the reason (None = abort)."""

    def __init__(self, planned: Plan) -> None:
        super().__init__()
        self.planned = planned
        self.ids = planned.ids

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Cancel {_count(self.ids)}?", classes="dialog-title")
            yield Static(_targets_text(self.planned), classes="dialog-ids")
            yield Static("Running steps are stopped; this cannot be undone (retry re-runs them).",
                         classes="dialog-note")
            yield Input(placeholder="reason (default: Cancelled by user)", id="reason")
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"Cancel {_count(self.ids)}", variant="error", id="confirm")
                yield Button("Back", id="back")

    def on_mount(self) -> None:
        self.query_one("#reason", Input).focus()

    @on(Input.Submitted, "#reason")
    @on(Button.Pressed, "#confirm")
    def _confirm(self) -> None:
        self.dismiss(self.query_one("#reason", Input).value.strip() or "Cancelled by user")


class ConfirmDialog(Dialog[bool]):
    """A yes/no question for destructive actions; returns True to proceed, False (esc, Back)
    not to."""

    aborted = False

    def __init__(self, question: str, confirm: str = "Delete") -> None:
        super().__init__()
        self.question = question
        self.confirm = confirm

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text(self.question), classes="dialog-title")  # (may name labels)
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.confirm, variant="error", id="confirm")
                yield Button("Back", id="back")

    def on_mount(self) -> None:
        self.query_one("#confirm", Button).focus()

    @on(Button.Pressed, "#confirm")
    def _yes(self) -> None:
        self.dismiss(True)


def rerun_preview(nodes: list[NodeInfo], instance_status: str) -> list[tuple[str, str]]:
    """(status, text) of the leaf steps a retry will run again: everything not completed."""
    out = []
    for node in nodes:
        if is_composite(node.node_type):
            continue
        status = display_status(node, instance_status)
        if status in ("completed",):
            continue
        out.append((status, node_summary(node, 50)))
    return out


class RetryDialog(Dialog[bool]):
    """Confirm retrying; shows the steps that will run again. Returns True to proceed."""

    aborted = False

    def __init__(self, planned: Plan) -> None:
        super().__init__()
        self.planned = planned
        self.ids = planned.ids
        self.names = {t.id: t.name for t in planned.apply}

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Retry {_count(self.ids)}?", classes="dialog-title")
            yield Static(_targets_text(self.planned), classes="dialog-ids")
            with VerticalScroll(classes="dialog-preview"):
                yield Static(Text("Loading what will re-run…", style="dim"), id="preview")
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"Retry {_count(self.ids)}", variant="warning", id="confirm")
                yield Button("Back", id="back")

    def on_mount(self) -> None:
        self.query_one("#confirm", Button).focus()
        ids = self.ids[:MAX_LISTED]

        def call(client: Client) -> list[tuple[str, str, list[tuple[str, str]]]]:
            result = []
            for instance_id in ids:
                try:
                    detail = client.instance(instance_id)
                    preview = rerun_preview(client.nodes(instance_id, detail), detail.status)
                    result.append((instance_id, detail.status, preview))
                except ClientError as exc:
                    if exc.__class__ is not ClientError:
                        raise
                    result.append((instance_id, "?", [("failed", exc.message)]))
            return result

        self.dapp.run_db(self, call, self._show_preview, group="preview")

    def _show_preview(self, data: list[tuple[str, str, list[tuple[str, str]]]]) -> None:
        text = Text()
        for instance_id, status, steps in data:
            text.append(f"{self.names.get(instance_id, instance_id)} ", style="bold")
            text.append(f"{status_symbol(status)} {status}\n", style=STATUS_STYLES.get(status, ""))
            if status == "completed":
                text.append("  completed instances cannot be retried\n", style="dim")
                continue
            if not steps:
                text.append("  nothing left to run\n", style="dim")
            for step_status, summary in steps[:12]:
                text.append(f"  {status_symbol(step_status)} ", style=STATUS_STYLES.get(step_status, ""))
                text.append(f"{summary}\n")
            if len(steps) > 12:
                text.append(f"  … and {len(steps) - 12} more steps\n", style="dim")
        if len(self.ids) > MAX_LISTED:
            text.append(f"(preview shows the first {MAX_LISTED})", style="dim")
        text.append("Completed steps keep their results; these run again.", style="dim")
        self.query_one("#preview", Static).update(text)

    @on(Button.Pressed, "#confirm")
    def _confirm(self) -> None:
        self.dismiss(True)


class SignalDialog(Dialog[list[ActionResult] | None]):
    """Send a signal to the planned instances: name + JSON payload, validated before sending.
    A server error is shown inline (nothing to retype); once sent, the dialog closes with the
    per-instance results for the caller to report."""

    BINDINGS = [Binding("ctrl+s", "send", "Send")]

    def __init__(self, planned: Plan, name: str = "") -> None:
        super().__init__()
        self.planned = planned
        self.suggested_name = name  # the signal the instances wait for, when known

    def compose(self) -> ComposeResult:
        ids = self.planned.ids
        title = (f"Signal {self.planned.apply[0].name}" if len(ids) == 1
                 else f"Signal {_count(ids)}")
        with Vertical(classes="dialog"):
            yield Label(Text(title), classes="dialog-title")  # (a label is text, not markup)
            if len(ids) > 1 or self.planned.skip:
                yield Static(_targets_text(self.planned), classes="dialog-ids")
            yield Input(self.suggested_name, placeholder="signal name, e.g. approve", id="name")
            yield Static("payload (JSON, empty = {}):", classes="dialog-note")
            yield TextArea("", id="payload", language="json", soft_wrap=True,
                           tab_behavior="focus", placeholder='{"approved": true}')
            yield Static(id="error", classes="dialog-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Send (ctrl+s)", variant="primary", id="confirm")
                yield Button("Back", id="back")

    def on_mount(self) -> None:
        # With the waited-for name filled in, start in the payload editor.
        self.query_one("#payload" if self.suggested_name else "#name").focus()

    def _error(self, message: str) -> None:
        self.query_one("#error", Static).update(Text(message, style=STATUS_STYLES["failed"]))

    def _payload_problem(self) -> str | None:
        payload = self.query_one("#payload", TextArea).text.strip()
        if not payload:
            return None
        try:
            json_loads(payload)
        except json.JSONDecodeError as exc:
            return f"payload is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        except ValueError as exc:  # NaN, Infinity: not JSON (jsonexact is strict)
            return f"payload is not valid JSON: {exc}"
        return None

    def validate(self) -> tuple[str, str] | None:
        name = self.query_one("#name", Input).value.strip()
        if not name:
            self._error("the signal name must not be empty")
            return None
        problem = self._payload_problem()
        if problem:
            self._error(problem)
            return None
        self._error("")
        return name, self.query_one("#payload", TextArea).text.strip() or "{}"

    @on(TextArea.Changed, "#payload")
    def _payload_changed(self) -> None:
        self._error(self._payload_problem() or "")

    @on(Input.Submitted, "#name")
    @on(Button.Pressed, "#confirm")
    def action_send(self) -> None:
        values = self.validate()
        if values is None:
            return
        if self.dapp.read_only:
            self._error("read-only mode: signals are disabled")
            return
        name, payload = values
        ids = self.planned.ids

        def done(results: list[ActionResult]) -> None:
            self.dismiss(results)

        self.dapp.run_db(self, lambda c: c.signal(ids, name, payload), done, group="send",
                         on_error=lambda exc: self._error(exc.message), what="Signal")


class StartDialog(Dialog[str | None]):
    """Start a new run: a DSL editor with a live df.explain preview; returns the new id."""

    BINDINGS = [Binding("ctrl+s", "start", "Start")]
    EXAMPLE = "'SELECT 1 AS one' |=> 'first'\n  ~> 'SELECT $first + 1 AS two'"

    def __init__(self, source: str | None = None, label: str | None = None) -> None:
        super().__init__()
        self.source = source
        self.label = label
        self._timer: Timer | None = None  # the pending debounced preview

    def compose(self) -> ComposeResult:
        title = "Start again like this one" if self.source else "Start a new run"
        with Vertical(classes="dialog dialog-wide"):
            yield Label(title, classes="dialog-title")
            yield Static("workflow (DSL expression, e.g. 'SELECT 1' ~> df.sleep(5)):",
                         classes="dialog-note")
            # tab_behavior="focus": tab moves on and the first esc closes the dialog.
            yield TextArea(self.source or self.EXAMPLE, id="source", language="sql",
                           soft_wrap=True, tab_behavior="focus")
            yield Input(self.label or "", placeholder="label (optional)", id="label")
            with VerticalScroll(classes="dialog-preview"):
                yield Static(id="preview")
            yield Static(id="error", classes="dialog-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Start (ctrl+s)", variant="primary", id="confirm")
                yield Button("Back", id="back")

    def on_mount(self) -> None:
        editor = self.query_one("#source", TextArea)
        editor.focus()
        if not self.source:
            editor.select_all()  # the example is replaced by the first key typed
        self._preview()

    @on(TextArea.Changed, "#source")
    def _changed(self) -> None:
        # Debounce: explain once typing pauses.
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(0.4, self._preview)

    def _preview(self) -> None:
        source = self.query_one("#source", TextArea).text
        if not source.strip():
            self.query_one("#preview", Static).update("")
            return
        def call(client: Client) -> str:
            envelope = client.evaluate(source)
            if client.capabilities.has_explain:
                return client.explain(envelope)
            # No df.explain on this backend: show the evaluated node envelope instead.
            try:
                return json_dumps(json_loads(envelope), indent=2)
            except ValueError:
                return envelope

        def shown(text: str) -> None:
            self.query_one("#preview", Static).update(Text(text))
            self.query_one("#error", Static).update("")

        def failed(exc: ClientError) -> None:
            self.query_one("#preview", Static).update("")
            self.query_one("#error", Static).update(Text(exc.message, style=STATUS_STYLES["failed"]))

        self.dapp.run_db(self, call, shown, group="explain", on_error=failed)

    @on(Button.Pressed, "#confirm")
    def action_start(self) -> None:
        if self.dapp.read_only:
            return
        source = self.query_one("#source", TextArea).text
        label = self.query_one("#label", Input).value.strip() or None

        def done(instance_id: str) -> None:
            self.app.notify(f"Started {instance_id}", title="New run")
            self.dismiss(instance_id)

        def failed(exc: ClientError) -> None:
            self.query_one("#error", Static).update(Text(exc.message, style=STATUS_STYLES["failed"]))

        self.dapp.run_db(self, lambda c: c.start(source, label), done, group="start",
                         on_error=failed)


class LabelPicker(Dialog[str | None]):
    """Group by label: pick one of the labels in use (read through the label index, bounded);
    returns the label, "" for all labels, or None when closed."""

    def __init__(self, current: str | None) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Show instances with label", classes="dialog-title")
            yield OptionList(Option("(all labels)", id=""), id="labels")
            yield Static(Text("loading labels…", style="dim"), id="note", classes="dialog-note")

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()
        self.dapp.run_db(self, lambda c: c.labels(), self._show, group="labels")

    def _show(self, labels: list[str]) -> None:
        options = self.query_one(OptionList)
        options.add_options([Option(Text(label), id=label) for label in labels])  # (not markup)
        if self.current in labels:
            options.highlighted = labels.index(self.current) + 1
        more = " (first 200)" if len(labels) >= 200 else ""
        self.query_one("#note", Static).update(Text(f"{len(labels)} labels{more}", style="dim"))

    @on(OptionList.OptionSelected, "#labels")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id or "")


class GotoDialog(Dialog[str | None]):
    """Jump to an instance: type its id (or a unique prefix); returns the text or None."""

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Go to instance", classes="dialog-title")
            yield Input(placeholder="instance id or its first characters", id="goto")
            yield Static(Text("", style="dim"), id="goto-error", classes="dialog-note")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Open", variant="primary", id="confirm")
                yield Button("Back", id="back")

    def on_mount(self) -> None:
        self.query_one("#goto", Input).focus()

    @on(Input.Submitted, "#goto")
    @on(Button.Pressed, "#confirm")
    def _confirm(self) -> None:
        text = self.query_one("#goto", Input).value.strip().lower()
        if not text or not all(ch in "0123456789abcdef" for ch in text) or len(text) > 8:
            self.query_one("#goto-error", Static).update(
                Text("an instance id is up to 8 hex digits (0-9, a-f)", style=STATUS_STYLES["failed"]))
            return
        self.dismiss(text)
