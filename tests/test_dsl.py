"""The workflow DSL: node envelopes, builders and operators (sql/0.1.0/020_dsl.sql).

Envelopes are compared byte for byte on purpose: the spec promises that the same expression
always serialises to identical text, so graphs can be stored, diffed and deduplicated as text.
"""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.support import error_of

SQL1 = '{"node_type":"SQL","query":"SELECT 1"}'
SQL2 = '{"node_type":"SQL","query":"SELECT 2"}'


def one(db, query: str, params: tuple | None = None, role: str | None = None):
    return db.scalar(query, params, role)


def keys_in_order(envelope: str) -> list[str]:
    return [k for k, _ in json.loads(envelope, object_pairs_hook=lambda pairs: pairs)]


# --- serialisation ------------------------------------------------------------------------------


def test_seq_envelope_is_exact_and_byte_identical(db):
    expr = "SELECT 'SELECT 1' ~> 'SELECT 2'"
    first = one(db, expr)
    assert first == f'{{"node_type":"THEN","left_node":{SQL1},"right_node":{SQL2}}}'
    assert one(db, expr) == first
    assert one(db, "SELECT df.seq('SELECT 1', 'SELECT 2')") == first


def test_fixed_key_order_with_every_field(db):
    env = one(
        db,
        "SELECT df.retry_policy(df.if('c', 't', 'e') |=> 'r', 2)",
    )
    assert keys_in_order(env) == [
        "node_type",
        "result_name",
        "left_node",
        "right_node",
        "condition_node",
        "retry_policy",
    ]
    env = one(db, "SELECT df.retry_policy(df.join3('a', 'b', 'c'), 3) |=> 'j'")
    assert keys_in_order(env) == [
        "node_type",
        "result_name",
        "left_node",
        "right_node",
        "extra_nodes",
        "retry_policy",
    ]
    env = one(db, "SELECT df.if_rows('r', 'a', 'b')")
    assert keys_in_order(env) == ["node_type", "query", "left_node", "right_node"]


def test_hand_written_envelope_is_reserialised_canonically(db):
    messy = '{ "query": "SELECT 1", "result_name": "x", "node_type": "SQL" }'
    assert one(db, "SELECT df.ensure_durofut(%s)", (messy,)) == (
        '{"node_type":"SQL","query":"SELECT 1","result_name":"x"}'
    )


def test_empty_fields_are_omitted(db):
    assert one(db, "SELECT df.sql('SELECT 1')") == SQL1
    assert one(db, "SELECT df.loop('SELECT 1')") == f'{{"node_type":"LOOP","left_node":{SQL1}}}'
    env = json.loads(one(db, "SELECT df.join('a', 'b')"))
    assert set(env) == {"node_type", "left_node", "right_node"}


def test_special_characters_survive_round_trip(db):
    query = "SELECT 'a\"b\\c', E'\\n' -- ünïcode\n"
    env = one(db, "SELECT df.sql(%s)", (query,))
    assert json.loads(env)["query"] == query


# --- auto-wrap ------------------------------------------------------------------------------------


def test_auto_wrap_rules(db):
    # an envelope is used as a node
    assert one(db, "SELECT df.seq(df.sleep(5), 'SELECT 2')") == (
        f'{{"node_type":"THEN","left_node":{{"node_type":"SLEEP","query":"5"}},"right_node":{SQL2}}}'
    )
    # JSON that is not an envelope, and unknown node types, become SQL nodes
    for text in ['{"a": 1}', '{"node_type": "FOO"}', "[1, 2]", "{not json"]:
        env = json.loads(one(db, "SELECT df.ensure_durofut(%s)", (text,)))
        assert env == {"node_type": "SQL", "query": text}


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ('{"node_type": 5}', "node_type must be a string"),
        ('{"node_type": "THEN", "left_node": 5}', "Durofut children must be JSON objects"),
        (
            '{"node_type": "JOIN", "extra_nodes": [1]}',
            "extra_nodes entries must be Durofut JSON objects",
        ),
        (
            '{"node_type": "JOIN", "extra_nodes": {}}',
            "extra_nodes entries must be Durofut JSON objects",
        ),
        (
            '{"node_type": "IF", "condition_node": "x"}',
            "condition_node must be a Durofut JSON object",
        ),
        ('{"node_type": "SQL", "query": 1}', "query must be a string"),
        (
            '{"node_type": "SQL", "query": "x", "retry_policy": 3}',
            "retry_policy must be a JSON object",
        ),
    ],
)
def test_malformed_envelope_raises(db, bad, fragment):
    assert fragment in error_of(db, "SELECT df.seq(%s, 'SELECT 1')", (bad,))


