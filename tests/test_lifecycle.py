"""Lifecycle functions: cancel, signal, status, result, await, variables, version.

Instances are created by inserting df.instances + df.nodes rows directly (what df.start does),
so these tests need no engine; "the engine" is simulated by superuser updates where needed.
"""

from __future__ import annotations

import json
import secrets
import threading

import psycopg
import pytest

from engine import schema
from tests.support import ALICE, error_of, wait_for

NOT_FOUND = "Instance not found or access denied"


def make_instance(db, owner: str, status: str = "running", label: str | None = None) -> str:
    """Insert a one-node SQL instance owned by `owner` (as superuser) and return its id."""
    iid, nid = secrets.token_hex(4), secrets.token_hex(4)
    with db.connect(autocommit=False) as conn:
        conn.execute(
            "INSERT INTO df.nodes (id, instance_id, node_type, query, submitted_by)"
            " VALUES (%s, %s, 'SQL', 'SELECT 1', quote_ident(%s)::regrole)",
            (nid, iid, owner),
        )
        conn.execute(
            "INSERT INTO df.instances (id, label, root_node, status, submitted_by,"
            " completed_at) VALUES (%s, %s, %s, %s, quote_ident(%s)::regrole,"
            " CASE WHEN %s = 'completed' THEN now() END)",
            (iid, label, nid, status, owner, status),
        )
        conn.commit()
    return iid


def signals(db, iid: str) -> list[tuple[str, object]]:
    with db.connect() as conn:
        return conn.execute(
            "SELECT name, data FROM df_internal.signals WHERE instance_id = %s ORDER BY id", (iid,)
        ).fetchall()


# --- cancel ---------------------------------------------------------------------------------


def test_cancel_own_instance_with_reason(db) -> None:
    iid = make_instance(db, "dftui_alice")
    assert db.scalar("SELECT df.cancel(%s, 'operator said so')", (iid,), role=ALICE) == (
        f"Instance {iid} cancelled: operator said so")  # pg_durable's answer
    assert db.scalar("SELECT status FROM df.instances WHERE id = %s", (iid,)) == "cancelled"
    assert db.scalar(
        "SELECT cancel_reason FROM df_internal.instance_state WHERE instance_id = %s", (iid,)
    ) == "operator said so"
    # The reason does not leak into later updates of the same transaction.
    assert db.scalar("SELECT current_setting('df.cancel_reason', true)") in (None, "")


def test_cancel_default_reason_and_quoted_role(db) -> None:
    iid = make_instance(db, "Quoted Role", status="pending")
    assert db.scalar("SELECT df.cancel(%s)", (iid,), role="Quoted Role") == (
        f"Instance {iid} cancelled: Cancelled by user")
    assert db.scalar(
        "SELECT cancel_reason FROM df_internal.instance_state WHERE instance_id = %s", (iid,)
    ) == "Cancelled by user"


def test_cancel_terminal_instance_changes_nothing(db) -> None:
    iid = make_instance(db, "dftui_alice", status="completed")
    assert db.scalar("SELECT df.cancel(%s)", (iid,), role=ALICE) == "already completed"
    assert db.scalar("SELECT status FROM df.instances WHERE id = %s", (iid,)) == "completed"


def test_cancel_other_roles_instance_looks_missing(db) -> None:
    bobs = make_instance(db, "dftui_bob")
    missing = "0badf00d"
    err_other = error_of(db, "SELECT df.cancel(%s)", (bobs,), role=ALICE, primary=True)
    err_missing = error_of(db, "SELECT df.cancel(%s)", (missing,), role=ALICE, primary=True)
    assert err_other == f"{NOT_FOUND}: {bobs}"
    assert err_missing == f"{NOT_FOUND}: {missing}"
    assert db.scalar("SELECT status FROM df.instances WHERE id = %s", (bobs,)) == "running"
    # The superuser sees (and may cancel) everything.
    assert db.scalar("SELECT df.cancel(%s)", (bobs,)).startswith(f"Instance {bobs} cancelled")


