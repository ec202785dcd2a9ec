"""Leaks (issue 13, "no role can watch another's work"): what a granted role can learn of other
roles' activity from what it may read, and what it can do with what it learns.
"""

from __future__ import annotations

import psycopg
import pytest

from tests.support import (
    ALICE,
    BOB,
    ENGINE_ROLE,
    engine_in_mode,
    errors,
    start,
    wait_for,
    wait_terminal,
)


def test_engine_step_counters_are_for_administrators_only(db, mode):
    """df.engines.steps_done counts every role's steps per engine: a role polling it saw when and
    how much other roles ran. It is NULL for ordinary roles now (their own throughput is
    df.step_rate, their own steps only); administrators and the engine's role still see it."""
    with engine_in_mode(db, mode, concurrency=2, heartbeat_interval=0.5):
        theirs = start(db, BOB, "'SELECT 1 AS a' ~> 'SELECT 2 AS b' ~> 'SELECT 3 AS c'")
        assert wait_terminal(db, theirs) == "completed", errors(db, theirs)
        wait_for(lambda: (db.scalar("SELECT sum(steps_done) FROM df.engines") or 0) >= 3, 60,
                 what="the engine's heartbeat to publish its step count")
        admin = ENGINE_ROLE if mode == "owner" else None
        assert (db.scalar("SELECT sum(steps_done) FROM df.engines", role=admin) or 0) >= 3
        with db.connect(ALICE) as conn:
            rows = conn.execute("SELECT id, state, steps_done FROM df.engines").fetchall()
            assert rows and all(r[1] == "alive" for r in rows), rows
            assert [r[2] for r in rows] == [None] * len(rows), rows
            # her own view of throughput shows none of bob's steps
            assert conn.execute("SELECT COALESCE(sum(steps), 0) FROM df.step_rate").fetchone()[0] == 0


def test_a_probed_instance_id_gives_nothing_but_its_existence(db):
    """pg_durable grants INSERT (id, …) on df.instances, so a role can learn whether an id is
    taken through the shared primary key (a conflict) — a residual of pg_durable's grants
    (docs/security.md): ids are random 32-bit values, and nothing but existence follows from
    one. Every route from a known id: ON CONFLICT DO UPDATE (on every column she may update),
    DO NOTHING RETURNING, and node rows keyed by it, changes and returns nothing of bob's."""
    victim = start(db, BOB, "'SELECT 42 AS secret'")
    before = db.scalar("SELECT to_jsonb(i) FROM df.instances i WHERE id = %s", (victim,))
    node = db.scalar("SELECT root_node FROM df.instances WHERE id = %s", (victim,))
    with db.connect(ALICE) as conn:
        insert = ("INSERT INTO df.instances (id, root_node, submitted_by) "
                  "VALUES (%s, 'x0000000', quote_ident(current_user)::regrole) ")
        assert conn.execute(insert + "ON CONFLICT DO NOTHING RETURNING *", (victim,)).fetchall() == []
        for update in ("status = 'cancelled'", "updated_at = now()",
                       "status = excluded.status"):
            with pytest.raises(psycopg.Error) as refused:
                conn.execute(insert + f"ON CONFLICT (id) DO UPDATE SET {update} RETURNING *", (victim,))
            assert "42" not in str(refused.value)
        with pytest.raises(psycopg.Error):
            conn.execute("INSERT INTO df.nodes (id, instance_id, node_type, query, submitted_by) "
                         "VALUES (%s, %s, 'SQL', 'SELECT 1', quote_ident(current_user)::regrole) "
                         "ON CONFLICT (instance_id, id) DO UPDATE SET query = 'SELECT 666' RETURNING *",
                         (node, victim))
        with conn.transaction(force_rollback=True):
            # (a node of her own keyed by bob's instance id: refused at commit, as for any id)
            conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
            with pytest.raises(psycopg.errors.ForeignKeyViolation):
                conn.execute("INSERT INTO df.nodes (id, instance_id, node_type, query, submitted_by) "
                             "VALUES ('y0000000', %s, 'SQL', 'SELECT 1', quote_ident(current_user)::regrole)",
                             (victim,))
    assert db.scalar("SELECT to_jsonb(i) FROM df.instances i WHERE id = %s", (victim,)) == before
    assert db.scalar("SELECT query FROM df.nodes WHERE instance_id = %s AND id = %s", (victim, node)) \
        == "SELECT 42 AS secret"
