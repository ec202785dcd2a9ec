"""Fairness and resource limits (issue 13 "Fairness", security.md "Availability"): one role's long
or numerous steps cannot starve the others.

Each availability test fails if the route works: the victim's instance must complete while the
attacker's steps still occupy workers.
"""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.support import ALICE, BOB, engine_in_mode, node_rows, start, wait_for, wait_terminal

LONG = "SELECT pg_sleep(300) AS slept"


def running_sleeps(db) -> int:
    return db.scalar("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%%pg_sleep(300)%%' "
                     "AND state = 'active' AND application_name LIKE 'dftui engine%%'")


def cancel_all(db, role: str, ids: list[str]) -> None:
    with db.connect(role) as conn:
        for iid in ids:
            conn.execute("SELECT df.cancel(%s)", (iid,))


@pytest.mark.parametrize("flood", [4, 12])
def test_a_role_flooding_long_steps_cannot_starve_another(db, mode, flood):
    """alice starts more long pg_sleep steps than there are workers; bob's step still runs
    (default cap: concurrency - 1 workers for one role)."""
    with engine_in_mode(db, mode, concurrency=2):
        hogs = [start(db, ALICE, f"'{LONG}'") for _ in range(flood)]
        try:
            wait_for(lambda: running_sleeps(db) >= 1, 30, what="alice's sleeps to start")
            victim = start(db, BOB, "'SELECT 42 AS answer'")
            assert wait_terminal(db, victim, 60) == "completed"
            # (a sleep claimed in a batch gives way after a second and is claimed again alone,
            # BATCHED_STEP_CAP_MS: a momentary 0; escaping the cap keeps two running)
            wait_for(lambda: running_sleeps(db) == 1, 30, what="one of alice's sleeps running")
            for _ in range(5):
                assert running_sleeps(db) <= 1, "alice holds more than her share of the workers"
        finally:
            cancel_all(db, ALICE, hogs)


def test_queued_tasks_carry_their_routing_and_a_task_without_it_is_still_capped(db):
    """The interpreter writes the node type and the frozen submitter on the task row (migration
    0470: the claim routes and caps without looking them up). A task row without them (queued
    before that migration, or by any other path) is looked up as before: still capped."""
    hogs = [start(db, ALICE, f"'{LONG}'") for _ in range(4)]
    try:
        rows = db.scalar("SELECT pg_catalog.array_agg(DISTINCT (t.node_type, r.rolname)::text) "
                         "FROM df_internal.tasks t JOIN pg_catalog.pg_roles r ON r.oid = t.role_oid "
                         "WHERE t.instance_id = ANY (%s)", (hogs,))
        assert rows == [f"(SQL,{ALICE})"]
        with db.connect() as conn:
            conn.execute("UPDATE df_internal.tasks SET node_type = NULL, role_oid = NULL "
                         "WHERE instance_id = ANY (%s)", (hogs,))
        with engine_in_mode(db, "superuser", concurrency=2):
            wait_for(lambda: running_sleeps(db) >= 1, 30, what="alice's sleeps to start")
            victim = start(db, BOB, "'SELECT 42 AS answer'")
            assert wait_terminal(db, victim, 60) == "completed"
            # (== 1 once more: a sleep claimed in a batch gives way after a second and is
            # claimed again alone, BATCHED_STEP_CAP_MS; escaped, two would keep running)
            wait_for(lambda: running_sleeps(db) == 1, 30, what="one of alice's sleeps running")
            assert running_sleeps(db) <= 1, "a task without routing columns escaped the cap"
    finally:
        cancel_all(db, ALICE, hogs)


def sleeping(db, tag: str) -> int:
    return db.scalar("SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s AND state = 'active' "
                     "AND application_name LIKE 'dftui engine%%'", (f"%pg_sleep(300) AS {tag}%",))