def test_ungranted_role_cannot_call_lifecycle_functions(db) -> None:
    iid = make_instance(db, "dftui_alice")
    for query in ["SELECT df.cancel(%s)", "SELECT df.signal(%s, 'x')", "SELECT df.status(%s)"]:
        with db.connect("dftui_carol") as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(query, (iid,))
    assert db.scalar("SELECT status FROM df.instances WHERE id = %s", (iid,)) == "running"


# --- signal ---------------------------------------------------------------------------------


def test_signal_queues_json_and_text_payloads(db) -> None:
    iid = make_instance(db, "dftui_alice")
    with db.connect("dftui_alice") as conn:
        assert conn.execute("SELECT df.signal(%s, 'approve', '{\"ok\": true}')", (iid,)).fetchone()[0] == "OK"
        conn.execute("SELECT df.signal(%s, 'note', 'plain words')", (iid,))
        conn.execute("SELECT df.signal(%s, 'empty')", (iid,))
    assert signals(db, iid) == [("approve", {"ok": True}), ("note", "plain words"), ("empty", {})]


def test_signal_other_roles_instance_looks_missing(db) -> None:
    bobs = make_instance(db, "dftui_bob")
    assert error_of(
        db, "SELECT df.signal(%s, 'go')", (bobs,),
        role=ALICE, primary=True) == f"{NOT_FOUND}: {bobs}"
    assert error_of(
        db, "SELECT df.signal('ffffffff', 'go')",
        role=ALICE, primary=True) == f"{NOT_FOUND}: ffffffff"
    assert signals(db, bobs) == []


def test_signal_bad_name_raises(db) -> None:
    iid = make_instance(db, "dftui_alice")
    assert error_of(
        db, "SELECT df.signal(%s, '')", (iid,),
        role=ALICE, primary=True) == "Signal name cannot be empty"
    # df.signal is STRICT, as pg_durable's: a NULL argument does nothing and returns NULL.
    assert db.scalar("SELECT df.signal(%s, NULL)", (iid,), role=ALICE) is None
    assert db.scalar("SELECT df.signal(%s, 'go', NULL)", (iid,), role=ALICE) is None
    assert signals(db, iid) == []


def _loopback_available(db) -> bool:
    return bool(db.scalar("SELECT count(*) FROM pg_extension WHERE extname = 'dblink'"))


def test_signal_takes_effect_independently_of_callers_transaction(db) -> None:
    if not _loopback_available(db):
        pytest.skip("dblink is not available on this server")
    iid = make_instance(db, "dftui_alice")
    with db.connect("dftui_alice", autocommit=False) as conn:
        conn.execute("SELECT df.signal(%s, 'early', '1')", (iid,))
        # Visible to everyone before the caller commits...
        assert signals(db, iid) == [("early", 1)]
        conn.rollback()
    # ...and it survives the caller's rollback.
    assert signals(db, iid) == [("early", 1)]


def test_signal_fallback_is_transactional(db) -> None:
    iid = make_instance(db, "dftui_alice")
    with db.connect("dftui_alice", autocommit=False) as conn:
        conn.execute("SET pg_durable.signal_loopback = off")
        conn.execute("SELECT df.signal(%s, 'late')", (iid,))
        assert signals(db, iid) == []
        conn.rollback()
    assert signals(db, iid) == []
    with db.connect("dftui_alice", autocommit=False) as conn:
        conn.execute("SET pg_durable.signal_loopback = off")
        conn.execute("SELECT df.signal(%s, 'late')", (iid,))
        conn.commit()
    assert signals(db, iid) == [("late", {})]


def test_signal_to_instance_started_in_same_transaction(db) -> None:
    """The loopback cannot see an uncommitted instance; the signal rides the caller's commit."""
    iid, nid = secrets.token_hex(4), secrets.token_hex(4)
    with db.connect("dftui_alice", autocommit=False) as conn:
        conn.execute(
            "INSERT INTO df.nodes (id, instance_id, node_type, query, submitted_by)"
            " VALUES (%s, %s, 'SQL', 'SELECT 1', 'dftui_alice'::regrole)", (nid, iid))
        conn.execute(
            "INSERT INTO df.instances (id, root_node, submitted_by)"
            " VALUES (%s, %s, 'dftui_alice'::regrole)", (iid, nid))
        assert conn.execute("SELECT df.signal(%s, 'go')", (iid,)).fetchone()[0] == "OK"
        conn.commit()
    assert signals(db, iid) == [("go", {})]


