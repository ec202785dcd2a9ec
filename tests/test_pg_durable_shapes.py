"""Node configs and results are stored exactly as pg_durable 0.2.6 writes them, so monitoring
queries written for pg_durable (`n.query::jsonb ->> 'signal_name'`, ...) work; pg_durable's
behaviours that read them (truthiness, BREAK in a loop condition, `$name.*` cap); and instances
stored by the 0.1.0 baseline, in its shapes, are rewritten by the upgrade and still run.

All as an ordinary role, on every test server (PostgreSQL 18 and 15).
"""

from __future__ import annotations

import json

import psycopg
import pytest

from engine import schema
from tests.support import ALICE, running_engine, start, wait_for, wait_terminal


def _query(db, expr: str) -> str:
    """The `query` of the node envelope a DSL expression builds."""
    return db.scalar(f"SELECT ({expr})::json ->> 'query'", role=ALICE)


def _stored(db, iid: str, node_type: str) -> list[str]:
    with db.connect(ALICE) as conn:
        return [r[0] for r in conn.execute(
            "SELECT query FROM df.nodes WHERE instance_id = %s AND node_type = %s ORDER BY id",
            (iid, node_type))]


# -- what the DSL writes ------------------------------------------------------------------------

@pytest.mark.parametrize(("expr", "query"), [
    ("df.wait_for_signal('go')", '{"signal_name":"go","timeout_seconds":null}'),
    ("df.wait_for_signal('go', 30)", '{"signal_name":"go","timeout_seconds":30}'),
    ("df.wait_for_schedule('*/5 * * * *')", '{"cron_expr":"*/5 * * * *"}'),
    ("df.break()", '{"break_value":null}'),
    ("df.break('done')", '{"break_value":"done"}'),
    ("df.break('{\"status\": \"complete\"}')", '{"break_value":"{\\"status\\": \\"complete\\"}"}'),
    ("df.if_rows('r', 'SELECT 1', 'SELECT 2')",
     '{"condition_type":"result_has_rows","result_name":"r"}'),
])
def test_dsl_writes_pg_durable_configs(db, expr, query) -> None:
    assert _query(db, expr) == query


def test_started_graphs_store_pg_durable_configs(db) -> None:
    iid = start(db, ALICE,
                "df.wait_for_signal('approve', 60) ~> df.wait_for_schedule('0 9 * * 1')"
                " ~> df.loop('SELECT 1', 'SELECT 1' ~> df.break('out'))"
                " ~> ('SELECT 1' |=> 'r') ~> df.if_rows('r', 'SELECT 2', 'SELECT 3')"
                " ~> ('SELECT true' ?> 'SELECT 4' !> 'SELECT 5') ~> df.join3('SELECT 6', 'SELECT 7', 'SELECT 8')")
    assert _stored(db, iid, "SIGNAL") == ['{"signal_name":"approve","timeout_seconds":60}']
    assert _stored(db, iid, "WAIT_SCHEDULE") == ['{"cron_expr":"0 9 * * 1"}']
    assert _stored(db, iid, "BREAK") == ['{"break_value":"out"}']
    ifs = _stored(db, iid, "IF")
    assert '{"condition_type":"result_has_rows","result_name":"r"}' in ifs
    assert any(q.startswith('{"condition_node":"') and " " not in q for q in ifs)  # compact
    (loop,) = _stored(db, iid, "LOOP")
    assert loop.startswith('{"condition_node":"') and " " not in loop
    (join,) = _stored(db, iid, "JOIN")
    assert join.startswith('{"extra_nodes":["') and " " not in join
    # A monitoring query from pg_durable's documentation.
    with db.connect(ALICE) as conn:
        assert conn.execute(
            "SELECT n.query::jsonb ->> 'signal_name' FROM df.nodes n"
            " WHERE n.instance_id = %s AND n.node_type = 'SIGNAL'", (iid,)).fetchone()[0] == "approve"


def test_pg_durable_envelopes_start_unchanged(db) -> None:
    """Envelopes a pg_durable client builds (configs in pg_durable's shapes) start as they are."""
    envelope = json.dumps({"node_type": "THEN",
                           "left_node": {"node_type": "SIGNAL",
                                         "query": '{"signal_name":"x","timeout_seconds":null}'},
                           "right_node": {"node_type": "BREAK", "query": '{"break_value":"v"}'}})
    iid = db.scalar("SELECT df.start(%s)", (envelope,), role=ALICE)
    assert _stored(db, iid, "SIGNAL") == ['{"signal_name":"x","timeout_seconds":null}']
    assert _stored(db, iid, "BREAK") == ['{"break_value":"v"}']


