"""Every malformed input (security.md "Bad input") gets a clear error and changes nothing.

Each case runs as an ordinary granted role and compares the row counts of df.instances, df.nodes,
df.vars, df_internal.tasks and df_internal.signals before and after. The expected message is the
part a user needs to fix the call, not just "an error happened".
"""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.support import ALICE, DAVE


def _deep_then(depth: int) -> str:
    node: dict = {"node_type": "SQL", "query": "SELECT 1"}
    for _ in range(depth):
        node = {"node_type": "THEN", "left_node": {"node_type": "SQL", "query": "SELECT 1"}, "right_node": node}
    return json.dumps(node)


def _wide_join(n: int) -> str:
    leaf = {"node_type": "SQL", "query": "SELECT 1"}
    return json.dumps({"node_type": "JOIN", "left_node": leaf, "right_node": leaf,
                       "extra_nodes": [leaf] * n})


# (id, role, statement, params, expected message regex)
CASES = [
    # malformed DSL / JSON envelopes
    ("unknown node type", ALICE, "SELECT df.start(%s)", ('{"node_type": "NOPE", "query": "x"}',),
     r"Unknown node_type 'NOPE'"),
    ("node_type not a string", ALICE, "SELECT df.start(%s)", ('{"node_type": 5, "query": "x"}',),
     r"node_type must be a string"),
    ("query not a string", ALICE, "SELECT df.start(%s)", ('{"node_type": "SQL", "query": 5}',),
     r"query must be a string"),
    ("THEN without right", ALICE, "SELECT df.start(%s)",
     ('{"node_type": "THEN", "left_node": {"node_type": "SQL", "query": "SELECT 1"}}',),
     r"THEN nodes need both left_node and right_node"),
    ("child not an object", ALICE, "SELECT df.start(%s)",
     ('{"node_type": "THEN", "left_node": "SELECT 1", "right_node": 7}',), r"must be JSON objects"),
    ("IF config not JSON", ALICE, "SELECT df.start(%s)",
     ('{"node_type": "IF", "query": "{oops", "left_node": {"node_type": "SQL", "query": "SELECT 1"}, '
      '"right_node": {"node_type": "SQL", "query": "SELECT 2"}}',), r"IF"),
    ("incomplete conditional", ALICE, "SELECT df.start('SELECT 1' ?> 'SELECT 2')", (),
     r"incomplete conditional"),
    ("empty workflow", ALICE, "SELECT df.start(%s)", ("   ",), r"non-empty query"),
    ("NULL workflow", ALICE, "SELECT df.start(NULL)", (), r"must not be NULL"),
    ("leaf with children", ALICE, "SELECT df.start(%s)",
     ('{"node_type": "SLEEP", "query": "1", "left_node": {"node_type": "SQL", "query": "SELECT 1"}}',),
     r"take no child nodes"),
    # invalid identifiers
    ("result name with a space", ALICE, "SELECT df.start(df.as('SELECT 1', 'bad name'))", (),
     r"^df.as: result name 'bad name' is not a valid identifier — must match \[a-zA-Z_\]\[a-zA-Z0-9_\]\*"),
    ("result name starting with a digit", ALICE, "SELECT df.start(df.as('SELECT 1', '1abc'))", (),
     r"^df.as: result name '1abc' is not a valid identifier"),
    ("empty result name", ALICE, "SELECT df.start(df.as('SELECT 1', ''))", (),
     r"^df.as: result name cannot be empty\b"),
    ("if_rows name", ALICE, "SELECT df.start(df.if_rows('a-b', 'SELECT 1', 'SELECT 2'))", (),
     r"^df.if_rows: result name 'a-b' is not a valid identifier"),
    # invalid cron
    ("cron with 3 fields", ALICE, "SELECT df.start(df.wait_for_schedule('not a cron'))", (),
     r"Invalid cron expression .*expected 5 fields"),
    ("cron minute out of range", ALICE, "SELECT df.start(df.wait_for_schedule('61 * * * *'))", (),
     r"Invalid cron expression .*out of range"),
    # negative sleeps / timeouts / policies
    ("negative sleep", ALICE, "SELECT df.start(df.sleep(-1))", (), r"Sleep duration must be non-negative"),
    ("negative sleep in JSON", ALICE, "SELECT df.start(%s)", ('{"node_type": "SLEEP", "query": "-5"}',),
     r"Sleep duration must be non-negative|whole number"),
    ("negative signal timeout", ALICE, "SELECT df.start(df.wait_for_signal('x', -5))", (),
     r"Timeout must be positive"),
    ("empty signal name", ALICE, "SELECT df.start(df.wait_for_signal('', 5))", (),
     r"Signal name cannot be empty"),
    ("negative max_attempts", ALICE, "SELECT df.start(df.retry_policy('SELECT 1', -1))", (),
     r"max_attempts must be at least 1"),
    ("negative backoff", ALICE, "SELECT df.start(df.retry_policy('SELECT 1', 3, -1))", (),
     r"backoff_seconds must be a finite number >= 0"),
    ("malformed instance retry policy", ALICE, "SELECT df.start_with_retry('SELECT 1', retry_policy => %s)",
     ('{"max_attempts": "x"}',), r"invalid retry_policy"),
    # non-http(s) URLs
    ("file URL", DAVE, "SELECT df.start(df.http('file:///etc/passwd'))", (), r"unsupported URL scheme"),
    ("ftp URL", DAVE, "SELECT df.start(df.http('ftp://example.com/'))", (), r"unsupported URL scheme"),
    ("gopher URL", DAVE, "SELECT df.start(df.http('gopher://localhost:70/'))", (),
     r"unsupported URL scheme"),
    ("URL without host", DAVE, "SELECT df.start(df.http('http:///path'))", (), r"URL"),
    ("bad HTTP method", DAVE, "SELECT df.start(df.http('https://example.com/', 'TRACE'))", (),
     r"Invalid HTTP method: TRACE. Must be GET, POST, PUT, DELETE, or PATCH"),
    ("headers not an object", DAVE, "SELECT df.start(df.http('https://example.com/', 'GET', NULL, '[1]'))",
     (), r"headers must be a JSON object"),
    ("http without the grant", ALICE, "SELECT df.start(df.http('https://example.com/'))", (),
     r"permission denied|EXECUTE privilege"),
    # invalid labels and options
    ("label with a newline", ALICE, "SELECT df.start('SELECT 1', %s)", ("two\nlines",),
     r"labels must not contain control characters"),
    ("label with a tab", ALICE, "SELECT df.start('SELECT 1', %s)", ("a\tb",),
     r"labels must not contain control characters"),
    ("label with an escape", ALICE, "SELECT df.start('SELECT 1', %s)", ("\x1b[31mred",),
     r"labels must not contain control characters"),
    ("unknown transaction mode", ALICE, "SELECT df.start('SELECT 1', transaction_mode => 'sometimes')", (),
     r"invalid transaction_mode"),
    ("unknown database", ALICE, "SELECT df.start('SELECT 1', database => 'no_such_db')", (),
     r'database "no_such_db" does not exist'),
    # oversized graphs
    ("graph nested too deep", ALICE, "SELECT df.start(%s)", (_deep_then(300),),
     r"maximum nesting depth"),
    ("graph with too many nodes", ALICE, "SELECT df.start(%s)", (_wide_join(10001),),
     r"maximum node count"),
    # unknown instance ids
    ("signal unknown id", ALICE, "SELECT df.signal('deadbeef', 'go')", (), r"not found or access denied"),
    ("signal malformed id", ALICE, "SELECT df.signal('not an id; DROP', 'go')", (),
     r"not found or access denied"),
    ("cancel unknown id", ALICE, "SELECT df.cancel('deadbeef')", (), r"not found or access denied"),
    ("retry unknown id", ALICE, "SELECT df.retry('deadbeef')", (), r"not found or access denied"),
    ("await unknown id", ALICE, "SELECT df.await_instance('deadbeef', 1)", (), r"not found"),
    # (df.instance_info / df.instance_nodes of an unknown id return no rows and df.explain
    # returns the text "Instance '<id>' not found", as pg_durable's do:
    # tests/test_pg_durable_missing_ids.py)
    # malformed cursors and listing options
    ("garbage cursor", ALICE, "SELECT * FROM df.list_instances(NULL, 10, NULL, 'garbage')", (),
     r"df.list_instances: invalid after_cursor"),
    ("half a cursor", ALICE, "SELECT * FROM df.list_instances(NULL, 10, NULL, %s)",
     ("7631", ), r"df.list_instances: invalid after_cursor"),
    ("negative limit", ALICE, "SELECT * FROM df.list_instances(NULL, -1)", (), r"limit_count must be at least 1"),
    # variables and signals
    ("empty variable name", ALICE, "SELECT df.setvar('', 'x')", (), r"variable name must not be empty"),
    ("empty signal name at signal time", ALICE, "SELECT df.signal('deadbeef', '')", (),
     r"Signal name cannot be empty"),
]