def test_signal_loopback_refuses_roles_the_session_cannot_become(db) -> None:
    """df.signal_loopback is callable by grantees; it must not act as another role."""
    bobs = make_instance(db, "dftui_bob")
    with db.connect("dftui_alice") as conn:
        done = conn.execute(
            "SELECT df.signal_loopback('dftui_bob', %s, 'forged', '{}')", (bobs,)
        ).fetchone()[0]
        assert done is False
        assert conn.execute(
            "SELECT df.signal_loopback('no_such_role', %s, 'forged', '{}')", (bobs,)
        ).fetchone()[0] is False
    assert signals(db, bobs) == []


def test_do_block_can_signal_then_await(db) -> None:
    """A DO block signals, a separate "engine" session reacts and finishes the instance, and the
    same DO block's await sees it: only possible when the signal does not hold the row lock."""
    if not _loopback_available(db):
        pytest.skip("dblink is not available on this server")
    iid = make_instance(db, "dftui_alice")
    errors: list[BaseException] = []

    def engine() -> None:
        try:
            with db.connect() as conn:
                conn.execute("SET lock_timeout = '20s'")
                for _ in range(400):
                    if conn.execute("SELECT count(*) FROM df_internal.signals WHERE instance_id = %s",
                                    (iid,)).fetchone()[0]:
                        break
                    conn.execute("SELECT pg_sleep(0.05)")
                conn.execute("UPDATE df.instances SET status = 'completed', completed_at = now()"
                             " WHERE id = %s", (iid,))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    worker = threading.Thread(target=engine)
    worker.start()
    with db.connect("dftui_alice") as conn:
        conn.execute(
            "DO $$ BEGIN PERFORM df.signal(%s, 'go'); "
            "IF df.await_instance(%s, 30) <> 'completed' THEN RAISE EXCEPTION 'not completed'; END IF; END $$"
            .replace("%s", "'" + iid + "'")
        )
    worker.join()
    assert errors == []
    assert db.scalar("SELECT status FROM df.instances WHERE id = %s", (iid,)) == "completed"


def test_a_signal_racing_the_engines_first_checkpoint_still_commits_at_once(db) -> None:
    """The engine's checkpoint holds the SIGNAL task and marks the instance running; a signal
    sent then holds the instance row and wants the task: a deadlock, in which PostgreSQL aborts
    the signal's loopback (it waited first). df.signal tries it again, so the signal is still
    committed at once, not left in the caller's transaction, where a DO block waiting for it to
    be consumed (pg_durable's e2e test 07, test 3) would wait for ever."""
    if not _loopback_available(db):
        pytest.skip("dblink is not available on this server")
    iid = db.scalar("SELECT df.start(df.wait_for_signal('go') ~> 'SELECT 1')", role=ALICE)
    outcome: dict[str, object] = {}

    def send() -> None:
        try:
            with db.connect("dftui_alice", autocommit=False) as conn:
                outcome["answer"] = conn.execute("SELECT df.signal(%s, 'go')", (iid,)).fetchone()[0]
                outcome["seen before commit"] = signals(db, iid)
                conn.rollback()
        except BaseException as exc:  # surfaced by the assertion below
            outcome["error"] = exc

    with db.connect(autocommit=False) as engine:  # what the engine's checkpoint locks, in order
        engine.execute("SELECT 1 FROM df_internal.tasks WHERE instance_id = %s FOR UPDATE", (iid,))
        sender = threading.Thread(target=send)
        sender.start()
        wait_for(lambda: db.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dftui signal loopback'"
            " AND wait_event_type = 'Lock'"), 30, what="the signal to wait for the SIGNAL task")
        engine.execute("UPDATE df.instances SET status = 'running' WHERE id = %s AND status = 'pending'",
                       (iid,))  # df_internal.mark_running: the deadlock
        engine.commit()
        sender.join(60)
    assert outcome == {"answer": "OK", "seen before commit": [("go", {})]}
    assert signals(db, iid) == [("go", {})]  # the caller's rollback did not take it back


