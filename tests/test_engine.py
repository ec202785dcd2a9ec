"""The engine against a real PostgreSQL: every node type, substitution, result typing,
failures and cancellation, submitted by an ordinary granted role."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import psycopg
import pytest

from tests.support import (
    ALICE,
    node_rows,
    root_result,
    running_engine,
    start,
    wait_for,
    wait_terminal,
)

# An engine backend currently inside pg_sleep() (the step text itself is not in pg_stat_activity:
# the engine runs it through the submitter's trampoline).
SLEEPING = ("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'dftui engine%%' "
            "AND wait_event = 'PgSleep' AND datname = current_database()")


@pytest.fixture
def counter_engine(db, live_engine):
    """The shared engine, with public.counter (ten rows at 0) for steps to bump."""
    with db.connect() as conn:
        conn.execute("CREATE TABLE public.counter (id int PRIMARY KEY, n int NOT NULL DEFAULT 0)")
        conn.execute("INSERT INTO public.counter SELECT g, 0 FROM generate_series(1, 10) g")
        conn.execute("GRANT ALL ON public.counter TO PUBLIC")
    yield live_engine


def test_sequence_runs_as_submitter_with_substitution(db, counter_engine):
    iid = start(db, ALICE, """'SELECT 41 AS answer, current_user::text AS who' |=> 'first'
        ~> 'SELECT $first + 1 AS next, $first.who AS who, length(''{sys_instance_id}'') = 8 AS ok'""")
    assert wait_terminal(db, iid) == "completed"
    result = root_result(db, iid)
    assert result == {"rows": [{"next": 42, "who": "dftui_alice", "ok": True}], "row_count": 1}
    nodes = node_rows(db, iid)
    assert len(nodes) == 3 and all(n["status"] == "completed" for n in nodes)


def test_result_typing(db, counter_engine):
    iid = start(db, ALICE, """'SELECT true AS b, 2::int2 AS s, 3::int8 AS l, 1.50::numeric AS num,
        ''NaN''::float8 AS nan, 0.5::float4 AS f, ''x''::text AS t,
        ''00000000-0000-0000-0000-000000000001''::uuid AS u,
        ''2024-01-02 03:04:05+00''::timestamptz AS tz, ''2024-01-02 03:04:05''::timestamp AS ts,
        ''2024-01-02''::date AS d, ''{"a":[1]}''::jsonb AS j, NULL::text AS n,
        ARRAY[1,2] AS arr, ''1 day''::interval AS iv, ''10.0.0.1''::inet AS ip'""")
    assert wait_terminal(db, iid) == "completed"
    row = root_result(db, iid)["rows"][0]
    assert row["b"] is True and row["s"] == 2 and row["l"] == 3
    assert row["num"] == "1.50" and row["nan"] is None and row["f"] == 0.5
    assert row["t"] == "x" and row["u"] == "00000000-0000-0000-0000-000000000001"
    assert row["tz"].startswith("2024-01-02T03:04:05") and row["ts"] == "2024-01-02T03:04:05"
    assert row["d"] == "2024-01-02" and row["j"] == {"a": [1]} and row["n"] is None
    assert row["arr"] == [1, 2] and row["iv"] == "1 day" and row["ip"] == "10.0.0.1"


def test_bytea_is_unsupported(db, counter_engine):
    iid = start(db, ALICE, "'SELECT ''\\x00''::bytea AS b'")
    assert wait_terminal(db, iid) == "failed"
    assert "Unsupported column type" in node_rows(db, iid)[0]["error"]


def test_failure_records_error_and_skips_the_rest(db, counter_engine):
    iid = start(db, ALICE, "'SELECT 1/0' ~> 'UPDATE public.counter SET n = n + 1 WHERE id = 1'")
    assert wait_terminal(db, iid) == "failed"
    nodes = {n["node_type"] + (n["query"] or "")[:6]: n for n in node_rows(db, iid)}
    failed = nodes["SQLSELECT"]
    assert failed["status"] == "failed" and "division by zero" in failed["error"]
    assert failed["result"] == failed["error"]
    assert nodes["SQLUPDATE"]["status"] == "pending"
    assert db.scalar("SELECT n FROM public.counter WHERE id = 1") == 0


