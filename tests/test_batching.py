"""Batched execution: with a backlog, one worker runs many steps in one transaction, each behind
its own savepoint. Every step must still behave exactly as it would alone: effects exactly once,
a failing step undone without disturbing its neighbours, no session state leaking from one
submitter's step to the next, no step failing because of locks its batch holds.

The engine here has a single worker and starts after the backlog is queued, so its claims are
full batches. A finished node's updated_at is now() of the transaction that checkpointed it
(the instance's own updated_at is the moment, clock_timestamp(), since b0abaea; xmin would
name each step's savepoint): one-step instances whose root shares one finished in one
transaction. That is how the tests see that steps really
were batched (a test of batching that never batches would pass vacuously).
"""

from __future__ import annotations

import itertools
import threading

import pytest

from engine.sqltext import returns_no_rows
from tests.support import ALICE, BOB, DAVE, running_engine, wait_for

TERMINAL_COUNT = "SELECT count(*) FROM df.instances WHERE status IN ('completed', 'failed', 'cancelled')"


@pytest.fixture
def counters(db):
    with db.connect() as conn:
        conn.execute("CREATE TABLE public.counter (id int PRIMARY KEY, n int NOT NULL DEFAULT 0)")
        conn.execute("INSERT INTO public.counter SELECT g, 0 FROM generate_series(0, 99) g")
        conn.execute("GRANT ALL ON public.counter TO PUBLIC")
    return db


def enqueue(db, role: str, step_sql: str, count: int) -> None:
    """Start `count` one-step instances; `step_sql` is a format() pattern over the number g."""
    with db.connect(role) as conn:
        conn.execute("SELECT df.start(format(%s, g)) FROM generate_series(0, %s - 1) g",
                     (step_sql, count))


def drain(db, total: int, **engine_options) -> None:
    options = {"concurrency": 1, "batch_size": 16, **engine_options}
    with running_engine(db.dsn(), **options):
        wait_for(lambda: db.scalar(TERMINAL_COUNT) == total, 120, what="the backlog to drain")


def transactions(db) -> int:
    """Distinct transactions that finished the instances (see the module's docstring)."""
    return db.scalar("SELECT count(DISTINCT n.updated_at) FROM df.instances i "
                     "JOIN df.nodes n ON n.instance_id = i.id AND n.id = i.root_node")


def test_backlog_runs_in_batches_exactly_once(counters):
    db = counters
    enqueue(db, ALICE, "UPDATE public.counter SET n = n + 1 WHERE id = %s", 60)
    drain(db, 60)
    assert db.scalar("SELECT count(*) FROM df.instances WHERE status = 'completed'") == 60
    assert db.scalar("SELECT array_agg(DISTINCT n) FROM public.counter WHERE id < 60") == [1]
    assert db.scalar("SELECT count(*) FROM df_internal.node_attempts") == 60
    assert transactions(db) <= 20, "a backlog on one worker should commit many steps at once"


def test_a_failing_step_is_undone_alone_and_recorded(counters):
    db = counters
    # Every fifth step writes, then fails: its write must be undone, its neighbours' kept.
    enqueue(db, ALICE, "DO $$ BEGIN UPDATE public.counter SET n = n + 1 WHERE id = %1$s; "
                       "IF %1$s %% 5 = 0 THEN PERFORM 1 / 0; END IF; END $$", 40)
    drain(db, 40)
    assert db.scalar("SELECT jsonb_object_agg(status, n) FROM (SELECT status, count(*) AS n "
                     "FROM df.instances GROUP BY status) s") == {"completed": 32, "failed": 8}
    assert db.scalar("SELECT count(*) FROM public.counter WHERE id < 40 AND n <> "
                     "CASE WHEN id % 5 = 0 THEN 0 ELSE 1 END") == 0
    errors = db.scalar("SELECT array_agg(DISTINCT error) FROM df_internal.instance_state "
                       "WHERE error IS NOT NULL")
    assert errors == ["division by zero"]
    assert transactions(db) < 40


