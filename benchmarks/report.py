"""The results table: every figure with its peer, the physical limit, ratios and the target.

Printed with rich during the run and rendered as Markdown into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table


@dataclass
class Figure:
    """One measured figure. Ratios are always dftui ÷ peer (for latency, CPU and memory lower
    is better, so a ratio below 1 is good there)."""

    name: str
    unit: str
    dftui: float | None = None
    dbos: float | None = None
    limit: float | None = None
    higher_is_better: bool = True
    target: str = ""
    target_ok: bool | None = None
    note: str = ""

    def ratio(self, other: float | None) -> float | None:
        if self.dftui is None or other is None or other == 0 or math.isnan(other):
            return None
        return self.dftui / other


@dataclass
class Results:
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def get(self, name: str) -> Figure | None:
        return next((f for f in self.figures if f.name == name), None)


def fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".rstrip()


def fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def _target(fig: Figure) -> str:
    if not fig.target:
        return ""
    mark = {True: "✓ ", False: "✗ ", None: ""}[fig.target_ok]
    return f"{mark}{fig.target}"


HEADERS = ["figure", "dftui", "DBOS", "limit (pgbench)", "÷ DBOS", "÷ limit", "target"]


def rows(results: Results) -> list[list[str]]:
    out = []
    for f in results.figures:
        out.append([
            f.name + (f" ({f.note})" if f.note else ""),
            fmt(f.dftui, f.unit),
            fmt(f.dbos, f.unit),
            fmt(f.limit, f.unit),
            fmt_ratio(f.ratio(f.dbos)),
            fmt_ratio(f.ratio(f.limit)),
            _target(f),
        ])
    return out


def print_table(results: Results, console: Console, title: str) -> None:
    table = Table(title=title, show_lines=False)
    for i, header in enumerate(HEADERS):
        table.add_column(header, justify="left" if i in (0, 6) else "right",
                         overflow="fold")
    for row in rows(results):
        table.add_row(*row)
    console.print(table)
    for note in results.notes:
        console.print(f"• {note}", style="dim", markup=False)


def markdown_table(results: Results) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |",
             "|" + "|".join(["---"] + ["---:"] * 5 + ["---"]) + "|"]
    for row in rows(results):
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return "\n".join(lines)


def write_results(path: Path, results: Results, machine: dict[str, str], pg_version: str,
                  command: str, started: datetime, duration: float, extra: str = "") -> None:
    """Write RESULTS.md: the table, the machine, the reproduce command, notes and caveats."""
    notes = "\n".join(f"- {n}" for n in results.notes)
    text = f"""# dftui benchmark results

Recorded {started:%Y-%m-%d %H:%M} UTC by `{command}` (took {duration / 60:.1f} min).

## Machine

| | |
|---|---|
| CPU | {machine['cpu']} |
| cores | {machine['cores']} |
| memory | {machine['memory']} |
| load average at start (1/5/15 min) | {machine['loadavg']} |
| PostgreSQL | {pg_version} (embedded cluster started by the benchmark; fsync on, synchronous_commit on) |
| Python | {machine['python']} |

## Results

Ratios are dftui ÷ peer. For throughput higher is better; for latency, CPU and memory lower is
better. "limit" is pgbench's single-row INSERT commit rate on the same server in the same run
(2 clients, or 8 clients for figures whose engine runs 8 or more connections): one commit per
step cannot go faster than that.

{markdown_table(results)}

{notes}
{extra}
## Reproduce

```
pip install -e '.[bench]'
{command}
```

`python -m benchmarks --help` lists the knobs (instance counts, engine concurrency, skipping
peers, `--profile` for a py-spy profile of the engine during the drain).
"""
    path.write_text(text)
