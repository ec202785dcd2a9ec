"""HTTP egress: with a permissive policy (allow-all) but private targets not allowed, no request
may reach loopback, private, link-local, CGNAT or IPv4-mapped addresses, however the address is
spelled, and redirects are never followed. A local server counts every request it receives."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from tests.support import DAVE, node_rows, root_result, running_engine, start, wait_terminal


class _Counting(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        _Counting.hits.append(self.path)
        if self.path.startswith("/redirect"):
            self.send_response(301)
            self.send_header("Location", f"http://127.0.0.1:{self.server.server_address[1]}/secret")
            self.end_headers()
            return
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"internal data")

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server():
    _Counting.hits = []
    srv = HTTPServer(("127.0.0.1", 0), _Counting)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv.server_address[1]
    srv.shutdown()


def _targets(port: int) -> list[str]:
    return [
        f"http://127.0.0.1:{port}/", f"http://localhost:{port}/", f"http://LOCALHOST.:{port}/",
        f"http://127.1:{port}/", f"http://2130706433:{port}/", f"http://0x7f000001:{port}/",
        f"http://0177.0.0.1:{port}/", f"http://0:{port}/", f"http://[::1]:{port}/",
        f"http://[::ffff:127.0.0.1]:{port}/", f"http://[::ffff:7f00:1]:{port}/",
        f"http://user@127.0.0.1:{port}/", f"http://example.com@127.0.0.1:{port}/",
        "http://10.0.0.1/", "http://10.255.255.254:8080/", "http://192.168.1.1/", "http://172.16.0.1/",
        "http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/", "http://[fc00::1]/",
        "http://100.64.0.1/", "http://100.127.255.254/", "http://0.0.0.0/", "https://127.0.0.1/",
    ]


def test_private_targets_are_refused_however_spelled(db, server):
    targets = _targets(server)
    with running_engine(db.dsn(), http_policy="allow-all", http_allow_private=False):
        ids = {url: start(db, DAVE, "df.http(%s, 'GET', NULL, NULL, 5)", url) for url in targets}
        for url, iid in ids.items():
            assert wait_terminal(db, iid) == "failed", url
            error = node_rows(db, iid)[0]["error"]
            # refused by the policy (or not resolvable at all here, e.g. "localhost.")
            assert "refused" in error or "not allowed" in error or "cannot resolve" in error, (url, error)
    assert _Counting.hits == [], "a request reached the private server"


def test_allowlist_is_matched_on_whole_domain_labels(db, server):
    with running_engine(db.dsn(), http_policy="allowlist", http_allow=["example.com"],
                       http_allow_private=False):
        ids = [start(db, DAVE, "df.http(%s, 'GET')", url) for url in (
            "http://evilexample.com/", "http://example.com.evil.test/", f"http://localhost:{server}/",
            f"http://127.0.0.1:{server}/")]
        for iid in ids:
            assert wait_terminal(db, iid) == "failed"
            assert "not in the allowed domain list" in node_rows(db, iid)[0]["error"] or \
                "not allowed" in node_rows(db, iid)[0]["error"]
    assert _Counting.hits == []


def test_redirects_are_not_followed(db, server):
    """Private targets must be allowed here to reach the test server at all; the redirect to
    another address must still come back as the 301, not be followed."""
    with running_engine(db.dsn(), http_policy="allow-all", http_allow_private=True):
        iid = start(db, DAVE, "df.http(%s, 'GET')", f"http://localhost:{server}/redirect")
        assert wait_terminal(db, iid) == "completed", node_rows(db, iid)
        assert root_result(db, iid)["status"] == 301
    assert _Counting.hits == ["/redirect"]


def test_non_http_schemes_are_refused(db):
    with running_engine(db.dsn(), http_policy="allow-all"), db.connect(DAVE) as conn:
        for url in ("file:///etc/passwd", "gopher://localhost:70/", "ftp://example.com/",
                    "dict://localhost:11211/", "javascript:alert(1)", "http:/no-host", "//no-scheme"):
            with pytest.raises(Exception, match="(?i)scheme|url"):
                conn.execute("SELECT df.start(df.http(%s, 'GET'))", (url,))