def test_signal_inside_workflow_uses_callers_transaction(db) -> None:
    iid = make_instance(db, "dftui_alice")
    with db.connect("dftui_alice", autocommit=False) as conn:
        conn.execute("SELECT set_config('df.in_workflow', 'true', true)")
        conn.execute("SELECT df.signal(%s, 'step')", (iid,))
        assert signals(db, iid) == []
        conn.rollback()
    assert signals(db, iid) == []


# --- status / result / await ----------------------------------------------------------------


def test_status_and_result(db) -> None:
    iid = make_instance(db, "dftui_alice")
    assert db.scalar("SELECT df.status(%s)", (iid,), role=ALICE) == "running"
    assert db.scalar("SELECT df.status(%s)", (iid,), role="dftui_bob") is None
    assert db.scalar("SELECT df.status('00000000')", role=ALICE) is None
    assert db.scalar("SELECT df.result(%s)", (iid,), role=ALICE) is None
    with db.connect() as conn:
        conn.execute(
            "UPDATE df.nodes n SET status = 'completed', result = '{\"rows\":[{\"x\":1}],\"row_count\":1}'"
            " FROM df.instances i WHERE i.id = %s AND n.instance_id = i.id AND n.id = i.root_node",
            (iid,),
        )
    result = db.scalar("SELECT df.result(%s)", (iid,), role=ALICE)
    assert result is not None and '"row_count": 1' in result
    assert db.scalar("SELECT df.result(%s)", (iid,), role="dftui_bob") is None


def test_await_returns_terminal_status(db) -> None:
    done = make_instance(db, "dftui_alice", status="failed")
    assert db.scalar("SELECT df.await_instance(%s)", (done,), role=ALICE) == "failed"
    assert db.scalar("SELECT df.wait_for_completion(%s, 1)", (done,), role=ALICE) == "failed"


def test_await_errors(db) -> None:
    running = make_instance(db, "dftui_alice")
    bobs = make_instance(db, "dftui_bob", status="completed")
    assert error_of(db, "SELECT df.await_instance('12345678', 1)", role=ALICE, primary=True) == (
        "Instance not found: 12345678"
    )
    assert error_of(db, "SELECT df.await_instance(%s, 1)", (bobs,), role=ALICE, primary=True) == (
        f"Instance not found: {bobs}"
    )
    msg = error_of(db, "SELECT df.await_instance(%s, 1)", (running,), role=ALICE, primary=True)
    assert msg == (f"Timeout after 1s waiting for instance {running} (status: running). "
                   "Check if background worker is running.")  # (pg_durable's text)
    for bad in (0, -1):
        assert error_of(db, "SELECT df.await_instance(%s, %s)", (running, bad), role=ALICE,
                        primary=True) == "Timeout must be positive"
    assert db.scalar("SELECT df.await_instance(%s, NULL)", (running,), role=ALICE) is None  # STRICT
    with db.connect("dftui_alice", autocommit=False) as conn:
        conn.execute("SELECT set_config('df.in_workflow', 'true', true)")
        with pytest.raises(psycopg.Error, match="cannot be called inside a workflow"):
            conn.execute("SELECT df.await_instance(%s, 1)", (running,))


def test_await_sees_completion_from_another_session(db) -> None:
    iid = make_instance(db, "dftui_alice")

    def finish() -> None:
        with db.connect() as conn:
            conn.execute("SELECT pg_sleep(0.3)")
            conn.execute("UPDATE df.instances SET status = 'failed' WHERE id = %s", (iid,))

    worker = threading.Thread(target=finish)
    worker.start()
    try:
        assert db.scalar("SELECT df.await_instance(%s, 30)", (iid,), role=ALICE) == "failed"
    finally:
        worker.join()


# --- variables --------------------------------------------------------------------------------


