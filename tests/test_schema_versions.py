"""Schema versions: released files never change, upgrades carry in-flight instances, and the
engine refuses (or stops on) a schema it cannot drive.

The upgrade tests are the real thing, once per earlier release (0.1.0, 0.2.0 and 0.3.0): the release is installed by its
own code and driven by its own engine (tests/fixtures/dftui-<release>-engine.tar.gz, `git archive`
of that release's engine/ and sql/), instances are left mid-flight, the schema is upgraded while
that engine still runs, the old engine stops touching anything, and the current engine finishes
the instances exactly once.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from dftui.cli import main
from engine import schema
from engine.config import EngineConfig
from engine.runner import Engine
from tests.support import (
    ALICE,
    prepare_app,
    running_engine,
    start,
    wait_for,
    wait_terminal,
)

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
PREVIOUS_RELEASE = "0.3.0"
# Every earlier release with an installer of its own is upgraded from, not only the last one:
# a database can skip releases.
EARLIER_RELEASES = ["0.2.0", PREVIOUS_RELEASE]


# -- released files are immutable --------------------------------------------------------------

def released() -> list[tuple[str, str, str]]:
    lines = (REPO / "sql" / "RELEASED").read_text().splitlines()
    return [tuple(line.split()) for line in lines if line and not line.startswith("#")]  # type: ignore[misc]


def test_released_schema_files_are_unchanged():
    entries = released()
    assert entries, "sql/RELEASED lists no files"
    for _release, digest, path in entries:
        text = (REPO / "sql" / path).read_bytes()
        assert hashlib.sha256(text).hexdigest() == digest, (
            f"sql/{path} belongs to a released schema version and was edited; "
            "put the change in a new migration (sql/migrations) or a routine (sql/routines)")


def test_every_file_of_a_released_version_is_recorded():
    listed = {path for _r, _d, path in released()}
    releases = {release for release, _d, _p in released()}
    for release in releases:
        on_disk = {f"{release}/{p.name}" for p in (REPO / "sql" / release).glob("*.sql")}
        assert on_disk == {p for p in listed if p.startswith(f"{release}/")}, (
            f"a file was added to or removed from released version {release}")
    migrations = {f"migrations/{m.name}.sql" for m in schema.migrations()}
    released_migrations = {p for p in listed if p.startswith("migrations/")}
    assert released_migrations <= migrations, "a released migration was removed"
    newest_released = max(released_migrations, default="")
    assert all(m > newest_released for m in migrations - released_migrations), (
        "a new migration must sort after every released one")


# -- the baseline, driven by its own engine, upgraded with work in flight ----------------------

def unpack_release(release: str, into: Path) -> Path:
    """The engine/ and sql/ of an earlier release, extracted from its archive."""
    target = into / f"dftui-{release}"
    with tarfile.open(FIXTURES / f"dftui-{release}-engine.tar.gz") as archive:
        archive.extractall(target, filter="data")
    return target


def release_env(code: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DFTUI_ENGINE")}
    env["PYTHONPATH"] = str(code)
    return env


@pytest.fixture(params=[schema.BASELINE, *EARLIER_RELEASES])
def release_db(request, empty_db, tmp_path) -> Iterator:
    """empty_db with an earlier release installed by that release's own installer."""
    release = request.param
    code = unpack_release(release, tmp_path)
    if release == schema.BASELINE:  # 0.1.0 had no installer of its own outside the CLI
        with empty_db.connect() as conn:
            schema.install(conn, target=schema.BASELINE)
    else:
        subprocess.run(
            [sys.executable, "-c", "import sys, psycopg; from engine import schema; "
             "print(schema.install(psycopg.connect(sys.argv[1], autocommit=True)).after)",
             empty_db.dsn()], cwd=code, env=release_env(code), check=True, capture_output=True)
    prepare_app(empty_db)
    with empty_db.connect() as conn:
        assert schema.installed_version(conn) == release
    empty_db.release = release
    empty_db.release_code = code
    yield empty_db


@pytest.fixture
def old_engine(release_db, tmp_path) -> Iterator[subprocess.Popen]:
    """The earlier release's engine (its own code, from the release archive) on release_db."""
    code = release_db.release_code
    log = open(tmp_path / "old-engine.log", "w+")  # noqa: SIM115 - read by the test
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "--dsn", release_db.dsn(), "--concurrency", "2",
         "--no-install"], cwd=code, env=release_env(code), stdout=log, stderr=log)
    proc.log = log  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


