"""Poison inputs: no value, name or result can wedge the engine or be silently changed.

Every case runs as an ordinary granted role against an engine in both modes (superuser and the
least-privilege owner). A case passes when its instance ends with the exact value, or fails with
a message naming the problem, and a control workflow of another role still completes.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from engine_support import node_rows, root_result, start, wait_for, wait_terminal
from security_support import engine_in_mode

from dftui.cli import main as cli_main
from engine import jsonexact

ALICE = "dftui_alice"
BOB = "dftui_bob"

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


# -- numbers ------------------------------------------------------------------------------------

def test_signal_payload_numbers_arrive_exactly(db, mode):
    with engine_in_mode(db, mode):
        iid = start(db, ALICE, "df.wait_for_signal('dec') |=> 'sig' ~> 'SELECT $sig.data AS d'")
        wait_for(lambda: db.scalar("SELECT count(*) FROM df.nodes WHERE instance_id = %s "
                                   "AND node_type = 'SIGNAL' AND status = 'running'", (iid,)),
                 what="the signal wait")
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
