"""Poison inputs: no value, name or result can wedge the engine or be silently changed.

Every case runs as an ordinary granted role against an engine in both modes (superuser and the
least-privilege owner). A case passes when its instance ends with the exact value, or fails with
a message naming the problem, and a control workflow of another role still completes.
"""

from __future__ import annotations

import json
import threading
from decimal import Decimal

import pytest

from dftui.cli import main as cli_main
from engine import jsonexact
from tests.support import (
    ALICE,
    BOB,
    engine_in_mode,
    node_rows,
    root_result,
    start,
    wait_for,
    wait_terminal,
)

AMOUNT = "12345678901234567890.12345"
RATE = "0.1000000000000000000001"
PAYLOAD = f'{{"amount": {AMOUNT}, "rate": {RATE}}}'


def _rows(db, iid: str) -> list[dict]:
    return root_result(db, iid)["rows"]


def _exact(db, iid: str) -> str:
    """The root node's result as PostgreSQL stores it (jsonb text, no Python decoding)."""
    return db.scalar("SELECT n.result::text FROM df.instances i JOIN df.nodes n "
                     "ON n.instance_id = i.id AND n.id = i.root_node WHERE i.id = %s", (iid,))


def _control(db) -> str:
    """Another role's workflow: it must complete whatever the poison does."""
    return start(db, BOB, "'SELECT 41 + 1 AS answer'")


def _assert_control(db, iid: str) -> None:
    assert wait_terminal(db, iid) == "completed"
    assert _rows(db, iid) == [{"answer": 42}]


# -- names with % -------------------------------------------------------------------------------

@pytest.mark.parametrize("alias", ["%s", "100%", "50%%", "%(x)s", "%%%", "a%b%s%%c"])
def test_percent_in_a_column_alias_comes_back_exactly(db, mode, alias):
    with engine_in_mode(db, mode):
        quoted = alias.replace('"', '""').replace("'", "''")
        iid = start(db, ALICE, f"'SELECT 1 AS \"{quoted}\"'")
        control = _control(db)
        assert wait_terminal(db, iid) == "completed", node_rows(db, iid)
        assert _rows(db, iid) == [{alias: 1}]
        _assert_control(db, control)


def test_percent_in_a_type_name_comes_back_exactly(db, mode):
    with db.connect() as conn:
        conn.execute('CREATE TYPE public."pct%" AS ENUM (\'50%\', \'%s\')')
        conn.execute('CREATE TYPE public."100%s" AS (a int, "b%" text)')
        conn.execute('CREATE DOMAIN public."dom%s" AS numeric')
    with engine_in_mode(db, mode):
        iid = start(db, ALICE, "'SELECT ''%s''::public.\"pct%\" AS \"p%\", "
                               "ROW(1, ''x%'')::public.\"100%s\" AS c, "
                               "ARRAY[''50%'']::public.\"pct%\"[] AS arr'")
        # a domain's rows are read as jsonb (see fused_error): its name is never pasted anywhere
        domain = start(db, ALICE, "'SELECT 1.5::public.\"dom%s\" AS \"d%\"'")
        control = _control(db)
        assert wait_terminal(db, iid) == "completed", node_rows(db, iid)
        assert _rows(db, iid) == [{"p%": "%s", "c": '(1,x%)', "arr": "{50%}"}]
        assert wait_terminal(db, domain) == "completed", node_rows(db, domain)
        assert _exact(db, domain) == '{"rows": [{"d%": 1.5}], "row_count": 1}'
        _assert_control(db, control)


def _wait_parked(db, iid: str) -> None:
    """Until the SIGNAL task is parked. (A signal sent while the engine is still processing the
    task's first run is not seen by it and does not wake it: df_internal.enqueue_signal only
    wakes tasks already in phase 'waiting' — a race outside this test's subject.)"""
    wait_for(lambda: db.scalar("SELECT count(*) FROM df_internal.tasks t JOIN df.nodes n "
                               "ON n.instance_id = t.instance_id AND n.id = t.node_id "
                               "WHERE t.instance_id = %s AND n.node_type = 'SIGNAL' "
                               "AND t.phase = 'waiting'", (iid,)), what="the signal wait")


# -- numbers ------------------------------------------------------------------------------------