def test_null_step_is_null(db):
    """The node builders are STRICT, as pg_durable's: NULL in, NULL out (and df.start(NULL)
    then refuses the missing graph)."""
    with db.connect("dftui_alice") as conn:
        assert conn.execute("SELECT df.seq(NULL, 'SELECT 1')").fetchone()[0] is None
        assert conn.execute("SELECT df.sql(NULL)").fetchone()[0] is None
    assert "must not be NULL" in error_of(db, "SELECT df.start(df.sql(NULL))")


# --- operators ------------------------------------------------------------------------------------


def test_every_operator_matches_its_function(db):
    pairs = [
        ("'a' ~> 'b'", "df.seq('a', 'b')"),
        ("'a' |=> 'n'", "df.as('a', 'n')"),
        ("'a' & 'b'", "df.join('a', 'b')"),
        ("'a' | 'b'", "df.race('a', 'b')"),
        ("'c' ?> 't' !> 'e'", "df.if('c', 't', 'e')"),
        ("@> 'body'", "df.loop('body')"),
    ]
    for op_expr, fn_expr in pairs:
        assert one(db, f"SELECT {op_expr}") == one(db, f"SELECT {fn_expr}"), op_expr


def test_operators_resolve_for_ordinary_role_under_default_search_path(db):
    with db.connect("dftui_alice") as conn:
        assert conn.execute("SHOW search_path").fetchone()[0] == '"$user", public'
        got = conn.execute("SELECT 'a' & 'b', 'a' | 'b', 'a' ~> 'b' |=> 'x'").fetchone()
    assert json.loads(got[0])["node_type"] == "JOIN"
    assert json.loads(got[1])["node_type"] == "RACE"
    assert json.loads(got[2])["result_name"] == "x"


def test_builtin_operators_still_work(db):
    row = (
        db.connect()
        .execute(
            "SELECT 1 & 3, 6 | 1, '{1,2}'::int[] @> '{1}', B'101' & B'001', '{\"a\":1}'::jsonb @> '{}'"
        )
        .fetchone()
    )
    assert row == (1, 7, True, "001", True)


def test_precedence_is_left_associative_single_level(db):
    # PostgreSQL gives every user-defined operator one precedence: JOIN(SEQ(A,B),C).
    assert one(db, "SELECT 'A' ~> 'B' & 'C'") == one(db, "SELECT df.join(df.seq('A','B'), 'C')")
    assert one(db, "SELECT 'A' & 'B' ~> 'C'") == one(db, "SELECT df.seq(df.join('A','B'), 'C')")
    # naming applies to everything on its left
    assert one(db, "SELECT 'A' ~> 'B' |=> 'n'") == one(db, "SELECT df.as(df.seq('A','B'), 'n')")
    # prefix @> binds to the operand right after it
    assert one(db, "SELECT @> 'A' ~> 'B'") == one(db, "SELECT df.seq(df.loop('A'), 'B')")


def test_if_operators_need_each_other(db):
    assert "left side of !> must be a ?> expression" in error_of(db, "SELECT 'a' !> 'b'")
    assert "left side of !> must be a ?> expression" in error_of(db, "SELECT ('a' ~> 'b') !> 'c'")
    # ?> without !> is a partial marker that no builder accepts
    assert "must be followed by" in error_of(db, "SELECT ('c' ?> 't') ~> 'x'")
    assert "must be followed by" in error_of(db, "SELECT df.seq('x', 'c' ?> 't')")


# --- builders -------------------------------------------------------------------------------------


