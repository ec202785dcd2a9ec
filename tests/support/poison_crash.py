"""Test-only engine entry point: an engine process that dies on the spot (os._exit, as a native
crash or the OOM killer would) when it starts a step carrying CRASH_MARK. Run as
`python -m tests.support.poison_crash DSN` from the repository root; production never imports it."""

from __future__ import annotations

import os
import sys

from engine import sql_steps
from engine.config import EngineConfig
from engine.runner import main

CRASH_MARK = "/*crash*/"
_plan = sql_steps.SqlSteps.plan


def _plan_or_die(self, conn, task, started):  # type: ignore[no-untyped-def]
    if CRASH_MARK in (task.query or ""):
        os._exit(137)
    return _plan(self, conn, task, started)


sql_steps.SqlSteps.plan = _plan_or_die  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main(EngineConfig.from_env(dsn=sys.argv[1], concurrency=2, install=False,
                                        max_task_faults=3)))
