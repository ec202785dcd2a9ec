"""dftui's own figures: drain rate, 3-step and JOIN throughput, latency, scaling, idle cost.

Throughput phases enqueue their instances with no engine running, then start engine
subprocesses and time the drain from the database's own timestamps (first to last completion),
so process start-up and our polling do not count.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from benchmarks import profile
from benchmarks.harness import (
    BENCH_ROLE,
    DFTUI_DB,
    BenchEnv,
    BenchError,
    DrainStats,
    EngineProcess,
    PeakRss,
    cpu_seconds,
    drain_stats,
    enqueue,
    rss_mib,
    update_sql,
    wait_drained,
)
from benchmarks.options import Options
from benchmarks.ui import Ui


def one_step_sql() -> str:
    return update_sql("g")


def three_step_sql() -> str:
    return " ~> ".join(update_sql(f"g * 3 + {k}") for k in range(3))


def join_sql(branches: int) -> str:
    return " & ".join(update_sql(f"g * {branches} + {k}") for k in range(branches))


@dataclass
class DrainOutcome:
    stats: DrainStats
    processes: int
    commits_per_step: float
    fsyncs_per_step: float
    wal_bytes_per_step: float  # WAL written while draining (the engines' and autovacuum's)
    engine_cpu_ms_per_step: float  # the engine processes' own CPU (Python, psycopg, libpq)
    server_cpu_ms_per_step: float  # CPU of the PostgreSQL backends serving the engines
    peak_rss_mib: float
    metrics: EngineFigures
    profile_summary: list[str] = field(default_factory=list)
    profile_file: Path | None = None


@dataclass
class EngineFigures:
    """What the engines' own metrics endpoints said over one drain (summed over processes)."""

    steps_completed: float = 0.0  # dftui_engine_steps_finished_total{outcome="completed"}
    steps_requeued: float = 0.0
    cpu_seconds: float = 0.0  # process_cpu_seconds_total
    claims: float = 0.0
    claim_seconds: float = 0.0
    batches: float = 0.0
    batched_tasks: float = 0.0

    @classmethod
    def between(cls, before: list[dict[str, float]], after: list[dict[str, float]]) -> EngineFigures:
        """Counters from `after` (the engines were started for this drain: they began at 0, also
        for steps run before `before` was scraped); CPU from the difference, so the process's
        start-up (imports, connecting) is left out."""
        def total(scrapes: list[dict[str, float]], name: str, *fragments: str) -> float:
            return sum(v for scrape in scrapes for k, v in scrape.items()
                       if k.split("{")[0] == name and all(f in k for f in fragments))

        finished = "dftui_engine_steps_finished_total"
        return cls(steps_completed=total(after, finished, 'outcome="completed"'),
                   steps_requeued=total(after, finished, 'outcome="requeued"'),
                   cpu_seconds=total(after, "process_cpu_seconds_total")
                   - total(before, "process_cpu_seconds_total"),
                   claims=total(after, "dftui_engine_claim_duration_seconds_count"),
                   claim_seconds=total(after, "dftui_engine_claim_duration_seconds_sum"),
                   batches=total(after, "dftui_engine_batch_size_count"),
                   batched_tasks=total(after, "dftui_engine_batch_size_sum"))

    @property
    def claim_ms(self) -> float:
        return 1000 * self.claim_seconds / self.claims if self.claims else float("nan")

    @property
    def batch_mean(self) -> float:
        return self.batched_tasks / self.batches if self.batches else float("nan")


