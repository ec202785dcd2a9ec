"""Health views: what waiting instances wait for, stuck steps, queue depth, step rate."""

from __future__ import annotations

from tests.support import ALICE, running_engine, start, wait_for, wait_terminal


def test_waiting_stuck_and_rates(db):
    with running_engine(db.dsn()):
        waiting = start(db, ALICE, "df.wait_for_signal('approve', 3600)")
        slow = start(db, ALICE, "'SELECT pg_sleep(600)'")  # (still running when looked at)
        quick = start(db, ALICE, "'SELECT 1'")
        assert wait_terminal(db, quick) == "completed"
        with db.connect(ALICE) as conn:
            rows = wait_for(lambda: conn.execute(
                "SELECT waiting_for, detail, deadline IS NOT NULL FROM df.waiting_instances "
                "WHERE instance_id = %s", (waiting,)).fetchall(), what="signal wait listed")
            assert rows == [("signal", "approve", True)]
            conn.execute("SET pg_durable.stuck_after = '1 second'")
            stuck = wait_for(lambda: conn.execute(
                "SELECT reason FROM df.stuck_instances WHERE instance_id = %s", (slow,)).fetchall(),
                what="slow step reported as stuck")
            assert stuck[0][0].startswith("step running since")
            assert conn.execute("SELECT sum(steps) FROM df.step_rate").fetchone()[0] >= 1
            assert conn.execute("SELECT waiting FROM df.queue_depth").fetchone()[0] >= 1
        with db.connect("dftui_bob") as conn:  # another role sees none of it
            assert conn.execute("SELECT count(*) FROM df.waiting_instances").fetchone()[0] == 0
            assert conn.execute("SELECT count(*) FROM df.step_rate").fetchone()[0] == 0
        with db.connect(ALICE) as conn:
            conn.execute("SELECT df.cancel(%s)", (slow,))
        assert wait_terminal(db, slow) == "cancelled"


def test_a_step_executing_now_is_not_counted_as_ready(db):
    """A due task stays in the queue while a worker runs it (until its batch commits): the queue
    depth counts it as running, not ready, so a long step does not read as ready work waiting
    longer and longer for a worker (the home screen's "1 ready (oldest 9m)")."""
    from dftui.client import Client

    with running_engine(db.dsn()):
        busy = start(db, ALICE, "'SELECT pg_sleep(600)'")  # (cancelled below)

        def executing() -> bool:
            with db.connect(ALICE) as conn:
                return conn.execute("SELECT running FROM df.queue_depth").fetchone()[0] == 1

        wait_for(executing, what="the step seen executing")
        with db.connect(ALICE) as conn:
            runnable, oldest = conn.execute(
                "SELECT runnable, oldest_due FROM df.queue_depth").fetchone()
        assert (runnable, oldest) == (0, None)
        with Client(db.dsn(ALICE)) as client:
            line = client.health_line()
        assert (line["runnable"], line["oldest_s"]) == (0, None)
        with db.connect("dftui_bob") as conn:  # another role's running step is not shown
            assert conn.execute("SELECT running FROM df.queue_depth").fetchone()[0] == 0
        with db.connect(ALICE) as conn:
            conn.execute("SELECT df.cancel(%s)", (busy,))
        assert wait_terminal(db, busy) == "cancelled"
