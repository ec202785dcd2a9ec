"""`dftui demo --no-tui`: the zero-setup path, run as a user would (a subprocess), end to end.

It must start its own PostgreSQL under the user's data dir, seed the workflows, run them with
the in-process engine, survive the story the README tells (approve by signal, fix the data and
retry), stop cleanly on SIGINT and, when started again, reuse everything without seeding twice.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from dftui.cli import main
from dftui.demo_workflows import FIX_PAYMENTS, WORKFLOWS

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("engine.runner") is None,
    reason="dftui demo runs an in-process engine, and engine.runner is not built yet",
)

HANG_GUARD = 180  # seconds; only to turn a hang into a failure, never a speed assertion


class Demo:
    """A `dftui demo --no-tui` subprocess whose output lines are collected as they arrive."""

    def __init__(self, data_home: Path, *args: str) -> None:
        env = dict(os.environ, XDG_DATA_HOME=str(data_home), PYTHONUNBUFFERED="1")
        env.pop("DFTUI_DSN", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dftui", "demo", "--no-tui", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        for stream, sink in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr)):
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True).start()

    def _pump(self, stream, sink: list[str]) -> None:
        for line in stream:
            sink.append(line)
            self.lines.put(line)

    def wait_for_dsns(self) -> dict[str, str]:
        deadline = time.monotonic() + HANG_GUARD
        while time.monotonic() < deadline:
            if self.proc.poll() is not None and self.lines.empty():
                break
            try:
                self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if any(line.startswith("Press Ctrl+C") for line in self.stdout):
                break
        dsns = {}
        for line in self.stdout:
            match = re.match(r"DSN (\w+): (.+)$", line.strip())
            if match:
                dsns[match.group(1)] = match.group(2)
        assert "demo_alice" in dsns, "".join(self.stdout + self.stderr)
        return dsns

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(HANG_GUARD)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_until(predicate, what: str, demo: Demo | None = None, dsn: str | None = None):
    deadline = time.monotonic() + HANG_GUARD
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    state = statuses(dsn) if dsn else {}
    log = "".join(demo.stderr[-40:]) if demo else ""
    pytest.fail(f"gave up waiting for {what}; statuses {state}; demo log tail:\n{log}")


def statuses(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return dict(conn.execute("SELECT label, status FROM df.instances").fetchall())


def ids(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return dict(conn.execute("SELECT label, id FROM df.instances").fetchall())


def test_demo_runs_seeds_stops_and_reuses(tmp_path, capsys):
    data_home = tmp_path / "data"
    demo = Demo(data_home, "--fresh")
    try:
        dsns = demo.wait_for_dsns()
        alice, superuser = dsns["demo_alice"], dsns["superuser"]
        assert "approval '{\"approved\": true}'" in "".join(demo.stdout)  # the commands to try
        labels = {wf.label for wf in WORKFLOWS}
        assert set(statuses(superuser)) == labels

        # Quick workflows complete, the bad-data one fails, the approval waits, one was cancelled.
        wait_until(
            lambda: statuses(superuser)["etl-signups"] == "completed"
            and statuses(superuser)["sales-rollup"] == "completed"
            and statuses(superuser)["import-payments"] == "failed",
            "the quick workflows to finish", demo, superuser,
        )
        now = statuses(superuser)
        assert now["archive-old-documents"] == "cancelled", now
        assert now["expense-approval-1042"] in ("pending", "running"), now
        with psycopg.connect(superuser, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM app.customers").fetchone()[0] == 240

        # Row-level security: alice sees only her own instances.
        with psycopg.connect(alice, autocommit=True) as conn:
            seen = {r[0] for r in conn.execute("SELECT submitted_by::text FROM df.instances")}
        assert seen == {"demo_alice"}

        # The README's story: approve by signal; fix the data and retry.
        instance = ids(superuser)
        quoted = FIX_PAYMENTS.replace("'", "''")
        for args in (
            ["signal", instance["expense-approval-1042"], "approval", '{"approved": true}'],
            ["start", f"'{quoted}'", "--wait"],
            ["retry", instance["import-payments"]],
        ):
            code = main([*args, "--dsn", alice])
            assert code == 0, (args, capsys.readouterr(), "".join(demo.stderr[-40:]))
        capsys.readouterr()
        wait_until(
            lambda: statuses(superuser)["expense-approval-1042"] == "completed"
            and statuses(superuser)["import-payments"] == "completed",
            "approval and retried import to complete", demo, superuser,
        )
        with psycopg.connect(superuser, autocommit=True) as conn:
            assert conn.execute("SELECT status FROM app.expense_reports").fetchone()[0] == "approved"
            assert conn.execute("SELECT count(*) FROM app.payments").fetchone()[0] == 20

        assert demo.interrupt() == 0, "".join(demo.stderr)
    finally:
        demo.kill()
    assert "Traceback" not in "".join(demo.stderr)
    datadir = data_home / "dftui" / "demo-pg"
    assert (datadir / "PG_VERSION").exists()
    assert not (datadir / "postmaster.pid").exists(), "PostgreSQL was left running"

    # Second run: same data directory, nothing seeded twice.
    again = Demo(data_home)
    try:
        dsns = again.wait_for_dsns()
        assert "reusing the demo data" in "".join(again.stderr)
        # only the commands that would still do something (the signal would exit 1 now)
        banner = "".join(again.stdout)
        assert "dftui signal" not in banner and "dftui retry" not in banner, banner
        assert "expense-approval-1042 is completed already" in banner, banner
        assert "import-payments is completed already" in banner, banner
        with psycopg.connect(dsns["superuser"], autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM df.instances").fetchone()[0] == len(
                WORKFLOWS
            ) + 1  # the seeded workflows plus the fix started above
        assert again.interrupt() == 0, "".join(again.stderr)
    finally:
        again.kill()
    assert not (datadir / "postmaster.pid").exists()


def test_demo_opens_the_tui_and_quits_cleanly(tmp_path):
    """`dftui demo` (with the TUI) in a pseudo-terminal: the TUI comes up connected as
    demo_alice with the seeded instances; `q` asks first (quitting stops the engine and the
    server), `enter` confirms, and the engine and server are stopped."""
    import pty
    import select

    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "data"), TERM="xterm-256color",
               COLUMNS="120", LINES="40")
    env.pop("DFTUI_DSN", None)
    pid, fd = pty.fork()
    if pid == 0:  # child: become `dftui demo --fresh`
        os.execve(sys.executable, [sys.executable, "-m", "dftui", "demo", "--fresh"], env)
    output = b""

    def read_until(marker: bytes) -> bool:
        nonlocal output
        deadline = time.monotonic() + HANG_GUARD
        while marker not in output and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    output += os.read(fd, 65536)
                except OSError:
                    return marker in output
        return marker in output

    try:
        assert read_until(b"demo_alice@dftui_demo"), output.decode(errors="replace")[-2000:]
        assert read_until(b"embed-doc"), output.decode(errors="replace")[-2000:]
        os.write(fd, b"q")
        assert read_until(b"Quit?"), output.decode(errors="replace")[-2000:]
        os.write(fd, b"\r")
        read_until(b"stopping PostgreSQL")
        _, status = os.waitpid(pid, 0)
    finally:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, output.decode(errors="replace")[-2000:]
    assert b"Traceback" not in output
    assert not (tmp_path / "data" / "dftui" / "demo-pg" / "postmaster.pid").exists()


def test_dsl_guide_shows_every_demo_workflow():
    """docs/dsl.md's examples are the demo's workflows (so the guide's examples really run)."""
    guide = (Path(__file__).resolve().parent.parent / "docs" / "dsl.md").read_text()
    flat = " ".join(guide.split())
    for wf in WORKFLOWS:
        assert " ".join(wf.expression.split()) in flat, wf.label
