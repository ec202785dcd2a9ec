"""Availability attacks (issue 13, class 7): advisory locks, NOTIFY and LISTEN are shared by every
session of a database, whatever its privileges. No role — not even one without df usage — may
stall, cancel or watch another role's work through them.

Each test fails if its route works, in both engine modes (`mode`); "stalled" means the victim's
instance does not finish within the (generous) deadline of wait_terminal.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from tests.support import (
    ALICE,
    BOB,
    CAROL,
    engine_in_mode,
    errors,
    node_rows,
    running_engine,
    setup_engine_owner,
    start,
    wait_for,
    wait_terminal,
)


# Every advisory-lock key the engine has ever coordinated on (install, trampoline setup, the
# step marker, the non-transactional lease, the per-instance lock), and then some.
def _hold_every_engine_key(conn: psycopg.Connection, db, instance_ids: list[str]) -> None:
    conn.execute("SELECT pg_advisory_lock(7262937812)")
    conn.execute("SELECT pg_advisory_lock(72629379, k) FROM generate_series(0, 16) k")
    conn.execute("SELECT pg_advisory_lock(72629380, k) FROM generate_series(0, 16) k")
    oids = [r[0] for r in db.connect().execute(
        "SELECT oid::int FROM pg_roles WHERE rolname IN ('dftui_alice', 'dftui_bob', 'Quoted Role')")]
    for oid in oids:
        conn.execute("SELECT pg_advisory_lock(72629378, %s)", (oid,))
    for iid in instance_ids:
        conn.execute("SELECT pg_advisory_lock(7262937, hashtext(%s))", (iid,))
        conn.execute("SELECT pg_advisory_lock(72629380, hashtext(%s || '/' || n.id)) "
                     "FROM (SELECT %s::text AS id) n", (iid, "x"))


def test_advisory_locks_held_by_any_role_stall_nothing(db, mode):
    """carol (no df usage) holds every engine key exclusively, including the per-instance keys
    of the victims' instances (ids she could learn) and the keys of their first-step setup;
    the engine starts, sets up the roles' trampolines and runs every instance to the end."""
    with db.connect(BOB, autocommit=False) as conn:
        victims = [conn.execute("SELECT df.start('SELECT 1 AS a' ~> 'SELECT 2 AS b')").fetchone()[0]
                   for _ in range(3)]
        conn.commit()
    with db.connect(CAROL) as attacker:
        _hold_every_engine_key(attacker, db, victims)
        with engine_in_mode(db, mode, concurrency=2):
            for iid in victims:
                assert wait_terminal(db, iid, timeout=60) == "completed", errors(db, iid)
            late = start(db, ALICE, "'SELECT 1 AS a' ~> df.sleep(0) ~> 'SELECT 3 AS c'")
            assert wait_terminal(db, late, timeout=60) == "completed", errors(db, late)
        assert attacker.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                "AND pid = pg_backend_pid()").fetchone()[0] > 0


def _running(db, iid: str) -> None:
    wait_for(lambda: db.scalar("SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s "
                               "AND state = 'active'", ("%pg_sleep(3.5)%",)) > 0,
             what="the victim's step to be running")
    assert db.scalar("SELECT status FROM df.instances WHERE id = %s", (iid,)) in ("pending", "running")


FORGED = [
    ("df_cancel", "{id}"),
    ("df_abandon", '{{"instance_id": "{id}", "nodes": {nodes}}}'),
    ("df_abandon", "{{"),
    ("df_abandon", "null"),
    ("df_abandon", "[1, 2]"),
    ("df_abandon", '{{"instance_id": "{id}", "nodes": 5}}'),
    ("df_abandon", '{{"instance_id": ["{id}"], "nodes": [[1]]}}'),
    ("df_cancel", ""),
    ("df_cancel", "x" * 7000),
    ("df_work", "{id}"),
]


def test_forged_notifications_cancel_nothing_and_do_not_kill_the_listener(db, mode):
    with engine_in_mode(db, mode, concurrency=2):
        victim = start(db, BOB, "'SELECT pg_sleep(3.5) AS slept' ~> 'SELECT 1 AS after'")
        _running(db, victim)
        nodes = [n["id"] for n in node_rows(db, victim)]
        with db.connect(CAROL) as attacker:
            for channel, payload in FORGED:
                text = payload.format(id=victim, nodes=str(nodes).replace("'", '"'))
                attacker.execute("SELECT pg_notify(%s, %s)", (channel, text))
        assert wait_terminal(db, victim, timeout=60) == "completed", errors(db, victim)
        # the listener is alive: a real df.cancel still interrupts a running step at once
        long = start(db, BOB, "'SELECT pg_sleep(3.5) AS slept' ~> 'SELECT pg_sleep(120)'")
        _running(db, long)
        wait_for(lambda: db.scalar("SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s "
                                   "AND state = 'active'", ("%pg_sleep(120)%",)) > 0, timeout=60,
                 what="the long step to be running")
        with db.connect(BOB) as conn:
            conn.execute("SELECT df.cancel(%s)", (long,))
        wait_for(lambda: db.scalar("SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s "
                                   "AND state = 'active' AND application_name LIKE 'dftui engine%%'",
                                   ("%pg_sleep(120)%",)) == 0, timeout=30,
                 what="the cancelled instance's running step to be interrupted")
        assert db.scalar("SELECT status FROM df.instances WHERE id = %s", (long,)) == "cancelled"