def test_if_and_truthiness(db, counter_engine):
    cases = {
        "'SELECT 0'": "else", "'SELECT 2'": "then", "'SELECT ''no'''": "else",
        "'SELECT ''yes'''": "then", "'SELECT 1 WHERE false'": "else", "'SELECT NULL'": "else",
        "'SELECT ''[]''::jsonb'": "else", "'SELECT ''{\"a\":1}''::jsonb'": "then",
    }
    ids = {cond: start(db, ALICE, f"{cond} ?> 'SELECT ''then'' AS arm' !> 'SELECT ''else'' AS arm'")
           for cond in cases}
    for cond, expected in cases.items():
        assert wait_terminal(db, ids[cond]) == "completed"
        assert root_result(db, ids[cond])["rows"][0]["arm"] == expected, cond


def test_if_rows(db, counter_engine):
    iid = start(db, ALICE, """'SELECT 1 WHERE false' |=> 'r' ~>
        df.if_rows('r', 'SELECT ''rows'' AS x', 'SELECT ''none'' AS x')""")
    assert wait_terminal(db, iid) == "completed"
    assert root_result(db, iid)["rows"][0]["x"] == "none"


def test_join_returns_array_and_exposes_named_results(db, counter_engine):
    iid = start(db, ALICE, """(('SELECT 1 AS a' |=> 'x') & ('SELECT 2 AS b' |=> 'y') & 'SELECT 3 AS c')
        ~> 'SELECT $x + $y AS total, (SELECT count(*) FROM $y.*) AS ok'""")
    assert wait_terminal(db, iid) == "completed", node_rows(db, iid)
    assert root_result(db, iid)["rows"][0]["total"] == 3
    inner = next(n for n in node_rows(db, iid) if n["node_type"] == "JOIN"
                 and isinstance(n["result"][0], dict) and n["result"][0].get("rows") == [{"a": 1}])
    assert inner["result"][1]["rows"] == [{"b": 2}]


def test_row_set_substitution(db, counter_engine):
    iid = start(db, ALICE, """'SELECT g AS n, ''v'' || g AS s FROM generate_series(1,3) g' |=> 'rows'
        ~> 'SELECT sum(rows.n) AS total, string_agg(rows.s, '','') AS ss FROM $rows.*'""")
    assert wait_terminal(db, iid) == "completed"
    assert root_result(db, iid)["rows"][0] == {"total": 6, "ss": "v1,v2,v3"}


def test_strict_and_optional_references(db, counter_engine):
    strict = start(db, ALICE, "'SELECT 1 WHERE false' |=> 'e' ~> 'SELECT $e AS v'")
    optional = start(db, ALICE, "'SELECT 1 WHERE false' |=> 'e' ~> 'SELECT $e? IS NULL AS v'")
    assert wait_terminal(db, strict) == "failed"
    assert wait_terminal(db, optional) == "completed"
    assert root_result(db, optional)["rows"][0]["v"] is True


def test_vars_snapshot_at_start(db, counter_engine):
    with db.connect(ALICE) as conn:
        conn.execute("SELECT df.setvar('table_id', '7')")
        iid = conn.execute("SELECT df.start('SELECT {table_id} AS v, ''{unknown}'' AS u, ''{sys_label}'' AS l', 'lbl')").fetchone()[0]
        conn.execute("SELECT df.setvar('table_id', '8')")
    assert wait_terminal(db, iid) == "completed"
    assert root_result(db, iid)["rows"][0] == {"v": 7, "u": "{unknown}", "l": "lbl"}


def test_race_first_finisher_wins_and_loser_is_cancelled(db, counter_engine):
    iid = start(db, ALICE, "'SELECT pg_sleep(30), ''slow'' AS w' | 'SELECT ''fast'' AS w'")
    assert wait_terminal(db, iid) == "completed"
    assert root_result(db, iid)["rows"][0]["w"] == "fast"
    wait_for(lambda: not db.scalar(SLEEPING), 20, what="loser statement cancelled")


def test_loop_with_break(db, counter_engine):
    iid = start(db, ALICE, """@> ('UPDATE public.counter SET n = n + 1 WHERE id = 2 RETURNING n' |=> 'c'
        ~> ('SELECT $c >= 3' ?> df.break('"done"') !> 'SELECT 1'))""")
    assert wait_terminal(db, iid, 60) == "completed"
    assert root_result(db, iid) == "done"
    assert db.scalar("SELECT n FROM public.counter WHERE id = 2") == 3
    assert db.scalar("SELECT count(*) FROM df_internal.loop_iterations WHERE instance_id = %s", (iid,)) == 2


