"""The DBOS Transact peer, run as its own process: `python -m benchmarks.dbos_peer --url ...`.

DBOS is a process-wide singleton with its own threads, so it runs apart from the harness and
reports JSON on stdout. It uses the benchmark's PostgreSQL as its system database (a database of
its own) and does the same work as the dftui workflows: every step is
`UPDATE public.bench_rows SET n = n + 1 WHERE id = k`, either as a @DBOS.step on a pooled psycopg
connection or as a @DBOS.transaction (a datasource transaction that records its own checkpoint).

Workflows are called in-process from `--concurrency` client threads, DBOS's fastest path (no queue
poller in between).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROWS = 10_000


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def _rss_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dbos_peer")
    parser.add_argument("--url", required=True, help="postgresql:// URL of the DBOS database")
    parser.add_argument("--one", type=int, default=1000, help="one-step workflows")
    parser.add_argument("--three", type=int, default=1000, help="3-step workflows (each kind)")
    parser.add_argument("--latency", type=int, default=200, help="sequential one-step samples")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    args = parser.parse_args()

    import sqlalchemy as sa
    from dbos import DBOS, DBOSConfig, SQLAlchemyDatasource
    from psycopg_pool import ConnectionPool

    logging.getLogger("dbos").setLevel(logging.WARNING)
    url = args.url
    pool = ConnectionPool(url.replace("postgresql+psycopg://", "postgresql://"),
                          min_size=args.concurrency, max_size=args.concurrency,
                          kwargs={"autocommit": True}, open=True)
    config: DBOSConfig = {"name": "dftui-bench", "system_database_url": url,
                          "log_level": "WARNING", "sys_db_pool_size": args.concurrency * 2 + 4}
    DBOS(config=config)
    ds = SQLAlchemyDatasource.create(url, engine_kwargs={"pool_size": args.concurrency + 2})
    update = sa.text("UPDATE public.bench_rows SET n = n + 1 WHERE id = :id")

    @DBOS.step()
    def step_update(k: int) -> int:
        with pool.connection() as conn:
            conn.execute("UPDATE public.bench_rows SET n = n + 1 WHERE id = %s", (k % ROWS,))
        return k

    @ds.transaction()
    def tx_update(k: int) -> int:
        ds.sql_session().execute(update, {"id": k % ROWS})
        return k

    @DBOS.workflow()
    def one_step(g: int) -> int:
        return step_update(g)

    @DBOS.workflow()
    def three_steps(g: int) -> int:
        step_update(g * 3)
        step_update(g * 3 + 1)
        return step_update(g * 3 + 2)

    @DBOS.workflow()
    def three_transactions(g: int) -> int:
        tx_update(g * 3)
        tx_update(g * 3 + 1)
        return tx_update(g * 3 + 2)

    DBOS.launch()
    DBOS.register_queue("bench-idle")  # a registered queue keeps its poller running, as in production

    def rate(workflow, count: int, offset: int) -> float:
        with ThreadPoolExecutor(args.concurrency) as pool_exec:
            list(pool_exec.map(workflow, range(offset, offset + 10)))  # warm-up
            t0 = time.perf_counter()
            list(pool_exec.map(workflow, range(offset + 10, offset + 10 + count)))
            return count / (time.perf_counter() - t0)

    out: dict[str, object] = {}
    out["one_step_wf_per_s"] = rate(one_step, args.one, 0)
    out["three_step_wf_per_s"] = rate(three_steps, args.three, 1_000_000)
    out["three_tx_wf_per_s"] = rate(three_transactions, args.three, 2_000_000)

    samples = []
    for i in range(args.latency + 3):
        t0 = time.perf_counter()
        one_step(3_000_000 + i)
        if i >= 3:
            samples.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.05)
    out["latency_ms"] = samples

    time.sleep(1.0)
    cpu0, t0 = _cpu_seconds(), time.monotonic()
    time.sleep(args.idle_seconds)
    out["idle_cpu_percent"] = 100 * (_cpu_seconds() - cpu0) / (time.monotonic() - t0)
    out["rss_mib"] = _rss_mib()
    out["median_latency_ms"] = statistics.median(samples) if samples else None
    out["dbos_version"] = _version()
    print(json.dumps(out), flush=True)
    DBOS.destroy()
    pool.close()
    return 0


def _version() -> str:
    from importlib.metadata import version

    try:
        return version("dbos")
    except Exception:  # noqa: BLE001 - a version string is decoration
        return "?"


if __name__ == "__main__":
    sys.exit(main())
