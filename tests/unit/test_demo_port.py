"""The demo keeps its port across runs (issue 15: "the port changes every run"): the saved port
is taken again when only connections of the last run linger on it, not when something listens."""

from __future__ import annotations

import socket

import pytest

from dftui import demo


@pytest.fixture
def saved_port(tmp_path, monkeypatch) -> int:
    """A free port written as the previous run's, in a data dir of this test's own."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    demo.data_dir().mkdir(parents=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    demo._port_file().write_text(f"{port}\n")
    return port


def _linger(port: int) -> None:
    """Leave a connection in TIME_WAIT on `port`, closed first by the listening side (as the
    demo's PostgreSQL closes its sessions when it stops)."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen(1)
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server side closes first: its end goes to TIME_WAIT
        client.recv(1)
        client.close()


def test_the_saved_port_is_kept_when_only_old_connections_linger(saved_port):
    _linger(saved_port)
    assert demo._stable_port() == saved_port


def test_a_port_someone_listens_on_is_not_taken(saved_port):
    with socket.socket() as other:
        other.bind(("127.0.0.1", saved_port))
        other.listen(1)
        port = demo._stable_port()
    assert port not in (saved_port, 0)  # (0 only when the listener is the demo's own server)