def test_session_state_does_not_leak_between_batched_steps(counters):
    db = counters
    # Leaky steps leave a setting, a temporary table, a prepared statement and a session lock
    # behind; probe steps batched right after them must see none of it. (A batch holds one
    # role's tasks only, docs/engine.md: both kinds are alice's here, and a backlog of
    # two roles never shares a batch; between roles, test_security.py's
    # test_session_state_does_not_leak_to_the_next_role covers one session.)
    leaky = ("DO $$ BEGIN SET work_mem = '7777kB'; CREATE TEMP TABLE IF NOT EXISTS leak (x int); "
             "PERFORM pg_advisory_lock(4242); UPDATE public.counter SET n = n + 1 WHERE id = %s; END $$")
    probe = ("SELECT current_setting('work_mem') AS work_mem, "
             "to_regclass('pg_temp.leak') IS NULL AS no_temp_table, "
             "(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 "
             " AND pid = pg_backend_pid()) AS my_locks, %s AS g")
    with db.connect(ALICE) as a, db.connect(BOB) as b:
        for g in range(20):
            a.execute("SELECT df.start(format(%s, %s::int))", (leaky, g))
            a.execute("SELECT df.start(format(%s, %s::int))", (probe, g))
            b.execute("SELECT df.start('SELECT 1 AS one')")
    drain(db, 60)
    assert db.scalar("SELECT count(*) FROM df.instances WHERE status = 'completed'") == 60
    seen = db.scalar(
        "SELECT jsonb_agg(DISTINCT (n.result -> 'rows' -> 0) - 'g') FROM df.nodes n "
        "JOIN df.instances i ON i.id = n.instance_id AND n.id = i.root_node "
        "WHERE n.query LIKE 'SELECT current_setting%%'")
    assert seen == [{"work_mem": db.scalar("SHOW work_mem"), "no_temp_table": True, "my_locks": 0}]
    batches = "SELECT count(*) FROM (SELECT n.updated_at FROM df.instances i " \
              "JOIN df.nodes n ON n.instance_id = i.id AND n.id = i.root_node GROUP BY n.updated_at " \
              "HAVING count(DISTINCT {}) = 2) s"
    assert db.scalar(batches.format("left(n.query, 2)")) > 0, (
        "leaky and probe steps never shared a batch: the test proved nothing")
    assert db.scalar(batches.format("i.submitted_by")) == 0, "a batch held two roles' steps"


def test_a_batched_step_gives_way_to_locks_instead_of_failing(counters):
    db = counters
    # Every other step updates row 0, which another session holds for a while; the first step of
    # the first batch updates row 50, so the second one meets the lock inside a batch. Batched
    # steps behind that lock give way and run again alone: none fails, each counts exactly once.
    enqueue(db, ALICE, "UPDATE public.counter SET n = n + 1 WHERE id = (%s + 1) %% 2 * 50", 40)
    holder = db.connect()
    holder.execute("BEGIN")
    holder.execute("SELECT * FROM public.counter WHERE id = 0 FOR UPDATE")
    release = threading.Timer(1.5, holder.execute, ("COMMIT",))
    release.start()
    try:
        drain(db, 40)
    finally:
        release.join()
        holder.close()
    assert db.scalar("SELECT count(*) FROM df.instances WHERE status = 'completed'") == 40
    assert db.scalar("SELECT n FROM public.counter WHERE id = 0") == 20
    assert db.scalar("SELECT n FROM public.counter WHERE id = 50") == 20
    assert db.scalar("SELECT count(*) FROM df_internal.node_attempts WHERE status <> 'completed'") == 0


def test_claim_takes_an_instances_tasks_together_and_http_alone(db):
    with db.connect(ALICE) as conn:
        join = conn.execute("SELECT df.start('SELECT 1' & 'SELECT 2' & 'SELECT 3')").fetchone()[0]
        for _ in range(3):
            conn.execute("SELECT df.start('SELECT 4')")
    with db.connect(DAVE) as conn:
        conn.execute("SELECT df.start(df.http('http://127.0.0.1:9/never', 'GET'))")
    claimers, claims = [], []
    try:
        while True:  # each claimer keeps its transaction (and its claim) open
            conn = db.connect()
            claimers.append(conn)
            conn.execute("BEGIN")
            rows = conn.execute("SELECT instance_id, node_id, node_type FROM "
                                "df_internal.claim_tasks(df_internal.schema_level(), 't', 50)").fetchall()
            if not rows:
                break
            claims.append(rows)
    finally:
        for conn in claimers:
            conn.close()
    assert len(claims[0]) == 6  # the JOIN's three branches and the three one-step instances
    for claim in claims:
        instances = [instance for instance, _, _ in claim]
        # an instance's tasks come next to each other (the engine commits after the last one)
        runs = [instance for instance, _ in itertools.groupby(instances)]
        assert len(runs) == len(set(instances))
        if "HTTP" in {node_type for _, _, node_type in claim}:
            assert len(claim) == 1  # an HTTP step is claimed alone
    claimed = [(instance, node) for claim in claims for instance, node, _ in claim]
    assert len(claimed) == len(set(claimed)) == 7  # 3 branches + 3 one-step + 1 HTTP, once each
    assert sum(1 for instance, _ in claimed if instance == join) == 3


