"""Smoke test of `python -m benchmarks --quick`: every phase runs end to end and reports.

The quick run uses tiny instance counts, so it checks that the harness works (cluster, engine
subprocesses, peers, TUI, report), never how fast anything is: no figure is compared with a bound.
DBOS Transact is an optional peer (the `bench` extra); without it the run must still succeed and
say so. py-spy is likewise optional.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.profile import summarise

REPO = Path(__file__).resolve().parent.parent


def _bench(*args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def _cell(markdown: str, figure_prefix: str, column: int) -> str:
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0].startswith(figure_prefix):
            return cells[column]
    raise AssertionError(f"no row starting with {figure_prefix!r} in:\n{markdown}")


def _number(cell: str) -> float:
    m = re.match(r"^([\d,]+(?:\.\d+)?)", cell)
    assert m, f"not a number: {cell!r}"
    return float(m.group(1).replace(",", ""))


def test_quick_run_measures_every_phase(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    profile_dir = tmp_path / "profile"
    proc = _bench("--quick", "--results", str(results), "--profile", str(profile_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    text = results.read_text()

    # Every dftui figure was measured: all instances of each phase completed (the harness raises
    # otherwise) and the rates are real numbers.
    for prefix in ("drain 50 one-step instances", "3-step workflows (20)", "JOIN of 10 (5",
                   "one-step start → done p50", "scaling: 2 engine processes",
                   "idle engine CPU, 300 pending", "engine RSS, idle with 300 pending"):
        assert _number(_cell(text, prefix, 1)) >= 0, prefix
    assert _number(_cell(text, "drain 50 one-step", 1)) > 0
    # The physical limit was measured in the same run.
    assert _number(_cell(text, "drain 50 one-step", 3)) > 0
    # Every target of issue 17 is judged in the same run (met or not, never left blank).
    for prefix in ("df.start, 8 sessions", "df.start: first 80", "drain 50 one-step",
                   "JOIN of 10: branch steps/s", "one-step start → done p50",
                   "one-step start → done p99", "scaling: 2 engine processes"):
        assert _cell(text, prefix, 6)[:1] in ("✓", "✗"), prefix
    # The machine description and the reproduce command are recorded.
    assert "| cores |" in text and "| PostgreSQL | 18" in text
    assert "python -m benchmarks --quick" in text

    if importlib.util.find_spec("dbos") is not None:
        assert _number(_cell(text, "3-step workflows (20)", 2)) > 0
        assert _cell(text, "3-step workflows (20)", 4).endswith("×")
        assert _cell(text, "3-step workflows (20)", 6)[:1] in ("✓", "✗")
        assert _cell(text, "drain ÷ DBOS, against the run before", 6)[:1] in ("✓", "✗")
    else:
        assert "DBOS Transact is not installed" in text
        assert _cell(text, "3-step workflows (20)", 2) == "—"

    if "TUI phase skipped" not in text:
        assert _number(_cell(text, "TUI first paint", 1)) > 0

    if "py-spy is not installed" not in text:
        raw = profile_dir / "engine-profiled.collapsed"
        assert raw.exists()
        assert "Profile of a separate drain" in text
        assert "server round trip" in text
    # PostgreSQL's function statistics are part of the profile whether or not py-spy exists.
    if "Profile of a separate drain" in text:
        assert "df_internal.complete_task" in text


def test_bad_arguments_get_one_line_errors() -> None:
    proc = _bench("--instances", "0", timeout=60)
    assert proc.returncode == 2
    assert "--instances must be positive" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = _bench("--tui-rows", "lots", timeout=60)
    assert proc.returncode == 2
    assert "--tui-rows takes comma-separated integers" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_profile_summary_buckets_worker_time(tmp_path: Path) -> None:
    raw = tmp_path / "stacks.collapsed"
    worker = ("Thread.run (threading.py:982);Worker.run (engine/worker.py:71);"
              "Worker.step_batch (engine/worker.py:140)")
    raw.write_text("\n".join([
        f"{worker};Connection.execute (psycopg/connection.py:302);Connection.wait (psycopg/connection.py:495) 60",
        f"{worker};SqlSteps._describe (engine/sql_steps.py:215) 30",
        "Thread.run (threading.py:982);Worker.run (engine/worker.py:71);"
        "Engine.wait_for_work (engine/runner.py:150);Condition.wait (threading.py:327) 10",
        "Thread.run (threading.py:982);listen (engine/listener.py:40);"
        "Connection.notifies (psycopg/connection.py:400) 500",
        "not a stack line",
    ]) + "\n")
    summary = summarise(raw)
    assert summary.total == 600
    assert summary.worker_total == 100
    assert summary.buckets["server round trip (waiting in psycopg for PostgreSQL)"] == 60
    assert summary.buckets["Python (engine + psycopg client code)"] == 30
    assert summary.buckets["idle (waiting for a wake-up)"] == 10
    assert summary.waits_by_call.most_common(1)[0][0].startswith("Worker.step_batch (engine/worker.py:140)")
    lines = summary.lines()
    assert lines[0].startswith("worker-thread samples: 100")


@pytest.mark.parametrize("value", ["0", "-5"])
def test_counts_must_be_positive(value: str) -> None:
    proc = _bench("--quick", "--three", value, timeout=60)
    assert proc.returncode == 2
    assert "--three must be positive" in proc.stderr
    assert "Traceback" not in proc.stderr
