"""Error texts of bad calls are pg_durable 0.2.6's, word for word (the primary message; dftui's
specifics go to DETAIL), so scripts and tests written for pg_durable that match on them work.

Each expected text is taken from microsoft/pg_durable's source (src/dsl.rs, src/ssrf.rs,
src/monitoring.rs: the pgrx::error! of the same check). As an ordinary role (DAVE holds the
HTTP grant), on every test server; nothing is stored by any of these calls.
"""

from __future__ import annotations

import psycopg
import pytest

from tests.support import DAVE

PARTS = "'[{\"name\":\"f\",\"data_b64\":\"aA==\"}]'"

CASES = [
    # src/dsl.rs, df.http
    ("SELECT df.http('https://example.com/', 'TRACE')",
     "Invalid HTTP method: TRACE. Must be GET, POST, PUT, DELETE, or PATCH"),
    ("SELECT df.http('https://example.com/', 'GET', NULL, NULL, 0)", "Timeout must be positive"),
    # src/ssrf.rs validate_url_scheme: the scheme is what precedes "://"
    ("SELECT df.http('ftp://example.com/x')",
     "Blocked: unsupported URL scheme 'ftp'. Only http and https are allowed."),
    ("SELECT df.http('file:///etc/passwd')",
     "Blocked: unsupported URL scheme 'file'. Only http and https are allowed."),
    # src/dsl.rs, df.http_multipart
    (f"SELECT df.http_multipart('https://example.com/', 'GET', {PARTS})",
     "Invalid HTTP method for multipart: GET. Must be POST, PUT, or PATCH"),
    (f"SELECT df.http_multipart('https://example.com/', 'POST', {PARTS}, NULL, 0)",
     "Timeout must be positive"),
    ("SELECT df.http_multipart('https://example.com/')", "parts is required and cannot be NULL"),
    ("SELECT df.http_multipart('https://example.com/', 'POST', '{}')",
     "parts must be a JSON array of part objects"),
    ("SELECT df.http_multipart('https://example.com/', 'POST', '[]')",
     "parts must contain at least one part"),
    (f"SELECT df.http_multipart('gopher://example.com/', 'POST', {PARTS})",
     "Blocked: unsupported URL scheme 'gopher'. Only http and https are allowed."),
    # src/dsl.rs, timers and signals
    ("SELECT df.sleep(-1)", "Sleep duration must be non-negative"),
    ("SELECT df.wait_for_signal('')", "Signal name cannot be empty"),
    ("SELECT df.wait_for_signal('go', 0)", "Timeout must be positive"),
    ("SELECT df.signal('', 'go')", "Instance ID cannot be empty"),
    ("SELECT df.signal('deadbeef', '')", "Signal name cannot be empty"),
    ("SELECT df.signal('deadbeef', 'go')", "Instance not found or access denied: deadbeef"),
    # src/monitoring.rs
    ("SELECT * FROM df.list_instances(NULL, 0)", "limit_count must be at least 1"),
    ("SELECT * FROM df.list_instances(NULL, 0, NULL)", "limit_count must be at least 1"),
    ("SELECT * FROM df.instance_executions('deadbeef', 0)", "limit_count must be at least 1"),
    ("SELECT * FROM df.list_instances(NULL, 10, NULL, 'zz')", "df.list_instances: invalid after_cursor"),
    (f"SELECT * FROM df.list_instances(NULL, 10, NULL, '{b'v2|x|0000000a'.hex()}')",
     "df.list_instances: invalid after_cursor"),
    # src/dsl.rs as_named, src/types.rs validate_result_name
    ("SELECT df.as('SELECT 1', '')", "df.as: result name cannot be empty"),
    ("SELECT df.as('SELECT 1', '1abc')",
     "df.as: result name '1abc' is not a valid identifier — must match [a-zA-Z_][a-zA-Z0-9_]*"),
    # src/dsl.rs start_in_caller_transaction: Durofut::ensure_strict of the root
    ("SELECT df.start('{\"node_type\":\"FOO\"}')",
     "Invalid durable function: Unknown node_type 'FOO'. Valid types: SQL, THEN, IF, JOIN, LOOP, "
     "BREAK, RACE, SLEEP, WAIT_SCHEDULE, HTTP, HTTP_MULTIPART, SIGNAL"),
    # src/types.rs non_future_helper_error (#153): a helper's return value is no workflow step
    ("SELECT df.seq(df.setvar('a', 'b'), 'SELECT 1')",
     "df.setvar cannot be used as a workflow step. Call df.setvar before df.start()."),
    ("SELECT df.join('SELECT 1', df.unsetvar('a'))",
     "df.unsetvar cannot be used as a workflow step. Call df.unsetvar before df.start()."),
    ("SELECT df.clearvars() ~> 'SELECT 1'",
     "df.clearvars cannot be used as a workflow step. Call df.clearvars before df.start()."),
    ("SELECT df.start(df.setvar('a', 'b'))",
     "Invalid durable function: df.setvar cannot be used as a workflow step. Call df.setvar before df.start()."),
]


