"""Acting on instances: start (from DSL source, evaluated safely), cancel, retry, signal.

Every bulk action answers one `ActionResult` per id, in the order given: applied, skipped with
the reason (the same rules as df.cancel / df.retry / df.signal, checked first so a no-op is
reported as one), or refused with the server's message — never "done" for something that did
not happen. The df.* functions run as the connected role: ownership is theirs to prove.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from psycopg import errors as pg_errors

from dftui.client.errors import ClientError, ConnectionLost, InputError, user_message
from dftui.client.instances import check_id
from dftui.client.models import ActionResult
from dftui.client.session import Session
from dftui.vocabulary import TERMINAL_STATUSES
from engine import jsonexact

EVALUATE_TIMEOUT_S = 10  # seconds; building a workflow's envelope takes milliseconds
_NOT_SINGLE = "the workflow expression must be a single expression, not statements"


# Which statuses each action can act on; anything else is skipped with this reason.
def action_refusal(action: str, status: str) -> str | None:
    """Why `action` would do nothing on an instance in `status` (None: it applies).

    The same rules as df.cancel / df.retry / df.signal, checked before asking the server so a
    no-op is reported as one (df.cancel answers 'already completed', df.signal queues a signal
    no step will ever read)."""
    if action == "cancel" and status in TERMINAL_STATUSES:
        return f"already {status}; nothing to cancel"
    if action == "retry":
        if status == "completed":
            return "completed; only failed or cancelled instances can be retried"
        if status in ("pending", "running"):
            return f"{status}; only failed or cancelled instances can be retried"
    if action == "signal" and status in TERMINAL_STATUSES:
        return f"{status}; signals reach only pending or running instances"
    return None


class Actions(Session):
    """Start, cancel, retry and signal instances."""

    def evaluate(self, expression: str) -> str:
        """Evaluate DSL source (e.g. `'SELECT 1' ~> 'SELECT 2' |=> 'x'`) to its node envelope.

        The expression is the caller's own SQL, so evaluating it grants nothing new; still it must
        be exactly one scalar expression: it runs with a bound parameter (the extended protocol
        refuses multiple statements), inside a READ ONLY transaction that is rolled back (builders
        are pure; nothing may write), and must yield one row with one column.
        """
        text = expression.strip()
        if not text:
            raise ClientError("the workflow expression is empty")
        if text.endswith(";"):
            text = text.rstrip(";").rstrip()
        with self._rolled_back() as cur:
            cur.execute("SET TRANSACTION READ ONLY")
            # (bounded: the TUI's preview shares its one connection with every screen, and a
            # slow subquery in the expression held it, and the app's exit, for as long)
            cur.execute(f"SET LOCAL statement_timeout = '{EVALUATE_TIMEOUT_S}s'")
            try:
                # (the expression's own % signs are text, not placeholders: doubled for psycopg,
                # which sends %% as %; a workflow with a '50%' in it could not be started)
                cur.execute(f"SELECT (\n{text.replace('%', '%%')}\n)::text, %s::int", (1,))
            except pg_errors.SyntaxError as exc:
                msg = user_message(exc)
                if "multiple commands" in msg:
                    raise ClientError(_NOT_SINGLE) from None
                raise ClientError(f"invalid workflow expression: {msg}") from None
            except pg_errors.QueryCanceled:
                raise ClientError(f"the workflow expression took more than {EVALUATE_TIMEOUT_S} s "
                                  "to evaluate (building a workflow is instant: is a subquery in "
                                  "it slow?)") from None
            if cur.description is None or len(cur.description) != 2:
                raise ClientError(_NOT_SINGLE)
            rows = cur.fetchall()
        if len(rows) != 1 or rows[0][0] is None:
            raise ClientError("the workflow expression must evaluate to one non-null value")
        return rows[0][0]

    def start(self, expression: str, label: str | None = None) -> str:
        """Evaluate DSL source safely (see `evaluate`) and start it; returns the instance id."""
        if label is not None and (label == "" or re.search(r"[\x00-\x1f\x7f]", label)):
            raise ClientError("invalid label: it must be non-empty and have no control characters")
        envelope = self.evaluate(expression)
        row = self._one("SELECT df.start(%s, %s) AS id", (envelope, label))
        assert row is not None
        return row["id"]

    def _targets(self, ids: Iterable[str]) -> list[tuple[str, str | None, str | None]]:
        """(id, label, status) of each id, in the given order, duplicates dropped; status None
        when the role cannot see it. Raises InputError on a malformed id (nothing is sent)."""
        wanted = list(dict.fromkeys(check_id(raw) for raw in ids))
        rows = {r["id"]: r for r in self._rows(
            "SELECT i.id, i.label, i.status FROM df.instances i WHERE i.id = ANY(%s)", (wanted,))}
        return [(i, (rows.get(i) or {}).get("label"), (rows.get(i) or {}).get("status"))
                for i in wanted]

    def _act(self, action: str, ids: Iterable[str],
             fn: Callable[[str], ActionResult | str]) -> list[ActionResult]:
        """Run `fn(id)` for every id the action applies to; the others are skipped with the
        reason. A database error on one id is reported for that id and does not stop the rest."""
        results = []
        for instance_id, label, status in self._targets(ids):
            if status is None:
                results.append(ActionResult(instance_id, False,
                                            "Instance not found or access denied", label))
                continue
            refusal = action_refusal(action, status)
            if refusal is not None:
                results.append(ActionResult(instance_id, False, refusal, label, skipped=True))
                continue
            try:
                outcome = fn(instance_id)
            except ConnectionLost:
                raise
            except ClientError as exc:
                results.append(ActionResult(instance_id, False, exc.message, label))
                continue
            if isinstance(outcome, ActionResult):
                outcome = replace(outcome, label=label)
            else:
                outcome = ActionResult(instance_id, True, outcome, label)
            results.append(outcome)
        return results

    def cancel(self, ids: Iterable[str], reason: str | None = None) -> list[ActionResult]:
        """df.cancel each id; one result per id. df.cancel's 'already <status>' (the instance
        finished meanwhile) is a skip, never a success."""
        # df.cancel is STRICT (as pg_durable's): never pass NULL, it would do nothing.
        reason = (reason or "").strip() or "Cancelled by user"

        def one(instance_id: str) -> ActionResult:
            row = self._one("SELECT df.cancel(%s, %s)::text AS r", (instance_id, reason))
            answer = (row or {}).get("r") or ""
            if answer.startswith("already "):
                return ActionResult(instance_id, False, f"{answer}; nothing to cancel",
                                    skipped=True)
            return ActionResult(instance_id, True, "cancelled")

        return self._act("cancel", ids, one)

    def retry(self, ids: Iterable[str]) -> list[ActionResult]:
        """df.retry each failed or cancelled id (dftui only; refused with the reason on backends
        without it); others are skipped with the reason."""
        if not self.capabilities.can_retry:
            raise ClientError(self.capabilities.reasons.get("retry", "retry is not available"))

        def one(instance_id: str) -> str:
            row = self._one("SELECT df.retry(%s)::text AS r", (instance_id,))
            return f"retried (now {(row or {}).get('r') or 'running'})"

        return self._act("retry", ids, one)

    def signal(self, ids: Iterable[str] | str, name: str, data: str | Any = "{}"
               ) -> list[ActionResult]:
        """df.signal each pending or running id, after validating the name and the JSON payload
        client-side (InputError: nothing sent). Finished instances are skipped: df.signal would
        queue a signal no step ever reads and still answer OK."""
        name = name.strip()
        if not name:
            raise InputError("signal name must not be empty")
        if isinstance(data, str):
            payload = data.strip() or "{}"
            try:
                jsonexact.loads(payload)
            except ValueError as exc:
                raise InputError(f"signal payload is not valid JSON: {exc}") from None
        else:
            payload = jsonexact.dumps(data)
        targets = [ids] if isinstance(ids, str) else list(ids)

        def one(instance_id: str) -> str:
            self._one("SELECT df.signal(%s, %s, %s)::text AS r", (instance_id, name, payload))
            return f"signal {name!r} sent"

        return self._act("signal", targets, one)
