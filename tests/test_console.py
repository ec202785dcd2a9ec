"""The console's SQL (sql/routines/console.sql): what a running step is doing inside PostgreSQL,
cancel/terminate of its engine session, and an instance's history — each only for the
instance's own submitter, in both engine modes, never from inside a step or another function."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.support import ALICE, BOB, engine_in_mode, start, wait_for, wait_terminal

NOT_FOUND = "Instance not found or access denied"


def _locked_table(db: Any, name: str) -> None:
    with db.connect() as conn:
        conn.execute(f"CREATE TABLE public.{name} (x int)")
        conn.execute(f"ALTER TABLE public.{name} OWNER TO {ALICE}")


def _activity(db: Any, role: str, iid: str) -> list[dict[str, Any]]:
    with db.connect(role) as conn:
        cur = conn.execute("SELECT * FROM df.step_activity(%s)", (iid,))
        cols = [c.name for c in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def _error(db: Any, role: str, query: str, params: tuple[Any, ...]) -> str:
    with db.connect(role) as conn, pytest.raises(psycopg.Error) as info:
        conn.execute(query, params)
    return str(info.value.diag.message_primary)


def _history(db: Any, role: str, iid: str) -> list[dict[str, Any]]:
    with db.connect(role) as conn:
        cur = conn.execute("SELECT * FROM df.instance_history(%s)", (iid,))
        cols = [c.name for c in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def test_a_blocked_step_shows_its_session_lock_and_blocker_and_is_cancelled(db, mode) -> None:
    _locked_table(db, "held")
    with db.connect(ALICE, autocommit=False) as holder, engine_in_mode(db, mode):
        holder.execute("LOCK TABLE public.held IN ACCESS EXCLUSIVE MODE")
        holder_pid = holder.info.backend_pid
        iid = start(db, ALICE, "'SELECT count(*) AS n FROM public.held'")
        rows = wait_for(lambda: [r for r in _activity(db, ALICE, iid) if r["wait_event_type"] == "Lock"],
                        what="the step to wait for the lock")
        row = rows[0]
        assert row["node_type"] == "SQL" and "public.held" in row["query"]
        assert row["state"] == "active" and row["backend_pid"] != holder_pid
        assert row["duration_ms"] >= 0 and row["query_start"] is not None
        assert any(w["relation"] == "public.held" and w["mode"] == "AccessShareLock" for w in row["waiting_for"])
        blockers = {b["pid"]: b for b in row["blocked_by"]}
        assert holder_pid in blockers
        assert blockers[holder_pid]["role"] == ALICE
        assert "LOCK TABLE" in blockers[holder_pid]["query"]  # alice's own session: visible

        # Another role: exactly like a missing instance, for every function.
        for query in ("SELECT * FROM df.step_activity(%s)", "SELECT df.cancel_step_backend(%s)",
                      "SELECT df.terminate_step_backend(%s)", "SELECT * FROM df.instance_history(%s)"):
            assert _error(db, BOB, query, (iid,)) == NOT_FOUND
        # Not from inside another function (another role's SECURITY DEFINER code must not act
        # as the caller) — a DO block is enough to show it.
        with db.connect(ALICE) as conn, pytest.raises(psycopg.Error, match="called directly"):
            conn.execute(f"DO $$ BEGIN PERFORM df.cancel_step_backend('{iid}'); END $$")
        assert db.scalar("SELECT status FROM df.instances WHERE id = %s", (iid,)) in ("pending", "running")

        with db.connect(ALICE) as conn:
            message = conn.execute("SELECT df.cancel_step_backend(%s)", (iid,)).fetchone()[0]
        assert message.startswith("cancelled the statement of node ")
        assert wait_terminal(db, iid) == "failed"
        holder.rollback()
    error = db.scalar("SELECT error FROM df_internal.instance_state WHERE instance_id = %s", (iid,))
    assert "canceling statement due to user request" in error
    events = _history(db, ALICE, iid)
    cancelled = [e for e in events if e["event"] == "backend cancelled"]
    assert len(cancelled) == 1 and cancelled[0]["actor"] == ALICE
    assert [e["event"] for e in events][-1] == "failed"
    # Nothing runs any more: asking again says so, and changes nothing.
    assert "has no step executing" in _error(db, ALICE, "SELECT df.cancel_step_backend(%s)", (iid,))


def test_terminate_rolls_the_step_back_and_it_runs_again(db, mode) -> None:
    _locked_table(db, "held2")
    with db.connect(ALICE, autocommit=False) as holder, engine_in_mode(db, mode):
        holder.execute("LOCK TABLE public.held2 IN ACCESS EXCLUSIVE MODE")
        iid = start(db, ALICE, "'INSERT INTO public.held2 VALUES (1) RETURNING x'")
        first = wait_for(lambda: _activity(db, ALICE, iid), what="the step to run")[0]["backend_pid"]
        with db.connect(ALICE) as conn:
            message = conn.execute("SELECT df.terminate_step_backend(%s)", (iid,)).fetchone()[0]
        assert message.startswith(f"terminated engine session {first}")
        wait_for(lambda: db.scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (first,)) == 0,
                 what="the session to end")
        holder.rollback()  # the lock goes: the step, rolled back, runs again and completes
        assert wait_terminal(db, iid) == "completed"
    assert db.scalar("SELECT count(*) FROM public.held2") == 1  # exactly once
    events = [e["event"] for e in _history(db, ALICE, iid)]
    assert "backend terminated" in events and events[-1] == "completed"


def test_a_step_in_another_database_is_found_on_its_own_session_and_cancelled(db, mode) -> None:
    """A step naming another database runs on a session the worker opened there, not on the
    worker's own: the console finds it there (side_pid, migration 0500), reports its locks as
    that database's, cancels it, and refuses to terminate it (that would fail the step, not
    run it again as terminate promises)."""
    other = db.name + "_side"
    with db.server.admin() as conn:
        conn.execute(f'CREATE DATABASE "{other}"')
        conn.execute(f'GRANT CREATE ON DATABASE "{other}" TO PUBLIC')  # (df_exec, least-privilege)
    try:
        with psycopg.connect(db.server.conninfo(other), autocommit=True) as conn:
            conn.execute("CREATE TABLE public.held_there (x int)")
            conn.execute(f"ALTER TABLE public.held_there OWNER TO {ALICE}")
        with psycopg.connect(db.server.conninfo(other)) as holder, engine_in_mode(db, mode):
            holder.execute("LOCK TABLE public.held_there IN ACCESS EXCLUSIVE MODE")
            iid = start(db, ALICE, "'SELECT count(*) AS n FROM public.held_there', NULL, %s", other)
            rows = wait_for(lambda: [r for r in _activity(db, ALICE, iid) if r["wait_event_type"] == "Lock"],
                            what="the step to wait for the lock in the other database")
            row = rows[0]
            assert db.scalar("SELECT datname FROM pg_stat_activity WHERE pid = %s", (row["backend_pid"],)) == other
            assert any(w["relation"].startswith("relation ") and w["relation"].endswith(f"in database {other}")
                       for w in row["waiting_for"]), row["waiting_for"]
            assert holder.info.backend_pid in {b["pid"] for b in row["blocked_by"]}
            assert _error(db, BOB, "SELECT * FROM df.step_activity(%s)", (iid,)) == NOT_FOUND
            assert "runs in another database" in _error(
                db, ALICE, "SELECT df.terminate_step_backend(%s)", (iid,))
            with db.connect(ALICE) as conn:
                message = conn.execute("SELECT df.cancel_step_backend(%s)", (iid,)).fetchone()[0]
            assert message == (f"cancelled the statement of node {row['node_id']} on engine session "
                               f"{row['backend_pid']}; the step fails unless its retry policy retries it")
            assert wait_terminal(db, iid) == "failed"
            holder.rollback()
        error = db.scalar("SELECT error FROM df_internal.instance_state WHERE instance_id = %s", (iid,))
        assert "canceling statement due to user request" in error
    finally:
        with db.server.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{other}" WITH (FORCE)')


def test_a_step_cannot_watch_or_cancel_steps(db, mode) -> None:
    """Inside a step the session is the engine's (a superuser, or the df owner): the console
    functions must refuse there, or any step could see and cancel every role's steps."""
    _locked_table(db, "held3")
    with db.connect(ALICE, autocommit=False) as holder, engine_in_mode(db, mode):
        holder.execute("LOCK TABLE public.held3 IN ACCESS EXCLUSIVE MODE")
        victim = start(db, ALICE, "'SELECT count(*) FROM public.held3'")
        wait_for(lambda: _activity(db, ALICE, victim), what="the victim step to run")
        spy = start(db, BOB, f"'SELECT * FROM df.step_activity(''{victim}'')'")
        killer = start(db, BOB, f"'SELECT df.cancel_step_backend(''{victim}'')'")
        assert wait_terminal(db, spy) == "failed" and wait_terminal(db, killer) == "failed"
        for iid in (spy, killer):
            error = db.scalar("SELECT error FROM df_internal.instance_state WHERE instance_id = %s", (iid,))
            assert "cannot be called from inside a workflow step" in error, error
        assert db.scalar("SELECT status FROM df.instances WHERE id = %s", (victim,)) in ("pending", "running")
        holder.rollback()
        assert wait_terminal(db, victim) == "completed"