def _branch_transactions(db, instance: str) -> int:
    """Transactions that checkpointed an instance's leaves: a leaf's updated_at is now() of the
    transaction that checkpointed it (see the module's docstring)."""
    return db.scalar("SELECT count(DISTINCT updated_at) FROM df.nodes "
                     "WHERE instance_id = %s AND node_type = 'SQL'", (instance,))


def test_the_branches_of_a_join_share_one_transaction_exactly_once(counters):
    db = counters
    branches = " & ".join(f"'UPDATE public.counter SET n = n + 1 WHERE id = {k}'" for k in range(10))
    with db.connect(ALICE) as conn:
        joins = [conn.execute(f"SELECT df.start({branches})").fetchone()[0] for _ in range(3)]
    drain(db, 3)
    assert db.scalar("SELECT count(*) FROM df.instances WHERE status = 'completed'") == 3
    assert db.scalar("SELECT array_agg(DISTINCT n) FROM public.counter WHERE id < 10") == [3]
    assert db.scalar("SELECT count(*) FROM df_internal.node_attempts") == 30
    # branches share commits (one per branch before: each committed alone, its siblings queueing
    # for the instance lock); how many share one depends on the batch's 50 ms time budget
    assert sum(_branch_transactions(db, j) for j in joins) < 30


def test_a_race_loser_fenced_earlier_in_its_batch_does_not_run(counters):
    db = counters
    with db.connect() as conn:
        conn.execute("CREATE TABLE public.race_log (branch int)")
        conn.execute("GRANT ALL ON public.race_log TO PUBLIC")
    with db.connect(ALICE) as conn:
        races = [conn.execute("SELECT df.start('INSERT INTO public.race_log VALUES (1)' | "
                              "'INSERT INTO public.race_log VALUES (2)')").fetchone()[0]
                 for _ in range(4)]
    drain(db, 4)
    assert db.scalar("SELECT count(*) FROM df.instances WHERE status = 'completed'") == 4
    # both branches of a race are claimed together; the winner's checkpoint fences the loser,
    # whose statement therefore never runs (gated on its task being live)
    assert db.scalar("SELECT count(*) FROM public.race_log") == 4
    assert all(db.scalar("SELECT count(*) FROM df_internal.node_attempts WHERE instance_id = %s",
                         (r,)) == 1 for r in races)


@pytest.mark.parametrize(("text", "rowless"), [
    ("UPDATE t SET a = 1", True),
    ("  insert into t values (1)", True),
    ("DELETE FROM t WHERE a = 'RETURNING'", True),  # a string, not the keyword (a lexer)
    ("UPDATE t SET a = 1 RETURNING a", False),
    ("WITH x AS (DELETE FROM t RETURNING *) SELECT count(*) FROM x", False),
    ("SELECT 1", False),
    ("CALL p()", False),
    ("DO $$ BEGIN NULL; END $$", True),
    ("CREATE TABLE t2 AS SELECT 1", True),
    ("-- a comment\nUPDATE t SET a = 1", True),  # comments are skipped by the lexer
    ("UPDATE t SET a = 1 /* RETURNING */", True),
    ("SELECT 1; UPDATE t SET a = 1", False),
])
def test_statements_known_to_return_no_rows_skip_describing(text, rowless):
    assert returns_no_rows(text) is rowless


def test_a_serialization_failure_in_a_batched_step_counts_as_an_attempt(counters):
    """A step whose own code raises serialization_failure (40001) is charged an attempt like any
    error, batched or not: only the lock conflicts batching itself causes give way uncharged.
    (It was treated as a batch conflict and re-run alone for free: the retry policy's limit was
    exceeded by one, visibly, as every run advances the step's sequence.)"""
    db = counters
    with db.connect() as conn:
        conn.execute("CREATE SEQUENCE public.tries; GRANT ALL ON SEQUENCE public.tries TO PUBLIC")
    with db.connect(ALICE) as conn:
        conn.execute(
            "SELECT df.start(df.retry_policy('DO $$ BEGIN PERFORM nextval(''public.tries''); "
            "RAISE EXCEPTION ''conflict'' USING ERRCODE = ''40001''; END $$', 2, 0.01)) "
            "FROM generate_series(1, 20)")
    drain(db, 20)
    assert db.scalar("SELECT array_agg(DISTINCT status) FROM df.instances") == ["failed"]
    assert db.scalar("SELECT last_value FROM public.tries") == 40, "two runs per step, no more"
    assert db.scalar("SELECT count(*) FROM df_internal.node_attempts") == 40


