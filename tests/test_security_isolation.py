"""Role isolation: bob never sees or touches alice's instances, nodes, results, signals or
variables through any df.* function or view, directly or from inside one of his steps."""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.support import (
    ALICE,
    BOB,
    node_rows,
    root_result,
    running_engine,
    start,
    wait_for,
    wait_terminal,
)

SECRETS = ("alice-label-7f3", "alice-result-91c", "alice-signal-5d2", "alice-var-0e8", "alice-query-33a")


@pytest.fixture
def alice_world(db):
    """alice: a completed, a waiting, a failed and a cancelled instance, plus a variable."""
    with running_engine(db.dsn()):
        with db.connect(ALICE) as conn:
            conn.execute("SELECT df.setvar('token', %s)", (SECRETS[3],))
            done = conn.execute(
                "SELECT df.start(%s, %s)",
                (f"SELECT '{SECRETS[1]}' AS secret, '{SECRETS[4]}' AS q", SECRETS[0])).fetchone()[0]
            waiting = conn.execute("SELECT df.start(df.wait_for_signal('go') ~> 'SELECT 1', %s)",
                                   (SECRETS[0],)).fetchone()[0]
            failed = conn.execute("SELECT df.start('SELECT 1/0', %s)", (SECRETS[0],)).fetchone()[0]
            cancelled = conn.execute("SELECT df.start(df.wait_for_signal('never'), %s)",
                                     (SECRETS[0],)).fetchone()[0]
        assert wait_terminal(db, done) == "completed"
        assert wait_terminal(db, failed) == "failed"
        wait_for(lambda: db.scalar("SELECT count(*) FROM df_internal.tasks WHERE instance_id IN (%s, %s) "
                                   "AND phase = 'waiting'", (waiting, cancelled)) == 2, what="waits parked")
        with db.connect(ALICE) as conn:
            conn.execute("SELECT df.cancel(%s)", (cancelled,))
            # a queued signal with a secret payload (the wait is for 'go', this one is 'other')
            conn.execute("SELECT df.signal(%s, 'other', %s)", (waiting, json.dumps({"s": SECRETS[2]})))
        yield {"done": done, "waiting": waiting, "failed": failed, "cancelled": cancelled}


def _snapshot(db, ids: dict[str, str]) -> list:
    with db.connect() as conn:
        return [
            conn.execute("SELECT id, status, label, submitted_by::text, updated_at FROM df.instances "
                         "WHERE id = ANY(%s) ORDER BY id", (list(ids.values()),)).fetchall(),
            conn.execute("SELECT instance_id, id, status, result::text, error FROM df.nodes "
                         "WHERE instance_id = ANY(%s) ORDER BY 1, 2", (list(ids.values()),)).fetchall(),
            conn.execute("SELECT instance_id, name, data::text, consumed_at FROM df_internal.signals "
                         "ORDER BY id").fetchall(),
            conn.execute("SELECT owner::text, name, value FROM df.vars ORDER BY 1, 2").fetchall(),
            conn.execute("SELECT count(*) FROM df_internal.retries").fetchone(),
        ]


def _calls(ids: dict[str, str]) -> list[tuple[str, tuple]]:
    calls: list[tuple[str, tuple]] = []
    for iid in ids.values():
        calls += [
            ("SELECT df.status(%s)", (iid,)),
            ("SELECT df.result(%s)", (iid,)),
            ("SELECT * FROM df.instance_info(%s)", (iid,)),
            ("SELECT * FROM df.instance_nodes(%s)", (iid,)),
            ("SELECT * FROM df.instance_executions(%s)", (iid,)),
            ("SELECT * FROM df.explain(%s)", (iid,)),
            ("SELECT df.await_instance(%s, 1)", (iid,)),
            ("SELECT df.wait_for_completion(%s, 1)", (iid,)),
            ("SELECT df.signal(%s, 'go', 'from bob')", (iid,)),
            ("SELECT df.signal_loopback('dftui_bob', %s, 'go', 'from bob')", (iid,)),
            ("SELECT df.cancel(%s, 'bob was here')", (iid,)),
            ("SELECT df.retry(%s)", (iid,)),
            ("SELECT df.retry(%s, (SELECT min(id) FROM df.nodes))", (iid,)),
        ]
    calls += [
        ("SELECT * FROM df.list_instances()", ()),
        ("SELECT * FROM df.list_instances(NULL, 1000)", ()),
        ("SELECT * FROM df.list_instances('completed', 1000)", ()),
        ("SELECT * FROM df.list_instances(NULL, 1000, %s)", (SECRETS[0],)),
        ("SELECT df.getvar('token')", ()),
        ("SELECT df.unsetvar('token')", ()),
        ("SELECT df.clearvars()", ()),
        ("SELECT df.setvar('token', 'bob')", ()),
        ("SELECT * FROM df.instances", ()),
        ("SELECT * FROM df.nodes", ()),
        ("SELECT * FROM df.vars", ()),
        ("UPDATE df.instances SET status = 'cancelled'", ()),
        ("UPDATE df.vars SET value = 'bob'", ()),
        ("DELETE FROM df.vars", ()),
    ]
    return calls