def test_history_keeps_every_execution_who_asked_and_signals(db) -> None:
    with db.connect() as conn:
        conn.execute("CREATE TABLE public.gate (x int)")
        conn.execute(f"GRANT SELECT, INSERT ON public.gate TO {ALICE}")
    with engine_in_mode(db, "superuser"):
        iid = start(db, ALICE, "df.wait_for_signal('go') ~> 'SELECT 1 / (SELECT count(*) FROM public.gate)::int AS q'")
        with db.connect(ALICE) as conn:
            conn.execute("SELECT df.cancel(%s, 'not now')", (iid,))
        assert wait_terminal(db, iid) == "cancelled"
        with db.connect(ALICE) as conn:
            conn.execute("SELECT df.retry(%s)", (iid,))
            wait_for(lambda: db.scalar("SELECT status FROM df.nodes WHERE instance_id = %s "
                                       "AND node_type = 'SIGNAL'", (iid,)) == "running",
                     what="the signal wait")
            conn.execute("SELECT df.signal(%s, 'go', '{\"n\": 1}')", (iid,))
        assert wait_terminal(db, iid) == "failed"  # division by zero
        with db.connect(ALICE) as conn:
            conn.execute("INSERT INTO public.gate VALUES (1)")
            conn.execute("SELECT df.retry(%s)", (iid,))
        assert wait_terminal(db, iid) == "completed"
    events = _history(db, ALICE, iid)
    names = [(e["execution"], e["event"]) for e in events]
    assert names[0] == (1, "submitted") and names[1] == (1, "started")
    assert (1, "cancelled") in names
    cancel = next(e for e in events if e["event"] == "cancelled")
    assert cancel["actor"] == ALICE and "not now" in cancel["detail"]
    retries = [e for e in events if e["event"] == "retried"]
    assert [e["execution"] for e in retries] == [2, 3] and {e["actor"] for e in retries} == {ALICE}
    signal = next(e for e in events if e["event"] == "signal received")
    assert signal["actor"] == ALICE and "'go'" in signal["detail"] and signal["execution"] == 2
    assert any(e["event"] == "signal consumed" and e["node_type"] == "SIGNAL" for e in events)
    failed = [e for e in events if e["event"] == "attempt failed"]
    assert failed and failed[0]["execution"] == 2 and "division by zero" in failed[0]["detail"]
    assert (2, "failed") in names
    assert names[-1] == (3, "completed")
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)


