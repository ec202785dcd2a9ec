"""The benchmark's fixtures: one fresh cluster, its databases and roles, engine subprocesses.

Everything runs against a throwaway cluster started here with realistic durability settings
(fsync on, synchronous_commit on), so figures are comparable with pgbench's commit limit measured
on the same server in the same run.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from dftui.embedded import Cluster, embedded_bindir

DFTUI_DB = "dftui_bench"
DBOS_DB = "dbos_bench"
PGBENCH_DB = "pgbench_limit"
BENCH_ROLE = "bench"
ROWS = 10_000  # rows of public.bench_rows; every step updates one of them

# Durability as a production server would run it; the rest keeps a 2-core box from thrashing.
SERVER_SETTINGS = {
    "fsync": "on",
    "synchronous_commit": "on",
    "max_connections": "200",
    "shared_buffers": "256MB",
    "log_min_messages": "warning",
}


class BenchError(RuntimeError):
    """A benchmark phase could not run (the message says why; no traceback for the user)."""


@dataclass
class BenchEnv:
    """The running cluster and how to reach each benchmark database."""

    cluster: Cluster
    workdir: Path
    logs: Path = field(init=False)

    def __post_init__(self) -> None:
        self.logs = self.workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def dsn(self, dbname: str = DFTUI_DB, user: str = "postgres") -> str:
        return self.cluster.dsn(dbname, user)

    def connect(self, dbname: str = DFTUI_DB, user: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(self.dsn(dbname, user), autocommit=True)

    def scalar(self, query: str, params: tuple | None = None, dbname: str = DFTUI_DB) -> object:
        with self.connect(dbname) as conn:
            row = conn.execute(query, params).fetchone()
            return row[0] if row else None

    def server_version(self) -> str:
        return str(self.scalar("SHOW server_version"))

    def vacuum(self) -> None:
        """Reset bloat between phases so each phase starts from the same kind of table."""
        with self.connect() as conn:
            conn.execute("VACUUM (ANALYZE)")

    def wal_fsyncs(self) -> int:
        """WAL fsyncs of the whole cluster so far: each durable commit waits for one, and group
        commit lets concurrent commits share it (PostgreSQL 18: pg_stat_io; before: pg_stat_wal)."""
        with self.connect() as conn:
            if conn.info.server_version >= 180000:
                query = "SELECT coalesce(sum(fsyncs), 0) FROM pg_stat_io WHERE object = 'wal'"
            else:
                query = "SELECT wal_sync FROM pg_stat_wal"
            row = conn.execute(query).fetchone()
        return int(row[0]) if row else 0

    def wal_lsn(self) -> int:
        """The WAL insert position, in bytes: differences are WAL written in between."""
        with self.connect() as conn:
            row = conn.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn").fetchone()
        return int(row[0]) if row else 0

    def commits(self) -> int:
        """Committed transactions in the dftui database so far (pg_stat_database)."""
        with self.connect() as conn:
            conn.execute("SELECT pg_stat_force_next_flush()")
        with self.connect() as conn:
            value = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s",
                                 (DFTUI_DB,)).fetchone()
        return int(value[0]) if value else 0


@contextlib.contextmanager
def bench_env(bindir: Path | None = None, keep: bool = False) -> Iterator[BenchEnv]:
    """Start a fresh cluster in a temporary directory, prepare it, and destroy it afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="dftui-bench-"))
    cluster = Cluster(workdir / "data", bindir=bindir or embedded_bindir(),
                      settings=dict(SERVER_SETTINGS))
    try:
        cluster.start()
    except Exception as exc:  # EmbeddedError and OS errors alike: one line for the user
        raise BenchError(f"could not start PostgreSQL: {exc}") from None
    env = BenchEnv(cluster, workdir)
    try:
        _prepare(env)
        yield env
    finally:
        if keep:
            print(f"cluster kept running at {cluster.dsn()} (data in {workdir})", file=sys.stderr)
        else:
            cluster.destroy()
            with contextlib.suppress(OSError):
                import shutil

                shutil.rmtree(workdir, ignore_errors=True)


