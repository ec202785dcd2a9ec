"""Console output for long phases: a rich progress bar per phase, plain lines otherwise."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)


class Ui:
    def __init__(self, console: Console | None = None, quiet: bool = False) -> None:
        self.console = console or Console(stderr=True)
        self.quiet = quiet

    def say(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message)

    @contextlib.contextmanager
    def bar(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        """Yields `set_completed(n)`; the bar disappears when the phase ends."""
        if self.quiet:
            yield lambda _n: None
            return
        progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                            MofNCompleteColumn(), TimeElapsedColumn(), console=self.console,
                            transient=True)
        started = time.monotonic()
        with progress:
            task = progress.add_task(description, total=total)
            yield lambda n: progress.update(task, completed=n)
        self.console.print(f"[green]✓[/green] {description} [dim]({time.monotonic() - started:.1f} s)[/dim]")

    @contextlib.contextmanager
    def counter(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        """Like `bar`, but the callback adds to the count instead of setting it."""
        done = 0
        with self.bar(description, total) as set_completed:
            def add(n: int) -> None:
                nonlocal done
                done += n
                set_completed(done)

            yield add