def _views(db) -> list[str]:
    with db.connect() as conn:
        return [r[0] for r in conn.execute(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = 'df' AND c.relkind IN ('v', 'm') "
            "AND has_table_privilege('dftui_bob', c.oid, 'SELECT') ORDER BY 1").fetchall()]


def _leaks(text: str, ids: dict[str, str], *, ids_too: bool = True) -> list[str]:
    found = [s for s in SECRETS if s in text]
    if ids_too:
        found += [i for i in ids.values() if i in text]
    return found


def test_bob_sees_and_touches_nothing_of_alice(db, alice_world):
    ids = alice_world
    before = _snapshot(db, ids)
    with db.connect(BOB) as conn:
        for stmt, params in _calls(ids):
            try:
                cur = conn.execute(stmt, params)
                rows = cur.fetchall() if cur.description else []
            except psycopg.Error as exc:
                message = str(exc)
                assert not _leaks(message, ids, ids_too=False), (stmt, message)
                continue
            text = json.dumps(rows, default=str)
            # a function may echo the id it was given; it must not reveal anything else
            assert not _leaks(text, ids, ids_too=not params), (stmt, text)
            if "status(" in stmt or "result(" in stmt:
                assert rows == [(None,)], (stmt, rows)
        for view in _views(db):
            text = json.dumps(conn.execute(f"SELECT * FROM {view}").fetchall(), default=str)
            assert not _leaks(text, ids), (view, text)
    after = _snapshot(db, ids)
    # bob's own var may exist now; alice's data must be exactly as before
    assert [r for r in after[3] if r[0] != BOB] == [r for r in before[3] if r[0] != BOB]
    assert after[:3] == before[:3] and after[4] == before[4]


def test_bob_sees_nothing_of_alice_from_inside_his_steps(db, alice_world):
    ids = alice_world
    before = _snapshot(db, ids)
    # Match alice's ids and secrets in reversed row text. Bob's own probe rows (node queries,
    # ran_sql) must never match, so no probe spells an id or a secret forwards: the pattern holds
    # them reversed, and the per-instance probes reverse the id back in SQL. Those probes fail
    # with an error naming the id forwards (in bob's own node and instance rows), so every scan
    # has finished before the first of them starts.
    pattern = "|".join(t[::-1] for t in [*ids.values(), *SECRETS])
    scans = [f"SELECT count(*) AS c FROM {rel} x WHERE reverse(to_jsonb(x)::text) ~ '{pattern}'"
             for rel in ["df.instances", "df.nodes", "df.vars", *_views(db)]]
    scans.append(f"SELECT count(*) AS c FROM df.list_instances(NULL, 1000) x "
                 f"WHERE reverse(to_jsonb(x)::text) ~ '{pattern}'")
    per_id: list[str] = []
    for iid in ids.values():
        spelled = f"reverse('{iid[::-1]}')"
        per_id += [f"SELECT df.status({spelled}) IS NULL AS hidden",
                   f"SELECT df.signal({spelled}, 'go')", f"SELECT df.cancel({spelled})"]
    assert not any(secret in probe for probe in [*scans, *per_id]
                   for secret in [*ids.values(), *SECRETS])
    with running_engine(db.dsn()):
        for probes in (scans, per_id):
            runs = [(p, start(db, BOB, "%s", p)) for p in probes]
            for probe, iid in runs:
                status = wait_terminal(db, iid)
                if status == "completed":
                    row = root_result(db, iid)["rows"][0]
                    assert all(v in (0, True) for v in row.values()), (probe, row)
                else:
                    error = " ".join(n["error"] or "" for n in node_rows(db, iid))
                    assert "not found or access denied" in error, (probe, error)
    assert _snapshot(db, ids) == before
