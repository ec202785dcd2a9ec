"""What an operator relies on: actions act on the selection and name what they touch, no-ops are
never reported as done, nothing is silently lost while disconnected, q/esc go back, dialogs
behave like editors. Real PostgreSQL, real roles, checked in the database afterwards."""

from __future__ import annotations

import contextlib
import io

from textual.widgets import DataTable, Input, TextArea

from dftui.cli import main as cli
from dftui.screens.dialogs import CancelDialog, ConfirmDialog, SignalDialog, StartDialog
from dftui.screens.help import HelpScreen
from dftui.screens.instance import InstanceScreen
from tests.support import start, wait_for_app
from tests.support.tui import Seed, cursor_to, instances_loaded, make_app, seed_instances


def _messages(app) -> str:
    return "\n".join(str(n.message) for n in app._notifications)




def _signals(db, instance_id: str) -> int:
    return db.scalar("SELECT count(*) FROM df_internal.signals WHERE instance_id = %s",
                     (instance_id,))


async def test_signal_acts_on_the_selection_and_names_it(db):
    first = start(db, "dftui_alice", "df.wait_for_signal('go'), 'wait-one'")
    second = start(db, "dftui_alice", "df.wait_for_signal('go'), 'wait-two'")
    old = start(db, "dftui_alice", "df.wait_for_signal('go'), 'gone'")
    assert db.scalar("SELECT df.cancel(%s)", (old,), role="dftui_alice").startswith(f"Instance {old} cancelled")
    app = make_app(db, "dftui_alice")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await instances_loaded(pilot, app)
        for instance_id in (first, second, old):
            await cursor_to(pilot, screen, instance_id)
            await pilot.press("space")
        assert screen.selected == {first, second, old}
        await cursor_to(pilot, screen, old)  # the cursor is on the cancelled one
        await pilot.press("s")
        await wait_for_app(pilot, lambda: isinstance(app.screen, SignalDialog), what="signal dialog")
        dialog = app.screen
        assert str(dialog.query_one(".dialog-title").render()) == "Signal 2 instances"
        listed = str(dialog.query_one(".dialog-ids").render())
        assert f"wait-one ({first})" in listed and f"wait-two ({second})" in listed
        assert f"gone ({old})" in listed and "skipped 1" in listed and "cancelled" in listed
        assert dialog.query_one("#name", Input).value == "go"  # the signal both wait for
        await pilot.press("ctrl+s")
        await wait_for_app(pilot, lambda: app.screen is screen, what="dialog closed")
        await wait_for_app(pilot, lambda: "Signalled 2" in _messages(app), what="report")
        # (the report named only what was signalled: the skip the dialog showed was dropped)
        assert f"gone ({old})" in _messages(app) and "cancelled" in _messages(app)
        assert screen.selected == set()
        assert str(screen.query_one(DataTable).get_cell(old, "sel")).strip() == ""
    assert _signals(db, first) == 1 and _signals(db, second) == 1
    assert _signals(db, old) == 0


async def test_noops_are_refused_with_the_reason(db):
    seed_instances(db, [Seed("00c0ffee", "completed", label="done-one", minutes_ago=1)])
    racing = start(db, "dftui_alice", "df.sleep(600), 'racing'")
    app = make_app(db, "dftui_alice")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await instances_loaded(pilot, app)
        await cursor_to(pilot, screen, "00c0ffee")
        for key, words in (("c", "Nothing to cancel"), ("r", "Nothing to retry"),
                           ("s", "Nothing to signal")):
            await pilot.press(key)
            await pilot.pause()
            assert app.screen is screen, f"{key} offered to act on a completed instance"
            assert words in _messages(app) and "done-one (00c0ffee)" in _messages(app)

        # The list still shows `racing` pending, but it was cancelled meanwhile: the dialog
        # opens, and the outcome says nothing was done (df.cancel answered 'already cancelled').
        assert db.scalar("SELECT df.cancel(%s)", (racing,), role="dftui_alice").startswith(
            f"Instance {racing} cancelled")
        await cursor_to(pilot, screen, racing)
        await pilot.press("c")
        await wait_for_app(pilot, lambda: isinstance(app.screen, CancelDialog), what="cancel dialog")
        await pilot.press("enter")
        await wait_for_app(pilot, lambda: "Nothing was cancelled" in _messages(app), what="report")
        assert "already cancelled" in _messages(app)
        assert "Cancelled 1" not in _messages(app)