def test_vars_are_scoped_to_current_user(db) -> None:
    with db.connect("dftui_alice") as conn:
        assert conn.execute("SELECT df.setvar('api', 'a1')").fetchone()[0] == "OK"
        conn.execute("SELECT df.setvar('api', 'a2')")  # upsert
        conn.execute("SELECT df.setvar('other', 'x')")
    with db.connect("dftui_bob") as conn:
        conn.execute("SELECT df.setvar('api', 'b1')")
        assert conn.execute("SELECT df.getvar('api')").fetchone()[0] == "b1"
    assert db.scalar("SELECT df.getvar('api')", role=ALICE) == "a2"
    # The superuser bypasses RLS but still only sees its own variables.
    assert db.scalar("SELECT df.getvar('api')") is None
    assert db.scalar("SELECT df.unsetvar('api')", role=ALICE) == "OK"
    assert db.scalar("SELECT df.getvar('api')", role=ALICE) is None
    assert db.scalar("SELECT df.getvar('other')", role=ALICE) == "x"
    assert db.scalar("SELECT df.clearvars()", role=ALICE) == "OK"
    assert db.scalar("SELECT count(*) FROM df.vars WHERE owner = 'dftui_alice'::regrole") == 0
    assert db.scalar("SELECT df.getvar('api')", role="dftui_bob") == "b1"


def test_vars_with_quoted_role(db) -> None:
    with db.connect("Quoted Role") as conn:
        conn.execute("SELECT df.setvar('k', 'v')")
        assert conn.execute("SELECT df.getvar('k')").fetchone()[0] == "v"
    assert db.scalar("SELECT owner::text FROM df.vars WHERE name = 'k'") == '"Quoted Role"'


def test_var_writers_refused_inside_workflow(db) -> None:
    with db.connect("dftui_alice") as conn:
        conn.execute("SELECT df.setvar('keep', '1')")
    for call, text in [
            ("df.setvar('k', 'v')", "df.setvar() cannot be called inside a workflow - set variables "
                                    "before starting the workflow"),
            ("df.unsetvar('keep')", "df.unsetvar() cannot be called inside a workflow - manage "
                                    "variables before starting the workflow"),
            ("df.clearvars()", "df.clearvars() cannot be called inside a workflow - manage variables "
                               "before starting the workflow")]:  # (pg_durable's texts, src/dsl.rs)
        with db.connect("dftui_alice", autocommit=False) as conn:
            conn.execute("SELECT set_config('df.in_workflow', 'true', true)")
            with pytest.raises(psycopg.Error) as info:
                conn.execute(f"SELECT {call}")
            assert info.value.diag.message_primary == text
            conn.rollback()
    with db.connect("dftui_alice", autocommit=False) as conn:
        conn.execute("SELECT set_config('df.in_workflow', 'true', true)")
        assert conn.execute("SELECT df.getvar('keep')").fetchone()[0] == "1"
        conn.rollback()


def test_setvar_rejects_empty_name(db) -> None:
    assert "must not be empty" in error_of(db, "SELECT df.setvar('', 'v')", role=ALICE)
    # STRICT, as pg_durable's: NULL in, NULL out, nothing stored.
    assert db.scalar("SELECT df.setvar(NULL, 'v')", role=ALICE) is None
    assert db.scalar("SELECT df.setvar('k', NULL)", role=ALICE) is None
    assert db.scalar("SELECT count(*) FROM df.vars") == 0


def test_version(db) -> None:
    assert db.scalar("SELECT df.version()", role=ALICE) == schema.latest_version()


# --- with a real engine -----------------------------------------------------------------------


def test_engine_do_block_signals_then_awaits(db, live_engine) -> None:
    """The pg_durable idiom: one DO block signals a waiting instance and awaits its completion."""
    if not _loopback_available(db):
        pytest.skip("dblink is not available on this server")
    from tests.support import start, wait_for

    iid = start(db, "dftui_alice", "df.wait_for_signal('go') ~> 'SELECT 42 AS answer'")
    wait_for(lambda: db.scalar("SELECT status FROM df.instances WHERE id = %s", (iid,)) == "running",
             what="instance running")
    with db.connect("dftui_alice") as conn:
        conn.execute(
            "DO $$ BEGIN PERFORM df.signal('" + iid + "', 'go', '{\"n\": 1}'); "
            "IF df.await_instance('" + iid + "', 60) <> 'completed' THEN "
            "RAISE EXCEPTION 'not completed'; END IF; END $$")
        assert json.loads(conn.execute("SELECT df.result(%s)", (iid,)).fetchone()[0]) == {
            "rows": [{"answer": 42}], "row_count": 1}


