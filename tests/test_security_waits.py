"""Availability, round five (issue 13, class 7): nothing the engine does may wait for a lock a
role holds, and the per-role cap must hold for any number of roles.

A granted role can lock its own df.instances rows in every mode that blocks the engine
(SELECT … FOR UPDATE / FOR SHARE: UPDATE(status) is granted, as in pg_durable), in an idle open
transaction, for as long as it likes. Such a lock may delay that role's own work, never another
role's. Each test fails if its route works, in both engine modes (`mode`).
"""

from __future__ import annotations

import threading

import psycopg
import pytest

from engine import schema
from tests.support import (
    ALICE,
    BOB,
    ENGINE_ROLE,
    errors,
    running_engine,
    setup_engine_owner,
    start,
    wait_for,
    wait_terminal,
)


def _engine_dsn(db, mode: str) -> str:
    # (the owner-mode setup re-owns the tables: done before anyone holds a row lock on them)
    return setup_engine_owner(db) if mode == "owner" else db.dsn()


def _engine_conn(db, mode: str) -> psycopg.Connection:
    """A session as the engine's own role (what a claim or housekeeping runs as)."""
    return db.connect(ENGINE_ROLE if mode == "owner" else None)


def test_the_claim_never_waits_for_a_row_lock_on_a_refused_instance(db, mode, mallory):
    """mallory (BYPASSRLS with table-wide UPDATE, as managed-service admin roles have) rewrites
    submitted_by of her own fresh instances — allowed, as in pg_durable; the engine then fails
    them in the claim — and holds FOR UPDATE on them. Failing them writes the instance row: the
    claim (which has no lock_timeout) waited for her for ever, one worker per instance, so two
    such instances froze both workers (her cap raised to 4 by an administrator; with the
    default cap, every worker but one) and bob's work never ran. The claim now postpones such a
    task instead of waiting; once she lets go, her instances fail as before."""
    dsn = _engine_dsn(db, mode)
    with db.connect() as conn:  # (her cap alone would keep her to one of the two workers)
        conn.execute("SELECT df.set_role_limits(%s, max_running => 4)", (mallory,))
    with db.connect(mallory, autocommit=False) as hog:
        ids = []
        for _ in range(3):
            iid = hog.execute("SELECT df.start('SELECT 1 AS x')").fetchone()[0]
            hog.execute("UPDATE df.instances SET submitted_by = %s::regrole WHERE id = %s", (ALICE, iid))
            hog.execute("UPDATE df.nodes SET submitted_by = %s::regrole WHERE instance_id = %s",
                        (ALICE, iid))
            ids.append(iid)
        hog.commit()
        assert len(hog.execute("SELECT id FROM df.instances WHERE id = ANY(%s) FOR UPDATE",
                               (ids,)).fetchall()) == 3
        with running_engine(dsn, concurrency=2, install=False):
            for _ in range(2):
                ok = start(db, BOB, "'SELECT 1 AS ok' ~> 'SELECT 2 AS ok2'")
                assert wait_terminal(db, ok, timeout=60) == "completed", errors(db, ok)
            hog.rollback()
            for iid in ids:
                assert wait_terminal(db, iid, timeout=60) == "failed", errors(db, iid)
    assert db.scalar("SELECT count(*) FROM df.nodes WHERE instance_id = ANY(%s) AND status = 'completed'",
                     (ids,)) == 0


def _hand_made(conn: psycopg.Connection, iid: str) -> None:
    """A one-step instance inserted by hand (no df.start): the engine's claim starts it."""
    node = iid[:7] + "n"
    with conn.transaction():
        _hand_made_rows(conn, iid, node)


def _hand_made_rows(conn: psycopg.Connection, iid: str, node: str) -> None:
    conn.execute("INSERT INTO df.nodes (id, instance_id, node_type, query, submitted_by) "
                 "VALUES (%s, %s, 'SQL', 'SELECT 1 AS x', quote_ident(current_user)::regrole)", (node, iid))
    conn.execute("INSERT INTO df.instances (id, root_node, submitted_by) "
                 "VALUES (%s, %s, quote_ident(current_user)::regrole)", (iid, node))