def test_builder_envelopes(db):
    q = "SELECT df.join3('a','b','c'), df.if_rows('rows_x','a','b'), df.break(), df.break('{\"a\": 1}'), df.break('done'), df.sleep(30), df.wait_for_signal('go', 10), df.loop('b', 'c')"
    join3, if_rows, brk, brk_json, brk_text, sleep, signal, loop = (
        db.connect().execute(q).fetchone()
    )
    assert [n["query"] for n in json.loads(join3)["extra_nodes"]] == ["c"]
    # node configs as pg_durable writes them (tests/test_pg_durable_shapes.py has the bytes)
    assert json.loads(json.loads(if_rows)["query"]) == {"condition_type": "result_has_rows",
                                                        "result_name": "rows_x"}
    assert json.loads(json.loads(brk)["query"]) == {"break_value": None}
    assert json.loads(json.loads(brk_json)["query"]) == {"break_value": '{"a": 1}'}
    assert json.loads(json.loads(brk_text)["query"]) == {"break_value": "done"}
    assert sleep == '{"node_type":"SLEEP","query":"30"}'
    assert json.loads(json.loads(signal)["query"]) == {"signal_name": "go", "timeout_seconds": 10}
    assert json.loads(loop)["condition_node"] == {"node_type": "SQL", "query": "c"}


def test_http_builders(db):
    env = json.loads(
        one(db, "SELECT df.http('https://example.com/x', 'get', 'b', '{\"A\":\"1\"}', 5)")
    )
    assert env["node_type"] == "HTTP"
    assert json.loads(env["query"]) == {
        "url": "https://example.com/x",
        "method": "GET",
        "body": "b",
        "headers": {"A": "1"},
        "timeout_seconds": 5,
    }
    env = json.loads(
        one(
            db,
            'SELECT df.http_multipart(\'https://example.com/u\', \'PUT\', \'[{"name":"f","data_b64":"aGk="}]\')',
        )
    )
    cfg = json.loads(env["query"])
    assert (env["node_type"], cfg["method"], cfg["parts"][0]["name"]) == (
        "HTTP_MULTIPART",
        "PUT",
        "f",
    )
    # placeholders are checked by the engine after substitution
    assert one(db, "SELECT df.http('{base_url}/x', 'GET') IS NOT NULL")


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        ("df.as('SELECT 1', '1abc')", "not a valid identifier"),
        ("df.as('SELECT 1', 'a-b')", "not a valid identifier"),
        ("'SELECT 1' |=> 'has space'", "not a valid identifier"),
        ("df.if_rows('no good', 'a', 'b')", "not a valid identifier"),
        ("df.sleep(-1)", "Sleep duration must be non-negative"),
        ("df.wait_for_schedule('* * * *')", "expected 5 fields"),
        ("df.wait_for_schedule('60 * * * *')", "out of range"),
        ("df.wait_for_schedule('* 24 * * *')", "out of range"),
        ("df.wait_for_schedule('* * 0 * *')", "out of range"),
        ("df.wait_for_schedule('* * * 13 *')", "out of range"),
        ("df.wait_for_schedule('* * * * 8')", "out of range"),
        ("df.wait_for_schedule('*/0 * * * *')", "step"),
        ("df.wait_for_schedule('5-1 * * * *')", "reversed"),
        ("df.wait_for_schedule('x * * * *')", "not a valid minute value"),
        ("df.wait_for_schedule('1,,2 * * * *')", "bad minute field"),
        ("df.wait_for_schedule('@daily')", "expected 5 fields"),
        ("df.wait_for_schedule('')", "must not be empty"),
        ("df.wait_for_signal('')", "Signal name cannot be empty"),
        ("df.wait_for_signal('s', 0)", "must be positive"),
        ("df.http('ftp://example.com/x')", "unsupported URL scheme"),
        ("df.http('file:///etc/passwd')", "unsupported URL scheme"),
        ("df.http('example.com/x')", "unsupported URL scheme"),
        ("df.http('https://example.com', 'TRACE')", "Invalid HTTP method"),
        ("df.http('https://example.com', 'GET', NULL, NULL, 0)", "must be positive"),
        ("df.http('https://example.com', 'GET', NULL, '[1]')", "headers must be a JSON object"),
        ("df.http_multipart('https://example.com')", "parts is required"),
        ("df.http_multipart('https://example.com', 'POST', '[]')", "at least one part"),
        (
            'df.http_multipart(\'https://example.com\', \'GET\', \'[{"name":"f","data_b64":"aA=="}]\')',
            "Invalid HTTP method for multipart",
        ),
        (
            'df.http_multipart(\'https://example.com\', \'POST\', \'[{"name":"f","data_b64":"x$resp.body"}]\')',
            "whole-value reference",
        ),
        (
            'df.http_multipart(\'https://example.com\', \'POST\', \'[{"name":"f","data_b64":"!!"}]\')',
            "not valid base64",
        ),
        (
            "df.http_multipart('https://example.com', 'POST', '[{\"data_b64\":\"aA==\"}]')",
            'non-empty "name"',
        ),
        ("df.retry_policy('SELECT 1', 0)", "max_attempts must be at least 1"),
        ("df.retry_policy('SELECT 1', NULL)", "max_attempts must be at least 1"),
        ("df.retry_policy('SELECT 1', 2, -1)", "backoff_seconds"),
        ("df.retry_policy('SELECT 1', 2, 10, 5)", "max_backoff_seconds"),
        ("df.retry_policy('SELECT 1', 2, 1, 60, ARRAY[''])", "retry_on"),
    ],
)
def test_builder_validation(db, call, fragment):
    assert fragment in error_of(db, f"SELECT {call}")


