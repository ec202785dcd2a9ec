"""`python -m benchmarks.soak --minutes N`: a soak test, run on demand (never in CI).

For N minutes, on a fresh throwaway cluster: two roles keep starting a mix of workflows (counter
chains, JOINs, sleeps, signals, steps that fail and are retried, and poison inputs: `%` names,
2,000-deep JSON, several statements, unknown references, oversized labels) while engine
processes are restarted (SIGTERM) and killed (SIGKILL) at random. Afterwards every instance
must end (no stuck work), every counter must have moved exactly once per step (no lost or
duplicated work), every poison must have ended the way it should, and the engines' memory and
connection counts must stay flat. Prints the figures; exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from dftui.embedded import Cluster, embedded_bindir

ROLES = ("soak_alice", "soak_bob")
CHAIN = 4  # steps per counter workflow
TERMINAL = ("completed", "failed", "cancelled")
STEP = ("'UPDATE public.soak_hits SET n = n + 1 WHERE id = ''{sys_instance_id}'' "
        "RETURNING n'")
DEEP = "(pg_catalog.repeat(''['', 2000) || pg_catalog.repeat('']'', 2000))::jsonb"

# (kind, workflow expression, status it must end with)
WORKLOADS = [
    ("join", "'SELECT 1 AS a' & 'SELECT 2 AS b' & 'SELECT pg_catalog.pg_sleep(0.01)'", "completed"),
    ("sleep", "df.sleep(1) ~> 'SELECT 1 AS after_sleep'", "completed"),
    ("retry", "df.retry_policy('SELECT 1 / (CASE WHEN random() < 0.5 THEN 0 ELSE 1 END) AS x', "
              "30, 0, 0, ARRAY['any'])", "completed"),
    ("fail", "'SELECT 1 / 0'", "failed"),
    ("percent", "'SELECT 1 AS \"%s\", 2 AS \"100%\", 3 AS \"50%%\"'", "completed"),
    ("deep", f"'SELECT {DEEP} AS j' |=> 'deep' ~> 'SELECT pg_catalog.jsonb_typeof($deep.j::jsonb) AS t'",
     "completed"),
    ("numbers", "'SELECT ''{\"amount\": 12345678901234567890.12345}''::jsonb AS j' |=> 'n' ~> "
                "'SELECT $n.j::jsonb AS same'", "completed"),
    ("multi", "'SELECT 1 AS a; SELECT 2 AS b'", "failed"),
    ("nosuch", "'SELECT $nosuch AS v'", "failed"),
]


@dataclass
class Stats:
    started: dict[str, int] = field(default_factory=dict)
    refused: int = 0  # bad input refused at df.start (expected: the oversized label)
    restarts: int = 0
    kills: int = 0
    rss: list[tuple[float, float]] = field(default_factory=list)  # (t, MiB of all engines)
    connections: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Engines:
    """Engine subprocesses that can be restarted and killed."""

    def __init__(self, dsn: str, count: int, logdir: Path) -> None:
        self.dsn = dsn
        self.logdir = logdir
        self.procs: list[subprocess.Popen[bytes]] = [self._spawn(i) for i in range(count)]

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        log = open(self.logdir / f"engine-{index}.log", "ab")  # noqa: SIM115 - kept by the child
        return subprocess.Popen(
            [sys.executable, "-m", "engine", "--dsn", self.dsn, "--concurrency", "4", "--no-install"],
            stdout=log, stderr=log, cwd=Path(__file__).resolve().parent.parent)

    def replace(self, index: int, how: int) -> None:
        proc = self.procs[index]
        proc.send_signal(how)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self.procs[index] = self._spawn(index)

    def rss(self) -> float:
        return sum(_rss_mib(p.pid) for p in self.procs if p.poll() is None)

    def stop(self) -> None:
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def _prepare(cluster: Cluster) -> str:
    from engine import schema

    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
        conn.execute("CREATE DATABASE soak")
        for role in ROLES:
            conn.execute(f"CREATE ROLE {role} LOGIN")
    dsn = cluster.dsn("soak")
    with psycopg.connect(dsn, autocommit=True) as conn:
        schema.install(conn)
        for role in ROLES:
            conn.execute("SELECT df.grant_usage(%s)", (role,))
        conn.execute("CREATE TABLE public.soak_hits (id text PRIMARY KEY, n int NOT NULL DEFAULT 0)")
        conn.execute("GRANT ALL ON public.soak_hits TO PUBLIC")
    return dsn


def _submit(cluster: Cluster, stop: threading.Event, stats: Stats, seed: int) -> None:
    """One role's client: keeps starting workflows and signalling the waiting ones."""
    rng = random.Random(seed)
    role = ROLES[seed % len(ROLES)]
    chain = " ~> ".join([STEP] * CHAIN)
    waiting: list[tuple[float, str]] = []  # signal waits started, signalled a second later
    with psycopg.connect(cluster.dsn("soak", role), autocommit=True) as conn:
        while not stop.is_set() or waiting:
            pick = rng.random()
            try:
                # (a second later: a signal sent while the engine still runs the wait's first
                # step is missed — df_internal.enqueue_signal only wakes parked waits)
                while waiting and waiting[0][0] < time.monotonic() - 1:
                    _, signalled = waiting.pop(0)
                    conn.execute("SELECT df.signal(%s, 'go', %s)",
                                 (signalled, '{"rate": 0.1000000000000000000001}'))
                if stop.is_set():
                    time.sleep(0.2)
                    continue
                if pick < 0.45:
                    # the counter row commits with the instance: no step can run before it exists
                    with conn.transaction():
                        iid = conn.execute(f"SELECT df.start({chain}, 'chain')").fetchone()[0]
                        conn.execute("INSERT INTO public.soak_hits (id) VALUES (%s)", (iid,))
                    kind = "chain"
                elif pick < 0.55:
                    iid = conn.execute("SELECT df.start(df.wait_for_signal('go', 120) |=> 's' ~> "
                                       "'SELECT $s.data AS d', 'signal')").fetchone()[0]
                    waiting.append((time.monotonic(), iid))
                    kind = "signal"
                elif pick < 0.57:
                    try:
                        conn.execute("SELECT df.start('SELECT 1', %s)", ("L" * (1 << 20),))
                        stats.errors.append("a 1 MB label was accepted")
                    except psycopg.Error as exc:
                        if "label is too long" not in str(exc):
                            stats.errors.append(f"oversized label: unexpected error {exc}")
                        stats.refused += 1
                    continue
                else:
                    kind, expr, _ = WORKLOADS[rng.randrange(len(WORKLOADS))]
                    iid = conn.execute(f"SELECT df.start({expr.replace('%', '%%')}, %s)",
                                       (kind,)).fetchone()[0]
                stats.started[kind] = stats.started.get(kind, 0) + 1
            except psycopg.Error as exc:
                stats.errors.append(f"df.start failed: {exc}")
            time.sleep(rng.uniform(0.005, 0.03))


