"""py-spy profile of an engine process during a drain, and a summary of where its time goes.

The profile samples every thread, idle ones included (`--idle`), so a worker blocked on the
socket waiting for PostgreSQL shows up as such. Each sample is put in one bucket:
* "server round trip": the worker waits inside psycopg for the server's answer;
* "idle (no work)": the thread waits for a wake-up (threading.Condition / notifies);
* "Python": anything else — the engine's own code, psycopg's adaptation, logging, ...
Worker threads are told apart from the listener and housekeeping by their stack.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def executable() -> str | None:
    """py-spy from PATH, or from the running interpreter's bin/ (a venv not on PATH)."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def available() -> bool:
    return executable() is not None


class Recorder:
    """`py-spy record` attached to a pid until `stop()`; writes collapsed stacks (raw)."""

    def __init__(self, pid: int, out: Path, rate: int = 100) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [executable() or "py-spy", "record", "--pid", str(pid), "--idle", "--nonblocking", "--rate",
             str(rate), "--format", "raw", "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self) -> str:
        """Stop sampling and let py-spy write its file; returns py-spy's complaint, if any."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return "" if self.out.exists() else (err or b"").decode(errors="replace").strip()[-500:]


@dataclass
class Summary:
    total: int = 0
    worker_total: int = 0
    buckets: Counter = field(default_factory=Counter)  # worker samples per bucket
    python_self: Counter = field(default_factory=Counter)  # worker Python samples per leaf
    waits_by_call: Counter = field(default_factory=Counter)  # round trips per engine call site

    def lines(self, top: int = 10) -> list[str]:
        if not self.worker_total:
            return ["no worker samples were recorded"]
        pct = lambda n: f"{100 * n / self.worker_total:5.1f}%"  # noqa: E731
        out = [f"worker-thread samples: {self.worker_total} (of {self.total} in all threads)"]
        for bucket, n in self.buckets.most_common():
            out.append(f"  {pct(n)}  {bucket}")
        out.append("server round trips by engine call site:")
        for site, n in self.waits_by_call.most_common(top):
            out.append(f"  {pct(n)}  {site}{_source(site)}")
        out.append("Python self time by function:")
        for leaf, n in self.python_self.most_common(top):
            out.append(f"  {pct(n)}  {leaf}")
        return out


REPO = Path(__file__).resolve().parent.parent


def _line(file: str, lineno: str) -> str:
    """The source line `file:lineno` of the engine (as it is now), or ""."""
    path = Path(file) if Path(file).is_absolute() else REPO / file
    try:
        return path.read_text().splitlines()[int(lineno) - 1].strip()
    except (OSError, IndexError, ValueError):
        return ""


def _source(site: str) -> str:
    """`  ← <the source line>` for an `engine/x.py:N` call site, to show which statement ran."""
    m = re.search(r"\((engine/[^:()]+):(\d+)\)$", site)
    line = _line(m[1], m[2]) if m else ""
    return f"  ← {line[:70]}" if line else ""


def _parse(frame: str) -> tuple[str, str, str]:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip(), "", ""
    return m["func"], m["file"] or "", m["line"] or ""


def _name(func: str) -> str:
    """`Worker.step_batch` -> `step_batch` (py-spy qualifies methods with their class)."""
    return func.rsplit(".", 1)[-1]


def _is_engine(file: str) -> bool:
    return file.startswith("engine/") or "/engine/" in file


def _short(file: str) -> str:
    if file.startswith(("engine/", "psycopg/", "dftui/")):
        return file
    for marker in ("/engine/", "/psycopg/", "/psycopg_pool/", "/dftui/", "/lib/python3"):
        if marker in file:
            return marker.strip("/").split("/")[-1] + "/" + file.split(marker, 1)[1]
    return Path(file).name


def summarise(raw: Path) -> Summary:
    """Bucket the collapsed stacks py-spy wrote (one `frame;frame;... count` per line)."""
    summary = Summary()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_parse(f) for f in stack.split(";") if f.strip()]
        summary.total += count
        if not any(_name(func) == "step_batch" or (_name(func) == "run" and "worker.py" in file)
                   for func, file, _ in frames):
            continue
        summary.worker_total += count
        func, file, lineno = frames[-1]
        engine_frames = [(fu, fi, ln) for fu, fi, ln in frames if _is_engine(fi)]
        site = engine_frames[-1] if engine_frames else (func, file, lineno)
        site_text = f"{site[0]} ({_short(site[1])}:{site[2]})"
        if _is_engine(file) and "pgconn." in _line(file, lineno):
            # a blocking libpq call made directly (no Python frame below it): a round trip
            summary.buckets["server round trip (waiting in psycopg for PostgreSQL)"] += count
            summary.waits_by_call[site_text] += count
        elif "psycopg" in file and _name(func) in ("wait", "wait_c", "_wait", "wait_conn", "wait_select",
                                          "wait_epoll", "wait_poll"):
            summary.buckets["server round trip (waiting in psycopg for PostgreSQL)"] += count
            summary.waits_by_call[site_text] += count
        elif _name(func) in ("wait", "_wait_for_tstate_lock") and "threading" in file:
            summary.buckets["idle (waiting for a wake-up)"] += count
        elif _name(func) == "sleep":
            summary.buckets["sleeping (backoff)"] += count
        else:
            summary.buckets["Python (engine + psycopg client code)"] += count
            summary.python_self[f"{func} ({_short(file)}:{lineno})"] += count
    return summary