def test_a_role_override_lowers_the_cap(db):
    """df.set_role_limits(max_running => 1) on a 3-worker engine: alice, who started first,
    never has two steps running at once; bob (no override, default cap 2) gets two."""
    with db.connect() as conn:
        conn.execute("SELECT df.set_role_limits('dftui_alice', max_running => 1)")
    with engine_in_mode(db, "superuser", concurrency=3):
        hogs = [start(db, ALICE, "'SELECT pg_sleep(300) AS alice'") for _ in range(3)]
        wait_for(lambda: sleeping(db, "alice") >= 1, 30, what="alice's sleep to run")
        bobs = [start(db, BOB, "'SELECT pg_sleep(300) AS bob'") for _ in range(3)]
        try:
            wait_for(lambda: sleeping(db, "bob") >= 2, 30, what="bob's sleeps to run")
            assert sleeping(db, "alice") == 1
            assert sleeping(db, "bob") == 2
        finally:
            cancel_all(db, ALICE, hogs)
            cancel_all(db, BOB, bobs)


def test_set_role_limits_is_for_administrators_only(db):
    for role in (ALICE, BOB):
        with db.connect(role) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege,
                                                    match="only a superuser or the owner"):
            conn.execute("SELECT df.set_role_limits(%s, max_running => 100)", (role,))
    assert db.scalar("SELECT count(*) FROM df_internal.role_limits") == 0
    with db.connect() as conn:
        for args, message in [
            (("nobody_here", 1, None, None), "does not exist"),
            ((ALICE, 0, None, None), "max_running must be at least 1"),
            ((ALICE, None, -1, None), "max_pending must not be negative"),
            ((ALICE, None, None, "soon"), "step_timeout must be a duration"),
        ]:
            with pytest.raises(psycopg.Error, match=message):
                conn.execute("SELECT df.set_role_limits(%s, %s, %s, %s)", args)
    assert db.scalar("SELECT count(*) FROM df_internal.role_limits") == 0


def test_pending_instance_limit_is_enforced_at_start(db):
    with db.connect() as conn:
        conn.execute("SELECT df.set_role_limits('dftui_alice', max_pending => 2)")
    first = [start(db, ALICE, "df.wait_for_signal('go')") for _ in range(2)]
    before = db.scalar("SELECT count(*) FROM df.instances")
    with db.connect(ALICE) as conn, pytest.raises(psycopg.errors.ConfigurationLimitExceeded,
                                                  match="already has 2 pending or running instances, its limit is 2"):
        conn.execute("SELECT df.start(df.wait_for_signal('go'))")
    assert db.scalar("SELECT count(*) FROM df.instances") == before
    # other roles are not affected, and alice may start again once one is done
    start(db, BOB, "df.wait_for_signal('go')")
    with db.connect(ALICE) as conn:
        conn.execute("SELECT df.cancel(%s)", (first[0],))
    start(db, ALICE, "df.wait_for_signal('go')")
    assert db.scalar("SELECT max_pending FROM df.role_limits WHERE role = %s", (ALICE,), role=ALICE) == 2


def step_error(db, iid: str) -> str:
    return " | ".join(n["error"] for n in node_rows(db, iid) if n["error"])


def test_step_timeout_engine_default_role_ceiling_and_workflow(db, mode):
    with engine_in_mode(db, mode, concurrency=2, step_timeout=2):
        # the engine's default
        slow = start(db, ALICE, "'SELECT pg_sleep(60) AS s'")
        assert wait_terminal(db, slow, 45) == "failed"
        assert "statement timeout" in step_error(db, slow)
        # a workflow lowers it for itself ...
        with db.connect(BOB) as conn:
            conn.execute("SET df.step_timeout = '500ms'")
            quick = conn.execute("SELECT df.start('SELECT pg_sleep(1.5) AS s')").fetchone()[0]
        assert wait_terminal(db, quick, 45) == "failed"
        assert "statement timeout" in step_error(db, quick)
        # ... but cannot raise it above the role's ceiling
        with db.connect() as conn:
            conn.execute("SELECT df.set_role_limits('dftui_bob', step_timeout => '1s')")
        with db.connect(BOB) as conn:
            conn.execute("SET df.step_timeout = '10min'")
            capped = conn.execute("SELECT df.start('SELECT pg_sleep(30) AS s')").fetchone()[0]
        assert wait_terminal(db, capped, 45) == "failed"
        assert "statement timeout" in step_error(db, capped)
        # fast steps are unaffected, and an administrator may raise one role's ceiling
        with db.connect() as conn:
            conn.execute("SELECT df.set_role_limits('dftui_alice', step_timeout => '1min')")
        ok = start(db, ALICE, "'SELECT pg_sleep(3) AS s'")
        assert wait_terminal(db, ok, 45) == "completed", step_error(db, ok)