def test_signal_payload_numbers_arrive_exactly(db, mode):
    with engine_in_mode(db, mode):
        iid = start(db, ALICE, "df.wait_for_signal('dec') |=> 'sig' ~> 'SELECT $sig.data AS d'")
        _wait_parked(db, iid)
        with db.connect(ALICE) as conn:
            conn.execute("SELECT df.signal(%s, 'dec', %s)", (iid, PAYLOAD))
        assert wait_terminal(db, iid) == "completed", node_rows(db, iid)
        signal_result = db.scalar("SELECT result::text FROM df.nodes WHERE instance_id = %s "
                                  "AND node_type = 'SIGNAL'", (iid,))
        assert f'"amount": {AMOUNT}' in signal_result and f'"rate": {RATE}' in signal_result
        # substituted as quoted JSON text into the next step: the digits survive
        assert jsonexact.loads(_rows(db, iid)[0]["d"]) == {"amount": Decimal(AMOUNT),
                                                          "rate": Decimal(RATE)}


def test_result_numbers_round_trip_through_substitution(db, mode):
    with engine_in_mode(db, mode):
        iid = start(db, ALICE,
                    f"'SELECT ''{PAYLOAD}''::jsonb AS j, (''{PAYLOAD}''::jsonb) -> ''rate'' AS r, "
                    f"{AMOUNT}::numeric AS n, 123456789012345678901234567890 AS i' |=> 'a' ~> "
                    "'SELECT $a.r::text AS r, $a.n::text AS n, $a.i::text AS i, "
                    "$a.j::jsonb = ''" + PAYLOAD + "''::jsonb AS same' |=> 'b'")
        assert wait_terminal(db, iid) == "completed", node_rows(db, iid)
        first = db.scalar("SELECT result::text FROM df.nodes WHERE instance_id = %s "
                          "AND result_name = 'a'", (iid,))
        assert f'"r": {RATE}' in first and f'"n": "{AMOUNT}"' in first
        second = db.scalar("SELECT result FROM df.nodes WHERE instance_id = %s "
                           "AND result_name = 'b'", (iid,))
        assert second["rows"] == [{"r": RATE, "n": AMOUNT, "i": "123456789012345678901234567890",
                                   "same": True}]


def test_vars_keep_their_digits(db, mode):
    with db.connect(ALICE) as conn:
        conn.execute("SELECT df.setvar('amount', %s)", (AMOUNT,))
    with engine_in_mode(db, mode):
        iid = start(db, ALICE, "'SELECT {amount}::text AS v, ''{amount}'' AS t'")
        assert wait_terminal(db, iid) == "completed", node_rows(db, iid)
        assert _rows(db, iid) == [{"v": AMOUNT, "t": AMOUNT}]


def test_cli_prints_numbers_exactly(db, mode, capsys):
    with engine_in_mode(db, mode):
        iid = start(db, ALICE, f"'SELECT ''{PAYLOAD}''::jsonb AS j'")
        assert wait_terminal(db, iid) == "completed"
    capsys.readouterr()
    assert cli_main(["show", iid, "--json", "--dsn", db.dsn(ALICE)]) == 0
    out = capsys.readouterr().out
    assert f'"amount": {AMOUNT}' in out and f'"rate": {RATE}' in out
    data = json.loads(out, parse_float=Decimal)
    root = next(n for n in data["nodes"] if n["result"])
    assert root["result"]["rows"][0]["j"] == {"amount": Decimal(AMOUNT), "rate": Decimal(RATE)}


# -- the mechanism: a failure anywhere in the engine's own handling of a task ----------------------

MARK = "/*poison*/"


def _boom(stage: str) -> RuntimeError:
    return RuntimeError(f"injected {stage} fault")