async def test_actions_while_disconnected_are_reported_not_lost(db):
    sleeper = start(db, "dftui_alice", "df.sleep(600), 'nap'")
    app = make_app(db, "dftui_alice", reconnect_delays=(3600,))
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await instances_loaded(pilot, app)
        await cursor_to(pilot, screen, sleeper)
        await pilot.press("c")
        await wait_for_app(pilot, lambda: isinstance(app.screen, CancelDialog), what="cancel dialog")
        assert db.scalar("SELECT pg_terminate_backend(%s)", (app.client.backend_pid(),))
        await pilot.press("enter")  # confirmed after the connection died
        await wait_for_app(pilot, lambda: "Cancel not done" in _messages(app), what="failure shown")
        assert app.disconnected is not None
        # while disconnected the write keys are disabled and say why
        assert screen.active_bindings["c"].enabled is False
        await pilot.press("c")
        await pilot.pause()
        assert app.screen is screen
        assert "Cancel is disabled: not connected" in _messages(app)
    assert db.scalar("SELECT status FROM df.instances WHERE id = %s", (sleeper,)) == "pending"


async def test_read_only_keys_say_why(db):
    seed_instances(db, [Seed("0000000b", "failed", label="broke")])
    app = make_app(db, "dftui_alice", read_only=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await instances_loaded(pilot, app)
        await pilot.press("r")
        await pilot.pause()
        assert "Retry is disabled: read-only mode" in _messages(app)


async def test_q_goes_back_and_asks_before_stopping_the_demo(db):
    seed_instances(db, [Seed("0000000a", "completed", label="x")])
    app = make_app(db, "dftui_alice", quit_warning="This stops the demo's engine and server.")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await instances_loaded(pilot, app)
        await pilot.press("enter")
        await wait_for_app(pilot, lambda: isinstance(app.screen, InstanceScreen), what="detail")
        await pilot.press("q")
        await wait_for_app(pilot, lambda: app.screen is screen, what="back, not quit")
        await pilot.press("v")
        await wait_for_app(pilot, lambda: app.screen is not screen, what="variables")
        await pilot.press("q")
        await wait_for_app(pilot, lambda: app.screen is screen, what="back from variables")
        await pilot.press("question_mark")
        await wait_for_app(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        await pilot.press("q")
        await wait_for_app(pilot, lambda: app.screen is screen, what="help closed")
        await pilot.press("q")
        await wait_for_app(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="quit question")
        assert "stops the demo" in str(app.screen.query_one(".dialog-title").render())
        await pilot.press("escape")
        assert app.screen is screen and app.is_running
        await pilot.press("q", "enter")
        await pilot.pause()
    assert app.return_code == 0


async def test_a_long_confirmation_wraps_inside_its_dialog_at_80x24(db):
    """The demo's quit question (and any long dialog title) wraps within the dialog at 80
    columns instead of being cut mid-sentence."""
    warning = ("Quitting stops the demo's engine and PostgreSQL server (the data stays: "
               "`dftui demo` starts them again).")
    app = make_app(db, "dftui_alice", quit_warning=warning)
    async with app.run_test(size=(80, 24)) as pilot:
        await instances_loaded(pilot, app)
        await pilot.press("q")
        await wait_for_app(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="quit question")
        await pilot.pause()
        title = app.screen.query_one(".dialog-title")
        frame = app.screen.query_one(".dialog")
        assert title.region.right <= frame.content_region.right
        assert title.region.height >= 2  # wrapped: every word of it on screen
        assert title.region.width * title.region.height >= len(f"Quit? {warning}")


async def test_q_on_home_quits_at_once_when_nothing_else_stops(db):
    app = make_app(db, "dftui_alice")
    async with app.run_test(size=(120, 40)) as pilot:
        await instances_loaded(pilot, app)
        await pilot.press("q")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmDialog)
    assert app.return_code == 0


async def test_editors_replace_the_example_and_close_on_first_esc(db):
    seed_instances(db, [Seed("0000000c", "running", label="r")])
    app = make_app(db, "dftui_alice")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await instances_loaded(pilot, app)
        await pilot.press("n")
        await wait_for_app(pilot, lambda: isinstance(app.screen, StartDialog), what="start dialog")
        await pilot.press(*"'SELECT 7'")
        assert app.screen.query_one("#source", TextArea).text == "'SELECT 7'"
        await pilot.press("escape")  # one esc, from inside the multi-line editor
        assert app.screen is screen

        await pilot.press("s")
        await wait_for_app(pilot, lambda: isinstance(app.screen, SignalDialog), what="signal dialog")
        dialog = app.screen
        dialog.query_one("#name", Input).value = "go"
        dialog.query_one("#payload", TextArea).focus()
        await pilot.press(*'{"a":')
        assert dialog.query_one("#payload", TextArea).text == '{"a":'
        error = str(dialog.query_one("#error").render())
        assert "not valid JSON" in error and "line 1" in error
        await pilot.press("escape")
        assert app.screen is screen


async def test_empty_list_hint_for_a_superuser(db):
    app = make_app(db, None)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await instances_loaded(pilot, app)
        line = str(screen.query_one("#statusline").render())
        assert "superuser" in line and "press n" not in line


async def test_filter_as_you_type_searches_sql_and_errors_and_counts_follow(db):
    seed_instances(db, [
        Seed("0000000a", "completed", label="nightly-etl", minutes_ago=1),
        Seed("0000000b", "failed", label="nightly-etl", minutes_ago=2),
        Seed("0000000c", "running", label="embed", minutes_ago=3,
             query="SELECT embed(chunk) FROM docs"),
    ])
    app = make_app(db, "dftui_alice")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await instances_loaded(pilot, app)
        await pilot.press("slash", *"label:etl")  # the placeholder's own example, no enter
        await wait_for_app(pilot, lambda: [r.id for r in screen.rows] == ["0000000a", "0000000b"],
                           what="substring label filter applied while typing")
        assert screen.counts.counts["running"] == 0 and screen.counts.total == 2
        box = screen.query_one("#filter", Input)
        box.value = ""
        await pilot.press(*"docs")  # step SQL
        await wait_for_app(pilot, lambda: [r.id for r in screen.rows] == ["0000000c"], what="SQL")
        assert screen.counts.total == 1 and screen.counts.counts["running"] == 1
        box.value = ""
        await pilot.press(*"division")  # error text
        await wait_for_app(pilot, lambda: [r.id for r in screen.rows] == ["0000000b"], what="error")
        await pilot.press("enter")
        assert screen.query_one(DataTable).has_focus


async def test_wide_labels_and_keys_and_banner_at_80x24_and_200(db):
    long_label = "customer-invoice-reconciliation-eu"
    seed_instances(db, [Seed("0000000a", "running", label=long_label)])
    app = make_app(db, "dftui_alice")
    async with app.run_test(size=(200, 50)) as pilot:
        screen = await instances_loaded(pilot, app)
        table = screen.query_one(DataTable)
        assert table.columns["label"].width >= len(long_label)
        assert long_label in str(table.get_cell("0000000a", "label"))
        await wait_for_app(pilot, lambda: app.engine_warning is not None, what="engine check")
        assert "No engine" in app.header_text(200).plain
        await pilot.resize_terminal(80, 24)
        await wait_for_app(pilot, lambda: screen._width == 80, what="resize")
        bar = str(screen.query_one("KeyBar").render())
        for key in ("?", "q", "R", "c", "/"):
            assert f" {key} " in bar, (key, bar)
        # the signal and new-run dialogs fit 80x24 with their buttons
        for key, dialog in (("s", SignalDialog), ("n", StartDialog)):
            await pilot.press(key)
            await wait_for_app(pilot, lambda d=dialog: isinstance(app.screen, d), what=str(dialog))
            await pilot.pause()
            button = app.screen.query_one("#confirm")
            assert button.region.height > 0 and button.region.bottom <= 24, dialog
            await pilot.press("escape")
        # every screen carries the banner
        await pilot.press("enter")
        await wait_for_app(pilot, lambda: isinstance(app.screen, InstanceScreen), what="detail")
        header = str(app.screen.query_one("AppHeader").render())
        assert "No engine" in header
        # the detail screen's essential keys fit at 80 columns too
        await wait_for_app(pilot, lambda: app.screen.detail is not None, what="detail loaded")
        bar = str(app.screen.query_one("KeyBar").render())
        for key in ("?", "esc/q", "E", "w", "h", "c", "r", "s", "R"):
            assert f" {key} " in bar, (key, bar)


async def test_help_lists_operator_words_only(db):
    seed_instances(db, [Seed("0000000a", "completed", label="x")])
    app = make_app(db, "dftui_alice")
    async with app.run_test(size=(120, 40)) as pilot:
        await instances_loaded(pilot, app)
        await pilot.press("enter")
        await wait_for_app(pilot, lambda: isinstance(app.screen, InstanceScreen), what="detail")
        await pilot.press("question_mark")
        await wait_for_app(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        text = "\n".join(app.screen.lines)
        assert "ancestor" not in text.lower() and "Cursor" not in text
        descriptions = [line.split("  ", 1)[1] for line in app.screen.lines]
        assert len(descriptions) == len(set(descriptions)), descriptions
        back = next(line for line in app.screen.lines if line.endswith("  Back"))
        assert "esc" in back and "q" in back  # q goes back here; it quits only from home


def test_true_timings_and_distinct_attempts_across_a_retry(db):
    import io
    from datetime import UTC, datetime

    from rich.console import Console

    from dftui.client import Client
    from dftui.timings import instance_end
    from dftui.widgets.node_panel import node_details
    from tests.support import running_engine, wait_terminal

    with db.connect() as conn:
        conn.execute("CREATE TABLE public.fixme (v text)")
        conn.execute("INSERT INTO public.fixme VALUES ('oops')")
        conn.execute("GRANT SELECT ON public.fixme TO dftui_alice")
    with running_engine(db.dsn()):
        iid = start(db, "dftui_alice",
                    "df.seq(df.sleep(2), 'SELECT v::int AS v FROM public.fixme'), 'timed'")
        assert wait_terminal(db, iid) == "failed"
        with db.connect() as conn:
            conn.execute("UPDATE public.fixme SET v = '5'")
        with Client(db.dsn("dftui_alice")) as client:
            assert [r.ok for r in client.retry([iid])] == [True]
        assert wait_terminal(db, iid) == "completed"
        with Client(db.dsn("dftui_alice")) as client:
            detail = client.instance(iid)
            nodes = client.nodes(iid, detail)
    sleep = next(n for n in nodes if n.node_type == "SLEEP")
    step = next(n for n in nodes if n.node_type == "SQL")
    begin, end = detail.started_at or detail.created_at, instance_end(detail, nodes)
    assert (sleep.finished_at - sleep.started_at).total_seconds() >= 1.9  # not the 4 ms claim
    for node in nodes:
        assert begin <= node.started_at <= node.finished_at <= end, node.node_type
    runs = [(a.run, a.execution, a.status) for a in step.attempt_history if a.kind == "attempt"]
    assert runs == [(1, 1, "failed"), (2, 2, "completed")]
    console = Console(width=140, record=True, file=io.StringIO())
    console.print(node_details(step, "completed", now=datetime.now(UTC), tz=UTC))
    text = console.export_text()
    assert "exec" in text and "df.retry by dftui_alice" in text


async def test_select_all_matching_then_bulk_cancel_names_them(db):
    a = start(db, "dftui_alice", "df.sleep(600), 'bulk-a'")
    b = start(db, "dftui_alice", "df.sleep(600), 'bulk-b'")
    keep = start(db, "dftui_alice", "df.sleep(600), 'other'")
    app = make_app(db, "dftui_alice")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await instances_loaded(pilot, app)
        await pilot.press("slash", *"label:bulk", "enter")
        await wait_for_app(pilot, lambda: {r.id for r in screen.rows} == {a, b}, what="filtered")
        await pilot.press("asterisk")
        assert screen.selected == {a, b}
        await pilot.press("c")
        await wait_for_app(pilot, lambda: isinstance(app.screen, CancelDialog), what="dialog")
        dialog = app.screen
        assert "Cancel 2 instances?" in str(dialog.query_one(".dialog-title").render())
        listed = str(dialog.query_one(".dialog-ids").render())
        assert f"bulk-a ({a})" in listed and f"bulk-b ({b})" in listed and keep not in listed
        await pilot.press("enter")
        await wait_for_app(pilot, lambda: "Cancelled 2" in _messages(app), what="report")
    statuses = {i: db.scalar("SELECT status FROM df.instances WHERE id = %s", (i,))
                for i in (a, b, keep)}
    assert statuses == {a: "cancelled", b: "cancelled", keep: "pending"}


async def test_export_a_result_beyond_the_shown_rows(db, tmp_path, monkeypatch):
    from tests.support.tui import N, instances_loaded, rows_result, seed_graph

    rows = [{"zeta": i, "alpha": f"a{i}"} for i in range(120)]  # the panel shows 50
    seed_graph(db, "e0e0e0e0", "completed", [
        N("e0000001", "SQL", "SELECT zeta, alpha FROM t", status="completed",
          result=rows_result(*rows)),
    ], label="export-me")
    with db.connect() as conn:  # the statement's column order, as the engine records it
        conn.execute("UPDATE df.nodes SET status_details = '{\"columns\": [\"zeta\", \"alpha\"]}'"
                     " WHERE id = 'e0000001'")
    monkeypatch.setenv("DFTUI_EXPORT_DIR", str(tmp_path))
    app = make_app(db, "dftui_alice")
    async with app.run_test(size=(120, 40)) as pilot:
        await instances_loaded(pilot, app)
        await pilot.press("enter")
        await wait_for_app(pilot, lambda: isinstance(app.screen, InstanceScreen)
                           and app.screen.detail is not None, what="detail")
        await pilot.pause()
        await pilot.press("E")
        await wait_for_app(pilot, lambda: "Exported 120 rows" in _messages(app), what="exported")
    lines = (tmp_path / "dftui-e0e0e0e0-e0000001.csv").read_text().splitlines()
    assert lines[0] == "zeta,alpha" and lines[1] == "0,a0" and len(lines) == 121


def test_password_prompt_names_the_target(monkeypatch):
    from dftui.client import password_target

    monkeypatch.delenv("PGUSER", raising=False)
    monkeypatch.delenv("PGDATABASE", raising=False)
    assert password_target("host=db1 port=6543 user=app dbname=sales") == "app@db1:6543/sales"
    monkeypatch.setenv("PGHOST", "db2")
    assert password_target("user=ops").startswith("ops@db2:")


def test_demo_keeps_its_port_and_names_real_ids_on_reuse(db, tmp_path, monkeypatch):
    import socket

    from dftui import demo

    monkeypatch.setattr(demo, "data_dir", lambda: tmp_path / "demo-pg")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    (tmp_path / "demo-pg.port").write_text(f"{free}\n")
    assert demo._stable_port() == free  # the previous run's port, still free
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free))
        taken.listen()
        other = demo._stable_port()
        assert other not in (free, 0)  # taken by someone else (not our server): a new one

    seed_instances(db, [Seed("0a0a0a0a", "running", label="expense-approval-1042"),
                        Seed("0b0b0b0b", "failed", label="import-payments")])
    with db.connect() as conn:
        known = demo._seeded_ids(conn)
    assert known["expense-approval-1042"] == "0a0a0a0a"
    assert known["import-payments"] == "0b0b0b0b"