def drain(env: BenchEnv, ui: Ui, opts: Options, *, label: str, what: str, workflow_sql: str,
          count: int, processes: int = 1, profile_dir: Path | None = None) -> DrainOutcome:
    """Enqueue `count` instances with no engine running, then drain them with `processes`
    engine processes; figures come from completion timestamps.

    With `profile_dir`, py-spy samples the (first) engine and PostgreSQL times every df
    function (track_functions = pl) during the drain: use it on a drain of its own, since both
    cost CPU that the measured figures should not pay.
    """
    env.vacuum()
    with ui.counter(f"{what}: enqueue {count:,} instances", count) as add:
        enqueue(env, workflow_sql, label, count, add, connections=2 if count >= 2000 else 1)
    if profile_dir is not None:
        with env.connect() as conn:
            conn.execute(f"ALTER DATABASE {DFTUI_DB} SET track_functions = 'pl'")
            conn.execute("SELECT pg_stat_reset()")
    commits_before = env.commits()
    fsyncs_before = env.wal_fsyncs()
    wal_before = env.wal_lsn()
    engines = [EngineProcess(env, opts.concurrency, f"{label}-{i}") for i in range(processes)]
    recorder: profile.Recorder | None = None
    summary: list[str] = []
    raw: Path | None = None
    try:
        for engine in engines:
            engine.start(wait_ready=False)
        for engine in engines:
            engine.wait_ready()
        if profile_dir is not None:
            profile_dir.mkdir(parents=True, exist_ok=True)
            raw = profile_dir / f"engine-{label}.collapsed"
            recorder = profile.Recorder(engines[0].pid, raw)
        peaks = [PeakRss(e.pid) for e in engines]
        scraped0 = [e.metrics() for e in engines]
        with ui.bar(f"{what}: drain with {processes} engine process"
                    f"{'es' if processes > 1 else ''} × {opts.concurrency} workers",
                    count) as set_done:
            wait_drained(env, label, count, opts.timeout, set_done,
                         watch=lambda: [p.sample() for p in peaks])
        # (a step's outcome is counted just after its commit: give the last ones a moment)
        expected = drain_stats(env, label).steps
        for _ in range(50):
            figures = EngineFigures.between(scraped0, [e.metrics() for e in engines])
            if figures.steps_completed >= expected:
                break
            time.sleep(0.1)
        server_cpu = backend_cpu(env, engines)
        if recorder is not None:
            problem = recorder.stop()
            if problem or raw is None or not raw.exists():
                summary = [f"py-spy produced no profile: {problem or 'no output'}"]
            else:
                summary = profile.summarise(raw).lines()
    finally:
        if recorder is not None and recorder.proc.poll() is None:
            recorder.stop()
        for engine in engines:
            engine.stop()
    if profile_dir is not None:
        summary += server_functions(env, count)
        with env.connect() as conn:
            conn.execute(f"ALTER DATABASE {DFTUI_DB} RESET track_functions")
    stats = drain_stats(env, label)
    if figures.steps_completed != stats.steps:
        raise BenchError(f"{what}: the engines' metrics count {figures.steps_completed:.0f} completed "
                         f"steps, the database {stats.steps}")
    if stats.failed:
        raise BenchError(f"{what}: {stats.failed} of {stats.instances} instances did not complete "
                         f"(see {env.logs})")
    commits = env.commits() - commits_before
    time.sleep(0.6)  # let the WAL writer report its share of the statistics
    fsyncs = env.wal_fsyncs() - fsyncs_before
    wal_bytes = env.wal_lsn() - wal_before
    return DrainOutcome(stats=stats, processes=processes,
                        commits_per_step=commits / stats.steps if stats.steps else float("nan"),
                        fsyncs_per_step=fsyncs / stats.steps if stats.steps else float("nan"),
                        wal_bytes_per_step=wal_bytes / stats.steps if stats.steps else float("nan"),
                        engine_cpu_ms_per_step=1000 * figures.cpu_seconds / max(stats.steps, 1),
                        server_cpu_ms_per_step=1000 * server_cpu / max(stats.steps, 1),
                        peak_rss_mib=max(p.peak for p in peaks), metrics=figures,
                        profile_summary=summary,
                        profile_file=raw)