def test_many_held_hand_made_instances_do_not_hold_the_claim(db, mode):
    """alice inserts 90 instances by hand (the grants allow it; the claim starts them) and holds
    FOR UPDATE on every one. Each start waited lock_timeout (2 s) for her lock, and one claim
    went through every start task in its window before reaching anything else: bob's
    instance, queued after hers, waited 90 × 2 s / 2 workers. The start is now postponed
    without waiting (df_internal.try_lock_instance), and a claim processes at most as many
    starts as it may take tasks."""
    dsn = _engine_dsn(db, mode)
    ids = [f"{i:07x}a" for i in range(90)]
    with db.connect(ALICE, autocommit=False) as hog:
        for iid in ids:
            _hand_made(hog, iid)
        hog.commit()
        assert len(hog.execute("SELECT id FROM df.instances WHERE id = ANY(%s) FOR UPDATE",
                               (ids,)).fetchall()) == 90
        victim = start(db, BOB, "'SELECT 1 AS ok'")
        with running_engine(dsn, concurrency=2, install=False):
            assert wait_terminal(db, victim, timeout=60) == "completed", errors(db, victim)
            assert db.scalar("SELECT count(*) FROM df.instances WHERE id = ANY(%s) AND status = 'pending'",
                             (ids,)) == 90
            hog.rollback()
            for iid in ids[:3]:
                assert wait_terminal(db, iid, timeout=60) == "completed", errors(db, iid)


def _claim(conn: psycopg.Connection, limit: int = 1) -> list[tuple]:
    """One claim, as an engine's worker makes it (rolled back: nothing is run)."""
    level = conn.execute("SELECT df_internal.schema_level()").fetchone()[0]
    with conn.transaction(force_rollback=True):
        return conn.execute("SELECT instance_id, kind, submitted_by::text FROM "
                            "df_internal.claim_tasks(%s, 'test-engine', %s, 0, 1)",
                            (level, limit)).fetchall()


@pytest.mark.parametrize("colluders", [5, 8])
def test_any_number_of_roles_at_their_cap_cannot_hide_another_roles_task(db, mode, granted_roles,
                                                                         colluders):
    """Roles at their running-step cap are left out of the claim's scan. The claim found them one
    at a time and restarted its scan for each, at most 4 times: with 5 or more colluding roles
    at their caps (their steps running, here their slots held as those steps' claims hold
    them), the fifth one's backlog of 1,100 tasks filled the claim's 1,000-row window and bob's
    task behind it was never claimed. The scan now restarts for every capped role it finds,
    from where it stopped (bounded: a capped role holds a worker's slot)."""
    _engine_dsn(db, mode)
    roles = granted_roles(colluders)
    with db.connect() as conn:
        for role in roles:
            conn.execute("SELECT df.set_role_limits(%s, max_running => 1)", (role,))
    for role in roles[:-1]:
        start(db, role, "'SELECT 1 AS queued'")
    with db.connect(roles[-1]) as conn:
        conn.execute("SELECT df.start('SELECT 1 AS flood') FROM generate_series(1, 1100)")
    victim = start(db, BOB, "'SELECT 1 AS mine'")
    with db.connect(autocommit=False) as running:
        # every colluder's one slot is held: each has a step running (on some engine)
        held = running.execute(
            "SELECT count(*) FROM (SELECT 1 FROM df_internal.role_slots "
            "WHERE role_oid = ANY(SELECT oid FROM pg_roles WHERE rolname = ANY(%s)) AND slot = 0 "
            "FOR UPDATE) s", (roles,)).fetchone()[0]
        assert held == colluders
        with _engine_conn(db, mode) as eng:
            taken = _claim(eng)
        running.rollback()
    assert [(t[0], t[1]) for t in taken] == [(victim, "run")], taken


def test_a_capped_role_cannot_occupy_workers_by_starting_hand_made_instances(db, mode):
    """The start of a hand-made instance runs in the claim (its graph, up to 10,000 nodes, is
    validated and activated there): work that occupies a worker, like a step. It did not count
    against the role's cap, so a role at its cap could keep every worker busy starting
    hand-made instances. It counts now: with alice's slots held, a claim leaves her start task
    and takes bob's task."""
    _engine_dsn(db, mode)
    with db.connect() as conn:
        conn.execute("SELECT df.set_role_limits(%s, max_running => 1)", (ALICE,))
    with db.connect(ALICE) as conn:
        _hand_made(conn, "0a11ce0a")
    victim = start(db, BOB, "'SELECT 1 AS mine'")
    with db.connect(autocommit=False) as running:
        running.execute("SELECT 1 FROM df_internal.role_slots WHERE role_oid = %s::regrole::oid "
                        "AND slot = 0 FOR UPDATE", (ALICE,))
        with _engine_conn(db, mode) as eng:
            taken = _claim(eng)
        running.rollback()
    assert [(t[0], t[1]) for t in taken] == [(victim, "run")], taken
    with _engine_conn(db, mode) as eng:  # her slot free again: her start is taken
        assert [(t[0], t[1]) for t in _claim(eng)] == [("0a11ce0a", "started")]