def test_node_panel_speaks_operators_words_not_internal_state(db):
    """An IF's panel names its condition, never the stored config (`{"condition_node": …}`)
    nor how the status was inferred ("stored pending, decided by …")."""
    import io
    from datetime import UTC, datetime

    from rich.console import Console

    from dftui.client import Client
    from dftui.widgets.node_panel import node_details
    from tests.support.tui import N, seed_graph

    seed_graph(db, "1f1f1f1f", "completed", [
        N("10000001", "IF", '{"condition_node": "10000002"}', left="10000003", right="10000004",
          status="completed"),
        N("10000002", "SQL", "SELECT true AS ok", status="completed"),
        N("10000003", "SQL", "SELECT 'then' AS arm", status="completed"),
        N("10000004", "SQL", "SELECT 'else' AS arm"),  # stored pending: skipped, in words
    ], label="if-words")
    with Client(db.dsn("dftui_alice")) as client:
        nodes = {n.id: n for n in client.nodes("1f1f1f1f")}
    for node in nodes.values():
        console = Console(width=100, record=True, file=io.StringIO())
        console.print(node_details(node, "completed", now=datetime.now(UTC), tz=UTC, nodes=nodes))
        text = console.export_text()
        assert "condition_node" not in text and "decided by" not in text, text
        assert "stored" not in text, text


