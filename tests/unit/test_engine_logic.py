"""Engine decisions that need no database: retry classification and delay, SQL literals."""

from __future__ import annotations

import pytest

from engine.steps import StepFailure, failure_kind, retry_delay
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
