"""Fault injection: kill -9 the engine, crash PostgreSQL, run several engines at once.

Each workflow is 5 steps that each increment a per-instance counter. Because a step's effect and
its checkpoint commit in one transaction, every counter must end at exactly 5 whatever happens.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests.support import wait_for

pytestmark = pytest.mark.fault

STEPS = 5


def _prepare(db, n: int) -> list[str]:
    with db.connect() as conn:
        conn.execute("CREATE TABLE public.hits (id text PRIMARY KEY, n int NOT NULL DEFAULT 0)")
        conn.execute("GRANT ALL ON public.hits TO PUBLIC")
    step = "'UPDATE public.hits SET n = n + 1 WHERE id = ''{sys_instance_id}'' RETURNING n, pg_sleep(0.003)'"
    expr = " ~> ".join([step] * STEPS)
    with db.connect("dftui_alice", autocommit=False) as conn:
        ids = [conn.execute(f"SELECT df.start({expr})").fetchone()[0] for _ in range(n)]
        conn.commit()
    with db.connect() as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO public.hits (id) VALUES (%s)", [(i,) for i in ids])
    return ids


def _spawn(db, concurrency: int = 4) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "--dsn", db.dsn(), "--concurrency", str(concurrency)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )


def _done(db) -> int:
    return db.scalar("SELECT count(*) FROM df.instances WHERE status = 'completed'")


def _check(db, ids: list[str]) -> None:
    assert db.scalar("SELECT count(*) FROM df.instances WHERE status <> 'completed'") == 0
    counts = db.scalar("SELECT array_agg(DISTINCT n) FROM public.hits")
    assert counts == [STEPS], f"counters moved {counts} times instead of exactly {STEPS}"
    assert db.scalar("SELECT count(*) FROM public.hits") == len(ids)


def test_kill_dash_nine_engine_repeatedly(db):
    ids = _prepare(db, 200)
    rng = random.Random(1234)
    kills = 0
    proc = _spawn(db)
    try:
        while _done(db) < len(ids) or kills < 20:
            time.sleep(rng.uniform(0.3, 0.9))
            if _done(db) >= len(ids) and kills >= 20:
                break
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            proc = _spawn(db)
            if kills > 200:
                break
        wait_for(lambda: _done(db) == len(ids), 120, 0.2, "all instances to complete")
    finally:
        proc.kill()
        proc.wait()
    assert kills >= 20
    _check(db, ids)


def test_postgres_crash_restart_mid_run(db, pg_server):
    if pg_server.cluster is None:
        pytest.skip("needs a self-started cluster (DFTUI_TEST_DSN points at an external server)")
    ids = _prepare(db, 200)
    proc = _spawn(db)
    try:
        wait_for(lambda: _done(db) >= 20, 120, 0.05, "some progress")
        pg_server.cluster.restart("immediate")
        pg_server.cluster.wait_ready()
        wait_for(lambda: _done(db) == len(ids), 180, 0.2, "all instances to complete after the crash")
    finally:
        proc.kill()
        proc.wait()
    _check(db, ids)


def test_three_engines_never_run_a_step_twice(db):
    ids = _prepare(db, 500)
    procs = [_spawn(db, concurrency=3) for _ in range(3)]
    try:
        wait_for(lambda: _done(db) == len(ids), 240, 0.2, "all instances to complete")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
    _check(db, ids)
    engines = db.scalar("SELECT count(DISTINCT engine_id) FROM df_internal.node_attempts")
    assert engines == 3