def _prepare(env: BenchEnv) -> None:
    from engine import schema

    with env.connect("postgres") as conn:
        for db in (DFTUI_DB, DBOS_DB, PGBENCH_DB):
            conn.execute(f"CREATE DATABASE {db}")
        conn.execute(f"CREATE ROLE {BENCH_ROLE} LOGIN")
    with env.connect() as conn:
        schema.install(conn)
        conn.execute("SELECT df.grant_usage(%s)", (BENCH_ROLE,))
        _bench_table(conn)
        conn.execute(f"GRANT SELECT, UPDATE ON public.bench_rows TO {BENCH_ROLE}")
    with env.connect(DBOS_DB) as conn:
        _bench_table(conn)
    with env.connect(PGBENCH_DB) as conn:
        conn.execute("CREATE TABLE public.commits (id bigserial PRIMARY KEY, v integer NOT NULL)")


def _bench_table(conn: psycopg.Connection) -> None:
    conn.execute("CREATE TABLE public.bench_rows (id integer PRIMARY KEY, n bigint NOT NULL DEFAULT 0)")
    conn.execute("INSERT INTO public.bench_rows (id) SELECT g FROM generate_series(0, %s) g",
                 (ROWS - 1,))
    conn.execute("VACUUM ANALYZE public.bench_rows")


def update_sql(expr: str = "g") -> str:
    """SQL (a format() call) producing one step's text: an UPDATE of one row chosen by `expr`."""
    return f"format('UPDATE public.bench_rows SET n = n + 1 WHERE id = %s', ({expr}) % {ROWS})"


# -- enqueueing ------------------------------------------------------------------------------------

def enqueue(env: BenchEnv, workflow_sql: str, label: str, count: int,
            on_progress: Callable[[int], None] | None = None, batch: int = 1000,
            connections: int = 1) -> None:
    """Start `count` instances of `workflow_sql` (an SQL expression over `g`, the instance's
    number) as the bench role, `batch` per transaction, over `connections` sessions."""
    lock = threading.Lock()
    errors: list[BaseException] = []
    chunks = [(lo, min(lo + batch, count)) for lo in range(0, count, batch)]
    escaped = workflow_sql.replace("%", "%%")  # the SQL is literal text, not a placeholder

    def work(part: list[tuple[int, int]]) -> None:
        try:
            with env.connect(user=BENCH_ROLE) as conn:
                for lo, hi in part:
                    with conn.transaction():
                        conn.execute(
                            f"SELECT df.start({escaped}, %s) "
                            "FROM generate_series(%s::int, %s::int) g",
                            (label, lo, hi - 1))
                    if on_progress:
                        with lock:
                            on_progress(hi - lo)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    parts = [chunks[i::connections] for i in range(connections)]
    threads = [threading.Thread(target=work, args=(p,)) for p in parts if p]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def terminal_count(env: BenchEnv, label: str) -> int:
    return int(env.scalar("SELECT count(*) FROM df.instances WHERE label = %s "
                          "AND status IN ('completed', 'failed', 'cancelled')", (label,)) or 0)


@dataclass
class DrainStats:
    """What one drained batch of instances shows, from the timestamps in the database."""

    instances: int
    failed: int
    steps: int
    steps_span: float  # first to last step completion, seconds
    instances_span: float  # first to last instance completion, seconds

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.steps_span if self.steps_span > 0 else float("nan")

    @property
    def instances_per_s(self) -> float:
        return self.instances / self.instances_span if self.instances_span > 0 else float("nan")


def drain_stats(env: BenchEnv, label: str) -> DrainStats:
    with env.connect() as conn:
        inst = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status <> 'completed'), "
            "EXTRACT(EPOCH FROM max(completed_at) - min(completed_at))::float8 "
            "FROM df.instances WHERE label = %s", (label,)).fetchone()
        steps = conn.execute(
            "SELECT count(*), EXTRACT(EPOCH FROM max(a.finished_at) - min(a.finished_at))::float8 "
            "FROM df_internal.node_attempts a JOIN df.instances i ON i.id = a.instance_id "
            "WHERE i.label = %s AND a.status = 'completed'", (label,)).fetchone()
    assert inst is not None and steps is not None
    return DrainStats(instances=int(inst[0]), failed=int(inst[1]), steps=int(steps[0]),
                      steps_span=float(steps[1] or 0.0), instances_span=float(inst[2] or 0.0))