def test_a_wrong_password_is_asked_again_then_accepted(db, monkeypatch, capsys):
    """Against a role that must give a password: a wrong one is asked again, naming whose it
    is, and the right one connects (the client, and the CLI on a terminal); every try wrong
    ends after PASSWORD_TRIES in one clear error, never a traceback."""
    import getpass
    import sys
    import uuid

    import pytest

    from dftui.client import PASSWORD_TRIES, ClientError, connect
    from tests.support import password_role

    name = f"dftui_pw_{uuid.uuid4().hex[:6]}"
    with password_role(db, name, "right-one") as role:
        target = f"{role}@127.0.0.1:{db.server.admin_conninfo['port']}/{db.name}"
        asked: list[str] = []
        answers = iter(["wrong", "right-one"])

        def prompt(whose: str) -> str:
            asked.append(whose)
            return next(answers)

        with connect(db.dsn(role), password_prompt=prompt) as client:
            assert client.info is not None and client.info.role == role
            assert client.list_instances().rows == []
        assert asked == [target, target]
        err = capsys.readouterr().err
        assert f"wrong password for {target}; try again" in err

        asked.clear()
        with pytest.raises(ClientError) as refused:
            connect(db.dsn(role), password_prompt=lambda whose: asked.append(whose) or "nope")
        assert len(asked) == PASSWORD_TRIES
        assert "password authentication failed" in refused.value.message

        tries = iter(["wrong", "right-one"])  # the CLI on a terminal prompts (hidden) the same
        monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
        monkeypatch.setattr(getpass, "getpass", lambda text: next(tries))
        capsys.readouterr()
        assert cli(["ls", "--dsn", db.dsn(role)]) == 0
        out = capsys.readouterr()
        assert "wrong password" in out.err and "no instances" in out.err
        assert "Traceback" not in out.err