# -- what the engine writes and how it reads them -------------------------------------------------


def _root_result(db, iid: str):
    return db.scalar("SELECT df.result(%s)", (iid,), role=ALICE)


def test_sleep_and_schedule_results_are_pg_durable_s(db, live_engine) -> None:
    slept = start(db, ALICE, "df.sleep(0)")
    assert wait_terminal(db, slept) == "completed"
    assert json.loads(_root_result(db, slept)) == {"slept": True, "seconds": 0}
    scheduled = start(db, ALICE, "df.wait_for_schedule('* * * * *')")
    wait_for(lambda: db.scalar("SELECT count(*) FROM df_internal.tasks WHERE instance_id = %s"
                               " AND phase = 'waiting'", (scheduled,)), what="the schedule wait")
    with db.connect() as conn:  # make the next tick due now instead of within the minute
        conn.execute("UPDATE df_internal.tasks SET run_at = now() WHERE instance_id = %s", (scheduled,))
        conn.execute("SELECT pg_notify('df_work', %s)", (scheduled,))
    assert wait_terminal(db, scheduled) == "completed"
    assert json.loads(_root_result(db, scheduled)) == {"scheduled": True}


def test_signal_wait_reads_signal_name(db, live_engine) -> None:
    iid = start(db, ALICE, "df.wait_for_signal('approve')")
    wait_for(lambda: db.scalar("SELECT count(*) FROM df_internal.tasks WHERE instance_id = %s"
                               " AND phase = 'waiting'", (iid,)), what="the signal wait")
    with db.connect(ALICE) as conn:
        assert conn.execute("SELECT detail FROM df.waiting_instances WHERE instance_id = %s",
                            (iid,)).fetchone()[0] == "approve"
        conn.execute("SELECT df.signal(%s, 'approve', '{\"ok\": true}')", (iid,))
    assert wait_terminal(db, iid) == "completed"
    assert json.loads(_root_result(db, iid)) == {"signal_name": "approve", "timed_out": False,
                                                 "data": {"ok": True}}


def test_the_user_guides_waiting_queries_work(db, live_engine) -> None:
    """pg_durable's USER_GUIDE, "Detecting What an Instance is Waiting On": its three queries,
    verbatim but for the id, find what a running instance waits on."""
    signal = start(db, ALICE, "'SELECT 1' ~> df.wait_for_signal('approve')")
    schedule = start(db, ALICE, "df.wait_for_schedule('0 9 * * 1')")
    sleep = start(db, ALICE, "df.sleep(3600)")
    queries = {
        signal: "SELECT n.node_id, n.query::jsonb->>'signal_name' AS signal_name, n.inferred_status"
                " FROM df.instance_nodes(%s) AS n WHERE n.node_type = 'SIGNAL'"
                " AND n.inferred_status = 'running'",
        schedule: "SELECT n.node_id, n.query::jsonb->>'cron_expr' AS cron_schedule, n.inferred_status"
                  " FROM df.instance_nodes(%s) AS n WHERE n.node_type = 'WAIT_SCHEDULE'"
                  " AND n.inferred_status = 'running'",
        sleep: "SELECT n.node_id, n.query::text AS duration_seconds, n.inferred_status"
               " FROM df.instance_nodes(%s) AS n WHERE n.node_type = 'SLEEP'"
               " AND n.inferred_status = 'running'",
    }
    with db.connect(ALICE) as conn:
        for iid, query in queries.items():
            wait_for(lambda iid=iid, query=query: conn.execute(query, (iid,)).fetchall(),
                     what=f"{iid} to be waiting")
        assert [r[1:] for r in conn.execute(queries[signal], (signal,))] == [("approve", "running")]
        assert [r[1:] for r in conn.execute(queries[schedule], (schedule,))] == [("0 9 * * 1", "running")]
        assert [r[1:] for r in conn.execute(queries[sleep], (sleep,))] == [("3600", "running")]


