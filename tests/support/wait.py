"""Waiting for a *state*, never asserting on speed: the one polling loop of the suite.

`wait_for` polls a predicate from plain (threaded) code; `wait_for_app` is the same loop for a
running Textual app, where each poll must first let the app process its messages and workers.
Deadlines are generous: they bound a hang, they do not measure anything.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


class _Deadline:
    """When to give up, and the message that says what never happened."""

    def __init__(self, timeout: float, what: str) -> None:
        self.at = time.monotonic() + timeout
        self.what = what

    def check(self) -> None:
        if time.monotonic() > self.at:
            raise AssertionError(f"timed out waiting for {self.what}")


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.05,
             what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy, and return that."""
    deadline = _Deadline(timeout, what)
    while True:
        value = predicate()
        if value:
            return value
        deadline.check()
        time.sleep(interval)


async def wait_for_app(pilot: Any, predicate: Callable[[], Any], timeout: float = 15.0,
                       what: str = "condition") -> None:
    """Let the app under `pilot` run until `predicate()` holds (workers finished, messages
    processed)."""
    deadline = _Deadline(timeout, what)
    while True:
        await pilot.pause()
        if predicate():
            return
        deadline.check()
        await asyncio.sleep(0.02)