def test_banner_when_every_engine_is_stale(db):
    """No live engine: the banner names it whether none ever ran, all stopped, or all are
    stale (registered, running, but no heartbeat)."""
    from dftui.client import Client

    with Client(db.dsn("dftui_alice")) as client:
        assert client.engine_warning().startswith("No engine has ever run here")
        with db.connect() as conn:
            conn.execute("INSERT INTO df_internal.engines (id, host, pid, version, concurrency, "
                         "started_at, heartbeat_at) VALUES ('stale-1', 'h', 1, 'x', 1, "
                         "now() - interval '1 hour', now() - interval '10 minutes')")
        assert client.engine_warning().startswith("All engines are stale (no heartbeat for")
        with db.connect() as conn:
            conn.execute("UPDATE df_internal.engines SET stopped_at = now() WHERE id = 'stale-1'")
        assert client.engine_warning().startswith("No engine is running")
        with db.connect() as conn:
            conn.execute("UPDATE df_internal.engines SET stopped_at = NULL, heartbeat_at = now() "
                         "WHERE id = 'stale-1'")
        assert client.engine_warning() is None


def test_health_line_does_not_count_a_cleanly_stopped_engine(db):
    """An engine of an earlier run that stopped cleanly is gone, not dead: with one live engine
    beside it the line says 1/1 alive (it said 1/2: one engine down)."""
    from dftui.client import Client
    from dftui.widgets.health_line import health_text

    with db.connect() as conn:
        conn.execute("INSERT INTO df_internal.engines (id, host, pid, version, concurrency, "
                     "started_at, heartbeat_at, stopped_at) VALUES ('old-1', 'h', 1, 'x', 1, "
                     "now() - interval '1 hour', now() - interval '50 minutes', "
                     "now() - interval '50 minutes')")
    with Client(db.dsn("dftui_alice")) as client:
        health = client.health_line()
        assert (health["alive"], health["engines"]) == (0, 0)
        assert health_text(health).plain.startswith("no engine running")
        with db.connect() as conn:
            conn.execute("INSERT INTO df_internal.engines (id, host, pid, version, concurrency, "
                         "started_at, heartbeat_at) VALUES ('live-1', 'h', 2, 'x', 1, now(), "
                         "now())")
        health = client.health_line()
        assert (health["alive"], health["engines"]) == (1, 1)
        assert health_text(health).plain.startswith("engines 1/1 alive")
        with db.connect() as conn:  # a registered engine without heartbeats still counts
            conn.execute("INSERT INTO df_internal.engines (id, host, pid, version, concurrency, "
                         "started_at, heartbeat_at) VALUES ('stale-1', 'h', 3, 'x', 1, "
                         "now() - interval '1 hour', now() - interval '10 minutes')")
        health = client.health_line()
        assert (health["alive"], health["engines"]) == (1, 2)