def test_loop_with_condition(db, counter_engine):
    iid = start(db, ALICE, """df.loop('UPDATE public.counter SET n = n + 1 WHERE id = 3 RETURNING n',
                                     'SELECT n < 2 FROM public.counter WHERE id = 3')""")
    assert wait_terminal(db, iid, 60) == "completed"
    assert db.scalar("SELECT n FROM public.counter WHERE id = 3") == 2


def test_break_outside_loop_fails(db, counter_engine):
    iid = start(db, ALICE, "'SELECT 1' ~> df.break()")
    assert wait_terminal(db, iid) == "failed"
    assert any("outside" in (n["error"] or "") for n in node_rows(db, iid))


def test_sleep(db, counter_engine):
    iid = start(db, ALICE, "df.sleep(1) ~> 'SELECT 1 AS done'")
    assert wait_terminal(db, iid) == "completed"


def test_a_workflow_that_starts_asleep_reads_running_while_it_sleeps(db, counter_engine):
    """Its first leaf is a timer, so nothing checkpointed for the whole sleep and it read
    'pending' (counted under Pending, 'took' empty) — pg_durable's reads running once its worker
    loaded it. The engine takes it up at once and parks the timer; it ends when it is due."""
    iid = start(db, ALICE, "df.sleep(30) ~> 'SELECT 1 AS done'")
    wait_for(lambda: db.scalar("SELECT status FROM df.instances WHERE id = %s", (iid,)) == "running",
             what="the sleeping instance taken up")
    due = db.scalar("SELECT t.run_at - i.created_at FROM df_internal.tasks t "
                    "JOIN df.instances i ON i.id = t.instance_id WHERE t.instance_id = %s", (iid,))
    assert due.total_seconds() >= 30  # parked until its end, not ended early
    assert db.scalar("SELECT phase FROM df_internal.tasks WHERE instance_id = %s", (iid,)) == "waiting"
    with db.connect(ALICE) as conn:
        conn.execute("SELECT df.cancel(%s)", (iid,))
    short = start(db, ALICE, "df.sleep(1) ~> 'SELECT 1 AS done'")
    assert wait_terminal(db, short) == "completed"
    assert root_result(db, short)["rows"] == [{"done": 1}]


def test_signal_queued_before_wait(db, counter_engine):
    iid = start(db, ALICE, "df.sleep(1) ~> df.wait_for_signal('go')")
    with db.connect(ALICE) as conn:
        conn.execute("SELECT df.signal(%s, 'go', '{\"ok\": true}')", (iid,))
    assert wait_terminal(db, iid) == "completed"
    assert root_result(db, iid) == {"signal_name": "go", "timed_out": False, "data": {"ok": True}}


def test_signal_after_wait_and_timeout(db, counter_engine):
    waiting = start(db, ALICE, "df.wait_for_signal('later')")
    timing_out = start(db, ALICE, "df.wait_for_signal('never', 1)")
    wait_for(lambda: db.scalar("SELECT phase FROM df_internal.tasks WHERE instance_id = %s",
                               (waiting,)) == "waiting", what="signal wait parked")
    with db.connect(ALICE) as conn:
        conn.execute("SELECT df.signal(%s, 'later', 'plain text')", (waiting,))
    assert wait_terminal(db, waiting) == "completed"
    assert root_result(db, waiting)["data"] == "plain text"
    assert wait_terminal(db, timing_out) == "completed"
    assert root_result(db, timing_out) == {"signal_name": "never", "timed_out": True, "data": None}


def test_wait_schedule_is_a_durable_timer(db, counter_engine):
    iid = start(db, ALICE, "df.wait_for_schedule('*/5 * * * *') ~> 'SELECT 1 AS fired'")
    due = wait_for(lambda: db.scalar(
        "SELECT run_at FROM df_internal.tasks WHERE instance_id = %s AND phase = 'waiting'", (iid,)),
        what="cron wait parked")
    assert due.minute % 5 == 0 and due.second == 0
    with db.connect() as conn:  # fast-forward time: make the timer due now
        conn.execute("UPDATE df_internal.tasks SET run_at = now() WHERE instance_id = %s", (iid,))
        conn.execute("NOTIFY df_work")
    assert wait_terminal(db, iid) == "completed"


