"""Administering a real pg_durable: the client, the CLI and the TUI against a database with
pg_durable 0.2.6's df schema (tests/fixtures/pg_durable_0_2_6.sql: its tables, shapes and
functions, the engine-dependent ones as stubs) and rows in the shapes pg_durable's engine writes.

Run as an ordinary role given pg_durable's manual grants, on every test server.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dftui.cli import main
from dftui.client import Client, ClientError
from dftui.client.backends import PgDurableBackend
from dftui.vocabulary import node_children, step_text
from tests.support import ALICE

FIXTURE = Path(__file__).parent / "fixtures" / "pg_durable_0_2_6.sql"
T0 = datetime(2026, 1, 15, 12, 0, 0, tzinfo=UTC)

# (instance id, label, status, completed_at offset or None, [(node id, type, query, result name,
#  left, right, status, result JSON text, error)])
INSTANCES = [
    ("aaaa0001", "nightly", "completed", 5, [
        ("a0000001", "SQL", "SELECT 'hello' AS greeting", None, None, None, "completed",
         '{"rows": [{"greeting": "hello"}], "row_count": 1}', None)]),
    ("aaaa0002", None, "failed", None, [
        ("a0000002", "SQL", "SELECT 1/0", None, None, None, "failed", None, None)]),
    ("aaaa0003", "approval", "running", None, [
        ("a0000003", "THEN", None, None, "a0000004", "a0000005", "running", None, None),
        ("a0000004", "SIGNAL", '{"signal_name":"approve","timeout_seconds":null}', None, None, None,
         "running", None, None),
        ("a0000005", "SQL", "SELECT 2", None, None, None, "pending", None, None)]),
    ("aaaa0004", "rows", "completed", 9, [
        ("a0000006", "THEN", None, None, "a0000007", "a0000008", "completed", '"done"', None),
        ("a0000007", "SQL", "SELECT 1 AS x", "r", None, None, "completed",
         '{"rows": [{"x": 1}], "row_count": 1}', None),
        ("a0000008", "IF", '{"condition_type":"result_has_rows","result_name":"r"}', None,
         "a0000009", "a000000a", "completed", '"done"', None),
        ("a0000009", "LOOP", None, None, "a000000b", None, "completed", '"done"', None),
        ("a000000b", "THEN", None, None, "a000000c", "a000000d", "completed", '"done"', None),
        ("a000000c", "WAIT_SCHEDULE", '{"cron_expr":"0 9 * * 1"}', None, None, None, "completed",
         '{"scheduled": true}', None),
        ("a000000d", "BREAK", '{"break_value":"done"}', None, None, None, "completed", '"done"', None),
        ("a000000a", "SLEEP", "5", None, None, None, "pending", None, None)]),
    ("aaaa0005", None, "cancelled", None, [
        ("a000000e", "SQL", "SELECT pg_sleep(60)", None, None, None, "running", None, None)]),
]


@pytest.fixture
def pgd(empty_db) -> Iterator:
    """empty_db holding pg_durable 0.2.6's schema shape and the rows its engine would write."""
    with empty_db.connect() as conn:
        conn.execute(FIXTURE.read_text())
        conn.execute("SELECT pgd_fixture.grant_usage(%s)", (ALICE,))
        for iid, label, status, done, nodes in INSTANCES:
            created = T0 - timedelta(minutes=10)
            conn.execute(
                "INSERT INTO df.instances (id, label, root_node, status, submitted_by, database,"
                " created_at, updated_at, completed_at) VALUES (%s, %s, %s, %s, %s::regrole,"
                " current_database(), %s, %s, %s)",
                (iid, label, nodes[0][0], status, ALICE, created, created + timedelta(seconds=30),
                 created + timedelta(seconds=done) if done is not None else None))
            for nid, ntype, query, rname, left, right, nstatus, result, error in nodes:
                conn.execute(
                    "INSERT INTO df.nodes (id, instance_id, node_type, query, result_name, left_node,"
                    " right_node, status, result, error, submitted_by, database, created_at,"
                    " updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::regrole,"
                    " current_database(), %s, %s)",
                    (nid, iid, ntype, query, rname, left, right, nstatus, result, error, ALICE,
                     created, created + timedelta(seconds=30)))
    yield empty_db


