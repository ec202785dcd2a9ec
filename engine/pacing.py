"""How much one worker claims and how long its batch goes on: the batch policy's arithmetic.

No clock and no database here (engine/worker.py measures and asks), so the policy is tested on
its own (tests/unit/test_pacing.py). The rules:

* a worker claims one task while another worker of its engine is idle (a short queue: every
  task gets a worker of its own), otherwise a batch;
* a batch stops taking on its claimed tasks once it has run for its time budget (the rest are
  released by its commit): IDLE_BUDGET while a worker of the engine is idle (it can take them
  at once), BUSY_BUDGET while none is — nobody here could run them sooner then, and the steps
  are mostly slow only because many workers share the machine: with one 50 ms budget for
  both, about half of all claimed tasks were released (and claimed again by another worker:
  the claim's work twice, one commit for fewer steps) with 4 engines × 8 workers on 2 cores;
* a claim takes no more than its batch is likely to run within BUSY_BUDGET, from the recent
  time per task (a moving average over the tasks before each batch's last, whose round trip
  also carries the commit), and at least two, so that there is always a task to learn from
  (two also before anything is learnt);
* a batch that stopped early (its budget, a conflict with the batch's locks) halves the next
  claim, one that ran to the end doubles it, up to --batch-size.

A genuinely slow step (seconds) still holds only the tasks claimed behind it, and only while
it runs: after it the batch is over its budget and commits, and the next claims are small.
"""

from __future__ import annotations

# A batch's time budget while another worker of this engine is idle, and while none is.
IDLE_BUDGET = 0.05
BUSY_BUDGET = 0.5
# Weight of the newest batch in the moving average of the time per task.
LEARN_WEIGHT = 0.2


class BatchPacer:
    """One worker's claim size and batch budget (see the module docstring)."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.batch = batch_size  # the claim size, halved and doubled by how batches end
        self.task_seconds: float | None = None  # moving average of one task's time in a batch

    def claim_size(self, others_idle: bool) -> int:
        """Tasks to claim now."""
        if others_idle:
            return 1
        if self.task_seconds is None:  # nothing learnt yet
            return min(self.batch, 2)
        fits = max(2, int(BUSY_BUDGET / max(self.task_seconds, 1e-6)))
        return max(1, min(self.batch, fits))

    @staticmethod
    def over_budget(elapsed: float, others_idle: bool) -> bool:
        """Whether a batch that has run for `elapsed` seconds stops taking on its tasks."""
        return elapsed > (IDLE_BUDGET if others_idle else BUSY_BUDGET)

    def finished(self, tasks: int, seconds_before_last: float, stopped_early: bool) -> None:
        """A batch handled `tasks` of its claimed tasks, the last of them starting
        `seconds_before_last` after the batch did."""
        if tasks >= 2 and seconds_before_last >= 0:
            sample = seconds_before_last / (tasks - 1)
            self.task_seconds = (sample if self.task_seconds is None
                                 else self.task_seconds + LEARN_WEIGHT * (sample - self.task_seconds))
        self.batch = max(1, self.batch // 2) if stopped_early else min(self.batch_size, self.batch * 2)

    def aborted(self) -> None:
        """The batch's transaction was rolled back: claim one task next."""
        self.batch = 1
