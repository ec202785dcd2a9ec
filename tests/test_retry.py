"""df.retry and retry policies inside JOIN, LOOP and RACE; retrying cancelled instances."""

from __future__ import annotations

import pytest

from tests.support import (
    ALICE,
    node_rows,
    root_result,
    start,
    wait_for,
    wait_terminal,
)


@pytest.fixture
def gated_engine(db, live_engine):
    """The shared engine, with public.gate (closed) and public.runs for steps to record runs."""
    with db.connect() as conn:
        conn.execute("CREATE TABLE public.gate (ok boolean NOT NULL DEFAULT false)")
        conn.execute("INSERT INTO public.gate VALUES (false)")
        conn.execute("CREATE TABLE public.runs (step text, n int NOT NULL DEFAULT 0, PRIMARY KEY (step))")
        conn.execute("GRANT ALL ON public.gate, public.runs TO PUBLIC")
    yield live_engine


def bump(step: str) -> str:
    return (f"'INSERT INTO public.runs VALUES (''{step}'', 1) "
            f"ON CONFLICT (step) DO UPDATE SET n = runs.n + 1 RETURNING n'")


GATE = "'SELECT 1 / (CASE WHEN ok THEN 1 ELSE 0 END) AS g FROM public.gate'"


def runs(db) -> dict[str, int]:
    with db.connect() as conn:
        return dict(conn.execute("SELECT step, n FROM public.runs").fetchall())


def open_gate_and_retry(db, iid: str, role: str = ALICE, from_node: str | None = None) -> None:
    with db.connect() as conn:
        conn.execute("UPDATE public.gate SET ok = true")
    with db.connect(role) as conn:
        if from_node:
            conn.execute("SELECT df.retry(%s, %s)", (iid, from_node))
        else:
            conn.execute("SELECT df.retry(%s)", (iid,))


def test_retry_failed_join_branch_keeps_the_completed_one(db, gated_engine):
    iid = start(db, ALICE, f"({bump('a')} & ({bump('b')} ~> {GATE})) ~> {bump('after')}")
    assert wait_terminal(db, iid) == "failed"
    assert runs(db) == {"a": 1, "b": 1}
    open_gate_and_retry(db, iid)
    assert wait_terminal(db, iid) == "completed"
    assert runs(db) == {"a": 1, "b": 1, "after": 1}


def test_retry_inside_loop_resumes_the_iteration(db, gated_engine):
    iid = start(db, ALICE, f"""@> ({bump('body')} |=> 'c' ~> {GATE} ~>
        ('SELECT $c >= 2' ?> df.break('"out"') !> 'SELECT 1'))""")
    assert wait_terminal(db, iid) == "failed"
    assert runs(db) == {"body": 1}
    open_gate_and_retry(db, iid)
    assert wait_terminal(db, iid, 60) == "completed"
    assert root_result(db, iid) == "out"
    assert runs(db) == {"body": 2}


def test_retry_failed_race(db, gated_engine):
    iid = start(db, ALICE, f"{GATE} | 'SELECT pg_sleep(30)'")
    assert wait_terminal(db, iid) == "failed"
    open_gate_and_retry(db, iid)
    assert wait_terminal(db, iid) == "completed"
    assert root_result(db, iid)["rows"] == [{"g": 1}]


def test_retry_cancelled_instance(db, gated_engine):
    iid = start(db, ALICE, f"{bump('first')} ~> df.sleep(3600) ~> {bump('last')}")
    wait_for(lambda: runs(db).get("first") == 1, what="first step")
    with db.connect(ALICE) as conn:
        conn.execute("SELECT df.cancel(%s)", (iid,))
    assert wait_terminal(db, iid) == "cancelled"
    with db.connect(ALICE) as conn:
        assert conn.execute("SELECT df.retry(%s)", (iid,)).fetchone()[0] == "running"
    assert db.scalar("SELECT status FROM df.instances WHERE id = %s", (iid,)) == "running"
    assert db.scalar("SELECT count(*) FROM df_internal.retries WHERE instance_id = %s", (iid,)) == 1
    assert runs(db) == {"first": 1}


def test_retry_from_node_reruns_it(db, gated_engine):
    iid = start(db, ALICE, f"{bump('one')} ~> {bump('two')} ~> {GATE}")
    assert wait_terminal(db, iid) == "failed"
    two = next(n["id"] for n in node_rows(db, iid) if (n["query"] or "").find("'two'") > 0)
    open_gate_and_retry(db, iid, from_node=two)
    assert wait_terminal(db, iid) == "completed"
    assert runs(db) == {"one": 1, "two": 2}


def test_completed_instances_cannot_be_retried_and_others_are_invisible(db, gated_engine):
    iid = start(db, ALICE, "'SELECT 1'")
    assert wait_terminal(db, iid) == "completed"
    with db.connect(ALICE) as conn, pytest.raises(Exception, match="completed"):
        conn.execute("SELECT df.retry(%s)", (iid,))
    failed = start(db, ALICE, GATE)
    assert wait_terminal(db, failed) == "failed"
    with db.connect("dftui_bob") as conn, pytest.raises(Exception, match="not found or access denied"):
        conn.execute("SELECT df.retry(%s)", (failed,))
    assert db.scalar("SELECT status FROM df.instances WHERE id = %s", (failed,)) == "failed"


def test_instance_level_retry_policy(db, gated_engine):
    with db.connect() as conn:
        conn.execute("CREATE SEQUENCE public.s")
        conn.execute("GRANT ALL ON SEQUENCE public.s TO PUBLIC")
        conn.execute("""CREATE FUNCTION public.once_broken() RETURNS int LANGUAGE plpgsql AS $$
            BEGIN IF nextval('public.s') < 2 THEN RETURN 1 / 0; END IF; RETURN 1; END $$""")
    policy = '{"max_attempts": 3, "backoff_seconds": 0.1, "retry_on": ["22012"]}'
    with db.connect(ALICE) as conn:  # df.start keeps pg_durable's signature; this is its twin
        iid = conn.execute("SELECT df.start_with_retry('SELECT public.once_broken() AS v', %s::jsonb)",
                           (policy,)).fetchone()[0]
    assert wait_terminal(db, iid) == "completed", node_rows(db, iid)
    assert db.scalar("SELECT count(*) FROM df_internal.node_attempts "
                     "WHERE instance_id = %s AND status = 'retrying'", (iid,)) == 1
    # Without a policy the same failure is final.
    iid2 = start(db, ALICE, "'SELECT 1 / 0'")
    assert wait_terminal(db, iid2) == "failed"