@pytest.fixture
def client(pgd) -> Iterator[Client]:
    c = Client(pgd.dsn(ALICE))
    c.connect()
    yield c
    c.close()


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_detected_as_pg_durable_without_retry(client) -> None:
    assert client.info.backend == "pg_durable"
    assert type(client.backend) is PgDurableBackend
    assert client.info.backend_version == "0.2.6"
    caps = client.capabilities
    assert caps.can_retry is False
    assert caps.reasons["retry"] == "df.retry is not available on this backend"
    assert caps.has_instance_info and caps.has_instance_nodes


def test_list_and_filter(client) -> None:
    page = client.list_instances()
    assert {s.id for s in page.rows} == {i[0] for i in INSTANCES}
    assert [s.id for s in client.list_instances(status="failed").rows] == ["aaaa0002"]
    assert [s.id for s in client.list_instances(label="approval").rows] == ["aaaa0003"]
    waiting = next(s for s in page.rows if s.id == "aaaa0003")
    assert waiting.current_step == "SIGNAL 'approve'"


def test_node_texts_read_pg_durable_configs(client) -> None:
    nodes = {n.id: n for n in client.nodes("aaaa0004")}
    assert node_children(nodes["a0000008"]) == [("then", "a0000009"), ("else", "a000000a")]
    assert step_text("WAIT_SCHEDULE", nodes["a000000c"].query) == "WAIT_SCHEDULE '0 9 * * 1'"
    assert step_text("BREAK", nodes["a000000d"].query) == "BREAK done"
    assert nodes["a0000007"].result == {"rows": [{"x": 1}], "row_count": 1}  # text -> data, once
    assert nodes["a000000d"].result == "done"  # a JSON string result is not double-encoded
    signal = {n.id: n for n in client.nodes("aaaa0003")}["a0000004"]
    assert step_text("SIGNAL", signal.query) == "SIGNAL 'approve'"


def test_cli_show_explain_and_durations(capsys, pgd) -> None:
    code, out, err = run(capsys, "show", "aaaa0004", "--dsn", pgd.dsn(ALICE))
    assert (code, err) == (0, ""), err
    assert "missing node" not in out and "condition" not in out.split("IF", 1)[1].split("\n")[0]
    assert "cron_expr" not in out and "break_value" not in out
    assert "WAIT_SCHEDULE '0 9 * * 1'" in out and "BREAK done" in out
    code, out, err = run(capsys, "show", "aaaa0003", "--dsn", pgd.dsn(ALICE))
    assert code == 0 and "SIGNAL 'approve'" in out and "SIGNAL '?'" not in out
    for finished in ("aaaa0002", "aaaa0005"):  # pg_durable leaves completed_at NULL for these
        code, out, err = run(capsys, "show", finished, "--dsn", pgd.dsn(ALICE))
        assert code == 0, err
        assert "duration:     30.0s" in out  # ended at updated_at, not still growing
    code, out, err = run(capsys, "show", "aaaa0001", "--dsn", pgd.dsn(ALICE))
    assert "duration:     5.0s" in out
    code, out, err = run(capsys, "explain", "aaaa0004", "--dsn", pgd.dsn(ALICE))
    assert code == 0, err
    assert "IF" in out and "WAIT_SCHEDULE '0 9 * * 1'" in out


def test_cli_list(capsys, pgd) -> None:
    code, out, err = run(capsys, "ls", "--status", "running", "--dsn", pgd.dsn(ALICE))
    assert (code, err) == (0, ""), err
    assert "aaaa0003" in out and "aaaa0001" not in out