def node_status(db, instance_id: str, node_type: str) -> list[str]:
    rows = db.connect().execute(
        "SELECT status FROM df.nodes WHERE instance_id = %s AND node_type = %s ORDER BY id",
        (instance_id, node_type)).fetchall()
    return [r[0] for r in rows]


def instance_status(db, instance_id: str) -> str:
    return db.scalar("SELECT status FROM df.instances WHERE id = %s", (instance_id,))


def test_upgrade_carries_in_flight_instances(release_db, old_engine, capsys):
    db = release_db
    waiting = start(db, ALICE, "df.wait_for_signal('go') ~> 'SELECT 41 + 1 AS v'")
    sleeping = start(db, ALICE, "df.sleep(20) ~> 'SELECT 42 AS v'")
    looping = start(db, ALICE, "df.loop('INSERT INTO app.ticks DEFAULT VALUES RETURNING id' "
                               "~> df.wait_for_signal('tick'), 'SELECT count(*) < 3 FROM app.ticks')")
    failing = start(db, ALICE, "'INSERT INTO app.target SELECT v FROM app.source RETURNING v'")

    assert wait_terminal(db, failing) == "failed"
    wait_for(lambda: "running" in node_status(db, waiting, "SIGNAL"), what="signal wait")
    wait_for(lambda: db.scalar("SELECT count(*) FROM app.ticks") == 1, what="first iteration")
    with db.connect(ALICE) as conn:
        conn.execute("SELECT df.signal(%s, 'tick', '{}')", (looping,))
    wait_for(lambda: db.scalar("SELECT count(*) FROM app.ticks") == 2, what="second iteration")
    # Still asleep at the upgrade (20 s leaves room on a loaded machine).
    assert node_status(db, sleeping, "SLEEP") == ["running"]

    # Upgrade while the 0.1.0 engine is still running.
    code = main(["upgrade", "--dsn", db.dsn()])
    out, err = capsys.readouterr()
    assert (code, err) == (0, ""), err
    assert f"upgraded df schema {db.release} -> {schema.latest_version()}" in out
    assert db.scalar("SELECT count(*) FROM df_internal.schema_migrations") == len(schema.migrations())

    # The old engine cannot drive the new schema: it says so, and touches nothing. 0.1.0's
    # claim signature is a stub that refuses every call; from 0.2.0 on, each claim carries the
    # engine's schema level and a mismatch stops the engine (exit 1).
    log = Path(old_engine.log.name)
    if db.release == schema.BASELINE:
        wait_for(lambda: "older than the df schema" in log.read_text(),
                 what="the 0.1.0 engine to log the level mismatch")
        old_engine.send_signal(signal.SIGTERM)
        old_engine.wait(30)
    elif schema.schema_level() != max(schema.released_migrations()[db.release]):
        assert old_engine.wait(60) == 1, log.read_text()
        assert "schema level mismatch" in log.read_text()
    else:  # no migration since that release: its engine may go on driving the schema
        old_engine.send_signal(signal.SIGTERM)
        assert old_engine.wait(30) == 0, log.read_text()

    with db.connect(ALICE) as conn:
        conn.execute("CREATE TABLE app.source AS SELECT 7 AS v")
    with running_engine(db.dsn()):
        with db.connect(ALICE) as conn:
            conn.execute("SELECT df.signal(%s, 'go', '{}')", (waiting,))
            conn.execute("SELECT df.signal(%s, 'tick', '{}')", (looping,))
            wait_for(lambda: db.scalar("SELECT count(*) FROM app.ticks") == 3, what="third tick")
            conn.execute("SELECT df.signal(%s, 'tick', '{}')", (looping,))
            conn.execute("SELECT df.retry(%s)", (failing,))
        for instance in (waiting, sleeping, looping, failing):
            assert wait_terminal(db, instance) == "completed", instance
    results = {i: db.scalar("SELECT df.result(%s)", (i,), role=ALICE)
               for i in (waiting, sleeping, failing)}
    assert "42" in str(results[waiting])
    assert "42" in str(results[sleeping])
    assert db.scalar("SELECT count(*) FROM app.ticks") == 3  # exactly once across the upgrade
    assert db.scalar("SELECT array_agg(v) FROM app.target") == [7]


# -- refusals ------------------------------------------------------------------------------------

