"""Engine decisions that need no database: retry classification and delay, SQL literals."""

from __future__ import annotations

import pytest

from engine.claim import ClaimRow, load_task
from engine.errors import CONFLICTS, INTERRUPTED, StepFailure, is_error
from engine.retry import failure_kind, retry_delay
from engine.substitute import sql_literal


@pytest.mark.parametrize(
    ("sqlstate", "kind"),
    [(None, "error"), ("40001", "serialization_failure"), ("40P01", "deadlock"),
     ("55P03", "lock_timeout"), ("57P01", "connection"), ("08006", "connection"),
     ("23505", "error"), ("42P01", "error")],
)
def test_failure_kind(sqlstate, kind):
    assert failure_kind(sqlstate) == kind


DEADLOCK = StepFailure("deadlock detected", kind="deadlock", sqlstate="40P01")
UNIQUE = StepFailure("duplicate key", kind="error", sqlstate="23505")


@pytest.mark.parametrize("policy", [None, {}, {"max_attempts": 1}])
def test_no_policy_or_one_attempt_never_retries(policy):
    assert retry_delay(policy, 1, DEADLOCK) is None


def test_the_last_attempt_is_not_retried():
    assert retry_delay({"max_attempts": 3}, 2, DEADLOCK) is not None
    assert retry_delay({"max_attempts": 3}, 3, DEADLOCK) is None


def test_only_retryable_failures_are_retried_by_default():
    assert retry_delay({"max_attempts": 5}, 1, UNIQUE) is None
    assert retry_delay({"max_attempts": 5}, 1, DEADLOCK) is not None


@pytest.mark.parametrize(
    ("retry_on", "failure", "retried"),
    [(["23505"], UNIQUE, True), (["error"], UNIQUE, True), (["any"], UNIQUE, True),
     (["*"], UNIQUE, True), (["deadlock"], UNIQUE, False), (["http_5xx"], DEADLOCK, False)],
)
def test_retry_on_names_kinds_or_sqlstates(retry_on, failure, retried):
    delay = retry_delay({"max_attempts": 2, "retry_on": retry_on}, 1, failure)
    assert (delay is not None) is retried


@pytest.mark.parametrize("attempt", [1, 2, 3, 4])
def test_backoff_doubles_with_jitter_in_the_upper_half(attempt):
    policy = {"max_attempts": 10, "backoff_seconds": 2}
    step = 2 * 2 ** (attempt - 1)
    for _ in range(50):
        delay = retry_delay(policy, attempt, DEADLOCK)
        assert delay is not None and step * 0.5 <= delay <= step


def test_backoff_is_capped_and_zero_is_allowed():
    capped = {"max_attempts": 50, "backoff_seconds": 10, "max_backoff_seconds": 15}
    assert all(7.5 <= (retry_delay(capped, 20, DEADLOCK) or 0) <= 15 for _ in range(50))
    assert retry_delay({"max_attempts": 3, "backoff_seconds": 0}, 1, DEADLOCK) == 0


@pytest.mark.parametrize(
    ("value", "literal"),
    [(None, "NULL"), (True, "true"), (3, "3"), ("it's", "'it''s'")],
)
def test_sql_literal(value, literal):
    assert sql_literal(value) == literal


@pytest.mark.parametrize("kind", ["identity", "http_policy", "unsupported"])
def test_a_step_that_can_never_run_is_never_retried_even_with_retry_on_any(kind):
    failure = StepFailure("cannot run", kind=kind)
    assert retry_delay({"max_attempts": 5, "retry_on": ["any"]}, 1, failure) is None


@pytest.mark.parametrize(
    ("sqlstate", "conflict", "interrupted"),
    [("55P03", True, True), ("40P01", True, True), ("40001", False, True),
     ("57014", False, True), ("23505", False, False), ("XX999", False, False), (None, False, False)],
)
def test_error_classes_replace_sqlstate_literals(sqlstate, conflict, interrupted):
    assert is_error(sqlstate, CONFLICTS) is conflict
    assert is_error(sqlstate, INTERRUPTED) is interrupted


def _claim_row(**changes):
    row = dict(instance_id="i1", node_id="n1", gen=3, kind="run", phase="start", deadline=None,
               node_type="SQL", query="SELECT 1", result_name=None, submitted_by="alice",
               role_oid=16384, database=None, vars='{"x": 1.10}', named_results=None, label=None,
               attempts=0, retry_policy='{"max_attempts": 2}', role_name="alice",
               role_can_login=True, role_is_super=False, superuser_allowed=False, more=False,
               role_has_usage=True, role_can_connect=True)
    row.update(changes)
    return ClaimRow(**row)


def test_a_claim_row_becomes_a_typed_task_with_exact_json():
    task = load_task(_claim_row())
    assert task.key == ("i1", "n1", 3)
    assert str(task.vars["x"]) == "1.10" and task.named_results == {}
    assert task.retry_policy == {"max_attempts": 2} and task.load_error is None
    assert task.identity_problem() is None
    assert task.check_identity(database="db") == "alice"


def test_an_undecodable_claim_row_is_still_a_task_marked_with_its_load_error():
    task = load_task(_claim_row(vars="{not json"))
    assert task.key == ("i1", "n1", 3) and task.vars == {}
    assert task.load_error is not None and "cannot be read" in task.load_error


@pytest.mark.parametrize(
    ("changes", "problem"),
    [({"role_name": None}, "no longer exists"), ({"role_can_login": False}, "LOGIN"),
     ({"role_is_super": True}, "superuser"), ({"role_has_usage": False}, "USAGE")],
)
def test_the_claimed_identity_is_rechecked_for_every_step(changes, problem):
    task = load_task(_claim_row(**changes))
    with pytest.raises(StepFailure, match=problem) as failure:
        task.check_identity(database="db")
    assert failure.value.kind == "identity"


def test_a_step_whose_submitter_lost_connect_is_refused():
    task = load_task(_claim_row(role_can_connect=False))
    with pytest.raises(StepFailure, match="CONNECT privilege on database \"db\""):
        task.check_identity(database="db")
    assert task.check_identity() == "alice"  # (an HTTP step needs no database)


def test_the_foreign_session_reset_inlines_the_one_dblink_clean_up() -> None:
    """A step's session in another database (no df schema there) is reset with the body of
    df_internal.close_step_connections itself, read from sql/routines/session_hygiene.sql:
    one definition, inlined as a DO block after the DISCARD-like statements."""
    from engine import identity, schema

    routine = (schema.sql_root() / "routines" / "session_hygiene.sql").read_text()
    block = identity.FOREIGN_SESSION_RESET.split("; DO $reset$", 1)[1]
    body = block.removesuffix("$reset$").strip()
    assert body and body in routine
    assert "dblink_disconnect()" in body and body.rstrip().endswith("END")
    assert "close_step_connections" not in identity.FOREIGN_SESSION_RESET
    assert identity.SESSION_RESET.endswith("df_internal.close_step_connections()")
