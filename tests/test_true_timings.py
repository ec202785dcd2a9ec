"""Every node's start, end and duration are true, and lie within its instance's (issue 15,
defect 5), as the database records them — not only as the console repairs them.

A step, its checkpoint and the claim that took it share one transaction, so `now()` in the
checkpoint is when the *claim* began: a 2-second first step's instance used to finish "434 ms"
after it was created, a node activated by a checkpoint was dated before the step that led to it
ran, and a `df.sleep` after a long step fired at once (its due time counted from the claim).
The bounds asserted are the steps' own `pg_sleep` seconds, lower bounds the recording must
respect whatever the machine's speed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dftui.client import Client
from tests.support import ALICE, running_engine, start, wait_for, wait_terminal


def _runs(db: Any, iid: str) -> dict[str, dict[str, Any]]:
    with db.connect(ALICE) as conn:
        cur = conn.execute("SELECT node_type, started_at, finished_at FROM df.node_runs "
                           "WHERE instance_id = %s", (iid,))
        return {row[0]: {"started_at": row[1], "finished_at": row[2]} for row in cur.fetchall()}


def _instance(db: Any, iid: str) -> dict[str, datetime]:
    with db.connect(ALICE) as conn:
        row = conn.execute(
            "SELECT i.created_at, i.completed_at, i.updated_at, r.started_at, r.finished_at "
            "FROM df.instances i JOIN df.instance_runtime r ON r.instance_id = i.id "
            "WHERE i.id = %s", (iid,)).fetchone()
    return dict(zip(("created_at", "completed_at", "updated_at", "started_at", "finished_at"),
                    row, strict=True))


def _seconds(a: datetime, b: datetime) -> float:
    return (b - a).total_seconds()


def test_a_long_first_step_shows_running_and_its_instance_took_as_long(db) -> None:
    with running_engine(db.dsn()):
        iid = start(db, ALICE, "'SELECT pg_sleep(2) AS slept', 'long-first'")

        def listed() -> Any:
            with Client(db.dsn(ALICE)) as client:
                rows = [r for r in client.list_instances().rows if r.id == iid]
                return rows[0] if rows and rows[0].step_running else None

        row = wait_for(listed, what="the first step to be seen running")
        # df.status keeps pg_durable's word until the first checkpoint; the console says running
        assert row.status == "pending" and row.shown_status == "running"
        with Client(db.dsn(ALICE)) as client:
            detail = client.instance(iid)
        assert detail.status in ("pending", "completed")
        assert detail.status == "completed" or detail.shown_status == "running"
        assert wait_terminal(db, iid) == "completed"
    inst = _instance(db, iid)
    step = _runs(db, iid)["SQL"]
    assert _seconds(step["started_at"], step["finished_at"]) >= 2.0
    # The instance ended when its step did, not when the claim that ran it began.
    assert _seconds(inst["created_at"], inst["completed_at"]) >= 2.0
    assert inst["started_at"] <= step["started_at"]
    assert step["finished_at"] <= inst["finished_at"]
    assert step["finished_at"] <= inst["completed_at"] <= inst["updated_at"]
    with Client(db.dsn(ALICE)) as client:
        row = next(r for r in client.list_instances().rows if r.id == iid)
    assert not row.step_running and row.shown_status == "completed"
    assert row.finished_at is not None and _seconds(row.created_at, row.finished_at) >= 2.0


def test_a_node_activated_by_a_checkpoint_starts_after_the_step_before_it(db) -> None:
    with running_engine(db.dsn()):
        iid = start(db, ALICE, "'SELECT pg_sleep(2) AS slept' ~> df.sleep(2), 'sleep-after-step'")
        assert wait_terminal(db, iid) == "completed"
    runs = _runs(db, iid)
    step, sleep, seq = runs["SQL"], runs["SLEEP"], runs["THEN"]
    # Reached when the step finished (not when its claim began, before the step ran) ...
    assert step["finished_at"] <= sleep["started_at"]
    # ... and it slept its two seconds from there: its due time is not counted from the claim.
    assert _seconds(step["finished_at"], sleep["finished_at"]) >= 2.0
    inst = _instance(db, iid)
    assert _seconds(inst["created_at"], inst["completed_at"]) >= 4.0
    for node in (step, sleep, seq):
        assert inst["started_at"] <= node["started_at"] <= node["finished_at"] <= inst["finished_at"]


def test_a_cancelled_instance_ends_when_it_was_cancelled(db) -> None:
    iid = start(db, ALICE, "df.sleep(600), 'cancel-me'")
    with db.connect(ALICE, autocommit=False) as conn:
        conn.execute("SELECT pg_sleep(1)")  # the cancel's transaction began a second earlier
        conn.execute("SELECT df.cancel(%s, 'no longer needed')", (iid,))
        asked = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        conn.commit()
    inst = _instance(db, iid)
    assert _seconds(inst["finished_at"], asked) >= 0 and _seconds(inst["created_at"], inst["finished_at"]) >= 1.0
    assert _seconds(inst["created_at"], inst["updated_at"]) >= 1.0