def test_cli_history_and_activity(db, capsys) -> None:
    import json

    from dftui.cli import main

    with engine_in_mode(db, "superuser"):
        iid = start(db, ALICE, "'SELECT 1 AS one'")
        assert wait_terminal(db, iid) == "completed"
    code = main(["history", iid, "--dsn", db.dsn(ALICE), "--json"])
    out, _err = capsys.readouterr()
    assert code == 0
    events = [e["event"] for e in json.loads(out)]
    assert events[0] == "submitted" and "attempt completed" in events and events[-1] == "completed"
    code = main(["history", iid, "--dsn", db.dsn(ALICE)])
    out, _err = capsys.readouterr()
    assert code == 0 and "#1  attempt completed SQL" in out
    # Nothing runs: said, exit 1; another role: not found, exit 1; a bad id: usage, exit 2.
    assert main(["activity", iid, "--dsn", db.dsn(ALICE)]) == 1
    _out, err = capsys.readouterr()
    assert "no step is executing" in err
    assert main(["history", iid, "--dsn", db.dsn(BOB)]) == 1
    _out, err = capsys.readouterr()
    assert NOT_FOUND in err and "Traceback" not in err
    assert main(["activity", iid, "--cancel", "--dsn", db.dsn(ALICE)]) == 1
    _out, err = capsys.readouterr()
    assert "has no step executing" in err
    assert main(["history", "nope", "--dsn", db.dsn(ALICE)]) == 2


def test_terminate_is_refused_when_the_session_also_runs_another_roles_steps(db) -> None:
    """One engine worker, one batch with alice's and bob's steps: terminating that session
    would roll bob's work back too, so alice may only cancel her statement."""
    sleeper = start(db, ALICE, "'SELECT pg_sleep(60) AS z'")
    other = start(db, BOB, "'SELECT 1 AS one'")
    with engine_in_mode(db, "superuser", concurrency=1):
        wait_for(lambda: _activity(db, ALICE, sleeper), what="alice's step to run")
        batch = db.scalar("SELECT instance_ids FROM df_internal.inflight")
        if set(batch) != {sleeper, other}:
            pytest.skip(f"the engine did not batch both steps ({batch})")
        message = _error(db, ALICE, "SELECT df.terminate_step_backend(%s)", (sleeper,))
        assert "also runs other roles' steps" in message
        with db.connect(ALICE) as conn:
            conn.execute("SELECT df.cancel_step_backend(%s)", (sleeper,))
        assert wait_terminal(db, sleeper) == "failed"
        assert wait_terminal(db, other) == "completed"