def _counts(db) -> tuple:
    with db.connect() as conn:
        return conn.execute(
            "SELECT (SELECT count(*) FROM df.instances), (SELECT count(*) FROM df.nodes), "
            "(SELECT count(*) FROM df.vars), (SELECT count(*) FROM df_internal.tasks), "
            "(SELECT count(*) FROM df_internal.signals)").fetchone()


@pytest.fixture
def seeded(db):
    """Some existing state, so 'changes nothing' is not trivially about empty tables."""
    with db.connect(ALICE) as conn:
        conn.execute("SELECT df.setvar('x', '1')")
        iid = conn.execute("SELECT df.start(df.wait_for_signal('go'))").fetchone()[0]
        conn.execute("SELECT df.signal(%s, 'queued')", (iid,))
    return db


@pytest.mark.parametrize(("role", "statement", "params", "message"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_error_and_changes_nothing(seeded, role, statement, params, message):
    db = seeded
    before = _counts(db)
    with db.connect(role) as conn, pytest.raises(psycopg.Error, match=message) as err:
        conn.execute(statement, params or None)
    # one readable line, no internal noise
    primary = err.value.diag.message_primary or ""
    assert primary and "\n" not in primary and "Traceback" not in primary
    assert _counts(db) == before


def test_bad_input_inside_a_transaction_rolls_back_cleanly(seeded):
    """A failing df.start in the caller's transaction leaves no half-written rows behind, even
    when earlier statements of that transaction succeeded and it is then committed up to a
    savepoint."""
    db = seeded
    before = _counts(db)
    with db.connect(ALICE, autocommit=False) as conn:
        conn.execute("SAVEPOINT s")
        with pytest.raises(psycopg.Error, match="maximum node count"):
            conn.execute("SELECT df.start(%s)", (_wide_join(10001),))
        conn.execute("ROLLBACK TO SAVEPOINT s")
        conn.commit()
    assert _counts(db) == before