def test_valid_cron_forms(db):
    for cron in [
        "* * * * *",
        "*/5 0-23/2 1,15 JAN-jun sun-SAT",
        "0 9 * * 1-5",
        "59 23 31 12 7",
        "0 0 1 */3 *",
        "5/10 * * * *",
    ]:
        env = json.loads(one(db, "SELECT df.wait_for_schedule(%s)", (cron,)))
        assert env == {"node_type": "WAIT_SCHEDULE", "query": json.dumps({"cron_expr": cron},
                                                                           separators=(",", ":"))}


def test_retry_policy_shape(db):
    env = json.loads(
        one(db, "SELECT df.retry_policy('SELECT 1', 4, 0.5, 30, ARRAY['40001','http_5xx'])")
    )
    assert env["retry_policy"] == {
        "max_attempts": 4,
        "backoff_seconds": 0.5,
        "max_backoff_seconds": 30,
        "retry_on": ["40001", "http_5xx"],
    }
    assert env["query"] == "SELECT 1"
    # the policy is kept when the node is composed further
    env = json.loads(one(db, "SELECT df.retry_policy('SELECT 1', 2) |=> 'n'"))
    assert env["retry_policy"]["max_attempts"] == 2 and env["result_name"] == "n"


def test_http_disabled_setting_refuses_builders(db):
    with db.connect() as conn:
        conn.execute("SET pg_durable.http_security = 'disabled'")
        for call in [
            "df.http('https://example.com')",
            'df.http_multipart(\'https://example.com\', \'POST\', \'[{"name":"f","data_b64":"aA=="}]\')',
        ]:
            with pytest.raises(psycopg.Error, match=r"df\.http\(\) is disabled"):
                conn.execute(f"SELECT {call}")


def test_restricted_http_setting_checks_hosts(db):
    with db.connect() as conn:
        conn.execute("SET pg_durable.http_security = 'restricted'")
        conn.execute("SET pg_durable.http_allowed_domains = 'example.com, api.github.com'")
        for url in ["https://10.0.0.1/x", "http://[::1]:8080/", "https://user@127.0.0.1/"]:
            with pytest.raises(psycopg.Error, match="bare IP"):
                conn.execute("SELECT df.http(%s)", (url,))
        with pytest.raises(psycopg.Error, match="not in the allowed"):
            conn.execute("SELECT df.http('https://evil.example.org/')")
        with pytest.raises(psycopg.Error, match="not in the allowed"):
            conn.execute("SELECT df.http('https://notexample.com/')")
        assert conn.execute(
            "SELECT df.http('https://www.example.com:8443/x') IS NOT NULL"
        ).fetchone()[0]


def test_granted_role_builds_graphs_but_http_needs_its_grant(db):
    assert (
        json.loads(one(db, "SELECT 'a' ~> df.sleep(1)", role="dftui_alice"))["node_type"] == "THEN"
    )
    assert "permission denied" in error_of(
        db, "SELECT df.http('https://example.com')", role="dftui_alice"
    )
    assert (
        json.loads(one(db, "SELECT df.http('https://example.com')", role="dftui_dave"))["node_type"]
        == "HTTP"
    )
    assert "permission denied" in error_of(db, "SELECT df.sql('x')", role="dftui_carol")