@pytest.mark.parametrize("prefix", ["", "'SELECT ''prefix''' ~> "], ids=["root", "non-root"])
def test_break_in_a_loop_condition_completes_the_loop(db, live_engine, prefix) -> None:
    """pg_durable's tests/e2e/sql/58: the loop (root or not) completes with the break value."""
    iid = start(db, ALICE, f"{prefix}df.loop('SELECT ''body''', 'SELECT 1' ~> df.break('condition-done'))")
    assert wait_terminal(db, iid) == "completed"
    assert _root_result(db, iid) == '"condition-done"'
    with db.connect(ALICE) as conn:
        assert conn.execute("SELECT result::text FROM df.nodes WHERE instance_id = %s AND node_type = 'LOOP'",
                            (iid,)).fetchone()[0] == '"condition-done"'


@pytest.mark.parametrize(("value", "arm"), [
    ("0.0::numeric", "else"), ("0.0::float8", "else"), ("'0.0'", "else"), ("' 0 '", "else"),
    ("'-0'", "else"), ("' '", "else"), ("'No'", "else"), ("'F'", "else"), ("'0e3'", "else"),
    ("E'\\t0\\n'", "else"), ("E'\\n no \\r'", "else"), ("E'\\tyes'", "then"), ("'nan'", "then"),
    ("'yes'", "then"), ("' TRUE '", "then"), ("'0.1'", "then"), ("'abc'", "then"),
    ("2.5::numeric", "then"), ("'t'", "then"),
])
def test_truthiness_is_pg_durable_s(db, live_engine, value, arm) -> None:
    quoted = value.replace("'", "''")
    iid = start(db, ALICE, f"'SELECT {quoted} AS v' ?> 'SELECT ''then'' AS arm' !> 'SELECT ''else'' AS arm'")
    assert wait_terminal(db, iid) == "completed"
    assert json.loads(_root_result(db, iid))["rows"] == [{"arm": arm}]


def test_row_set_expansion_is_capped_at_10000_rows(db, live_engine) -> None:
    iid = start(db, ALICE, "'SELECT g FROM generate_series(1, 10001) g' |=> 'big'"
                           " ~> 'SELECT count(*) FROM $big.*'")
    assert wait_terminal(db, iid) == "failed"
    with db.connect(ALICE) as conn:
        output = conn.execute("SELECT output FROM df.instance_info(%s)", (iid,)).fetchone()[0]
    assert "$big.* — result has 10001 rows, exceeding the maximum of 10000 for row-set expansion" in output


# -- instances stored by the 0.1.0 baseline ------------------------------------------------------

def test_upgrade_rewrites_0_1_0_configs_and_they_still_run(baseline_db) -> None:
    db = baseline_db
    iid = start(db, ALICE,
                "df.wait_for_signal('go', 600) ~> ('SELECT 1 AS x' |=> 'r')"
                " ~> df.if_rows('r', df.loop('SELECT 1', 'SELECT 1' ~> df.break('left')), 'SELECT 0')")
    sched = start(db, ALICE, "df.wait_for_schedule('0  9 * * 1')")
    with db.connect(ALICE) as conn:
        old = dict(conn.execute("SELECT node_type, query FROM df.nodes WHERE instance_id = %s"
                                " AND node_type IN ('SIGNAL', 'BREAK')", (iid,)).fetchall())
    assert json.loads(old["SIGNAL"])["name"] == "go"  # the 0.1.0 shapes
    with db.connect() as conn:
        schema.install(conn)
    assert _stored(db, iid, "SIGNAL") == ['{"signal_name":"go","timeout_seconds":600}']
    assert _stored(db, iid, "BREAK") == ['{"break_value":"left"}']
    assert '{"condition_type":"result_has_rows","result_name":"r"}' in _stored(db, iid, "IF")
    assert _stored(db, sched, "WAIT_SCHEDULE") == ['{"cron_expr":"0 9 * * 1"}']
    with running_engine(db.dsn()):
        wait_for(lambda: db.scalar("SELECT count(*) FROM df_internal.tasks WHERE instance_id = %s"
                                   " AND phase = 'waiting'", (iid,)), what="the signal wait")
        with db.connect(ALICE) as conn:
            conn.execute("SELECT df.signal(%s, 'go')", (iid,))
        assert wait_terminal(db, iid) == "completed"
    assert _root_result(db, iid) == '"left"'
    with db.connect(ALICE) as conn, pytest.raises(psycopg.Error):
        conn.execute("SELECT df.start(df.wait_for_schedule('not a cron'))")
