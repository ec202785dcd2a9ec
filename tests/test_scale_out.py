"""Engines on several hosts, as far as one machine can show it: separate engine processes that
reach one database through different spellings of its address (127.0.0.1, localhost, the Unix
socket directory) coordinate through PostgreSQL alone — every step runs exactly once, and every
engine takes a share of the work (docs/scaling.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ENGINE_ROLE, running_engine, setup_engine_owner, wait_for

REPO = Path(__file__).resolve().parent.parent
STEPS = 3
INSTANCES = 120


def _dsn_spellings(db, user: str) -> list[str]:
    cluster = db.server.cluster
    if cluster is None:
        pytest.skip("needs a server this suite started (its socket directory is known)")
    port = cluster.port
    return [f"host={host} port={port} dbname={db.name} user={user}"
            for host in ("127.0.0.1", "localhost", str(cluster.socket_dir))]


def test_engines_reaching_one_database_by_different_addresses_coordinate(db, mode):
    user = ENGINE_ROLE if mode == "owner" else "postgres"
    if mode == "owner":
        setup_engine_owner(db)
    dsns = _dsn_spellings(db, user)
    with db.connect() as conn:
        conn.execute("CREATE TABLE public.hits (id text PRIMARY KEY, n int NOT NULL DEFAULT 0)")
        conn.execute("GRANT ALL ON public.hits TO PUBLIC")
    engines = [subprocess.Popen(
        [sys.executable, "-m", "engine", "--dsn", dsn, "--concurrency", "2", "--no-install"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for dsn in dsns]
    try:
        # all three registered before there is work, so each has its chance to claim some
        wait_for(lambda: db.scalar("SELECT count(*) FROM df_internal.engines "
                                   "WHERE stopped_at IS NULL") == len(dsns)
                 or any(e.poll() is not None for e in engines), what="three engines")
        assert all(e.poll() is None for e in engines), [e.communicate()[1] for e in engines]
        # ... and really connected three ways: over TCP and over the socket
        # (an engine registers before all its sessions are up: wait for them)
        def addresses() -> set[str | None]:
            with db.connect() as conn:
                return {row[0] for row in conn.execute(
                    "SELECT DISTINCT host(client_addr) FROM pg_stat_activity "
                    "WHERE application_name LIKE 'dftui engine%%' AND datname = current_database()")}
        wait_for(lambda: addresses() == {"127.0.0.1", None}, 30,
                 what="engine sessions over TCP and over the socket")

        step = ("'UPDATE public.hits SET n = n + 1 WHERE id = ''{sys_instance_id}'' "
                "RETURNING n, pg_sleep(0.005)'")
        with db.connect("dftui_alice", autocommit=False) as conn:
            ids = [conn.execute(f"SELECT df.start({' ~> '.join([step] * STEPS)})").fetchone()[0]
                   for _ in range(INSTANCES)]
            conn.commit()
        with db.connect() as conn, conn.cursor() as cur:
            cur.executemany("INSERT INTO public.hits (id) VALUES (%s)", [(i,) for i in ids])
        wait_for(lambda: db.scalar("SELECT count(*) FROM df.instances WHERE status IN "
                                   "('completed', 'failed', 'cancelled')") == INSTANCES,
                 timeout=300, interval=0.2, what="every instance to finish")
    finally:
        for e in engines:
            e.terminate()
        for e in engines:
            try:
                e.wait(timeout=30)
            except subprocess.TimeoutExpired:
                e.kill()
                e.wait()

    assert db.scalar("SELECT count(*) FROM df.instances WHERE status <> 'completed'") == 0
    # exactly once: every step's effect happened once, and one attempt was recorded for it
    assert db.scalar("SELECT array_agg(DISTINCT n) FROM public.hits") == [STEPS]
    with db.connect() as conn:
        attempts = conn.execute(
            "SELECT count(*), count(DISTINCT (instance_id, node_id)) FROM df_internal.node_attempts "
            "WHERE status = 'completed'").fetchone()
        shares = dict(conn.execute(
            "SELECT e.id, count(a.id) FROM df_internal.engines e "
            "LEFT JOIN df_internal.node_attempts a ON a.engine_id = e.id AND a.status = 'completed' "
            "GROUP BY e.id").fetchall())
    assert attempts == (INSTANCES * STEPS, INSTANCES * STEPS)
    assert len(shares) == len(dsns) and all(n > 0 for n in shares.values()), shares


def test_an_unreachable_spelling_fails_alone(db):
    """A wrong address is the engine's own one-line failure, not the others' problem."""
    cluster = db.server.cluster
    if cluster is None:
        pytest.skip("needs a server this suite started")
    missing = cluster.socket_dir.parent / "no-such-socket-dir"
    result = subprocess.run(
        [sys.executable, "-m", "engine", "--dsn",
         f"host={missing} port={cluster.port} dbname={db.name} user=postgres", "--no-install"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.startswith("python -m engine: ") and result.stderr.count("\n") == 1, \
        result.stderr
    assert "no-such-socket-dir" in result.stderr


def test_engines_number_their_workers_across_engines_so_claims_start_apart(db):
    """Each worker of every live engine first looks at a slice of the queue of its own
    (claim_tasks's slice/slices): the engines' worker ranges are disjoint and cover them all,
    also for the engine that registered first (it learns of the second at a heartbeat)."""
    with running_engine(db.dsn(), concurrency=2, heartbeat_interval=0.2) as first, \
            running_engine(db.dsn(), concurrency=3, heartbeat_interval=0.2) as second:
        wait_for(lambda: first.slices == second.slices == 5, 30, what="both engines to see 5 workers")
        ranges = sorted((e.slice_base, e.slice_base + e.config.concurrency) for e in (first, second))
        assert ranges in ([(0, 2), (2, 5)], [(0, 3), (3, 5)])
    # a stopped engine's workers no longer count
    with running_engine(db.dsn(), concurrency=2) as alone:
        assert (alone.slice_base, alone.slices) == (0, 2)
