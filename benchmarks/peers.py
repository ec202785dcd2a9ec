"""The peers measured in the same run: pgbench's commit limit and DBOS Transact."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness import DBOS_DB, PGBENCH_DB, BenchEnv, BenchError


@dataclass
class PgbenchResult:
    clients: int
    tps: float
    latency_ms: float


def pgbench(env: BenchEnv, clients: int, seconds: float) -> PgbenchResult:
    """Single-row INSERT commits/s with synchronous_commit on: the ceiling for any design that
    commits once per step."""
    script = env.workdir / "insert.sql"
    script.write_text("INSERT INTO public.commits (v) VALUES (1);\n")
    binary = env.cluster.bindir / "pgbench"
    if not binary.exists():
        raise BenchError(f"pgbench not found in {env.cluster.bindir}")
    cmd = [str(binary), "-h", "127.0.0.1", "-p", str(env.cluster.port), "-U", "postgres", "-n",
           "-M", "prepared", "-c", str(clients), "-j", str(clients),
           "-T", str(max(1, round(seconds))), "-f", str(script), PGBENCH_DB]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    if result.returncode != 0:
        raise BenchError(f"pgbench failed: {(result.stderr or result.stdout).strip()[-400:]}")
    tps = re.search(r"^tps = ([\d.]+)", result.stdout, re.M)
    lat = re.search(r"^latency average = ([\d.]+) ms", result.stdout, re.M)
    if not tps:
        raise BenchError(f"could not read pgbench's output: {result.stdout[-400:]}")
    return PgbenchResult(clients=clients, tps=float(tps.group(1)),
                         latency_ms=float(lat.group(1)) if lat else float("nan"))


def dbos_installed() -> bool:
    return importlib.util.find_spec("dbos") is not None


def run_dbos(env: BenchEnv, *, one: int, three: int, latency: int, concurrency: int,
             idle_seconds: float, timeout: float) -> dict:
    """Run benchmarks/dbos_peer.py in its own process against the DBOS database."""
    url = (f"postgresql://postgres@127.0.0.1:{env.cluster.port}/{DBOS_DB}")
    log = env.logs / "dbos.log"
    with log.open("wb") as err:
        result = subprocess.run(
            [sys.executable, "-m", "benchmarks.dbos_peer", "--url", url, "--one", str(one),
             "--three", str(three), "--latency", str(latency), "--concurrency", str(concurrency),
             "--idle-seconds", str(idle_seconds)],
            stdout=subprocess.PIPE, stderr=err, timeout=timeout,
            cwd=Path(__file__).resolve().parent.parent,
            env={**os.environ, "PYTHONWARNINGS": "ignore", "DBOS__CLOUD": ""})
    if result.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise BenchError("the DBOS peer failed: " + " / ".join(tail))
    lines = [ln for ln in result.stdout.decode().splitlines() if ln.startswith("{")]
    if not lines:
        raise BenchError("the DBOS peer printed no result")
    return json.loads(lines[-1])