def test_listening_reveals_no_instance_ids(db, mode):
    seen: list[str] = []
    stop = threading.Event()
    ready = threading.Event()

    def listen() -> None:
        with db.connect(CAROL) as conn:
            for channel in ("df_work", "df_done", "df_cancel", "df_abandon"):
                conn.execute(f"LISTEN {channel}")
            ready.set()
            while not stop.is_set():
                for note in conn.notifies(timeout=0.2):
                    seen.append(note.payload)

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    ready.wait(10)
    with engine_in_mode(db, mode, concurrency=2):
        done = start(db, ALICE, "df.race('SELECT 1 AS fast', 'SELECT pg_sleep(2) AS slow')")
        waiting = start(db, ALICE, "df.wait_for_signal('go') ~> 'SELECT 1'")
        failing = start(db, ALICE, "df.retry_policy('SELECT 1/0', 2, 0.1)")
        assert wait_terminal(db, done) == "completed"
        assert wait_terminal(db, failing) == "failed"
        with db.connect(ALICE) as conn:
            conn.execute("SELECT df.signal(%s, 'go')", (waiting,))
        assert wait_terminal(db, waiting) == "completed"
        cancelled = start(db, ALICE, "'SELECT pg_sleep(30)'")
        time.sleep(0.5)
        with db.connect(ALICE) as conn:
            conn.execute("SELECT df.cancel(%s)", (cancelled,))
        assert wait_terminal(db, cancelled) == "cancelled"
        with db.connect(ALICE) as conn:
            conn.execute("SELECT df.retry(%s)", (failing,))
        wait_terminal(db, failing)
    time.sleep(0.5)
    stop.set()
    thread.join(5)
    assert seen, "the listener saw no notification at all: the test proves nothing"
    ids = (done, waiting, failing, cancelled)
    leaked = [p for p in seen if any(i in p for i in ids)]
    assert not leaked, f"notification payloads reveal instance ids: {leaked[:3]}"


@pytest.mark.parametrize("holder", [ALICE, CAROL])
def test_the_step_marker_cannot_be_blocked(db, mode, holder):
    """in_engine_step's marker: a role holding any lock it can take on it blocks no step."""
    with engine_in_mode(db, mode, concurrency=1), db.connect(holder, autocommit=False) as conn:
        for statement in ("LOCK TABLE df._step_marker IN ACCESS EXCLUSIVE MODE",
                          "LOCK TABLE df._step_marker IN SHARE MODE"):
            try:
                conn.execute(statement)
                pytest.fail(f"{holder} could take a blocking lock: {statement}")
            except psycopg.errors.InsufficientPrivilege:
                conn.rollback()
        if holder == ALICE:
            conn.execute("SELECT count(*) FROM df._step_marker")  # ACCESS SHARE: harmless
        iid = start(db, BOB, "'SELECT 1 AS a'")
        assert wait_terminal(db, iid, timeout=60) == "completed", errors(db, iid)
        conn.rollback()


def test_held_instance_rows_of_hand_made_instances_do_not_wedge_the_claim(db, mode):
    """A granted role may INSERT instances by hand (pg_durable's grants); the claim starts them
    (UPDATE of the instance row). alice inserts several and holds FOR UPDATE on every one of
    their rows: no worker may wait on them for ever, bob's work goes on, and alice's instances
    start once she lets go."""
    ids = [f"0a11ce0{i}" for i in range(3)]
    # (the owner-mode setup changes table ownership: done before alice holds her rows)
    dsn = setup_engine_owner(db) if mode == "owner" else db.dsn()
    holder = db.connect(ALICE, autocommit=False)
    try:
        for iid in ids:
            node = iid[:7] + "a"
            holder.execute("INSERT INTO df.nodes (id, instance_id, node_type, query, submitted_by) "
                           "VALUES (%s, %s, 'SQL', 'SELECT 1 AS x', quote_ident(current_user)::regrole)",
                           (node, iid))
            holder.execute("INSERT INTO df.instances (id, root_node, submitted_by) "
                           "VALUES (%s, %s, quote_ident(current_user)::regrole)", (iid, node))
        holder.commit()
        holder.execute("SELECT id FROM df.instances WHERE id = ANY(%s) FOR UPDATE", (ids,))
        with running_engine(dsn, concurrency=2, install=False):
            for _ in range(3):
                ok = start(db, BOB, "'SELECT 1 AS ok' ~> 'SELECT 2 AS ok2'")
                assert wait_terminal(db, ok, timeout=60) == "completed", errors(db, ok)
            holder.rollback()
            for iid in ids:
                assert wait_terminal(db, iid, timeout=60) == "completed", errors(db, iid)
    finally:
        holder.close()
