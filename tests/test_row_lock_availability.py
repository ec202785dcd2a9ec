"""Row locks on df.instances stall nobody's work (issue 13, availability).

pg_durable grants UPDATE (status, updated_at) on df.instances, so every df role may row-lock its
instance rows, and a role that skips RLS (BYPASSRLS, common on managed services) may lock
anyone's. No trigger fires on a row lock. Here alice, with BYPASSRLS, holds a lock on bob's
instance row in an open transaction for the whole test, in each lock mode, and bob's work must go
on: his instance starts, runs and finishes (df.status / df.await_instance / df.result tell him
so), his df.signal and df.cancel take effect at once, and once alice lets go the row itself
catches up. What she may not do either way: act on bob's instance through the request path.

Every wait on bob's side is bounded by a statement_timeout on his session (a stall fails the
test instead of hanging it); no timing assertions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg
import pytest

from tests.support import (
    ALICE,
    BOB,
    engine_in_mode,
    errors,
    running_engine,
    setup_engine_owner,
    start,
    wait_for,
)

LOCK_MODES = ["FOR UPDATE", "FOR NO KEY UPDATE", "FOR SHARE", "FOR KEY SHARE"]

# Bob never waits longer than this for anything; a stall turns into QueryCanceled.
BOB_STATEMENT_TIMEOUT = "20s"


@contextlib.contextmanager
def bypassrls(db, role: str) -> Iterator[None]:
    with db.connect() as conn:
        conn.execute(f"ALTER ROLE {role} BYPASSRLS")
    try:
        yield
    finally:
        with db.connect() as conn:
            conn.execute(f"ALTER ROLE {role} NOBYPASSRLS")


@contextlib.contextmanager
def held_row(db, instance_id: str, lock: str) -> Iterator[psycopg.Connection]:
    """Alice (BYPASSRLS) holds `lock` on bob's instance row until the block ends."""
    with bypassrls(db, ALICE), db.connect(ALICE, autocommit=False) as hog:
        row = hog.execute(f"SELECT id FROM df.instances WHERE id = %s {lock}", (instance_id,)).fetchone()
        assert row is not None, "alice (BYPASSRLS) must see bob's row to lock it"
        try:
            yield hog
        finally:
            hog.rollback()


def bob_session(db) -> psycopg.Connection:
    conn = db.connect(BOB)
    conn.execute(f"SET statement_timeout = '{BOB_STATEMENT_TIMEOUT}'")
    return conn


def row_status(db, instance_id: str) -> str:
    return db.scalar("SELECT status FROM df.instances WHERE id = %s", (instance_id,))


def lock_is_held(db, instance_id: str) -> bool:
    """Is bob's row really locked by someone (a FOR UPDATE NOWAIT probe as the superuser)?"""
    with db.connect(autocommit=False) as probe:
        try:
            probe.execute("SELECT 1 FROM df.instances WHERE id = %s FOR UPDATE NOWAIT", (instance_id,))
            return False
        except psycopg.errors.LockNotAvailable:
            return True
        finally:
            probe.rollback()