def test_engine_as_a_non_owner_of_an_installed_schema_says_what_it_lacks(db):
    """The schema is installed; an engine started as an ordinary role is refused in one line
    that does not claim the schema still needs installing."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "dftui", "engine", "--once", "--dsn", db.dsn("dftui_alice")],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "installing the df schema" not in lines[0], lines[0]


async def test_status_tabs_count_a_first_step_shown_running_as_running(db):
    """A pending instance whose first step executes shows running (its checkpoint has not
    committed): the Running tab counts and lists it, the Pending tab neither — the tab counts
    agree with the rows they open (it was counted under Pending and listed under neither)."""
    from dftui.client import Client
    from tests.support import running_engine, wait_for, wait_terminal

    with running_engine(db.dsn()):
        busy = start(db, "dftui_alice", "'SELECT pg_sleep(600)', 'first-step-busy'")
        # beside it an instance stored 'running' (asleep), counted and listed with it
        queued = start(db, "dftui_alice", "'SELECT 1' ~> df.sleep(3600), 'sleeping'")
        with Client(db.dsn("dftui_alice")) as client:
            def shown_running() -> bool:
                rows = {r.id: r for r in client.list_instances().rows}
                return busy in rows and rows[busy].shown_status == "running"

            wait_for(shown_running, what="the first step seen running")
            wait_for(lambda: db.scalar("SELECT status FROM df.instances WHERE id = %s",
                                       (queued,)) == "running", what="the sleeper running")
            assert db.scalar("SELECT status FROM df.instances WHERE id = %s", (busy,)) == "pending"
            counts = client.status_counts()
            running = {r.id for r in client.list_instances(status="running").rows}
            pending = {r.id for r in client.list_instances(status="pending").rows}
            assert busy in running and busy not in pending
            assert counts.counts.get("running", 0) == len(running)
            assert counts.counts.get("pending", 0) == len(pending)
            for sort in (None, "label"):  # the server's other orders filter alike
                assert busy in {r.id for r in client.list_instances(status="running",
                                                                     sort=sort).rows}
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                assert cli(["ls", "--status", "running", "--dsn", db.dsn("dftui_alice")]) == 0
            line = next(x for x in out.getvalue().splitlines() if x.startswith(busy))
            assert "running" in line and "pending" not in line, out.getvalue()
            app = make_app(db, "dftui_alice")
            async with app.run_test(size=(120, 40)) as pilot:
                screen = await instances_loaded(pilot, app)
                await pilot.press("2")  # the Running tab
                await wait_for_app(pilot, lambda: screen.filters.status == "running"
                                   and busy in {r.id for r in screen.rows}, what="running tab")
                assert screen.counts.counts.get("running") == len(screen.rows)
                await pilot.press("4")  # the Pending tab
                await wait_for_app(pilot, lambda: screen.filters.status == "pending"
                                   and screen.loaded_once and busy not in {r.id for r in screen.rows}
                                   and screen.counts is not None
                                   and screen.counts.counts.get("pending", 0) == len(screen.rows),
                                   what="pending tab")
        with db.connect("dftui_alice") as conn:
            conn.execute("SELECT df.cancel(%s)", (busy,))
        assert wait_terminal(db, busy) == "cancelled"