def test_engine_refuses_a_newer_schema_and_stops_when_upgraded_under_it(db):
    with db.connect() as conn:
        conn.execute("INSERT INTO df_internal.schema_migrations (name, checksum) "
                     "VALUES ('9999_from_the_future', 'x')")
    config = EngineConfig(dsn=db.dsn(), concurrency=1, install=False)
    with pytest.raises(schema.SchemaMismatch, match="newer than this dftui"):
        Engine(config).start()
    with db.connect() as conn:
        conn.execute("DELETE FROM df_internal.schema_migrations WHERE name = '9999_from_the_future'")

    with running_engine(db.dsn(), concurrency=2) as engine:
        done = start(db, ALICE, "'SELECT 1 AS one'")
        assert wait_terminal(db, done) == "completed"
        # Another dftui upgrades the schema under this engine: its next claim is refused.
        with db.connect() as conn:
            conn.execute("CREATE OR REPLACE FUNCTION df_internal.schema_level() RETURNS text "
                         "LANGUAGE sql IMMUTABLE AS $$ SELECT '9999_from_the_future'::text $$")
        engine.wake(2)
        wait_for(lambda: engine.fatal_error is not None, what="the engine to stop claiming")
        assert "schema level mismatch" in engine.fatal_error
        later = start(db, ALICE, "'SELECT 2 AS two'")
        time.sleep(1.5)  # not a timing assertion: give a wrongly-running engine a chance to act
        assert instance_status(db, later) == "pending"


def test_engine_refuses_an_older_schema_without_install_rights(baseline_db):
    config = EngineConfig(dsn=baseline_db.dsn(), concurrency=1, install=False)
    with pytest.raises(schema.SchemaMismatch, match="run `dftui upgrade`"):
        Engine(config).start()


def test_edited_migration_is_refused(db):
    with db.connect() as conn:
        conn.execute("UPDATE df_internal.schema_migrations SET checksum = 'edited' "
                     "WHERE name = %s", (schema.migrations()[0].name,))
        with pytest.raises(schema.SchemaError, match="different migration files"):
            schema.install(conn)


def test_upgrade_refuses_a_foreign_df_schema_and_changes_nothing(empty_db, capsys):
    with empty_db.connect() as conn:
        conn.execute("CREATE SCHEMA df")
        conn.execute("CREATE TABLE df.instances (id text)")
    for command in ("install", "upgrade"):
        code = main([command, "--dsn", empty_db.dsn()])
        out, err = capsys.readouterr()
        assert code == 1 and out == "" and err.count("\n") == 1, (command, out, err)
        assert "not install" in err or "not installed" in err
    assert empty_db.scalar("SELECT to_regnamespace('df_internal')") is None
    assert empty_db.scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'df'") == 1


# -- concurrency and interruption ----------------------------------------------------------------

def test_two_installers_at_once_one_installs_the_other_waits(empty_db):
    results: list[object] = []

    def run() -> None:
        try:
            with psycopg.connect(empty_db.dsn(), autocommit=True) as conn:
                results.append(schema.install(conn))
        except Exception as exc:  # noqa: BLE001 - recorded and asserted below
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(isinstance(r, schema.SchemaChange) for r in results), results
    assert sum(1 for r in results if r.before is None) == 1  # type: ignore[union-attr]
    assert empty_db.scalar("SELECT count(*) FROM df_internal.schema_migrations") == len(
        schema.migrations())


def test_interrupted_upgrade_leaves_the_old_version_and_a_rerun_completes(baseline_db, tmp_path):
    db = baseline_db
    # A copy of this build's SQL with one slow migration appended: the upgrade is killed in it.
    root = tmp_path / "sql"
    subprocess.run(["cp", "-r", str(schema.sql_root()), str(root)], check=True)
    (root / "migrations" / "9000_slow.sql").write_text("SELECT pg_catalog.pg_sleep(60);\n")
    pid: list[int] = []

    def upgrade() -> None:
        with psycopg.connect(db.dsn(), autocommit=True) as conn:
            pid.append(conn.info.backend_pid)
            with pytest.raises(psycopg.OperationalError):
                schema.install(conn, root=root)

    thread = threading.Thread(target=upgrade)
    thread.start()
    wait_for(lambda: pid and db.scalar(
        "SELECT wait_event = 'PgSleep' FROM pg_stat_activity WHERE pid = %s", (pid[0],)),
        what="the upgrade to reach the slow migration")
    assert db.scalar("SELECT pg_terminate_backend(%s)", (pid[0],))
    thread.join(60)
    assert db.scalar("SELECT to_regclass('df_internal.schema_migrations')") is None
    with db.connect() as conn:
        assert schema.installed_version(conn) == schema.BASELINE
    with running_engine(db.dsn()) as _engine:  # the rerun (the engine upgrades on start)
        assert wait_terminal(db, start(db, ALICE, "'SELECT 1 AS one'")) == "completed"
    with db.connect() as conn:
        assert schema.installed_version(conn) == schema.latest_version()