def test_signal_cancel_and_retry(client, pgd) -> None:
    (sent,) = client.signal("aaaa0003", "approve", {"ok": True})
    assert sent.ok, sent.message
    with pgd.connect() as conn:
        assert conn.execute("SELECT instance_id, signal_name, signal_data::jsonb FROM"
                            " pgd_fixture.signals").fetchall() == [("aaaa0003", "approve", {"ok": True})]
    (result,) = client.cancel(["aaaa0003"])
    assert result.ok, result.message
    assert pgd.scalar("SELECT status FROM df.instances WHERE id = 'aaaa0003'") == "cancelled"
    with pytest.raises(ClientError, match="df.retry is not available on this backend"):
        client.retry(["aaaa0002"])
    assert pgd.scalar("SELECT status FROM df.instances WHERE id = 'aaaa0002'") == "failed"
    (unknown,) = client.signal("bbbb0000", "approve")
    assert not unknown.ok and "not found" in unknown.message


async def test_tui_greys_retry_out_and_shows_the_node_panel(pgd) -> None:
    from tests.support import wait_for_app
    from tests.support.tui import make_app

    app = make_app(pgd, ALICE)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = app.screen
        await wait_for_app(pilot, lambda: screen.loaded_once)
        assert {r.id for r in screen.rows} == {i[0] for i in INSTANCES}
        assert "retry disabled: df.retry is not available on this backend" in app.header_text(160).plain
        assert screen.active_bindings["r"].enabled is False
        assert screen.active_bindings["c"].enabled is True


async def test_tui_instance_tree_and_node_panel(pgd) -> None:
    from rich.console import Console

    from dftui.screens.instance import InstanceScreen
    from dftui.widgets.node_panel import node_details
    from tests.support import wait_for_app
    from tests.support.tui import BASE_TIME, make_app

    app = make_app(pgd, ALICE)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for_app(pilot, lambda: app.screen.loaded_once)
        app.push_screen(InstanceScreen("aaaa0004"))
        await wait_for_app(pilot, lambda: isinstance(app.screen, InstanceScreen)
                           and app.screen.detail is not None and app.screen.nodes, what="detail")
        screen = app.screen
        labels = []
        stack = [screen.query_one("Tree").root]
        while stack:
            item = stack.pop()
            labels.append(str(item.label))
            stack.extend(item.children)
        text = "\n".join(labels)
        assert "rows in $r" in text and "missing node" not in text
        assert "WAIT_SCHEDULE '0 9 * * 1'" in text and "BREAK done" in text
        assert "cron_expr" not in text and "break_value" not in text
        console = Console(width=120, record=True)
        console.print(node_details(screen.nodes["a000000d"], "completed", now=BASE_TIME, tz=UTC))
        panel = console.export_text()
        assert "done" in panel and '"\\"done\\""' not in panel and '""done""' not in panel


def test_failed_node_text_and_status_details_are_not_double_encoded(capsys, pgd) -> None:
    """pg_durable stores a failed node's error as a JSON string in df.nodes.result (its
    update_node_status activity; df.nodes.error stays NULL) and stamps status_details with
    {"execution_id": "<orchestration>::<execution>"}: shown as text, once."""
    with pgd.connect() as conn:
        conn.execute("UPDATE df.nodes SET result = to_jsonb('division by zero'::text),"
                     " status_details = '{\"execution_id\": \"aaaa0002::1\"}'"
                     " WHERE instance_id = 'aaaa0002'")
    c = Client(pgd.dsn(ALICE))
    c.connect()
    try:
        (node,) = c.nodes("aaaa0002")
    finally:
        c.close()
    assert node.result == "division by zero"
    assert node.status_details == {"execution_id": "aaaa0002::1"}
    code, out, err = run(capsys, "show", "aaaa0002", "--dsn", pgd.dsn(ALICE))
    assert code == 0, err
    assert "division by zero" in out
    assert '"division by zero"' not in out and '\\"' not in out