def test_bad_workflow_step_timeout_is_refused_at_start(db):
    with db.connect(ALICE) as conn:
        conn.execute("SET df.step_timeout = 'whenever'")
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="df.step_timeout must be a duration"):
            conn.execute("SELECT df.start('SELECT 1')")


def test_cli_limits_shows_sets_and_resets(db, capsys):
    from dftui.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    dsn = db.dsn()
    code, out, _ = run("limits", "--dsn", dsn)
    assert code == 0 and "no per-role overrides" in out
    code, out, _ = run("limits", ALICE, "--dsn", dsn, "--max-running", "2", "--step-timeout", "5min")
    assert code == 0 and ALICE in out and "300s" in out
    code, out, _ = run("limits", "--dsn", dsn, "--json")
    data = json.loads(out)
    assert data["roles"][0]["role"] == ALICE and data["roles"][0]["max_running"] == 2
    assert data["roles"][0]["step_timeout_ms"] == 300000
    # an ordinary role: a clear one-line error, nothing changed
    code, _, err = run("limits", BOB, "--dsn", db.dsn(BOB), "--max-running", "50")
    assert code != 0 and err.startswith("dftui: ") and err.count("\n") == 1
    assert "only a superuser or the owner" in err
    code, out, err = run("limits", ALICE, "--dsn", dsn, "--step-timeout", "later")
    assert code != 0 and "step_timeout must be a duration" in err
    # beyond an integer: a usage error (was "function df.set_role_limits(…, bigint, …) does not
    # exist"), nothing changed
    for option in ("--max-running", "--max-pending"):
        code, out, err = run("limits", ALICE, "--dsn", dsn, option, "9999999999")
        assert code == 2 and out == "" and "Traceback" not in err and "bigint" not in err
    code, out, _ = run("limits", ALICE, "--dsn", dsn, "--reset")
    assert code == 0 and "no per-role overrides" in out
    assert db.scalar("SELECT count(*) FROM df_internal.role_limits") == 0
    code, _, err = run("limits", "--dsn", dsn, "--max-running", "2")
    assert code == 2 and "name the ROLE" in err


def _join_tree(depth: int, leaf: str) -> str:
    sub = leaf if depth == 0 else _join_tree(depth - 1, leaf)
    return sub if depth == 0 else f"df.join({sub}, {sub})"


def test_a_backlog_of_one_roles_timers_does_not_delay_another_role(db, mode):
    """Timers (and signals, loop iterations) were not counted against a role's cap: alice's
    2,048 due df.sleep(0) leaves, queued before bob's step, took both workers in queue order
    and bob waited behind the whole backlog (measured: 56 s, none of hers left). Every task now
    takes one of its role's slots, so bob's step runs while most of alice's backlog is still
    queued; and, nobody else waiting, her timers still use every worker (they all complete)."""
    hog = start(db, ALICE, _join_tree(11, "df.sleep(0)"))
    backlog = db.scalar("SELECT count(*) FROM df_internal.tasks WHERE instance_id = %s", (hog,))
    assert backlog == 2048
    victim = start(db, BOB, "'SELECT 42 AS answer'")
    with engine_in_mode(db, mode, concurrency=2):
        assert wait_terminal(db, victim, 120) == "completed"
        left = db.scalar("SELECT count(*) FROM df_internal.tasks WHERE instance_id = %s", (hog,))
        assert left > backlog // 2, f"bob's step waited for {backlog - left} of alice's timers"
        assert wait_terminal(db, hog, 600) == "completed"


def test_a_role_at_its_cap_still_has_its_timers_fire(db, mode):
    """Timers take a slot now, but a role at its cap (here 1 of 2 workers, held by its own long
    step) must still see them fire when no other role needs the free worker: the timeout branch
    of a RACE against that very step wins, and the step is cancelled."""
    with engine_in_mode(db, mode, concurrency=2):
        iid = start(db, ALICE, f"df.race('{LONG}', df.sleep(1))")
        assert wait_terminal(db, iid, 120) == "completed", "the timer never fired"
        wait_for(lambda: running_sleeps(db) == 0, 60, what="the losing step to be cancelled")
