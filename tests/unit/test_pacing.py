"""The batch policy's arithmetic (engine/pacing.py): claim sizes and time budgets."""

from __future__ import annotations

from engine.pacing import BUSY_BUDGET, IDLE_BUDGET, BatchPacer


def test_a_worker_claims_one_task_while_another_is_idle():
    pacer = BatchPacer(16)
    pacer.finished(16, 0.001 * 15, stopped_early=False)
    assert pacer.claim_size(others_idle=True) == 1
    assert pacer.claim_size(others_idle=False) == 16


def test_before_anything_is_learnt_a_claim_takes_two():
    assert BatchPacer(16).claim_size(others_idle=False) == 2
    assert BatchPacer(1).claim_size(others_idle=False) == 1


def test_a_claim_takes_what_fits_in_the_busy_budget_at_the_learnt_time_per_task():
    pacer = BatchPacer(16)
    per_task = BUSY_BUDGET / 5.5
    pacer.finished(4, 3 * per_task, stopped_early=False)
    assert pacer.claim_size(others_idle=False) == 5
    # faster tasks: the moving average comes down, the claim grows up to --batch-size
    for _ in range(60):
        pacer.finished(16, 15 * per_task / 100, stopped_early=False)
    assert pacer.claim_size(others_idle=False) == 16


def test_slow_tasks_shrink_the_claim_to_two_never_below():
    pacer = BatchPacer(16)
    pacer.finished(2, 10 * BUSY_BUDGET, stopped_early=False)
    assert pacer.claim_size(others_idle=False) == 2


def test_the_last_task_of_a_batch_is_not_learnt_from():
    pacer = BatchPacer(16)
    pacer.finished(1, 0.0, stopped_early=False)  # one task: its round trip carries the commit
    assert pacer.task_seconds is None
    pacer.finished(3, 2 * 0.01, stopped_early=False)
    assert pacer.task_seconds == 0.01


def test_a_batch_that_stopped_early_halves_the_next_claim_one_that_ran_doubles_it():
    pacer = BatchPacer(16)
    pacer.finished(16, 15 * 0.0001, stopped_early=False)
    pacer.finished(8, 7 * 0.0001, stopped_early=True)
    assert pacer.claim_size(others_idle=False) == 8
    pacer.finished(8, 7 * 0.0001, stopped_early=False)
    assert pacer.claim_size(others_idle=False) == 16
    pacer.aborted()
    assert pacer.claim_size(others_idle=False) == 1


def test_the_budget_is_short_while_a_worker_is_idle_and_longer_while_none_is():
    between = (IDLE_BUDGET + BUSY_BUDGET) / 2
    assert IDLE_BUDGET < BUSY_BUDGET
    assert BatchPacer.over_budget(between, others_idle=True)
    assert not BatchPacer.over_budget(between, others_idle=False)
    assert BatchPacer.over_budget(BUSY_BUDGET * 1.01, others_idle=False)
    assert not BatchPacer.over_budget(IDLE_BUDGET * 0.99, others_idle=True)