def _inject(monkeypatch, stage: str) -> None:
    """Make one stage of the engine's handling blow up for steps carrying MARK (test-only: the
    hooks are monkeypatched into this process's engine, nothing in production reaches them)."""
    from engine import claim, metrics, sql_steps

    if stage == "planning":
        original = sql_steps.SqlSteps.plan

        def plan(self, conn, task, started):
            if MARK in (task.query or ""):
                raise _boom(stage)
            return original(self, conn, task, started)
        monkeypatch.setattr(sql_steps.SqlSteps, "plan", plan)
    elif stage == "describing":
        original_describe = sql_steps.SqlSteps._describe

        def describe(self, conn, task, text, **options):
            if MARK in text:
                raise _boom(stage)
            return original_describe(self, conn, task, text, **options)
        monkeypatch.setattr(sql_steps.SqlSteps, "_describe", describe)
    elif stage == "substitution":
        original_sub = sql_steps.substitute_results

        def substitute(text, named, *, raw=False):
            if MARK in text:
                raise _boom(stage)
            return original_sub(text, named, raw=raw)
        monkeypatch.setattr(sql_steps, "substitute_results", substitute)
    elif stage == "encoding":
        original_enc = sql_steps.encoding_query

        def encoding(columns, types, call, conn):
            if MARK in call:
                raise _boom(stage)
            return original_enc(columns, types, call, conn)
        monkeypatch.setattr(sql_steps, "encoding_query", encoding)
    elif stage == "loading":  # decoding the claimed row's user data
        original_load = claim._json_column

        def load(value, default):
            if value is not None and "poison" in value:
                raise _boom(stage)
            return original_load(value, default)
        monkeypatch.setattr(claim, "_json_column", load)
    elif stage == "bookkeeping":  # outside the task's handler, inside its batch
        original_started = metrics.StepTally.started

        def started(self, node_type, kind):
            worker = next((w for w in _ENGINE.workers if w.task is not None
                           and MARK in (w.task.query or "")), None)
            if worker is not None and threading.current_thread().name == f"dftui-worker-{worker.number}":
                raise _boom(stage)
            return original_started(self, node_type, kind)
        monkeypatch.setattr(metrics.StepTally, "started", started)


_ENGINE = None  # the engine of the running mechanism test (for the bookkeeping hook)

STAGES = ["planning", "describing", "substitution", "encoding", "loading", "bookkeeping"]


@pytest.mark.parametrize("stage", STAGES)
def test_an_engine_fault_in_any_stage_fails_the_node_and_nothing_else(db, mode, monkeypatch, stage):
    global _ENGINE
    _inject(monkeypatch, stage)
    step = f"SELECT 1 AS v {MARK}" if stage != "loading" else "SELECT ''{poison}'' AS v"
    if stage == "loading":
        with db.connect(ALICE) as conn:
            conn.execute("SELECT df.setvar('poison', 'poison')")
    with engine_in_mode(db, mode, max_task_faults=3) as eng:
        _ENGINE = eng
        iid = start(db, ALICE, f"'SELECT 0 AS first' ~> '{step}'")
        controls = [_control(db) for _ in range(5)]
        for control in controls:
            _assert_control(db, control)
        assert wait_terminal(db, iid) == "failed"
        failed = [n for n in node_rows(db, iid) if n["status"] == "failed" and n["node_type"] == "SQL"]
        assert len(failed) == 1, node_rows(db, iid)
        error = failed[0]["error"]
        assert "the engine could not process this step: " in error
        assert f"RuntimeError: injected {stage} fault" in error
        assert "(gave up after 3 tries)" in error
        # bounded: exactly max_task_faults tries, then the failure
        assert db.scalar("SELECT count(*) FROM df_internal.tasks WHERE instance_id = %s", (iid,)) == 0
        # the engine is still fine: the same role's next workflow runs
        if stage == "loading":
            with db.connect(ALICE) as conn:
                conn.execute("SELECT df.unsetvar('poison')")
        after = start(db, ALICE, "'SELECT 2 AS v'")
        assert wait_terminal(db, after) == "completed"
    _ENGINE = None


def test_a_failing_checkpoint_fails_the_node_after_bounded_retries(db, mode):
    """The checkpoint statement itself fails (here: a trigger refuses the attempt row)."""
    with db.connect() as conn:
        conn.execute("""
            CREATE FUNCTION public.refuse_attempt() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.ran_sql LIKE '%/*poison*/%' AND NEW.status = 'completed' THEN
                    RAISE EXCEPTION 'injected checkpoint fault';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER refuse_attempt BEFORE INSERT ON df_internal.node_attempts
                FOR EACH ROW EXECUTE FUNCTION public.refuse_attempt();""")
    with engine_in_mode(db, mode, max_task_faults=2):
        iid = start(db, ALICE, f"'SELECT 1 AS v {MARK}'")
        controls = [_control(db) for _ in range(3)]
        for control in controls:
            _assert_control(db, control)
        assert wait_terminal(db, iid) == "failed"
        error = db.scalar("SELECT error FROM df.nodes WHERE instance_id = %s AND status = 'failed' "
                          "AND node_type = 'SQL'", (iid,))
        assert "injected checkpoint fault" in error and "(gave up after 2 tries)" in error