def server_functions(env: BenchEnv, instances: int, top: int = 12,
                     unit: str = "instance") -> list[str]:
    """PostgreSQL's own account of the df functions during a profiled drain (self time, i.e.
    excluding functions they call), per instance."""
    with env.connect() as conn:
        rows = conn.execute(
            "SELECT schemaname || '.' || funcname, sum(calls), sum(total_time), sum(self_time) "
            "FROM pg_stat_user_functions WHERE schemaname IN ('df', 'df_internal', 'df_exec') "
            "GROUP BY 1 ORDER BY 4 DESC").fetchall()
    if not rows:
        return ["no function statistics were collected"]
    total_self = sum(float(r[3]) for r in rows)
    short = unit[:5]
    out = [f"PostgreSQL plpgsql/sql functions (track_functions = pl): {total_self / instances:.2f} ms "
           f"self time per {unit} in all, top by self time:",
           f"  ms/{short}  calls/{short}  function (self time; total incl. callees)"]
    for name, calls, total, self_ms in rows[:top]:
        out.append(f"  {float(self_ms) / instances:8.3f}  {int(calls) / instances:10.2f}  {name} "
                   f"(total {float(total) / instances:.3f} ms)")
    return out


def backend_cpu(env: BenchEnv, engines: list[EngineProcess]) -> float:
    """CPU seconds used so far by the PostgreSQL backends of these engine processes (their
    connections were opened when the engines started, so this is their whole life)."""
    with env.connect() as conn:
        pids = [int(r[0]) for r in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'dftui engine%' "
            "AND client_port IS NOT NULL")]
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += cpu_seconds(pid)
    return total


# -- latency ---------------------------------------------------------------------------------------

class DoneListener:
    """LISTEN df_done on a dedicated connection; remembers when notes arrived.

    df_done carries no payload (any role may LISTEN: payloads must not reveal instance ids), so
    a note says "some instance finished". The latency benchmark runs one instance at a time:
    the first note after the previous instance's is this instance's, confirmed in the database.
    """

    def __init__(self, env: BenchEnv) -> None:
        self.conn = psycopg.connect(env.dsn(), autocommit=True)
        self.conn.execute("LISTEN df_done")
        self.check = psycopg.connect(env.dsn(), autocommit=True)
        self.arrived: list[float] = []
        self.consumed = 0
        self.cond = threading.Condition()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for _note in self.conn.notifies(timeout=0.2):
                now = time.perf_counter()
                with self.cond:
                    self.arrived.append(now)
                    self.cond.notify_all()

    def wait(self, instance_id: str, timeout: float = 60.0) -> float:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                while len(self.arrived) <= self.consumed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise BenchError(f"instance {instance_id} did not finish within {timeout:.0f}s")
                    self.cond.wait(left)
                at = self.arrived[self.consumed]
                self.consumed += 1
                row = self.check.execute("SELECT status IN ('completed', 'failed', 'cancelled') "
                                         "FROM df.instances WHERE id = %s", (instance_id,)).fetchone()
                if row and row[0]:
                    return at

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5)
        self.conn.close()
        self.check.close()


@dataclass
class Latency:
    client_ms: list[float]  # commit acknowledged → df_done notification received
    server_ms: list[float]  # df.instances.completed_at - created_at (start transaction's now())

    @staticmethod
    def pct(values: list[float], p: float) -> float:
        if not values:
            return float("nan")
        ordered = sorted(values)
        k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
        return ordered[k]


def latency(env: BenchEnv, ui: Ui, opts: Options, *, label: str, what: str, expr: str,
            samples: int, engine: EngineProcess) -> Latency:
    """Sequential starts on an idle engine: start, commit, wait for df_done, pause, repeat."""
    escaped = expr.replace("%", "%%")  # literal SQL text, not a placeholder
    listener = DoneListener(env)
    client: list[float] = []
    ids: list[str] = []
    try:
        with env.connect(user=BENCH_ROLE) as conn, ui.bar(what, samples) as set_done:
            warmup = 3
            for i in range(samples + warmup):
                row = conn.execute(f"SELECT df.start({escaped}, %s) FROM (SELECT %s::int AS g) s",
                                   (label if i >= warmup else f"{label}-warmup", i)).fetchone()
                committed = time.perf_counter()
                assert row is not None
                arrived = listener.wait(row[0])
                if i >= warmup:
                    client.append(max(0.0, arrived - committed) * 1000)
                    ids.append(row[0])
                    set_done(i - warmup + 1)
                time.sleep(0.05)  # let every worker go back to waiting: an idle engine
    finally:
        listener.close()
    with env.connect() as conn:
        server = [float(r[0]) for r in conn.execute(
            "SELECT EXTRACT(EPOCH FROM completed_at - created_at)::float8 * 1000 "
            "FROM df.instances WHERE label = %s AND status = 'completed'", (label,))]
    if len(server) != len(ids):
        raise BenchError(f"{what}: {len(ids) - len(server)} instances did not complete")
    _ = engine
    return Latency(client_ms=client, server_ms=server)


