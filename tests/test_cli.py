"""The `dftui` command line against a real server: every command, --json, exit codes, and
one-line errors (never a traceback) for bad input."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from dftui.cli import main
from tests.support import ALICE, BOB, CAROL, wait_terminal


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *fragments: str) -> None:
    assert err.startswith("dftui: "), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


def cli_start(capsys, db, expression: str, role: str = ALICE, *extra: str) -> str:
    code, out, err = run(capsys, "start", expression, "--dsn", db.dsn(role), *extra)
    assert (code, err) == (0, ""), err
    instance_id = out.strip()
    assert len(instance_id) == 8
    return instance_id


# --- usage ----------------------------------------------------------------------------------


def test_help_and_version(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in ("install", "engine", "start", "ls", "show", "cancel", "retry", "signal",
                    "explain", "vars", "demo", "grant", "revoke"):
        assert command in out
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith("dftui ")


@pytest.mark.parametrize(
    "args",
    [
        ["--no-such-flag"],
        ["ls", "--limit", "zero"],
        ["ls", "--status", "sleeping"],
        ["show"],
        ["engine", "--concurrency", "0"],
        ["engine", "--batch-size", "0"],
        ["engine", "--batch-size", "many"],
        ["engine", "--http-policy", "sometimes"],
        ["uninstall"],
        ["ls", "--dsn", "host='unterminated"],
    ],
)
def test_usage_errors_exit_2_with_one_line(capsys, args):
    code, out, err = run(capsys, *args)
    assert code == 2 and out == ""
    assert_one_line_error(err)


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["host='unterminated"], 2, "invalid connection string"),
        (["postgresql://u:pw@127.0.0.1/x"], 2, "password"),
        (["--read-only", "host=127.0.0.1 port=1 connect_timeout=3"], 1, ""),
        (["--dsn", "host=127.0.0.1 port=1 connect_timeout=3"], 1, ""),
        (["host=a", "--dsn", "host=b"], 2, "not both"),
    ],
)
def test_default_command_opens_the_tui_with_conninfo(capsys, args, code, fragment):
    """`dftui CONNINFO` is the TUI; bad or unreachable targets fail before the screen opens."""
    got, out, err = run(capsys, *args)
    assert got == code
    assert_one_line_error(err, fragment)
    assert "pw" not in err


def test_password_on_the_command_line_is_refused(capsys, db):
    code, out, err = run(capsys, "ls", "--dsn", db.dsn(ALICE) + " password=secret")
    assert code == 2 and out == ""
    assert_one_line_error(err, "password")
    assert "secret" not in err


def test_unreachable_server_is_one_line(capsys):
    code, out, err = run(capsys, "ls", "--dsn", "host=127.0.0.1 port=1 connect_timeout=3")
    assert code == 1 and out == ""
    assert_one_line_error(err)


def test_subprocess_entry_point_has_no_traceback(db):
    result = subprocess.run(
        [sys.executable, "-m", "dftui", "show", "0000abcd", "--dsn", db.dsn(ALICE)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert_one_line_error(result.stderr, "Instance not found or access denied")


# --- grants ---------------------------------------------------------------------------------


def test_grant_and_revoke(capsys, db):
    def has_usage() -> bool:
        return db.scalar("SELECT has_schema_privilege('dftui_carol', 'df', 'USAGE')")

    assert not has_usage()
    code, out, err = run(capsys, "grant", "dftui_carol", "--http", "--dsn", db.dsn())
    assert (code, err) == (0, "")
    assert "granted df usage to dftui_carol" in out
    assert has_usage()
    assert db.scalar(
        "SELECT has_function_privilege('dftui_carol', "
        "'df.http(text,text,text,jsonb,integer)', 'EXECUTE')"
    )
    code, out, err = run(capsys, "revoke", "dftui_carol", "--dsn", db.dsn())
    assert (code, err) == (0, "")
    assert not has_usage()


def test_grant_unknown_role_is_one_line(capsys, db):
    code, out, err = run(capsys, "grant", "no_such_role_x", "--dsn", db.dsn())
    assert code == 1 and out == ""
    assert_one_line_error(err, "no_such_role_x", "does not exist")


def test_grant_as_ordinary_role_fails_cleanly(capsys, db):
    code, out, err = run(capsys, "grant", "dftui_carol", "--dsn", db.dsn(ALICE))
    assert code == 1 and out == ""
    assert_one_line_error(err)
    assert not db.scalar("SELECT has_schema_privilege('dftui_carol', 'df', 'USAGE')")


# --- start / ls / show / explain ------------------------------------------------------------


def test_start_ls_show_json(capsys, db):
    instance_id = cli_start(capsys, db, "'SELECT 1 AS one' ~> 'SELECT 2 AS two'", ALICE,
                            "--label", "cli-test")
    assert db.scalar("SELECT submitted_by::text FROM df.instances WHERE id = %s",
                     (instance_id,)) == ALICE

    code, out, err = run(capsys, "ls", "--json", "--dsn", db.dsn(ALICE))
    assert (code, err) == (0, "")
    rows = json.loads(out)
    assert [r["id"] for r in rows] == [instance_id]
    assert rows[0]["label"] == "cli-test" and rows[0]["submitted_by"] == ALICE

    code, out, _ = run(capsys, "ls", "--label", "other", "--json", "--dsn", db.dsn(ALICE))
    assert code == 0 and json.loads(out) == []
    code, out, _ = run(capsys, "ls", "--status", "completed", "--json", "--dsn", db.dsn(ALICE))
    assert code == 0 and json.loads(out) == []

    code, out, err = run(capsys, "ls", "--dsn", db.dsn(ALICE))
    assert code == 0 and instance_id in out and "cli-test" in out

    code, out, err = run(capsys, "show", instance_id, "--json", "--dsn", db.dsn(ALICE))
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert data["instance"]["id"] == instance_id
    assert {n["node_type"] for n in data["nodes"]} == {"THEN", "SQL"}

    code, out, err = run(capsys, "show", instance_id, "--dsn", db.dsn(ALICE))
    assert (code, err) == (0, "")
    assert instance_id in out and "SELECT 1 AS one" in out and "cli-test" in out


def test_start_json(capsys, db):
    code, out, err = run(capsys, "start", "'SELECT 1'", "--label", "j", "--json",
                         "--dsn", db.dsn(ALICE))
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert data["label"] == "j"
    assert db.scalar("SELECT label FROM df.instances WHERE id = %s", (data["id"],)) == "j"


@pytest.mark.parametrize(
    "expression",
    [
        "'SELECT 1' ~> ",                       # syntax error
        "df.as('SELECT 1', 'not an identifier')",  # builder validation
        "'{\"node_type\": \"NOPE\", \"query\": \"x\"}'",  # unknown node type
        "'SELECT 1'; DROP TABLE df.instances",  # not a single expression
    ],
)
def test_start_bad_input_is_one_line_and_changes_nothing(capsys, db, expression):
    code, out, err = run(capsys, "start", expression, "--dsn", db.dsn(ALICE))
    assert code == 1 and out == ""
    assert_one_line_error(err)
    assert db.scalar("SELECT count(*) FROM df.instances") == 0
    assert db.scalar("SELECT to_regclass('df.instances') IS NOT NULL")


def test_start_bad_label(capsys, db):
    code, out, err = run(capsys, "start", "'SELECT 1'", "--label", "bad\nlabel",
                         "--dsn", db.dsn(ALICE))
    assert code == 1
    assert_one_line_error(err, "label")
    assert db.scalar("SELECT count(*) FROM df.instances") == 0


def test_explain_expression_and_instance(capsys, db):
    code, out, err = run(capsys, "explain", "'SELECT 1' ~> df.sleep(30)", "--dsn", db.dsn(ALICE))
    assert (code, err) == (0, "")
    assert "SQL: SELECT 1" in out and "SLEEP 30s" in out
    instance_id = cli_start(capsys, db, "'SELECT 7'")
    code, out, err = run(capsys, "explain", instance_id, "--dsn", db.dsn(ALICE))
    assert (code, err) == (0, "")
    assert instance_id in out and "SELECT 7" in out


def test_explain_of_an_unknown_or_foreign_id_is_an_error(capsys, db):
    foreign = cli_start(capsys, db, "df.sleep(3600)", BOB)
    for bad in ("0000abcd", foreign):
        code, out, err = run(capsys, "explain", bad, "--dsn", db.dsn(ALICE))
        assert code == 1 and out == ""
        assert_one_line_error(err, f"Instance '{bad}' not found")


def test_explain_invalid_graph_is_an_error(capsys, db):
    code, out, err = run(
        capsys, "explain", '{"node_type": "NOPE", "query": "x"}', "--dsn", db.dsn(ALICE)
    )
    assert code == 1 and out == ""
    assert_one_line_error(err, "Unknown node_type 'NOPE'")


@pytest.mark.parametrize("command", ["show", "cancel", "retry"])
def test_unknown_and_foreign_ids(capsys, db, command):
    foreign = cli_start(capsys, db, "df.sleep(3600)", BOB)
    for bad, fragment, want in (("0000abcd", "Instance not found or access denied", 1),
                                (foreign, "Instance not found or access denied", 1),
                                ("xyz", "invalid instance id", 2)):
        code, out, err = run(capsys, command, bad, "--dsn", db.dsn(ALICE))
        assert code == want, (command, bad)
        assert_one_line_error(err, fragment)
    assert db.scalar("SELECT status FROM df.instances WHERE id = %s", (foreign,)) == "pending"


# --- cancel / signal / retry ----------------------------------------------------------------


def test_cancel_some_ok_some_not(capsys, db):
    first = cli_start(capsys, db, "df.sleep(3600)")
    second = cli_start(capsys, db, "df.sleep(3600)")
    code, out, err = run(capsys, "cancel", first, "0000abcd", second, "--reason", "not needed",
                         "--dsn", db.dsn(ALICE))
    assert code == 1
    assert f"{first}: cancelled" in out and f"{second}: cancelled" in out
    assert_one_line_error(err, "0000abcd", "Instance not found or access denied")
    statuses = {
        r[0] for r in db.connect().execute(
            "SELECT status FROM df.instances WHERE id IN (%s, %s)", (first, second)
        )
    }
    assert statuses == {"cancelled"}


def test_cancel_json(capsys, db):
    instance_id = cli_start(capsys, db, "df.sleep(3600)")
    code, out, err = run(capsys, "cancel", instance_id, "--json", "--dsn", db.dsn(ALICE))
    assert (code, err) == (0, "")
    results = json.loads(out)
    assert [(r["id"], r["ok"]) for r in results] == [(instance_id, True)]


def test_timeout_without_wait_is_a_usage_error(capsys, db):
    code, out, err = run(capsys, "start", "'SELECT 1'", "--timeout", "5", "--dsn", db.dsn(ALICE))
    assert (code, out) == (2, "")
    assert_one_line_error(err, "--timeout applies to --wait")
    assert db.scalar("SELECT count(*) FROM df.instances") == 0  # nothing was started


def test_signal_validates_payload(capsys, db):
    instance_id = cli_start(capsys, db, "df.wait_for_signal('go')")
    for bad in ("{not json", "NaN", '{"x": Infinity}'):  # (NaN was sent, stored as "NaN")
        code, out, err = run(capsys, "signal", instance_id, "go", bad, "--dsn", db.dsn(ALICE))
        assert code == 2 and out == ""  # a usage error: nothing was sent
        assert_one_line_error(err, "JSON")
    assert db.scalar("SELECT count(*) FROM df_internal.signals WHERE instance_id = %s",
                     (instance_id,)) == 0
    code, out, err = run(capsys, "signal", instance_id, "go", '{"ok": true}', "--dsn", db.dsn(ALICE))
    assert (code, err) == (0, "")
    assert out.strip() == f"{instance_id}: signal 'go' sent"
    code, out, err = run(capsys, "signal", instance_id, "go", "--json", "--dsn", db.dsn(ALICE))
    assert code == 0
    assert [(r["id"], r["ok"]) for r in json.loads(out)] == [(instance_id, True)]


def test_start_wait_signal_and_retry_with_engine(capsys, db, live_engine):
    code, out, err = run(capsys, "start", "'SELECT 40 + 2 AS answer'", "--wait",
                         "--dsn", db.dsn(ALICE))
    assert (code, err) == (0, ""), err
    assert "completed" in out and "42" in out

    # A step that fails until its data is fixed, then a retry that keeps the completed step.
    with db.connect() as conn:
        conn.execute("CREATE TABLE public.cli_fix (v text)")
        conn.execute("INSERT INTO public.cli_fix VALUES ('oops')")
        conn.execute("GRANT SELECT, UPDATE ON public.cli_fix TO dftui_alice")
    code, out, err = run(
        capsys, "start", "('SELECT 1 AS first' |=> 'first') ~> 'SELECT v::int FROM public.cli_fix'",
        "--wait", "--dsn", db.dsn(ALICE),
    )
    assert code == 1 and "failed" in out and "invalid input syntax" in out
    instance_id = out.split()[0]
    with db.connect() as conn:
        conn.execute("UPDATE public.cli_fix SET v = '5'")
    code, out, err = run(capsys, "retry", instance_id, "--dsn", db.dsn(ALICE))
    assert (code, err) == (0, "")
    assert f"{instance_id}: retried" in out
    assert wait_terminal(db, instance_id) == "completed"

    # Signals: the CLI sends one to a waiting instance.
    waiting = cli_start(capsys, db, "df.wait_for_signal('approval') |=> 'd'")
    code, out, err = run(capsys, "signal", waiting, "approval", '{"approved": true}',
                         "--dsn", db.dsn(ALICE))
    assert code == 0
    assert wait_terminal(db, waiting) == "completed"
    code, out, err = run(capsys, "show", waiting, "--json", "--dsn", db.dsn(ALICE))
    assert code == 0 and "approved" in out


def test_start_wait_timeout(capsys, db):
    code, out, err = run(capsys, "start", "df.sleep(3600)", "--wait", "--timeout", "0.2",
                         "--dsn", db.dsn(ALICE))
    assert code == 3 and out == ""  # its own code: not the 1 of a failed instance
    assert_one_line_error(err, "timed out")


# --- no false success -----------------------------------------------------------------------


def _seed_finished(db) -> tuple[str, str, str]:
    from tests.support.tui import Seed, seed_instances

    seed_instances(db, [Seed("00c0ffee", "completed", label="done-one"),
                        Seed("00fa11ed", "failed", label="broke"),
                        Seed("00a11ce0", "pending", label="waits")])
    return "00c0ffee", "00fa11ed", "00a11ce0"


def test_noop_actions_exit_1_and_say_why(capsys, db):
    completed, failed, pending = _seed_finished(db)
    dsn = db.dsn(ALICE)
    code, out, err = run(capsys, "cancel", completed, "--dsn", dsn)
    assert code == 1 and out == ""
    assert_one_line_error(err, "done-one (00c0ffee)", "already completed")
    code, out, err = run(capsys, "signal", completed, "go", "--dsn", dsn)
    assert code == 1 and out == ""
    assert_one_line_error(err, "completed", "signals reach only pending or running")
    assert db.scalar("SELECT count(*) FROM df_internal.signals") == 0
    code, out, err = run(capsys, "retry", completed, "--dsn", dsn)
    assert code == 1 and out == ""
    assert_one_line_error(err, "only failed or cancelled")
    code, out, err = run(capsys, "retry", pending, "--dsn", dsn)
    assert code == 1 and "pending" in err
    # a mix: the pending one is cancelled, the completed one skipped with its reason, exit 1
    code, out, err = run(capsys, "cancel", pending, completed, "--json", "--dsn", dsn)
    assert code == 1
    results = {r["id"]: r for r in json.loads(out)}
    assert results[pending]["ok"] is True and results[pending]["label"] == "waits"
    assert results[completed]["ok"] is False and results[completed]["skipped"] is True
    assert db.scalar("SELECT status FROM df.instances WHERE id = %s", (completed,)) == "completed"
    assert db.scalar("SELECT status FROM df.instances WHERE id = %s", (pending,)) == "cancelled"


def test_mistyped_subcommand_is_a_usage_error(capsys):
    code, out, err = run(capsys, "lss")
    assert code == 2 and out == ""
    assert_one_line_error(err, "no such command 'lss'", "did you mean 'ls'")


def test_help_shows_no_bool_metavars(capsys):
    for args, flag in ((["--help"], "--version"), (["ls", "--help"], "--json")):
        code, out, _ = run(capsys, *args)
        assert code == 0 and flag in out
        assert "<bool>" not in out


def test_json_on_explain_and_install(capsys, db):
    code, out, err = run(capsys, "explain", "'SELECT 1' ~> df.sleep(30)", "--json",
                         "--dsn", db.dsn(ALICE))
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert "SLEEP" in data["tree"] and data["lines"]
    code, out, err = run(capsys, "install", "--json", "--dsn", db.dsn())
    assert (code, err) == (0, ""), err
    data = json.loads(out)
    assert data["applied"] == [] and "already installed" in data["message"]


def test_show_json_output_is_data_and_columns_keep_their_order(capsys, db, live_engine):
    code, out, err = run(capsys, "start", "'SELECT 2 AS zeta, 1 AS alpha, 3 AS mid'", "--wait",
                         "--dsn", db.dsn(ALICE))
    assert code == 0, err
    instance_id = out.split()[0]
    code, out, err = run(capsys, "show", instance_id, "--json", "--dsn", db.dsn(ALICE))
    assert code == 0, err
    data = json.loads(out)
    assert not isinstance(data["instance"]["output"], str)
    (node,) = [n for n in data["nodes"] if n["node_type"] == "SQL"]
    assert list(node["result"]["rows"][0]) == ["zeta", "alpha", "mid"]
    assert list(data["instance"]["output"]["rows"][0]) == ["zeta", "alpha", "mid"]


def test_a_copied_result_keeps_its_columns_order_in_parents_and_the_output(capsys, db, live_engine):
    """A THEN (and the instance's output) holds a jsonb copy of its last step's result: it
    showed the columns sorted (a, m, z) though the node itself read z, a, m."""
    code, out, err = run(capsys, "start", "'SELECT 1 AS a' ~> 'SELECT 2 AS z, 1 AS a, 3 AS m'",
                         "--wait", "--dsn", db.dsn(ALICE))
    assert code == 0, err
    instance_id = out.split()[0]
    assert '{"z": 2, "a": 1, "m": 3}' in out  # start --wait prints the output
    code, out, err = run(capsys, "show", instance_id, "--json", "--dsn", db.dsn(ALICE))
    assert code == 0, err
    data = json.loads(out)
    assert list(data["instance"]["output"]["rows"][0]) == ["z", "a", "m"]
    (then,) = [n for n in data["nodes"] if n["node_type"] == "THEN"]
    assert list(then["result"]["rows"][0]) == ["z", "a", "m"]
    first = [n for n in data["nodes"] if n["node_type"] == "SQL" and n["query"] == "SELECT 1 AS a"]
    assert list(first[0]["result"]["rows"][0]) == ["a"]


# --- vars -----------------------------------------------------------------------------------


def test_vars_set_list_mask_unset(capsys, db, monkeypatch):
    dsn = db.dsn(ALICE)
    code, out, err = run(capsys, "vars", "unset", "nosuchvar", "--dsn", dsn)  # (said "unset")
    assert (code, out) == (1, "")
    assert_one_line_error(err, "no variable 'nosuchvar': nothing unset")
    assert run(capsys, "vars", "set", "region", "eu-west", "--dsn", dsn)[0] == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO("s3cr3t-value\n"))
    assert run(capsys, "vars", "set", "api_token", "--dsn", dsn)[0] == 0
    assert db.scalar("SELECT value FROM df.vars WHERE name = 'api_token'") == "s3cr3t-value"

    code, out, err = run(capsys, "vars", "--dsn", dsn)
    assert (code, err) == (0, "")
    assert "region=eu-west" in out and "api_token=" in out and "s3cr3t" not in out
    code, out, _ = run(capsys, "vars", "--reveal", "--json", "--dsn", dsn)
    assert json.loads(out) == [{"name": "api_token", "value": "s3cr3t-value"},
                               {"name": "region", "value": "eu-west"}]
    # Another role does not see them.
    code, out, _ = run(capsys, "vars", "--json", "--dsn", db.dsn(BOB))
    assert code == 0 and json.loads(out) == []

    assert run(capsys, "vars", "unset", "region", "--dsn", dsn)[0] == 0
    assert db.scalar("SELECT count(*) FROM df.vars WHERE name = 'region'") == 0

    code, out, err = run(capsys, "vars", "set", "not valid", "x", "--dsn", dsn)
    assert code == 2  # a usage error: nothing sent
    assert_one_line_error(err, "not a valid name")


# --- engine ---------------------------------------------------------------------------------


def test_engine_once_runs_pending_work_and_exits(capsys, db):
    instance_id = cli_start(capsys, db, "'SELECT 1' ~> 'SELECT 2'")
    result = subprocess.run(
        [sys.executable, "-m", "dftui", "engine", "--once", "--concurrency", "1",
         "--dsn", db.dsn()],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert db.scalar("SELECT status FROM df.instances WHERE id = %s", (instance_id,)) == "completed"


def test_engine_without_schema_or_rights_is_one_line(empty_db):
    # A subprocess: the engine installs signal handlers and logging for its whole process.
    result = subprocess.run(
        [sys.executable, "-m", "dftui", "engine", "--once", "--dsn", empty_db.dsn(ALICE)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "superuser")
    assert "unexpected" not in result.stderr


def test_engine_settings_are_validated(capsys, db):
    code, out, err = run(capsys, "engine", "--http-policy", "allowlist", "--dsn", db.dsn())
    assert code == 2
    assert_one_line_error(err, "--http-allow")


def test_data_commands_say_when_the_schema_is_missing_or_not_granted(capsys, db, other_database):
    """One clear line, as the TUI says it (was: relation "df.instances" does not exist)."""
    for args in (["ls"], ["show", "deadbeef"], ["vars"]):
        code, out, err = run(capsys, *args, "--dsn", other_database.dsn())
        assert (code, out) == (1, ""), args
        assert_one_line_error(err, "the df schema is not installed in this database",
                              "dftui install")
    code, out, err = run(capsys, "ls", "--dsn", db.dsn(CAROL))  # (carol has no df usage)
    assert (code, out) == (1, "")
    assert_one_line_error(err, f"role {CAROL} may not use the df schema", f"dftui grant {CAROL}")


def test_percent_signs_in_a_workflow_are_its_own_text(capsys, db, live_engine):
    """The expression is evaluated with a bound parameter, so psycopg read its % signs as
    placeholders: a workflow containing '50%' or a modulo could not be started at all."""
    code, out, err = run(capsys, "start", "'SELECT ''50%'' AS p, 10 % 3 AS m, ''%s'' AS s'",
                         "--wait", "--json", "--dsn", db.dsn(ALICE))
    assert (code, err) == (0, ""), err
    assert json.loads(out)["output"]["rows"] == [{"p": "50%", "m": 1, "s": "%s"}]


def test_a_slow_expression_is_bounded(capsys, db, monkeypatch):
    """The TUI's preview evaluates on the app's one connection: a slow subquery in the
    expression held it (and the app's exit) for as long as it ran."""
    import dftui.client.actions as actions

    monkeypatch.setattr(actions, "EVALUATE_TIMEOUT_S", 1)
    code, out, err = run(capsys, "start", "df.sleep((SELECT 5 FROM pg_sleep(30))::int)",
                         "--dsn", db.dsn(ALICE))
    assert (code, out) == (1, "")
    assert_one_line_error(err, "took more than 1 s to evaluate")
    assert db.scalar("SELECT count(*) FROM df.instances") == 0


def test_commands_work_with_stdin_closed(capsys, db, monkeypatch):
    """`dftui ls 0<&-` raised AttributeError on sys.stdin.isatty(); a value read from an empty
    or closed stdin was stored as '' and reported set."""
    monkeypatch.setattr(sys, "stdin", None)
    assert run(capsys, "ls", "--dsn", db.dsn(ALICE))[0] == 0
    code, out, err = run(capsys, "vars", "set", "region", "--dsn", db.dsn(ALICE))
    assert (code, out) == (2, "")
    assert_one_line_error(err, "no value for region")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, out, err = run(capsys, "vars", "set", "region", "--dsn", db.dsn(ALICE))
    assert (code, out) == (2, "")
    assert_one_line_error(err, "no value for region on stdin")
    assert db.scalar("SELECT count(*) FROM df.vars WHERE name = 'region'") == 0


def test_the_tui_refuses_to_run_without_a_terminal(capsys, db, monkeypatch):
    """`dftui DSN </dev/null` started the TUI with no keyboard and ran until killed."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code = main([db.dsn(ALICE)])
    _, err = capsys.readouterr()
    assert code == 2
    assert "the TUI needs a terminal" in err