def test_a_fault_waiting_for_its_retry_is_visible_not_silent(db, mode, monkeypatch):
    _inject(monkeypatch, "planning")
    with engine_in_mode(db, mode, max_task_faults=10):
        iid = start(db, ALICE, f"'SELECT 1 AS v {MARK}'")
        details = wait_for(lambda: db.scalar(
            "SELECT status_details FROM df.nodes WHERE instance_id = %s "
            "AND status_details ? 'engine_fault'", (iid,)), what="the fault to show")
        assert "injected planning fault" in details["engine_fault"]
        assert details["faults"] >= 1 and details["next_attempt_at"]
        with db.connect(ALICE) as conn:
            conn.execute("SELECT df.cancel(%s)", (iid,))
        assert wait_terminal(db, iid) == "cancelled"


# -- nesting: 2,000-deep JSON anywhere ----------------------------------------------------------

DEPTH = 2000
DEEP_SQL = f"(pg_catalog.repeat(''['', {DEPTH}) || pg_catalog.repeat('']'', {DEPTH}))::jsonb"


def test_a_deep_named_result_is_substituted_and_shown(db, mode, capsys):
    with engine_in_mode(db, mode):
        iid = start(db, ALICE, f"'SELECT {DEEP_SQL} AS j' |=> 'deep' ~> "
                               "'SELECT pg_catalog.jsonb_typeof($deep.j::jsonb) AS t, "
                               f"$deep.j::jsonb = {DEEP_SQL} AS same'")
        controls = [_control(db) for _ in range(5)]
        assert wait_terminal(db, iid) == "completed", node_rows(db, iid)
        assert _rows(db, iid) == [{"t": "array", "same": True}]
        for control in controls:
            _assert_control(db, control)
    capsys.readouterr()
    for args in (["show", iid], ["show", iid, "--json"]):
        code = cli_main([*args, "--dsn", db.dsn(ALICE)])
        out, err = capsys.readouterr()
        assert (code, err) == (0, ""), err
    assert "[" * DEPTH in out.replace(" ", "").replace("\n", "")


def test_a_deep_signal_payload_arrives_exactly(db, mode):
    payload = "[" * DEPTH + "1.10" + "]" * DEPTH
    with engine_in_mode(db, mode):
        iid = start(db, ALICE, "df.wait_for_signal('deep') |=> 'sig' ~> "
                               "'SELECT pg_catalog.jsonb_typeof($sig.data::jsonb) AS t, "
                               "$sig.data::jsonb::text AS d'")
        controls = [_control(db) for _ in range(3)]
        _wait_parked(db, iid)
        with db.connect(ALICE) as conn:
            conn.execute("SELECT df.signal(%s, 'deep', %s)", (iid, payload))
        assert wait_terminal(db, iid) == "completed", node_rows(db, iid)
        assert _rows(db, iid)[0]["t"] == "array"
        assert _rows(db, iid)[0]["d"].replace(" ", "") == payload
        for control in controls:
            _assert_control(db, control)