def test_engine_other_role_cannot_cancel_or_signal(db, live_engine) -> None:
    from tests.support import start, wait_terminal

    iid = start(db, "dftui_alice", "df.wait_for_signal('go') ~> 'SELECT 1 AS one'")
    for query in ["SELECT df.cancel(%s)", "SELECT df.signal(%s, 'go')"]:
        assert error_of(db, query, (iid,), role="dftui_bob", primary=True) == f"{NOT_FOUND}: {iid}"
    assert error_of(
        db, "SELECT df.await_instance(%s, 1)", (iid,),
        role="dftui_bob", primary=True) == f"Instance not found: {iid}"
    with db.connect("dftui_alice") as conn:
        assert conn.execute("SELECT df.status(%s)", (iid,)).fetchone()[0] in ("pending", "running")
        conn.execute("SELECT df.signal(%s, 'go')", (iid,))
    assert wait_terminal(db, iid) == "completed"
    assert db.scalar("SELECT df.await_instance(%s, 5)", (iid,), role=ALICE) == "completed"


def test_engine_cancel_is_final(db, live_engine) -> None:
    from tests.support import start

    iid = start(db, "dftui_alice", "df.wait_for_signal('never') ~> 'SELECT 1'")
    with db.connect("dftui_alice") as conn:
        assert conn.execute("SELECT df.cancel(%s, 'no longer needed')", (iid,)).fetchone()[0] == (
            f"Instance {iid} cancelled: no longer needed")
        assert conn.execute("SELECT df.await_instance(%s, 30)", (iid,)).fetchone()[0] == "cancelled"
        # A late signal is accepted (queued) but cannot revive it.
        conn.execute("SELECT df.signal(%s, 'never')", (iid,))
        assert conn.execute("SELECT df.cancel(%s)", (iid,)).fetchone()[0] == "already cancelled"
        assert conn.execute("SELECT status, output FROM df.instance_info(%s)", (iid,)).fetchone() == (
            "cancelled", "no longer needed")


def test_signal_sent_during_the_waits_first_pass_is_not_missed(db) -> None:
    """An engine running a SIGNAL wait's first pass holds its task row and has seen no signal;
    a df.signal arriving then must still wake the wait once it parks (not at its timeout)."""
    import threading

    from tests.support import running_engine, start, wait_for, wait_terminal

    with running_engine(db.dsn()):
        iid = start(db, "dftui_alice", "df.wait_for_signal('go') ~> 'SELECT 1 AS one'")
        wait_for(lambda: db.scalar(
            "SELECT count(*) FROM df_internal.tasks t JOIN df.nodes n ON n.instance_id = "
            "t.instance_id AND n.id = t.node_id WHERE t.instance_id = %s AND n.node_type = "
            "'SIGNAL' AND t.phase = 'waiting'", (iid,)), what="the wait to park")
    # Back to the moment before an engine's first pass of the wait ...
    key = "instance_id = %s AND node_id = (SELECT id FROM df.nodes WHERE instance_id = %s " \
          "AND node_type = 'SIGNAL')"
    with db.connect() as conn:
        conn.execute(f"UPDATE df_internal.tasks SET phase = 'run', run_at = now() WHERE {key}",
                     (iid, iid))
    # ... an "engine" takes the task row, the signal arrives, the pass parks the wait.
    with db.connect(autocommit=False) as pass_:
        pass_.execute(f"SELECT 1 FROM df_internal.tasks WHERE {key} FOR UPDATE", (iid, iid))
        sender = threading.Thread(target=lambda: db.scalar(
            "SELECT df.signal(%s, 'go')", (iid,), role=ALICE))
        sender.start()
        wait_for(lambda: db.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND usename = 'dftui_alice'"), what="df.signal to wait for the pass")
        pass_.execute(f"UPDATE df_internal.tasks SET phase = 'waiting', "
                      f"run_at = now() + interval '1 day' WHERE {key}", (iid, iid))
        pass_.commit()
        sender.join(30)
    with running_engine(db.dsn()):
        assert wait_terminal(db, iid) == "completed"
