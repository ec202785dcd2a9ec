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