def _claim_all(db, limit: int = 50) -> list[list[tuple[str, str, bool]]]:
    """Claim with fresh connections, each keeping its claim's transaction open, until a claim
    finds nothing: the claims, as (instance, node, more) rows."""
    claimers, claims = [], []
    try:
        while True:
            conn = db.connect()
            claimers.append(conn)
            conn.execute("BEGIN")
            rows = conn.execute("SELECT instance_id, node_id, more FROM df_internal.claim_tasks("
                                "df_internal.schema_level(), 't', %s)", (limit,)).fetchall()
            if not rows:
                return claims
            claims.append(rows)
    finally:
        for conn in claimers:
            conn.close()


def test_claim_never_batches_the_rival_branches_of_a_race(db):
    # A batch runs its steps one after another: the two branches of a race in one batch would
    # make the second wait for the first, and a slow first branch win (pg_durable e2e 56).
    with db.connect(ALICE) as conn:
        race = conn.execute("SELECT df.start('SELECT pg_sleep(30)' | 'SELECT 1')").fetchone()[0]
        nested = conn.execute("SELECT df.start(df.race(('SELECT 2' & 'SELECT 3'), 'SELECT 4'))"
                              ).fetchone()[0]
        join = conn.execute("SELECT df.start('SELECT 5' & 'SELECT 6')").fetchone()[0]
    claims = _claim_all(db)
    for instance, branches in ((race, 2), (nested, 3)):
        per_claim = [sum(1 for i, _, _ in claim if i == instance) for claim in claims]
        assert sum(per_claim) == branches and max(per_claim) == 1, (instance, claims)
    # a claim that left a rival branch behind says more is due (the engine wakes a worker)
    first = next(claim for claim in claims if any(i == race for i, _, _ in claim))
    assert all(more for _, _, more in first)
    # without a RACE above them, an instance's branches still share a batch
    assert max(sum(1 for i, _, _ in claim if i == join) for claim in claims) == 2


def test_a_slow_race_branch_does_not_beat_a_fast_one_on_a_busy_engine(db):
    # pg_durable e2e 56 test 2 (seen on PostgreSQL 15): with every worker busy, one claim took
    # both branches of a race, pg_sleep first; 'SELECT 1' ran only after it, so the sleep won
    # every iteration and the loop never reached its break. Here the engine starts with the race
    # already queued, so its first claims batch (no worker is idle yet). (Three workers: a role
    # may hold all but one of them, role_cap, so both branches can run at once.)
    with db.connect(ALICE) as conn:
        race = conn.execute("SELECT df.start('SELECT pg_sleep(20) AS slow' | 'SELECT 1 AS fast')"
                            ).fetchone()[0]
    with running_engine(db.dsn(), concurrency=3, batch_size=16):
        wait_for(lambda: db.scalar("SELECT status FROM df.instances WHERE id = %s", (race,))
                 in ('completed', 'failed', 'cancelled'), 120, what="the race to finish")
    assert db.scalar("SELECT status FROM df.instances WHERE id = %s", (race,)) == "completed"
    assert db.scalar("SELECT n.result -> 'rows' FROM df.instances i JOIN df.nodes n "
                     "ON n.instance_id = i.id AND n.id = i.root_node WHERE i.id = %s",
                     (race,)) == [{"fast": 1}]


def test_a_slow_step_does_not_hold_its_batch_hostage(db):
    # CI, pg15 (test_health): one claim took a pg_sleep(600) step and a 'SELECT 1' of another
    # instance; the quick step's checkpoint waited for the batch's commit, ten minutes later.
    # The engine starts with the backlog queued, so its first claims batch (no worker is idle
    # yet); three workers, so one role may run two steps at once (role_cap).
    with db.connect(ALICE) as conn:
        slow = conn.execute("SELECT df.start('SELECT pg_sleep(600)')").fetchone()[0]
        quick = [conn.execute("SELECT df.start('SELECT 1')").fetchone()[0] for _ in range(3)]
    status = "SELECT status FROM df.instances WHERE id = %s"
    with running_engine(db.dsn(), concurrency=3, batch_size=16):
        for instance in quick:
            wait_for(lambda i=instance: db.scalar(status, (i,)) == "completed", 60,
                     what=f"quick instance {instance} to complete beside the slow step")
        # the slow step gave way uncharged and runs alone now
        wait_for(lambda: db.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s AND state = 'active'",
            (f"%{slow}%pg_sleep%",)) == 1, 60, what="the slow step to run alone")
        assert db.scalar("SELECT count(*) FROM df_internal.node_attempts WHERE instance_id = %s",
                         (slow,)) == 0
        with db.connect(ALICE) as conn:
            conn.execute("SELECT df.cancel(%s)", (slow,))
        wait_for(lambda: db.scalar(status, (slow,)) == "cancelled", 60, what="the slow step cancelled")