def _sample(dsn: str, engines: Engines, stats: Stats, t0: float) -> None:
    stats.rss.append((time.monotonic() - t0, engines.rss()))
    with psycopg.connect(dsn, autocommit=True) as conn:
        stats.connections.append(conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'dftui engine%%'"
        ).fetchone()[0])


def run(minutes: float, engines_n: int, keep: bool) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="dftui-soak-"))
    cluster = Cluster(workdir / "data", bindir=embedded_bindir(),
                      settings={"max_connections": "200", "log_min_messages": "warning"})
    cluster.start()
    stats = Stats()
    try:
        dsn = _prepare(cluster)
        engines = Engines(dsn, engines_n, workdir)
        stop = threading.Event()
        clients = [threading.Thread(target=_submit, args=(cluster, stop, stats, i), daemon=True)
                   for i in range(2)]
        for c in clients:
            c.start()
        rng = random.Random(42)
        t0 = time.monotonic()
        end = t0 + minutes * 60
        next_event = t0 + rng.uniform(15, 30)
        while time.monotonic() < end:
            time.sleep(1)
            if int(time.monotonic() - t0) % 10 == 0:
                _sample(dsn, engines, stats, t0)
            if time.monotonic() >= next_event:
                index = rng.randrange(engines_n)
                if rng.random() < 0.5:
                    engines.replace(index, signal.SIGKILL)
                    stats.kills += 1
                else:
                    engines.replace(index, signal.SIGTERM)
                    stats.restarts += 1
                next_event = time.monotonic() + rng.uniform(15, 30)
        stop.set()
        for c in clients:
            c.join(60)
        # Drain: everything still running must finish (signal waits time out at 120 s at most).
        drain_start = time.monotonic()
        with psycopg.connect(dsn, autocommit=True) as conn:
            while time.monotonic() - drain_start < 300:
                left = conn.execute("SELECT count(*) FROM df.instances WHERE status NOT IN "
                                    "('completed', 'failed', 'cancelled')").fetchone()[0]
                if left == 0:
                    break
                time.sleep(2)
            _sample(dsn, engines, stats, t0)
            return _report(conn, stats, minutes, time.monotonic() - drain_start, engines_n)
    finally:
        with_engines = locals().get("engines")
        if with_engines is not None:
            with_engines.stop()
        if keep:
            print(f"cluster kept at {cluster.dsn('soak')} (logs in {workdir})", file=sys.stderr)
        else:
            cluster.destroy()