# -- idle cost -------------------------------------------------------------------------------------

@dataclass
class IdleCost:
    pending: int
    cpu_percent: float
    rss_start_mib: float
    rss_end_mib: float
    seconds: float


def idle_cost(env: BenchEnv, ui: Ui, opts: Options) -> IdleCost:
    """An engine sitting next to `idle_pending` pending instances: CPU % and RSS over time.

    The instances are df.wait_for_signal('go') workflows started while no engine runs. Their
    start tasks are then deferred to 'infinity' (what the engine itself does to a task parked on
    a signal), so the engine sees a queue of 100k not-yet-due tasks and 100k pending instances
    instead of spending the phase starting them.
    """
    count = opts.idle_pending
    env.vacuum()
    with ui.counter(f"idle: enqueue {count:,} df.wait_for_signal instances", count) as add:
        enqueue(env, "df.wait_for_signal('go')", "idle", count, add, batch=2000,
                connections=2 if count >= 2000 else 1)
    with env.connect() as conn:
        conn.execute("UPDATE df_internal.tasks t SET run_at = 'infinity' FROM df.instances i "
                     "WHERE i.id = t.instance_id AND i.label = 'idle'")
        conn.execute("VACUUM (ANALYZE) df_internal.tasks")
        conn.execute("VACUUM (ANALYZE) df.instances")
    with EngineProcess(env, opts.concurrency, "idle") as engine:
        time.sleep(min(2.0, opts.idle_seconds))  # start-up work settles
        rss_start = rss_mib(engine.pid)
        cpu0, t0 = cpu_seconds(engine.pid), time.monotonic()
        with ui.bar(f"idle: engine CPU and RSS over {opts.idle_seconds:.0f} s", 100) as set_done:
            while (elapsed := time.monotonic() - t0) < opts.idle_seconds:
                set_done(int(100 * elapsed / opts.idle_seconds))
                time.sleep(min(0.25, opts.idle_seconds / 10))
        cpu1, t1 = cpu_seconds(engine.pid), time.monotonic()
        rss_end = rss_mib(engine.pid)
    pending = int(env.scalar("SELECT count(*) FROM df.instances WHERE label = 'idle' "
                             "AND status = 'pending'") or 0)
    return IdleCost(pending=pending, cpu_percent=100 * (cpu1 - cpu0) / (t1 - t0),
                    rss_start_mib=rss_start, rss_end_mib=rss_end, seconds=t1 - t0)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- df.start ----------------------------------------------------------------------------------

@dataclass
class StartRate:
    """df.start from concurrent client sessions, one start per transaction."""

    count: int  # starts per batch
    sessions: int
    first_s: float  # the first batch, on a database whose df tables were VACUUMed empty
    later_s: float  # the next batch, in new sessions, the tables now holding the first
    wal_bytes_per_start: float  # measured over the later batch
    server_cpu_ms_per_start: float  # the client sessions' backends, later batch
    profile: list[str] = field(default_factory=list)  # where df.start's time goes (a third batch)

    @property
    def first_per_s(self) -> float:
        return self.count / self.first_s if self.first_s > 0 else float("nan")

    @property
    def later_per_s(self) -> float:
        return self.count / self.later_s if self.later_s > 0 else float("nan")

    @property
    def slowdown(self) -> float:
        """How much longer the first batch took than the later one."""
        return self.first_s / self.later_s if self.later_s > 0 else float("nan")