def test_cancel_stops_running_statement(db, counter_engine):
    iid = start(db, ALICE, "'SELECT pg_sleep(60)' ~> 'UPDATE public.counter SET n = 99 WHERE id = 4'")
    wait_for(lambda: db.scalar(SLEEPING), what="step running")
    with db.connect(ALICE) as conn:
        conn.execute("SELECT df.cancel(%s, 'stop it')", (iid,))
    wait_for(lambda: not db.scalar(SLEEPING), 20, what="statement cancelled")
    assert db.scalar("SELECT status FROM df.instances WHERE id = %s", (iid,)) == "cancelled"
    wait_for(lambda: not db.scalar("SELECT count(*) FROM df_internal.tasks WHERE instance_id = %s", (iid,)),
             what="tasks dropped")
    assert db.scalar("SELECT n FROM public.counter WHERE id = 4") == 0


class _Worker:
    """What cancel_dead_steps reads of a worker: the task it runs, and a cancel to count."""

    def __init__(self, current: tuple[str, str, int]) -> None:
        self.current = current
        self.cancels = 0

    def cancel_statement(self) -> None:
        self.cancels += 1


def _sql_task(db, iid: str) -> tuple[str, str, int]:
    with db.connect() as conn:
        row = conn.execute("SELECT m.node_id, m.gen FROM df_internal.node_meta m JOIN df.nodes n "
                           "ON n.instance_id = m.instance_id AND n.id = m.node_id "
                           "WHERE m.instance_id = %s AND n.node_type = 'SQL'", (iid,)).fetchone()
    assert row is not None
    return (iid, row[0], row[1])


def test_a_step_whose_own_checkpoint_ended_its_instance_is_not_cancelled(db, live_engine):
    """The worker clears its current task only after its commit returned: the dead-step check
    must not take that task for a step of an ended instance (the cancel would hit the worker's
    next statement), while a step of a cancelled instance is still cancelled."""
    from types import SimpleNamespace

    from engine.listener import cancel_dead_steps

    done = start(db, ALICE, "'SELECT 1 AS one'")
    assert wait_terminal(db, done) == "completed"
    finished = _Worker(_sql_task(db, done))
    # (a step that has not ended: its node is neither completed nor failed)
    waiting = start(db, ALICE, "df.wait_for_signal('never') ~> 'SELECT 2 AS two'")
    wait_for(lambda: db.scalar("SELECT status FROM df.instances WHERE id = %s", (waiting,))
             == "running", what="the instance to wait for its signal")
    running = _Worker(_sql_task(db, waiting))
    with db.connect(ALICE) as conn:
        conn.execute("SELECT df.cancel(%s)", (waiting,))
    with db.connect() as conn:
        assert cancel_dead_steps(SimpleNamespace(workers=[finished, running]), conn) == 1
    assert (finished.cancels, running.cancels) == (0, 1)


