"""The engine's Prometheus endpoint (--metrics-addr): scraped during real runs, counters checked
against what the database says happened; the queue gauges against rows put in place by hand."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from engine.config import EngineConfig
from engine.metrics import EngineMetrics, parse_address
from engine.runner import Engine
from tests.support import ALICE, engine_in_mode, running_engine, start, wait_for, wait_terminal

REPO = Path(__file__).resolve().parent.parent


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by (name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def total(found: dict, name: str, **labels: str) -> float:
    """Sum over every sample of `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in found.items()
               if n == name and all((k, w) in ls for k, w in labels.items()))


def scrape(engine: Engine) -> dict:
    assert engine.metrics.address is not None
    host, port = engine.metrics.address
    response = httpx.get(f"http://{host}:{port}/metrics", timeout=10)
    assert response.status_code == 200
    return samples(response.text)


@pytest.mark.parametrize(("text", "expected"), [
    ("9187", ("127.0.0.1", 9187)),
    (":9187", ("127.0.0.1", 9187)),
    ("0.0.0.0:9187", ("0.0.0.0", 9187)),
    ("localhost:0", ("localhost", 0)),
    ("[::1]:9187", ("::1", 9187)),
])
def test_metrics_address_forms(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["", "host:", "host:http", "1.2.3.4:70000", "::1:9187", "-1"])
def test_bad_metrics_address_is_refused(text):
    with pytest.raises(ValueError, match="metrics address"):
        EngineConfig(metrics_addr=text)


def test_metrics_are_off_by_default(db):
    with running_engine(db.dsn()) as engine:
        assert engine.metrics.address is None


def test_counters_move_during_a_run(db, mode):
    """Steps of every outcome, scraped while the engine runs: the counts match the work done."""
    with engine_in_mode(db, mode, metrics_addr="127.0.0.1:0", concurrency=2) as engine:
        before = scrape(engine)
        assert value(before, "dftui_engine_workers") == 2
        assert value(before, "dftui_database_up") == 1
        assert value(before, "dftui_engines_alive") >= 1
        assert total(before, "dftui_engine_steps_started_total") == 0
        assert total(before, "dftui_engine_info", version=__import__("engine").__version__) == 1

        done = [start(db, ALICE, "'SELECT 1'") for _ in range(5)]
        failed = start(db, ALICE, "'SELECT 1/0'")
        retried = start(db, ALICE, "df.retry_policy('SELECT 1/0', 2, 0, 0, ARRAY['any'])")
        waiting = start(db, ALICE, "df.wait_for_signal('go')")
        for iid in done:
            assert wait_terminal(db, iid) == "completed"
        assert wait_terminal(db, failed) == "failed"
        assert wait_terminal(db, retried) == "failed"
        wait_for(lambda: db.scalar("SELECT count(*) FROM df_internal.tasks WHERE instance_id = %s "
                                   "AND phase = 'waiting'", (waiting,)), what="the signal wait")

        def settled() -> dict | None:
            found = scrape(engine)
            waited = value(found, "dftui_engine_steps_finished_total", type="signal", outcome="waiting")
            parked = value(found, "dftui_queue_scheduled_tasks")  # (read at most once a second)
            return found if waited == 1 and parked == 1 else None

        after = wait_for(settled, what="the signal step to be counted and seen parked")

    finished = "dftui_engine_steps_finished_total"
    assert value(after, finished, type="sql", outcome="completed") == 5
    assert value(after, finished, type="sql", outcome="failed") == 2
    assert value(after, finished, type="sql", outcome="retried") == 1
    # every step started has an outcome once the engine is quiet (requeued ones ran again)
    assert total(after, "dftui_engine_steps_started_total") == total(after, finished)
    assert total(after, "dftui_engine_steps_started_total", type="sql") == \
        8 + value(after, finished, type="sql", outcome="requeued")
    # durations: one observation per attempt that was recorded
    assert value(after, "dftui_engine_step_duration_seconds_count", type="sql") == 8
    assert value(after, "dftui_engine_claim_duration_seconds_count") > 0
    assert value(after, "dftui_engine_batch_size_count") > 0
    assert value(after, "dftui_engine_batch_size_sum") >= 9
    assert value(after, "dftui_engine_notifications_total", channel="df_work") > 0
    # the database's view: the signal wait is parked, nothing is due
    assert value(after, "dftui_queue_ready_tasks") == 0
    assert value(after, "process_cpu_seconds_total") > 0


def test_queue_gauges_read_the_database(db):
    """Queue depth, oldest due age, timers due and engines alive, with no engine running."""
    ids = [start(db, ALICE, "'SELECT 1'") for _ in range(4)]
    with db.connect() as conn:
        conn.execute("UPDATE df_internal.tasks SET run_at = now() - interval '90 seconds', "
                     "phase = 'waiting' WHERE instance_id = %s", (ids[0],))  # a timer came due
        conn.execute("UPDATE df_internal.tasks SET run_at = 'infinity' WHERE instance_id = %s",
                     (ids[1],))
        conn.execute("INSERT INTO df_internal.engines (id, host, pid, version, heartbeat_at, stopped_at) "
                     "VALUES ('alive', 'h', 1, 'v', now(), NULL), "
                     "('silent', 'h', 2, 'v', now() - interval '1 hour', NULL), "
                     "('stopped', 'h', 3, 'v', now(), now())")
    metrics = EngineMetrics(db.dsn(), "test", 1, lambda: 0, dead_after=15.0)
    try:
        found = samples(generate_latest(metrics.registry).decode())
    finally:
        metrics.close()
    assert value(found, "dftui_database_up") == 1
    assert value(found, "dftui_queue_ready_tasks") == 2
    assert value(found, "dftui_queue_timers_due") == 1
    assert value(found, "dftui_queue_scheduled_tasks") == 1
    # (no task runs outside a transaction any more: the former leased-tasks gauge is gone)
    assert not [k for k in found if "leased" in str(k)]
    assert value(found, "dftui_queue_oldest_ready_age_seconds") >= 90
    assert value(found, "dftui_engines_alive") == 1


def test_unreachable_database_is_reported_not_raised(db):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    metrics = EngineMetrics(f"host=127.0.0.1 port={port} dbname=x connect_timeout=2", "test", 1,
                            lambda: 0, dead_after=15.0)
    try:
        found = samples(generate_latest(metrics.registry).decode())
    finally:
        metrics.close()
    assert value(found, "dftui_database_up") == 0
    assert ("dftui_queue_ready_tasks", ()) not in found
    assert value(found, "dftui_engine_connection_errors_total", thread="metrics") == 1


def test_taken_port_fails_cleanly_before_registering(db):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        engine = Engine(EngineConfig(dsn=db.dsn(), metrics_addr=f"127.0.0.1:{port}"))
        with pytest.raises(RuntimeError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            engine.start()
    assert db.scalar("SELECT count(*) FROM df_internal.engines") == 0


def test_python_m_engine_serves_metrics(db):
    """The flag as operators use it: a separate engine process, scraped over HTTP."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "--dsn", db.dsn(), "--concurrency", "1", "--no-install",
         "--metrics-addr", "127.0.0.1:0"],
        cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        url = None
        for line in proc.stderr:
            m = re.search(r"metrics: (http://\S+/metrics)", line)
            if m:
                url = m[1]
                break
        assert url, "the engine did not log its metrics address"
        iid = start(db, ALICE, "'SELECT 1'")
        assert wait_terminal(db, iid) == "completed"

        def counted() -> dict | None:
            found = samples(httpx.get(url, timeout=10).text)
            done = value(found, "dftui_engine_steps_finished_total", type="sql", outcome="completed")
            return found if done == 1 else None

        found = wait_for(counted, what="the step to be counted")
        assert value(found, "dftui_engine_workers") == 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_cli_refuses_a_bad_metrics_address(capsys, db):
    from dftui.cli import main

    code = main(["engine", "--metrics-addr", "localhost:http", "--dsn", db.dsn()])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("dftui: ") and err.count("\n") == 1 and "metrics address" in err, err
