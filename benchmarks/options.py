"""What one benchmark run measures and how big each phase is."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# The phases `--only` can pick (pgbench, the limit every ratio needs, always runs).
PHASES = ("starts", "drain", "three", "join", "latency", "scaling", "dbos", "idle", "tui")


@dataclass
class Options:
    n: int = 10_000  # one-step instances drained by one engine process
    three_n: int = 1_000  # 3-step workflows
    join_n: int = 200  # 10-branch JOIN instances (throughput)
    join_branches: int = 10
    latency_samples: int = 200  # sequential one-step starts on an idle engine
    join_latency_samples: int = 30
    starts_n: int = 10_000  # df.start calls per batch of the df.start phase (first, later)
    start_sessions: int = 8  # concurrent client sessions starting workflows
    concurrency: int = 8  # --concurrency of every engine process (and DBOS worker threads)
    scaling: tuple[int, ...] = (1, 2, 4)
    scale_n: int = 10_000  # instances drained per scaling run
    idle_pending: int = 100_000
    idle_seconds: float = 10.0
    tui_rows: tuple[int, ...] = (100_000, 1_000_000)
    tui_pages: int = 20
    pgbench_seconds: float = 10.0
    dbos: bool = True
    tui: bool = True
    profile_dir: Path | None = None
    timeout: float = 1800.0  # per drain phase
    quick: bool = False
    only: frozenset[str] = field(default_factory=frozenset)  # phases to run (empty: all)

    def wants(self, phase: str) -> bool:
        return not self.only or phase in self.only

    @classmethod
    def quick_run(cls) -> Options:
        """Small numbers for a smoke test: every phase runs, none of the figures mean much."""
        return cls(n=50, three_n=20, starts_n=80, join_n=5, latency_samples=10, join_latency_samples=3,
                   scale_n=50, scaling=(1, 2), idle_pending=300, idle_seconds=1.0, tui_rows=(400,),
                   tui_pages=2, pgbench_seconds=1.0, timeout=120.0, quick=True)