def test_the_reaper_never_waits_for_a_roles_row_lock(db, mode):
    """A dead engine's journal lists a task of alice's and one of bob's, each running alone at
    its last allowed fault. Charging alice's fails her instance, whose row she holds FOR UPDATE:
    reap_inflight once waited, timed out and rolled back everything, on every heartbeat — bob's
    task was never charged (a task that kills every engine would run for ever) and the
    housekeeping after it never ran. Now both are charged at once: her instance's failure is
    kept unpublished (df.status tells her 'failed') and goes into her row once she lets go."""
    _engine_dsn(db, mode)
    mine = start(db, ALICE, "'SELECT 1 AS a'")
    theirs = start(db, BOB, "'SELECT 2 AS b'")
    with db.connect() as conn:
        rows = conn.execute("SELECT instance_id, node_id, gen FROM df_internal.tasks "
                            "WHERE instance_id = ANY(%s) ORDER BY instance_id = %s DESC",
                            ([mine, theirs], mine)).fetchall()
        assert len(rows) == 2
        for worker, (iid, node, gen) in enumerate(rows):
            # (pid 0 is never a live backend: this engine's session is gone)
            conn.execute("INSERT INTO df_internal.inflight (engine_id, worker, backend_pid, "
                         "backend_start, instance_ids, node_ids, gens) "
                         "VALUES ('dead-engine', %s, 0, now(), %s, %s, %s)", (worker, [iid], [node], [gen]))
    with db.connect(ALICE, autocommit=False) as hog:
        assert hog.execute("SELECT id FROM df.instances WHERE id = %s FOR UPDATE", (mine,)).fetchone()
        with _engine_conn(db, mode) as eng:
            eng.execute("SET lock_timeout = '10s'")  # a wait for her lock fails the test
            assert eng.execute("SELECT df_internal.reap_inflight(1)").fetchone()[0] == 2
        assert db.scalar("SELECT status FROM df.instances WHERE id = %s", (theirs,)) == "failed"
        assert "engine process running this step stopped" in errors(db, theirs)
        assert db.scalar("SELECT df.status(%s)", (mine,)) == "failed"
        assert db.scalar("SELECT status FROM df.instances WHERE id = %s", (mine,)) == "pending"  # still held
        assert db.scalar("SELECT count(*) FROM df_internal.inflight") == 0
        hog.rollback()
    with _engine_conn(db, mode) as eng:
        assert eng.execute("SELECT df_internal.publish_unpublished()").fetchone()[0] == 1
    assert db.scalar("SELECT status FROM df.instances WHERE id = %s", (mine,)) == "failed"
    assert "engine process running this step stopped" in errors(db, mine)


def test_an_upgrade_held_up_by_an_open_transaction_names_it_and_changes_nothing(db):
    """Any session that read a df view in a transaction it keeps open holds a lock that the
    upgrade's CREATE OR REPLACE VIEW must wait for. The upgrade waits a bounded time (while it
    waits, every new reader of that view queues behind it), then fails as one transaction:
    nothing changed, and the message names the session to end. Once it ends, the upgrade goes
    through."""
    with db.connect() as conn:  # (routines changed: the upgrade re-creates every view)
        conn.execute("UPDATE df_internal.schema_routines SET checksum = 'stale'")
    with db.connect(ALICE, autocommit=False) as idle:
        idle.execute("SELECT count(*) FROM df.engines")
        with db.connect() as conn, pytest.raises(schema.SchemaError) as failed:
            schema.install(conn)
        message = str(failed.value)
        for part in (f"pid {idle.info.backend_pid}", f"role {ALICE}", "df.engines", "nothing changed"):
            assert part in message, message
        assert db.scalar("SELECT checksum FROM df_internal.schema_routines") == "stale"
        idle.rollback()
    with db.connect() as conn:
        schema.install(conn)
    assert db.scalar("SELECT checksum FROM df_internal.schema_routines") != "stale"


def test_the_pending_limit_holds_for_concurrent_starts(db):
    """bob's limit is one live instance. His first df.start is not committed yet when a second
    session of his calls df.start: that one counted only committed instances and got in too
    (six open transactions all got past a limit of 2). Admissions of one role are serialised
    now: the second waits for the first to end, then is refused with the limit's message."""
    with db.connect() as conn:
        conn.execute("SELECT df.set_role_limits(%s, max_pending => 1)", (BOB,))
    outcome: list[str] = []
    with db.connect(BOB, autocommit=False) as first, db.connect(BOB) as second:
        first.execute("SELECT df.start('SELECT 1 AS first')")
        pid = second.info.backend_pid

        def start_second() -> None:
            try:
                second.execute("SELECT df.start('SELECT 2 AS second')")
                outcome.append("started")
            except psycopg.errors.ConfigurationLimitExceeded as exc:
                outcome.append(exc.diag.message_primary or "")

        thread = threading.Thread(target=start_second)
        thread.start()
        wait_for(lambda: outcome or db.scalar(
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", (pid,)),
            30, what="the second df.start to finish or wait for the first")
        first.commit()
        thread.join(30)
    assert len(outcome) == 1 and "limit is 1" in outcome[0], outcome
    assert db.scalar("SELECT count(*) FROM df.instances WHERE submitted_by = %s::regrole", (BOB,)) == 1