def test_escalation_attempts_fail(db, counter_engine):
    for attack in ("RESET ROLE", "SET ROLE postgres", "SET SESSION AUTHORIZATION postgres",
                   "SELECT set_config(''role'', ''postgres'', false)"):
        iid = start(db, ALICE, f"'{attack}' ~> 'SELECT current_user::text AS who'")
        assert wait_terminal(db, iid) == "failed", attack
        error = next(n["error"] for n in node_rows(db, iid) if n["node_type"] == "SQL" and n["error"])
        assert "security-definer" in error, (attack, error)


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server API
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode()
        status = 503 if "fail" in self.path else 200
        payload = json.dumps({"path": self.path, "body": body,
                              "key": self.headers.get("idempotency-key")}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("X-Test", "yes")
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server():
    server = HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://localhost:{server.server_address[1]}"
    server.shutdown()


def test_http_step(db, http_server):
    with running_engine(db.dsn(), http_policy="allow-all", http_allow_private=True):
        iid = start(db, "dftui_dave", "'SELECT ''hello'' AS msg' |=> 'm' ~> df.http(%s, 'POST', '{\"m\":\"$m\"}')",
                    http_server + "/ok")
        assert wait_terminal(db, iid) == "completed", node_rows(db, iid)
        result = root_result(db, iid)
        assert result["status"] == 200 and result["ok"] is True and result["encoding"] == "text"
        assert result["headers"]["x-test"] == "yes"
        body = json.loads(result["body"])
        assert body["body"] == '{"m":"hello"}' and body["key"].startswith("dftui-")
        failing = start(db, "dftui_dave", "df.http(%s)", http_server + "/fail")
        assert wait_terminal(db, failing) == "failed"
        assert "503" in node_rows(db, failing)[0]["error"]


def test_http_loopback_refused_by_default_policy(db, http_server):
    with running_engine(db.dsn(), http_policy="allow-all"):
        iid = start(db, "dftui_dave", "df.http(%s, 'GET')", http_server + "/ok")
        assert wait_terminal(db, iid) == "failed"
        assert "loopback" in node_rows(db, iid)[0]["error"]


def test_retry_policy_flaky_step(db, counter_engine):
    with db.connect() as conn:
        conn.execute("CREATE SEQUENCE public.flaky3; CREATE SEQUENCE public.flaky2")
        conn.execute("GRANT ALL ON SEQUENCE public.flaky3, public.flaky2 TO PUBLIC")
        conn.execute("""CREATE FUNCTION public.flaky(seq regclass) RETURNS int LANGUAGE plpgsql AS $$
            BEGIN IF nextval(seq) < 3 THEN RAISE EXCEPTION 'flaky' USING ERRCODE = '40001'; END IF;
            RETURN 1; END $$""")
    ok = start(db, ALICE, "df.retry_policy('SELECT public.flaky(''public.flaky3'') AS v', 3, 0.1)")
    bad = start(db, ALICE, "df.retry_policy('SELECT public.flaky(''public.flaky2'') AS v', 2, 0.1)")
    assert wait_terminal(db, ok) == "completed"
    assert wait_terminal(db, bad) == "failed"
    attempts = db.scalar("SELECT array_agg(status ORDER BY id) FROM df_internal.node_attempts WHERE instance_id = %s", (ok,))
    assert attempts == ["retrying", "retrying", "completed"]


def test_retry_reruns_only_failed_steps(db, counter_engine):
    with db.connect() as conn:
        conn.execute("CREATE TABLE public.fixme (ok boolean); INSERT INTO public.fixme VALUES (false)")
        conn.execute("GRANT ALL ON public.fixme TO PUBLIC")
    steps = [f"'UPDATE public.counter SET n = n + 1 WHERE id = {i}'" for i in (5, 6)]
    steps.append("'SELECT 1 / (CASE WHEN ok THEN 1 ELSE 0 END) FROM public.fixme'")
    steps += [f"'UPDATE public.counter SET n = n + 1 WHERE id = {i}'" for i in (7, 8)]
    iid = start(db, ALICE, " ~> ".join(steps))
    assert wait_terminal(db, iid) == "failed"
    with db.connect() as conn:
        conn.execute("UPDATE public.fixme SET ok = true")
    with db.connect(ALICE) as conn:
        conn.execute("SELECT df.retry(%s)", (iid,))
        conn.execute("SELECT df.retry(%s)", (iid,))  # idempotent
    assert wait_terminal(db, iid) == "completed"
    counts = db.scalar("SELECT array_agg(n ORDER BY id) FROM public.counter WHERE id BETWEEN 5 AND 8")
    assert counts == [1, 1, 1, 1]
    with db.connect("dftui_bob") as conn, pytest.raises(Exception, match="not found or access denied"):
        conn.execute("SELECT df.retry(%s)", (iid,))


def test_step_runs_in_the_instances_database(db, counter_engine):
    other = db.name + "_x"
    with db.server.admin() as conn:
        conn.execute(f'CREATE DATABASE "{other}"')
    try:
        with psycopg.connect(db.server.conninfo(other), autocommit=True) as conn:
            conn.execute("CREATE TABLE public.t (v int)")
            conn.execute("GRANT ALL ON public.t TO dftui_alice")
        iid = start(db, ALICE,
                    "'INSERT INTO public.t VALUES (7) RETURNING current_database()::text AS db, current_user::text AS who'"
                    ", NULL, %s", other)
        assert wait_terminal(db, iid) == "completed", node_rows(db, iid)
        assert root_result(db, iid)["rows"] == [{"db": other, "who": ALICE}]
        with psycopg.connect(db.server.conninfo(other)) as conn:
            assert conn.execute("SELECT v FROM public.t").fetchall() == [(7,)]
    finally:
        with db.server.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{other}" WITH (FORCE)')


def test_non_transactional_statement(db, counter_engine):
    """Refused (docs/engine.md: they cannot run inside the submitter's trampoline, and a
    SET ROLE outside it would be undone by user code they trigger): a clear failure, nothing run."""
    with db.connect() as conn:
        conn.execute("CREATE TABLE public.alice_t (a int)")
        conn.execute("ALTER TABLE public.alice_t OWNER TO dftui_alice")
        conn.execute("GRANT CREATE ON SCHEMA public TO dftui_alice")
    iid = start(db, ALICE, "'CREATE INDEX CONCURRENTLY alice_t_a ON public.alice_t (a)' ~> 'VACUUM public.alice_t'")
    assert wait_terminal(db, iid) == "failed"
    errors = " ".join(n["error"] or "" for n in node_rows(db, iid))
    assert "CREATE INDEX CONCURRENTLY cannot run as a workflow step" in errors
    assert not db.scalar("SELECT count(*) FROM pg_indexes WHERE indexname = 'alice_t_a'")


def test_one_workflow_with_every_node_type(db, http_server):
    """SQL, THEN, IF, JOIN, RACE, LOOP, BREAK, SLEEP, WAIT_SCHEDULE, SIGNAL, HTTP and
    HTTP_MULTIPART in one instance, submitted by an ordinary role, run to completion."""
    expr = f"""
        ('SELECT 1 AS one' |=> 'one')
        ~> (@> ('SELECT 1 AS n' ~> df.break('"looped"')))
        ~> ('SELECT $one = 1' ?> df.sleep(0) !> 'SELECT 1/0')
        ~> (df.http('{http_server}/a', 'POST', '{{"x": 1}}')
            & df.http_multipart('{http_server}/b', 'POST', '[{{"name": "f", "data_b64": "aGk=", "filename": "f.txt"}}]'::jsonb))
        ~> (df.wait_for_schedule('0 0 1 1 *') | df.wait_for_signal('go'))
        ~> 'SELECT ''done'' AS status'"""
    with running_engine(db.dsn(), http_policy="allow-all", http_allow_private=True):
        iid = start(db, "dftui_dave", expr)
        wait_for(lambda: db.scalar("SELECT count(*) FROM df_internal.tasks t JOIN df.nodes n "
                                   "ON n.instance_id = t.instance_id AND n.id = t.node_id "
                                   "WHERE t.instance_id = %s AND n.node_type = 'SIGNAL' "
                                   "AND t.phase = 'waiting'", (iid,)), what="signal wait")
        with db.connect("dftui_dave") as conn:
            conn.execute("SELECT df.signal(%s, 'go')", (iid,))
        assert wait_terminal(db, iid) == "completed", node_rows(db, iid)
    types = {n["node_type"] for n in node_rows(db, iid)}
    assert types == {"SQL", "THEN", "IF", "JOIN", "RACE", "LOOP", "BREAK", "SLEEP",
                     "WAIT_SCHEDULE", "SIGNAL", "HTTP", "HTTP_MULTIPART"}
    assert root_result(db, iid)["rows"] == [{"status": "done"}]


def test_domain_typed_result_columns(db, counter_engine):
    with db.connect() as conn:
        conn.execute("CREATE DOMAIN public.posint AS int CHECK (VALUE > 0)")
    iid = start(db, ALICE, "'SELECT 5::public.posint AS p, ''x'' AS t'")
    assert wait_terminal(db, iid) == "completed", node_rows(db, iid)
    assert root_result(db, iid)["rows"] == [{"p": 5, "t": "x"}]


def test_a_step_cancelled_by_the_engines_shutdown_runs_again(db):
    """A graceful stop (SIGTERM, quitting the demo) cancels the steps still running after its
    grace: such a step has not failed — it stays queued and the next engine runs it again, as
    docs/operations.md promises (it was recorded failed: "canceling statement due to user
    request")."""
    from engine.config import EngineConfig
    from engine.runner import Engine

    engine = Engine(EngineConfig(dsn=db.dsn(), concurrency=1, poll_interval=1.0,
                                 shutdown_grace=0.2))
    engine.start()
    try:
        iid = start(db, ALICE, "'SELECT pg_sleep(600) AS slept'")
        wait_for(lambda: db.scalar(SLEEPING) == 1, what="the step running")
    finally:
        engine.stop()
    assert db.scalar("SELECT status FROM df.nodes WHERE instance_id = %s", (iid,)) != "failed"
    assert db.scalar("SELECT status FROM df.instances WHERE id = %s", (iid,)) in ("pending",
                                                                                  "running")
    assert db.scalar("SELECT count(*) FROM df_internal.tasks WHERE instance_id = %s", (iid,)) == 1
    with running_engine(db.dsn()):  # the next engine runs it again, charging it no fault
        wait_for(lambda: db.scalar(SLEEPING) == 1, what="the step running again")
        assert db.scalar("SELECT faults FROM df_internal.tasks WHERE instance_id = %s",
                         (iid,)) == 0
        with db.connect(ALICE) as conn:
            conn.execute("SELECT df.cancel(%s)", (iid,))
        assert wait_terminal(db, iid) == "cancelled"