@pytest.mark.parametrize(("statement", "message"), CASES, ids=[c[0][7:60] for c in CASES])
def test_error_text_is_pg_durable_s(db, statement, message) -> None:
    before = db.scalar("SELECT count(*) FROM df.instances")
    with db.connect(DAVE) as conn, pytest.raises(psycopg.Error) as info:
        conn.execute(statement)
    assert info.value.diag.message_primary == message
    assert db.scalar("SELECT count(*) FROM df.instances") == before


def test_multipart_messages_never_name_df_http(db) -> None:
    """The issue's wrong message: df.http_multipart's own checks (and df.http's checks it
    reuses) say df.http_multipart() wherever they name a function."""
    for statement in (f"SELECT df.http_multipart('https://example.com/', 'POST', {PARTS}, NULL, 0)",
                      f"SELECT df.http_multipart('https://example.com/', 'POST', {PARTS}, '[1]')",
                      f"SELECT df.http_multipart('', 'POST', {PARTS})"):
        with db.connect(DAVE) as conn, pytest.raises(psycopg.Error) as info:
            conn.execute(statement)
        diag = info.value.diag
        text = " ".join(filter(None, (diag.message_primary, diag.message_detail, diag.message_hint)))
        assert "df.http()" not in text, text
        assert "df.http_multipart()" in text, text


def test_a_helper_called_in_an_earlier_statement_does_not_taint_a_builder(db) -> None:
    """The refusal is for a helper's return value fed to a builder in the same statement (what
    pg_durable marks, by statement start time): a var set first, in its own statement (in the
    same transaction too), and a workflow built after it are the normal way, and work."""
    with db.connect(DAVE, autocommit=False) as conn:
        conn.execute("SELECT df.setvar('greeting', 'hi')")
        assert conn.execute("SELECT df.seq('SELECT 1', 'SELECT 2')").fetchone()[0].startswith("{")
        iid = conn.execute("SELECT df.start('SELECT 1')").fetchone()[0]
        conn.rollback()
    assert iid


def test_await_instance_s_status_is_no_workflow_step(db) -> None:
    """src/dsl.rs await_instance marks a terminal status it returns: threaded into a builder in
    the same statement it is refused, not run as the SQL 'cancelled'."""
    with db.connect(DAVE) as conn:
        iid = conn.execute("SELECT df.start(df.wait_for_signal('never'))").fetchone()[0]
        conn.execute("SELECT df.cancel(%s)", (iid,))
        with pytest.raises(psycopg.Error) as info:
            conn.execute("SELECT df.seq(df.await_instance(%s, 1), 'SELECT 1')", (iid,))
        assert info.value.diag.message_primary == (
            "df.await_instance cannot be used as a workflow step. Call df.await_instance before df.start().")
        assert conn.execute("SELECT df.await_instance(%s, 1)", (iid,)).fetchone()[0] == "cancelled"


def test_wait_for_completion_warns_that_it_is_deprecated(db) -> None:
    """src/dsl.rs wait_for_completion: a WARNING, then df.await_instance's answer."""
    warnings: list[tuple[str, str]] = []
    with db.connect(DAVE) as conn:
        conn.add_notice_handler(lambda d: warnings.append((d.severity_nonlocalized, d.message_primary)))
        iid = conn.execute("SELECT df.start(df.wait_for_signal('never'))").fetchone()[0]
        conn.execute("SELECT df.cancel(%s)", (iid,))
        assert conn.execute("SELECT df.wait_for_completion(%s, 1)", (iid,)).fetchone()[0] == "cancelled"
    assert ("WARNING", "df.wait_for_completion() is deprecated; use df.await_instance() instead") in warnings


@pytest.mark.parametrize(("expression", "text"), [
    ("garbage text", "Cannot explain input: not a valid Durofut JSON, instance ID, SQL statement, "
                     "or DSL expression.\nHint: DSL expressions use df.*() functions and operators "
                     "like ~>, |=>, &, |."),
    ("df.sql(NULL)", "Expression returned NULL"),
])
def test_explain_texts_of_what_it_cannot_explain(db, expression, text) -> None:
    """src/explain.rs explain_expression: returned as text, not raised."""
    assert db.scalar("SELECT df.explain(%s)", (expression,), role=DAVE) == text