def start_rate(env: BenchEnv, ui: Ui, opts: Options) -> StartRate:
    """`opts.start_sessions` sessions start one-step workflows, one df.start per transaction:
    first `opts.starts_n` on tables just VACUUMed empty (the state of a fresh install, in which
    cached plans once turned into sequential scans; sql/routines/zz_plans.sql), then as many
    again in new sessions. The instances are deleted afterwards (no engine runs here)."""
    env.vacuum()
    first, _, _ = _timed_starts(env, ui, opts, "starts-first", "df.start: first batch, fresh tables")
    wal0 = env.wal_lsn()
    later, cpu, _ = _timed_starts(env, ui, opts, "starts-later", "df.start: later batch")
    wal = env.wal_lsn() - wal0
    # where the time goes: a third, smaller batch with PostgreSQL timing every df function
    profiled = max(opts.start_sessions, opts.starts_n // 5)
    with env.connect() as conn:
        conn.execute(f"ALTER DATABASE {DFTUI_DB} SET track_functions = 'pl'")
        conn.execute("SELECT pg_stat_reset()")
    try:
        _timed_starts(env, ui, opts, "starts-profiled", "df.start: profiled batch", profiled)
        time.sleep(1.0)  # the sessions' backends report their statistics as they exit
        profile = server_functions(env, profiled, top=8, unit="start")
    finally:
        with env.connect() as conn:
            conn.execute(f"ALTER DATABASE {DFTUI_DB} RESET track_functions")
    with env.connect() as conn:
        conn.execute("DELETE FROM df.instances WHERE label LIKE 'starts-%'")
    n = opts.starts_n
    return StartRate(count=n, sessions=opts.start_sessions, first_s=first, later_s=later,
                     wal_bytes_per_start=wal / n, server_cpu_ms_per_start=1000 * cpu / n,
                     profile=profile)


def _timed_starts(env: BenchEnv, ui: Ui, opts: Options, label: str, what: str,
                  count: int | None = None) -> tuple[float, float, int]:
    """(seconds from the first start to the last commit, CPU seconds of the sessions' backends,
    starts) for `count` (`opts.starts_n`) one-step starts over `opts.start_sessions` new sessions."""
    sessions = opts.start_sessions
    total = opts.starts_n if count is None else count
    per = [total // sessions + (1 if i < total % sessions else 0) for i in range(sessions)]
    conns = [env.connect(user=BENCH_ROLE) for _ in range(sessions)]
    pids = [c.info.backend_pid for c in conns]
    sql = f"SELECT df.start({one_step_sql().replace('%', '%%')}, %s) FROM (SELECT %s::int AS g) s"
    errors: list[BaseException] = []
    gate = threading.Barrier(sessions + 1)
    lock = threading.Lock()
    try:
        with ui.counter(f"{what}: {total:,} starts, {sessions} sessions", total) as add:
            def work(conn: psycopg.Connection, offset: int, count: int) -> None:
                try:
                    gate.wait()
                    for i in range(count):
                        conn.execute(sql, (label, offset + i))  # autocommit: one per transaction
                        if i % 100 == 99:
                            with lock:
                                add(100)
                except BaseException as exc:  # re-raised below
                    errors.append(exc)

            offsets = [sum(per[:i]) for i in range(sessions)]
            threads = [threading.Thread(target=work, args=(c, o, k))
                       for c, o, k in zip(conns, offsets, per, strict=True)]
            for t in threads:
                t.start()
            cpu0 = sum(_cpu_or_zero(p) for p in pids)
            gate.wait()
            t0 = time.perf_counter()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - t0
            cpu = sum(_cpu_or_zero(p) for p in pids) - cpu0
    finally:
        for c in conns:
            c.close()
    if errors:
        raise BenchError(f"{what}: df.start failed: {errors[0]}")
    return elapsed, cpu, total


def _cpu_or_zero(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except (OSError, ValueError, IndexError):
        return 0.0  # a server on another host (--bindir is always local, but be safe)