def _report(conn: psycopg.Connection, stats: Stats, minutes: float, drain: float,
            engines_n: int) -> int:
    failures = list(stats.errors[:5])
    stuck = conn.execute("SELECT count(*) FROM df.instances WHERE status NOT IN "
                         "('completed', 'failed', 'cancelled')").fetchone()[0]
    if stuck:
        failures.append(f"{stuck} instance(s) never finished")
    moved = dict(conn.execute("SELECT n, count(*) FROM public.soak_hits h JOIN df.instances i "
                              "ON i.id = h.id GROUP BY n").fetchall())
    wrong = {n: c for n, c in moved.items() if n != CHAIN}
    if wrong:
        failures.append(f"counter workflows whose steps ran other than exactly {CHAIN} times: {wrong}")
    unexpected = conn.execute(
        "SELECT label, status, count(*) FROM df.instances GROUP BY label, status ORDER BY 1, 2").fetchall()
    want = {kind: status for kind, _, status in WORKLOADS} | {"chain": "completed", "signal": "completed"}
    for label, status, count in unexpected:
        if want.get(label) != status:
            failures.append(f"{count} '{label}' instance(s) ended {status}, expected {want.get(label)}")
    signals = conn.execute("SELECT count(*) FROM df.nodes n JOIN df.instances i ON i.id = n.instance_id "
                           "WHERE i.label = 'signal' AND n.node_type = 'SQL' AND n.status = 'completed' "
                           "AND n.result::text NOT LIKE '%0.1000000000000000000001%'").fetchone()[0]
    if signals:
        failures.append(f"{signals} signal payload(s) arrived changed")
    total = conn.execute("SELECT count(*), count(*) FILTER (WHERE status = 'completed') "
                         "FROM df.instances").fetchone()
    steps = conn.execute("SELECT count(*) FROM df_internal.node_attempts").fetchone()[0]
    rss = [r for _, r in stats.rss if r > 0]
    third = max(1, len(rss) // 3)
    early, late = (sum(rss[:third]) / third, sum(rss[-third:]) / third) if rss else (0.0, 0.0)
    if rss and late > early * 1.5 + 20:
        failures.append(f"engine memory grew from {early:.0f} to {late:.0f} MiB")
    conns = stats.connections
    # per engine: 4 workers, listener, housekeeping, journal, a fault connection now and then
    if conns and max(conns) > engines_n * 12:
        failures.append(f"engine connections peaked at {max(conns)}")
    print(f"soak: {minutes:g} min, {total[0]} instances ({total[1]} completed), {steps} step attempts")
    print(f"  started by kind: {dict(sorted(stats.started.items()))}; oversized labels refused: "
          f"{stats.refused}")
    print(f"  engine restarts: {stats.restarts} (SIGTERM), kills: {stats.kills} (SIGKILL); "
          f"drain after the load: {drain:.1f} s")
    print(f"  stuck: {stuck}; counter workflows by steps run: {dict(sorted(moved.items()))}")
    print(f"  engine RSS (all engines) early/late average: {early:.0f}/{late:.0f} MiB, "
          f"max {max(rss) if rss else 0:.0f} MiB")
    print(f"  engine connections min/max: {min(conns) if conns else 0}/{max(conns) if conns else 0}")
    for failure in failures:
        print(f"FAIL: {failure}")
    print("soak: OK" if not failures else "soak: FAILED")
    return 0 if not failures else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the load (10)")
    parser.add_argument("--engines", type=int, default=2, help="engine processes (2)")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running afterwards")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return run(args.minutes, args.engines, args.keep)


if __name__ == "__main__":
    sys.exit(main())