def wait_drained(env: BenchEnv, label: str, count: int, timeout: float,
                 on_progress: Callable[[int], None] | None = None,
                 watch: Callable[[], None] | None = None) -> None:
    """Poll until `count` instances with `label` are terminal (progress callback gets totals)."""
    deadline = time.monotonic() + timeout
    while True:
        done = terminal_count(env, label)
        if on_progress:
            on_progress(done)
        if watch:
            watch()
        if done >= count:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"{label}: only {done} of {count} instances finished within "
                             f"{timeout:.0f}s (engine log: see --keep)")
        time.sleep(0.25)


# -- engine subprocesses ---------------------------------------------------------------------------

class EngineProcess:
    """`python -m engine --dsn DSN --concurrency K` as a child process, stopped with SIGTERM.

    It serves its Prometheus metrics on a free local port (`metrics()` scrapes them): the
    benchmark takes the engine's own figures (steps, CPU, claims, batches) from there, the same
    numbers an operator's monitoring sees.
    """

    def __init__(self, env: BenchEnv, concurrency: int, name: str) -> None:
        self.env = env
        self.concurrency = concurrency
        self.log_path = env.logs / f"engine-{name}.log"
        self.proc: subprocess.Popen | None = None
        self.metrics_url: str | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, wait_ready: bool = True) -> EngineProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "--dsn", self.env.dsn(), "--concurrency",
             str(self.concurrency), "--no-install", "--metrics-addr", "127.0.0.1:0"],
            stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parent.parent,
            env={**os.environ, "PYTHONWARNINGS": "ignore"})
        log.close()
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the engine has registered itself (its workers start right after)."""
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"the engine exited with code {self.proc.returncode}: "
                                 f"{self._log_tail()}")
            found = self.env.scalar("SELECT count(*) FROM df_internal.engines WHERE pid = %s "
                                    "AND stopped_at IS NULL", (self.pid,))
            if found:
                self.metrics_url = self._metrics_url()
                return
            time.sleep(0.05)
        raise BenchError(f"the engine did not start within {timeout:.0f}s: {self._log_tail()}")

    def _metrics_url(self) -> str:
        """The address the engine logged before registering itself."""
        with contextlib.suppress(OSError):
            for line in self.log_path.read_text().splitlines():
                m = re.search(r"metrics: (http://\S+/metrics)", line)
                if m:
                    return m[1]
        raise BenchError(f"the engine did not log its metrics address: {self._log_tail()}")

    def metrics(self) -> dict[str, float]:
        """The engine's metrics now: every sample, keyed `name{label="value",...}` (labels sorted)."""
        if self.metrics_url is None:
            raise BenchError("the engine serves no metrics (not started?)")
        try:
            text = httpx.get(self.metrics_url, timeout=10).text
        except httpx.HTTPError as exc:
            raise BenchError(f"cannot scrape the engine's metrics at {self.metrics_url}: {exc}") from None
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return out

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text()[-800:].strip()
        return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> EngineProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- /proc sampling --------------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat fields 14 and 15)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    """Resident set size in MiB (/proc/<pid>/statm)."""
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * PAGE_SIZE / (1 << 20)


class PeakRss:
    """Tracks the highest RSS seen by repeated `sample()` calls."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0

    def sample(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.peak = max(self.peak, rss_mib(self.pid))


def machine() -> dict[str, str]:
    """Cores, RAM and CPU model of this machine (from /proc)."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / (1 << 20):.1f} GiB"
                break
    load = "unknown"
    with contextlib.suppress(OSError):
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return {"cpu": model, "cores": str(os.cpu_count() or "?"), "memory": mem,
            "loadavg": load, "python": sys.version.split()[0]}
