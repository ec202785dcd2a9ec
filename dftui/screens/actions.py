"""What an action will touch and what it did: shared by the list and the detail screen.

Why a module of its own: both screens must plan an action the same way (the selection when there
is one, else the cursor row; instances the action cannot apply to are skipped with the reason
before anything is sent) and report the outcome the same way (named by label and id; a skip or a
failure is never counted as done).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from textual.app import App

from dftui.client import ActionResult, action_refusal, instance_name

VERBS = {"cancel": "Cancelled", "retry": "Retried", "signal": "Signalled"}
MAX_NAMED = 8


@dataclass(frozen=True)
class Target:
    """An instance an action is about: id, label and the status the screen last saw."""

    id: str
    label: str | None
    status: str

    @property
    def name(self) -> str:
        return instance_name(self.id, self.label)


@dataclass
class Plan:
    """The instances an action applies to, and those it skips (with why)."""

    action: str
    apply: list[Target] = field(default_factory=list)
    skip: list[tuple[Target, str]] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [t.id for t in self.apply]

    def nothing_text(self) -> str:
        """The notification when the action applies to none of the targets."""
        reasons = "; ".join(f"{t.name} is {why}" for t, why in self.skip[:3])
        more = f" (and {len(self.skip) - 3} more)" if len(self.skip) > 3 else ""
        return f"Nothing to {self.action}: {reasons}{more}"


def plan(action: str, targets: list[Target]) -> Plan:
    """Split `targets` into those `action` applies to and those it skips (same rules as the
    client, on the statuses shown; the client re-checks against the database)."""
    result = Plan(action)
    for target in targets:
        why = action_refusal(action, target.status)
        if why is None:
            result.apply.append(target)
        else:
            result.skip.append((target, why))
    return result


def names_text(names: list[str], limit: int = MAX_NAMED) -> str:
    """`a (1), b (2) and 3 more`: how dialogs and notifications list instances."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def report(app: App, action: str, results: list[ActionResult],
           planned: Plan | None = None) -> None:
    """Notify what really happened: the instances acted on by name, every skip (those the plan
    left out before anything was sent, and those the database refused) and failure with its
    reason, and a warning when nothing was done at all."""
    verb = VERBS.get(action, action.capitalize())
    done = [r for r in results if r.ok]
    skipped = [(t.name, why) for t, why in (planned.skip if planned else [])]
    skipped += [(r.name, r.message) for r in results if r.skipped]
    failed = [r for r in results if not r.ok and not r.skipped]
    if done:
        app.notify(f"{verb} {len(done)}: {names_text([r.name for r in done])}",
                   title=action.capitalize())
    if skipped:
        lines = [f"{name}: {why}" for name, why in skipped[:MAX_NAMED]]
        if len(skipped) > MAX_NAMED:
            lines.append(f"… and {len(skipped) - MAX_NAMED} more")
        app.notify("\n".join(lines), title=f"Skipped {len(skipped)}", severity="warning",
                   timeout=8)
    for r in failed[:MAX_NAMED]:
        app.notify(f"{r.name}: {r.message}", title=f"{action.capitalize()} failed",
                   severity="error", timeout=10)
    if not done:
        app.notify(f"Nothing was {verb.lower()}", title=action.capitalize(), severity="warning")