@pytest.mark.parametrize("lock", LOCK_MODES)
def test_a_held_row_does_not_stop_another_roles_instance(db, mode, lock):
    """Alice locks bob's just-started instance before any engine took it up, and keeps the lock
    while it starts, runs three steps and finishes. Bob's df.await_instance returns 'completed',
    df.status and df.result agree; the row is published when she lets go."""
    # started before any engine runs, so the lock is there before the instance is taken up
    victim = start(db, BOB, "'SELECT 1 AS a' ~> 'SELECT pg_sleep(0.3), 2 AS b' ~> 'SELECT 3 AS c'")
    # The least-privilege hand-over (ALTER TABLE ... OWNER) waits for every lock on the table,
    # so it is made before alice takes hers; the engine then starts without installing.
    if mode == "owner":
        dsn, install = setup_engine_owner(db), False
    else:
        dsn, install = db.dsn(), True
    with held_row(db, victim, lock), running_engine(dsn, install=install, concurrency=2):
        with bob_session(db) as bob:
            assert bob.execute("SELECT df.await_instance(%s, 60)", (victim,)).fetchone()[0] == "completed", \
                errors(db, victim)
            assert bob.execute("SELECT df.status(%s)", (victim,)).fetchone()[0] == "completed"
            assert '"c": 3' in bob.execute("SELECT df.result(%s)", (victim,)).fetchone()[0]
            info = bob.execute("SELECT status FROM df.instance_info(%s)", (victim,)).fetchone()
            assert info == ("completed",)
        if lock in ("FOR UPDATE", "FOR NO KEY UPDATE"):
            # the engine really could not write the row: it is published later
            assert lock_is_held(db, victim)
            assert row_status(db, victim) == "pending"
    with engine_in_mode(db, mode, concurrency=2):
        wait_for(lambda: row_status(db, victim) == "completed", 30, what="the row to be published")
        assert db.scalar("SELECT unpublished_status FROM df_internal.instance_state WHERE instance_id = %s",
                         (victim,)) is None


@pytest.mark.parametrize("lock", ["FOR UPDATE", "FOR KEY SHARE"])
def test_a_held_row_does_not_stop_its_owners_signal(db, mode, lock):
    """Bob's instance waits for a signal while alice holds its row: bob's df.signal returns at
    once (it never waits for her) and the instance goes on to complete."""
    with engine_in_mode(db, mode, concurrency=2):
        victim = start(db, BOB, "df.wait_for_signal('go') ~> 'SELECT 1 AS after'")
        wait_for(lambda: db.scalar("SELECT phase FROM df_internal.tasks WHERE instance_id = %s",
                                   (victim,)) == "waiting", what="bob's signal wait to park")
        with held_row(db, victim, lock), bob_session(db) as bob:
            assert bob.execute("SELECT df.signal(%s, 'go', '{\"n\": 1}')", (victim,)).fetchone()[0] == "OK"
            assert bob.execute("SELECT df.await_instance(%s, 60)", (victim,)).fetchone()[0] == "completed", \
                errors(db, victim)
            assert db.scalar("SELECT sent_by::text FROM df_internal.signals WHERE instance_id = %s",
                             (victim,)) == BOB
        wait_for(lambda: row_status(db, victim) == "completed", 30, what="the row to be published")


def test_a_held_row_does_not_stop_its_owners_cancel(db, mode):
    """Bob cancels his long-running instance while alice holds its row FOR UPDATE: df.cancel
    answers as pg_durable does, the running step is stopped (the worker is free again: his next
    instance completes on a one-worker engine), and the reason and canceller are bob's — also
    after the row is published (publishing must not record the cancel a second time)."""
    with engine_in_mode(db, mode, concurrency=1):
        victim = start(db, BOB, "'SELECT pg_sleep(600) AS long' ~> 'SELECT 1 AS never'")
        wait_for(lambda: db.scalar("SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s "
                                   "AND state = 'active' AND pid <> pg_backend_pid()",
                                   ("%pg_sleep(600)%",)), what="bob's long step to run")
        with held_row(db, victim, "FOR UPDATE"), bob_session(db) as bob:
            answer = bob.execute("SELECT df.cancel(%s, 'bob stops it')", (victim,)).fetchone()[0]
            assert answer == f"Instance {victim} cancelled: bob stops it"
            assert bob.execute("SELECT df.status(%s)", (victim,)).fetchone()[0] == "cancelled"
            assert bob.execute("SELECT df.cancel(%s)", (victim,)).fetchone()[0] == "already cancelled"
            nxt = start(db, BOB, "'SELECT 7 AS seven'")
            assert bob.execute("SELECT df.await_instance(%s, 60)", (nxt,)).fetchone()[0] == "completed"
        wait_for(lambda: row_status(db, victim) == "cancelled", 30, what="the cancel to be published")
        state = db.scalar("SELECT ROW(cancel_reason, cancelled_by::text)::text FROM df_internal.instance_state "
                          "WHERE instance_id = %s", (victim,))
        assert state == f"(\"bob stops it\",{BOB})"
        assert db.scalar("SELECT count(*) FROM df.nodes WHERE instance_id = %s AND status = 'completed'",
                         (victim,)) == 0


