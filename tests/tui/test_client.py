"""dftui.client against a real PostgreSQL: detection, listing, RLS, errors."""

from __future__ import annotations

import pytest

from dftui.client import Client, ClientError, ConnectionLost
from dftui.client.backends import DftuiBackend
from tests.support.tui import Seed, seed_instances


def _client(db, role):
    client = Client(db.dsn(role))
    client.connect()
    return client


def test_connection_info_and_backend(db):
    with _client(db, "dftui_alice") as client:
        info = client.info
        assert info.role == "dftui_alice"
        assert info.database == db.name
        assert info.backend == "dftui"
        assert type(client.backend) is DftuiBackend
        assert info.capabilities.has_node_runs and info.capabilities.has_waiting_instances
        assert not info.is_superuser
        assert not info.capabilities.can_see_others


def test_list_pages_and_rls(db):
    seeds = [Seed(f"{i:08x}", "completed", label="batch", minutes_ago=i) for i in range(1, 26)]
    seeds += [Seed("000000bb", "failed", role="dftui_bob")]
    seed_instances(db, seeds)
    with _client(db, "dftui_alice") as client:
        seen = []
        cursor = None
        while True:
            page = client.list_instances(after=cursor, limit=10)
            seen += [r.id for r in page.rows]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == [f"{i:08x}" for i in range(1, 26)]
        counts = client.status_counts()
        assert counts.counts["completed"] == 25 and counts.counts["failed"] == 0
        assert client.list_instances(text="0000001").rows[0].id == "00000010"
    with _client(db, "dftui_bob") as client:
        assert [r.id for r in client.list_instances().rows] == ["000000bb"]
        assert client.list_instances().rows[0].current_step.startswith("SQL: SELECT 1")
        with pytest.raises(ClientError, match="not found or access denied"):
            client.instance("00000001")


def test_sorted_pages_walk_every_matching_row_in_the_column_order(db):
    """Each sortable column is the server's keyset order: paging through it (both ways) meets
    every visible row exactly once, in order, empty values last; the filter and RLS apply."""
    labels = ["delta", None, "Alpha", "charlie", None, "bravo", "echo", "alpha2"]
    statuses = ["completed", "failed", "running", "pending", "cancelled", "completed",
                "failed", "running"]
    seeds = [Seed(f"{i:08x}", statuses[i - 1], label=labels[i - 1], minutes_ago=i)
             for i in range(1, 9)]
    seeds.append(Seed("000000bb", "failed", label="aaa-bobs", role="dftui_bob"))
    seed_instances(db, seeds)
    expected = {  # the primary key of each order, as the rows' own values give it
        "id": lambda r: r.id,
        "label": lambda r: (r.label is None, (r.label or "").lower()),
        "status": lambda r: r.status,
        "by": lambda r: r.submitted_by,
    }
    with _client(db, "dftui_alice") as client:
        for sort, key in expected.items():
            for descending in (False, True):
                seen, cursor = [], None
                while True:
                    page = client.list_instances(after=cursor, limit=3, sort=sort,
                                                 descending=descending)
                    seen += page.rows
                    cursor = page.next_cursor
                    if cursor is None:
                        break
                ids = [r.id for r in seen]
                assert sorted(ids) == [f"{i:08x}" for i in range(1, 9)], (sort, descending)
                values = [key(r) for r in seen]
                assert values == sorted(values, reverse=descending), (sort, descending)
        by_label = [r.label for r in client.list_instances(sort="label").rows]
        assert by_label == ["Alpha", "alpha2", "bravo", "charlie", "delta", "echo", None, None]
        steps = client.list_instances(sort="step", limit=100).rows  # running/failed first
        assert {r.id for r in steps} == {f"{i:08x}" for i in range(1, 9)}
        assert [r.current_step is None for r in steps] == sorted(r.current_step is None for r in steps)
        took = client.list_instances(sort="duration", status="running").rows
        assert {r.id for r in took} == {"00000003", "00000008"}
        assert [r.id for r in took] == ["00000003", "00000008"]  # the younger has run less
        assert [r.id for r in client.list_instances(sort="label", label_like="alpha").rows] == [
            "00000003", "00000008"]
        with pytest.raises(ClientError, match="unknown sort"):
            client.list_instances(sort="nonsense")


def test_status_count_estimates_above_cap(db):
    seed_instances(db, [Seed(f"{i:08x}", "completed", minutes_ago=i) for i in range(1, 8)])
    with _client(db, "dftui_alice") as client:
        counts = client.status_counts(cap=5)
        assert "completed" in counts.estimated
        assert counts.counts["completed"] >= 6
        assert counts.label("completed").startswith("~")


def test_evaluate_rejects_statements_and_errors(db):
    with db.connect() as conn:
        conn.execute("CREATE TABLE public.t (x int)")
        conn.execute("GRANT ALL ON public.t TO dftui_alice")
        conn.execute(
            "CREATE FUNCTION public.w() RETURNS text LANGUAGE sql"
            " AS 'INSERT INTO public.t VALUES (1) RETURNING ''x'''"
        )
    with _client(db, "dftui_alice") as client:
        assert client.evaluate("'SELECT ' || '1'") == "SELECT 1"
        with pytest.raises(ClientError, match="single expression"):
            client.evaluate("'a'); DROP TABLE df.vars; SELECT ('b'")
        with pytest.raises(ClientError, match="single expression"):
            client.evaluate("'a')::text, ('b'")
        with pytest.raises(ClientError, match="invalid workflow expression"):
            client.evaluate("'a' ~~~ ")
        with pytest.raises(ClientError, match="read-only transaction"):
            client.evaluate("public.w()")
    assert db.scalar("SELECT count(*) FROM public.t") == 0


def test_bad_ids_and_payloads(db):
    with _client(db, "dftui_alice") as client:
        with pytest.raises(ClientError, match="invalid instance id"):
            client.instance("nope")
        with pytest.raises(ClientError, match="not valid JSON"):
            client.signal("00000001", "go", "{bad")
        with pytest.raises(ClientError, match="must not be empty"):
            client.signal("00000001", " ", "{}")


def test_connection_loss_and_reconnect(db):
    with _client(db, "dftui_alice") as client:
        pid = client.backend_pid()
        db.scalar("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(ConnectionLost):
            client.list_instances()
        client.reconnect()
        assert client.list_instances().rows == []


def test_run_app_refuses_ungranted_role_and_bad_database(db, capsys):
    from dftui.app import run_app

    assert run_app(db.dsn("dftui_carol")) == 1
    err = capsys.readouterr().err
    assert "dftui_carol may not use the df schema" in err and "Traceback" not in err
    assert run_app(db.dsn("dftui_alice").replace(db.name, "no_such_db_xyz")) == 1
    err = capsys.readouterr().err
    assert 'database "no_such_db_xyz" does not exist' in err
    assert err.count("\n") == 1


def test_application_name_and_capabilities(db):
    with _client(db, "dftui_alice") as client:
        assert db.scalar("SELECT application_name FROM pg_stat_activity WHERE pid = %s",
                         (client.backend_pid(),)) == "dftui"
        caps = client.capabilities
        assert caps.can_retry and caps.has_node_runs and caps.has_engines
        assert not caps.has_metrics and "metrics" in caps.reasons
    with _client(db, None) as client:
        assert client.info.is_superuser and client.capabilities.can_see_others
