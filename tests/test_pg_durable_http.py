"""HTTP as pg_durable builds it: the engines' policy is applied when a graph is built (the
engines record it in the database), an allow-all engine lets public bare IP addresses through
(never private, loopback, link-local or CGNAT ones), and df.http_multipart's messages name it.

As the HTTP-granted ordinary role, on every test server.
"""

from __future__ import annotations

import psycopg
import pytest

from engine.config import EngineConfig
from engine.http import HttpPolicyError, check_url
from tests.support import DAVE, running_engine, wait_terminal

MULTIPART = "df.http_multipart(%s, 'POST', '[{\"name\":\"f\",\"data_b64\":\"aA==\"}]')"


def _build(db, call: str, *params: str) -> str:
    return db.scalar(f"SELECT {call}", params or None, role=DAVE)


def _refused(db, call: str, *params: str) -> str:
    with db.connect(DAVE) as conn, pytest.raises(psycopg.Error) as info:
        conn.execute(f"SELECT {call}", params or None)
    return str(info.value)


def test_a_disabled_engine_makes_df_http_raise_when_called(db) -> None:
    assert _build(db, "df.http('https://example.com/')")  # no engine: only the scheme check
    with running_engine(db.dsn()):  # the default policy: disabled
        assert "df.http() is disabled" in _refused(db, "df.http('https://example.com/')")
        msg = _refused(db, MULTIPART, "https://example.com/")
        assert "df.http_multipart() is disabled" in msg
        # As pg_durable (its e2e test 47): a hand-made HTTP node passes df.start and is refused
        # when it runs.
        raw = ('{"node_type":"HTTP","query":"{\\"url\\":\\"https://example.com/path\\",'
               '\\"method\\":\\"GET\\",\\"body\\":null,\\"headers\\":null,\\"timeout_seconds\\":5}"}')
        iid = db.scalar("SELECT df.start(%s)", (raw,), role=DAVE)
        assert wait_terminal(db, iid) == "failed"
        with db.connect(DAVE) as conn:
            result = conn.execute("SELECT result::text FROM df.nodes WHERE instance_id = %s",
                                  (iid,)).fetchone()[0]
        assert "outbound HTTP requests are disabled" in result
    assert _build(db, "df.http('https://example.com/')")  # engine gone: no longer applied


def test_allow_all_lets_public_ip_addresses_through(db) -> None:
    with running_engine(db.dsn(), http_policy="allow-all"):
        for url in ("https://8.8.8.8/", "http://1.1.1.1:8080/x", "https://[2606:4700:4700::1111]/"):
            assert _build(db, "df.http(%s)", url), url
            assert _build(db, MULTIPART, url), url


def test_allow_all_engine_passes_public_ips_and_refuses_private_ones() -> None:
    config = EngineConfig(http_policy="allow-all")
    host, port, addresses = check_url("https://8.8.8.8/x", config)
    assert (host, port, addresses) == ("8.8.8.8", 443, ["8.8.8.8"])
    for url in ("http://10.1.2.3/", "http://127.0.0.1/", "http://169.254.169.254/", "http://100.64.0.1/"):
        with pytest.raises(HttpPolicyError, match="refused"):
            check_url(url, config)
    with pytest.raises(HttpPolicyError, match="bare IP"):
        check_url("https://8.8.8.8/", EngineConfig(http_policy="allowlist", http_allow=["example.com"]))


def test_engines_record_their_policy(db) -> None:
    """An allowlist engine lets df.http() build (it checks each request when it runs)."""
    with running_engine(db.dsn(), http_policy="allowlist", http_allow=["example.com"]):
        assert _build(db, "df.http('https://api.example.com/v1')")
        with db.connect() as conn:
            policy = conn.execute("SELECT http_policy, http_allow FROM df.engines"
                                  " WHERE state = 'alive'").fetchall()
        assert policy == [("allowlist", ["example.com"])]


def test_http_multipart_messages_name_it(db) -> None:
    """pg_durable's text ("Timeout must be positive", src/dsl.rs), and the detail names
    df.http_multipart(), never df.http() (tests/test_pg_durable_messages.py has the rest)."""
    with db.connect(DAVE) as conn, pytest.raises(psycopg.Error) as info:
        conn.execute("SELECT df.http_multipart('https://example.com/', 'POST',"
                     " '[{\"name\":\"f\",\"data_b64\":\"aA==\"}]', NULL, 0)")
    assert info.value.diag.message_primary == "Timeout must be positive"
    assert info.value.diag.message_detail == "df.http_multipart(): timeout_seconds was 0."
    assert "df.http()" not in str(info.value)