def test_the_request_path_acts_for_the_owner_only(db, mode):
    """The way around a held row is no way in: with bob's row held by another session, alice
    (BYPASSRLS) cannot cancel or signal it through df.cancel / df.signal or by filing the request
    herself, and carol (no BYPASSRLS) cannot see it at all. Bob's instance completes untouched."""
    with engine_in_mode(db, mode, concurrency=2):
        victim = start(db, BOB, "df.wait_for_signal('go') ~> 'SELECT 1 AS after'")
        wait_for(lambda: db.scalar("SELECT phase FROM df_internal.tasks WHERE instance_id = %s",
                                   (victim,)) == "waiting", what="bob's signal wait to park")
        with held_row(db, victim, "FOR UPDATE"), bypassrls(db, ALICE), db.connect(ALICE) as alice:
            for stmt in ("SELECT df.cancel(%s)", "SELECT df.signal(%s, 'go')",
                         "SELECT df._file_instance_request(%s, 'cancel', 'x', NULL, NULL)",
                         "SELECT df._file_instance_request(%s, 'signal', NULL, 'go', '{}')"):
                with pytest.raises(psycopg.Error) as caught:
                    alice.execute(stmt, (victim,))
                assert "Instance not found or access denied" in str(caught.value), stmt
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                alice.execute("INSERT INTO df_internal.instance_requests (instance_id, op) VALUES (%s, 'cancel')",
                              (victim,))
        assert db.scalar("SELECT count(*) FROM df_internal.signals WHERE instance_id = %s", (victim,)) == 0
        assert db.scalar("SELECT count(*) FROM df_internal.instance_requests") == 0
        assert db.scalar("SELECT cancelled_by FROM df_internal.instance_state WHERE instance_id = %s",
                         (victim,)) is None
        with bob_session(db) as bob:
            bob.execute("SELECT df.signal(%s, 'go')", (victim,))
            assert bob.execute("SELECT df.await_instance(%s, 60)", (victim,)).fetchone()[0] == "completed"


def test_retry_of_a_held_row_says_so_and_changes_nothing(db, mode):
    """A retry starts a new execution on the row itself: while another session holds it, bob's
    df.retry fails at once with a clear error (never waits) and nothing is retried; after the
    lock is gone the retry works."""
    with engine_in_mode(db, mode, concurrency=2):
        failed = start(db, BOB, "'SELECT 1/0 AS boom'")
        wait_for(lambda: row_status(db, failed) == "failed", what="bob's instance to fail")
        with held_row(db, failed, "FOR UPDATE"), bob_session(db) as bob:
            with pytest.raises(psycopg.errors.LockNotAvailable) as caught:
                bob.execute("SELECT df.retry(%s)", (failed,))
            assert "locked by another session; nothing was retried" in str(caught.value)
        assert db.scalar("SELECT count(*) FROM df_internal.retries WHERE instance_id = %s", (failed,)) == 0
        assert row_status(db, failed) == "failed"
        with bob_session(db) as bob:
            assert bob.execute("SELECT df.retry(%s)", (failed,)).fetchone()[0] == "running"


def test_engine_tables_do_not_reference_the_lockable_row(db):
    """Every insert the engine makes for a running instance (a task, an attempt, a signal, a loop
    iteration, a named result, a retry) used to check a foreign key to df.instances, which takes
    FOR KEY SHARE on the row, which FOR UPDATE blocks, and so did every second write of a row
    in one transaction (a node, the instance's state). No foreign key references df.instances now
    (its own key to its root node is checked only when the row itself is written)."""
    referencing = db.scalar("SELECT array_agg(conrelid::regclass::text ORDER BY 1) FROM pg_constraint "
                            "WHERE contype = 'f' AND confrelid = 'df.instances'::regclass")
    assert referencing is None, referencing