def test_the_tui_renders_a_deep_result():
    from rich.console import Console

    from dftui.widgets.node_panel import result_renderable

    deep = jsonexact.loads("[" * DEPTH + "0.1000000000000000000001" + "]" * DEPTH)
    console = Console(width=80, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    for value in (deep, {"rows": [{"j": deep}], "row_count": 1}):
        console.print(result_renderable(value))
    text = console.export_text()
    assert "0.1000000000000000000001" in text


# -- several statements, unknown references, oversized names ------------------------------------

@pytest.mark.parametrize("step", [
    "SELECT 1 AS a; SELECT 2 AS b",
    "INSERT INTO public.t VALUES (1); SELECT 2 AS b",
    "SELECT 1 AS a; INSERT INTO public.t VALUES (2)",
    "INSERT INTO public.t VALUES (1); INSERT INTO public.t VALUES (2)",
])
def test_several_statements_in_one_step_fail_clearly(db, mode, step):
    """pg_durable runs a step as one prepared statement (sqlx), which PostgreSQL refuses for
    several statements: the node fails, nothing it did is kept, never an empty success."""
    with db.connect() as conn:
        conn.execute("CREATE TABLE public.t (a int)")
        conn.execute("GRANT ALL ON public.t TO PUBLIC")
    with engine_in_mode(db, mode):
        iid = start(db, ALICE, "%s", step)
        assert wait_terminal(db, iid) == "failed"
        error = db.scalar("SELECT error FROM df.nodes WHERE instance_id = %s AND status = 'failed' "
                          "AND node_type = 'SQL'", (iid,))
        assert "a step must be a single SQL statement" in error
        assert db.scalar("SELECT count(*) FROM public.t") == 0


def test_one_statement_with_semicolons_inside_still_runs(db, mode):
    with engine_in_mode(db, mode):
        iid = start(db, ALICE, "%s", "SELECT ';' AS a, $$x; y$$ AS b;")
        do = start(db, ALICE, "%s", "DO $$ BEGIN PERFORM 1; PERFORM 2; END $$;")
        assert wait_terminal(db, iid) == "completed", node_rows(db, iid)
        assert _rows(db, iid) == [{"a": ";", "b": "x; y"}]
        assert wait_terminal(db, do) == "completed", node_rows(db, do)


def test_an_unknown_reference_names_the_missing_result(db, mode):
    with engine_in_mode(db, mode):
        alone = start(db, ALICE, "'SELECT $nosuch AS v'")
        among = start(db, ALICE, "'SELECT 1 AS x' |=> 'known' ~> 'SELECT $known AS k, $nosuch.col AS v'")
        for iid in (alone, among):
            assert wait_terminal(db, iid) == "failed"
            error = db.scalar("SELECT error FROM df.nodes WHERE instance_id = %s "
                              "AND status = 'failed' AND node_type = 'SQL'", (iid,))
            assert '$nosuch refers to no named result' in error and '"nosuch"' in error, error


@pytest.mark.parametrize(("what", "statement"), [
    ("the instance label", "SELECT df.start('SELECT 1', %s)"),
    ("the var name", "SELECT df.setvar(%s, 'v')"),
    ("the result name", "SELECT df.start(df.as('SELECT 1', %s))"),
])
def test_an_oversized_name_is_refused_naming_it_and_its_limit(db, what, statement):
    huge = "x" * (10 << 20)
    counts = "SELECT (SELECT count(*) FROM df.instances) + (SELECT count(*) FROM df.vars)"
    before = db.scalar(counts)
    with db.connect(ALICE) as conn, pytest.raises(Exception) as caught:
        conn.execute(statement, (huge,))
    message = str(caught.value).splitlines()[0]
    assert f"{what} is too long: {10 << 20} bytes, the limit is 1024 bytes" in message, message
    assert db.scalar(counts) == before


def test_an_oversized_signal_name_is_refused(db):
    iid = start(db, ALICE, "df.wait_for_signal('x')")
    with db.connect(ALICE) as conn, pytest.raises(Exception) as caught:
        conn.execute("SELECT df.signal(%s, %s, '{}')", (iid, "s" * 5000))
    assert "the signal name is too long: 5000 bytes, the limit is 1024 bytes" in str(caught.value)
    assert db.scalar("SELECT count(*) FROM df_internal.signals") == 0


# -- a task that kills its engine process --------------------------------------------------------

def test_a_task_that_kills_the_engine_is_quarantined_across_restarts(db, mode):
    import subprocess
    import sys
    import time
    from pathlib import Path

    from tests.support import setup_engine_owner
    from tests.support.poison_crash import CRASH_MARK

    dsn = setup_engine_owner(db) if mode == "owner" else db.dsn()
    iid = start(db, ALICE, f"'SELECT 1 AS v {CRASH_MARK}'")
    controls = [_control(db) for _ in range(4)]
    root = Path(__file__).resolve().parent.parent
    deaths = 0
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        proc = subprocess.Popen([sys.executable, "-m", "tests.support.poison_crash", dsn], cwd=root,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while proc.poll() is None and db.scalar(
                    "SELECT status FROM df.instances WHERE id = %s", (iid,)) not in ("failed", "completed"):
                time.sleep(0.1)
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)
            elif proc.returncode == 137:
                deaths += 1
        if db.scalar("SELECT status FROM df.instances WHERE id = %s", (iid,)) == "failed":
            break
        assert deaths <= 8, f"the engine died {deaths} times on the same task"
    assert db.scalar("SELECT status FROM df.instances WHERE id = %s", (iid,)) == "failed"
    error = db.scalar("SELECT error FROM df.nodes WHERE instance_id = %s AND node_type = 'SQL'", (iid,))
    assert "the engine process running this step stopped" in error, error
    assert "(gave up after 3 tries)" in error
    assert 3 <= deaths <= 8
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.poison_crash", dsn], cwd=root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for control in controls:  # the other role's work is unharmed
            _assert_control(db, control)
    finally:
        proc.terminate()
        proc.wait(30)
    assert db.scalar("SELECT count(*) FROM df_internal.tasks WHERE instance_id = %s", (iid,)) == 0
