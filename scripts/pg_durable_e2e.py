"""Run pg_durable 0.2.6's own end-to-end suite against dftui, phase by phase (a dev tool).

pg_durable's suite (tests/e2e/sql/*.sql in microsoft/pg_durable, driven by its
scripts/test-e2e-local.sh) is the most direct proof of the drop-in claim: its files are psql
scripts that run as the superuser `postgres` against database `postgres`, and a file passes
when psql exits 0 (ON_ERROR_STOP), prints no "TEST FAILED" and prints every
`-- EXPECT WARNING:` fragment the file declares. This script reproduces that harness for dftui
without copying any of pg_durable's files into this repository:

* the suite comes from a pg_durable checkout (`--source DIR`) or is exported from the bare
  mirror (`--mirror GITDIR`, default /work/.mirror/microsoft+pg_durable/repo) into a temp dir;
* a throwaway cluster (embedded PostgreSQL 18, or `--bindir /usr/lib/postgresql/15/bin`);
* per phase, as pg_durable's runner does: its settings in postgresql.conf, a restart, the
  schema dropped and installed again (`DROP/CREATE EXTENSION` there; `dftui uninstall` +
  `dftui install` here), a running `dftui engine` (pg_durable's background worker) with the
  phase's HTTP policy, pg_durable's setup file (`00_setup_playground.sql`) or its role setup,
  and its readiness poll on `<df.duroxide_schema()>._worker_ready`, unmodified;
* then every file of the phase, printing PASS / FAIL per file (and the failure excerpt).

Files that test what dftui does not have (the extension's lifecycle, duroxide's tables, the
worker's connection pools) are run too and reported as "n/a" with the reason when they fail;
a file failing for a documented difference says "known", one that needs httpbingo.org while the
internet is unreachable "offline", one failing with the exact message of a check that races
pg_durable's own worker (RACES) "race", one a least-privilege engine fails for what it cannot do
(OWNER_MODE: superuser instances, roles not granted to it, dblink loopbacks) "owner" — so the summary separates real regressions from
documented non-applicability (docs/pg_durable.md). Any other failure is "FAIL" (exit status 1).
A file that aborts leaves behind what its own clean-up would have removed (variables it set,
instances still running): that is removed before the next file, so one abort cannot fail
another file (15_rls counts every role's df.vars after 04 aborted offline).

Usage (from the repository root, with the project's venv):

    python scripts/pg_durable_e2e.py                      # every phase, PostgreSQL 18
    python scripts/pg_durable_e2e.py --phase standard 07 11  # files of a phase matching 07 or 11
    python scripts/pg_durable_e2e.py --bindir /usr/lib/postgresql/15/bin
    python scripts/pg_durable_e2e.py --engine-mode owner  # a least-privilege engine

Exit status: 0 when every applicable file passed, 1 otherwise, 2 on a setup problem.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from dftui.embedded import Cluster, embedded_bindir  # noqa: E402
from engine import privileges, schema  # noqa: E402

DEFAULT_MIRROR = Path("/work/.mirror/microsoft+pg_durable/repo")
SETUP_FILE = "00_setup_playground"
E2E_USER = "df_e2e_user"

# The HTTP allow-list of pg_durable's default test build (feature http-allow-test-domains,
# src/ssrf.rs): Azure data-plane suffixes, api.github.com and httpbingo.org.
TEST_BUILD_DOMAINS = [
    "blob.core.windows.net", "blob.storage.azure.net", "queue.core.windows.net",
    "table.core.windows.net", "file.core.windows.net", "azurewebsites.net", "azure-api.net",
    "documents.azure.com", "servicebus.windows.net", "openai.azure.com",
    "cognitiveservices.azure.com", "vault.azure.net", "redis.cache.windows.net",
    "database.windows.net", "kusto.windows.net", "azurefd.net", "azureedge.net",
    "azure-devices.net", "trafficmanager.net", "cloudapp.azure.com", "api.github.com",
    "httpbingo.org",
]

# Settings every phase of pg_durable's runner writes (configure_phase), besides its own.
BASE_SETTINGS = {"pg_durable.worker_role": "'postgres'", "pg_durable.database": "'postgres'"}


@dataclass(frozen=True)
class Phase:
    """One executor phase of pg_durable's runner: the settings and build it runs with."""

    name: str
    settings: dict[str, str]
    http_policy: str  # the engine's --http-policy standing in for pg_durable's Cargo features
    setup: str  # "playground" (its setup file), "role" (ensure_e2e_role) or "none"
    files: tuple[str, ...] = ()  # test files bound to this phase (phase_for_test); else standard


SUPERUSER_ON = {"pg_durable.enable_superuser_instances": "on"}

PHASES = [
    Phase("no-preload", {}, "allowlist", "none", ("00_requires_shared_preload",)),
    Phase("standard", {**SUPERUSER_ON}, "allowlist", "playground"),
    Phase("superuser-guc-off", {}, "allowlist", "role", ("17_superuser_guc",)),
    Phase("connlimit-backpressure", {**SUPERUSER_ON, "pg_durable.max_user_connections": "2"},
          "allowlist", "role", ("44_connection_limit_backpressure",)),
    Phase("connlimit-timeout", {**SUPERUSER_ON, "pg_durable.max_user_connections": "1",
                                "pg_durable.execution_acquire_timeout": "2"},
          "allowlist", "role", ("45_connection_limit_timeout",)),
    Phase("new-start-limit", {**SUPERUSER_ON, "pg_durable.max_new_transaction_starts": "2",
                              "pg_durable.new_transaction_start_timeout": "2"},
          "allowlist", "playground", ("66_new_transaction_launch_limit",)),
    Phase("connlimit-startup", {**SUPERUSER_ON, "pg_durable.max_duroxide_connections": "1"},
          "allowlist", "none", ("46_connection_limit_startup_validation",)),
    Phase("reconcile", {**SUPERUSER_ON, "pg_durable.reconcile_interval": "2",
                        "pg_durable.retention_days": "0"},
          "allowlist", "none", ("54_reconcile_orphans",)),
    Phase("http-disabled", {**SUPERUSER_ON}, "disabled", "role", ("47_http_dsl_disabled",)),
    Phase("http-allow-all", {**SUPERUSER_ON}, "allow-all", "role", ("48_http_allow_all",)),
]

# Files whose subject dftui does not have, with the reason (docs/pg_durable.md, "Not applicable").
# They still run; a failure is reported as n/a, a pass as PASS.
NOT_APPLICABLE = {
    "00_requires_shared_preload": "no extension library: nothing to preload",
    "12_extension_lifecycle": "no CREATE/DROP EXTENSION pg_durable and no background worker",
    "14_database": "no CREATE EXTENSION (its wrong-database rejection) and no fail-fast start",
    "25_start_fail_fast": "no worker initialisation window to fail fast in",
    "26_terminal_event_payload_ids": "reads duroxide's history tables",
    "45_connection_limit_timeout": "no worker slot to time out on (steps queue for a worker)",
    "46_connection_limit_startup_validation": "no duroxide connection pool to validate",
    "54_reconcile_orphans": "reads and writes duroxide's orchestration tables",
    "57_loop_in_join_race_branch": "reads duroxide sub-orchestration execution stamps",
    "66_new_transaction_launch_limit": "no launch pool for transaction_mode => 'new'",
}


# Files that fail for a difference dftui documents (docs/pg_durable.md), with the reason.
KNOWN_DIFFERENCES = {
    "05_monitoring_and_explain": "its last check wants set_config('pg_durable.list_instances_max_limit') "
                                 "refused for an ordinary role (42501); without a loaded library "
                                 "PostgreSQL accepts a placeholder's SET, which df ignores",
}

# Files that fail at one check for a difference dftui documents, by the exact failure it gives:
# only that failure is labelled "known"; any other failure of the file is a FAIL.
KNOWN_FAILURES = {
    "17_superuser_guc": (
        "ERROR:  Instance not found or access denied",
        "its test 3 has a BYPASSRLS role rewrite submitted_by of another role's df.nodes rows; "
        "dftui refuses any change to another role's node rows (a rewritten node's SQL ran as its "
        "owner: docs/security.md, class 4 variant), where pg_durable lets it through and then "
        "fails the instance"),
}

# Checks of pg_durable's that race its own worker, with the exact failure they give when the race
# goes the other way here, and why. Only that failure is labelled "race"; any other is a FAIL.
RACES = {
    "17_superuser_guc": (
        "TEST 3 FAILED: expected failed, got: completed",
        "its test 3 rewrites submitted_by two statements after df.start and expects that no "
        "worker has loaded the instance yet; dftui's engine, woken by NOTIFY, sometimes ran the "
        "one-step workflow first (a later rewrite then changes nothing, as after pg_durable's "
        "load: its tests 4 and 5)"),
}

# With a least-privilege engine (--engine-mode owner), what docs/security.md and docs/pg_durable.md
# say it cannot do, by the failure it gives: a file failing with one of these is labelled "owner".
OWNER_MODE = {
    "cannot run superuser instances":
        "the file submits as the superuser postgres; a least-privilege engine cannot run a "
        "superuser's instances (pg_durable's worker is a superuser)",
    "must be able to SET ROLE":
        "the file creates a role and grants it df usage; a least-privilege engine runs steps "
        "only for roles granted to it (GRANT role TO engine role)",
    "password or GSSAPI delegated credentials required":
        "transaction_mode => 'new' needs dblink from a superuser-owned function",
}
# PostgreSQL 15 words the same two refusals differently (16 reworded them): the same reasons.
OWNER_MODE["must be member of role"] = OWNER_MODE["must be able to SET ROLE"]
OWNER_MODE["password is required"] = OWNER_MODE["password or GSSAPI delegated credentials required"]
# ... and file-specific ones (the exact failure, why).
OWNER_MODE_FILES = {
    "07_signals": (
        "Timeout after 10s waiting for instance",  # (df.await_instance: pg_durable's text)
        "its DO block signals and waits for the signal's effect in one transaction; without a "
        "superuser owner the dblink loopback is unavailable, so a signal takes effect only when "
        "the caller's transaction commits"),
}

# Files that call httpbingo.org (pg_durable's test build allows it): they need the internet.
NEEDS_INTERNET = {"04_variables_and_results", "06_http_and_ssrf"}


def internet_reachable(host: str = "httpbingo.org") -> bool:
    """Whether the HTTP test host resolves and accepts a TCP connection (3 s)."""
    try:
        with socket.create_connection((host, 443), timeout=3):
            return True
    except OSError:
        return False


@dataclass
class Outcome:
    """What one file did."""

    phase: str
    name: str
    passed: bool
    excerpt: str = ""
    seconds: float = 0.0

    offline: bool = False
    engine_mode: str = "superuser"

    @property
    def owner_reason(self) -> str:
        """Why a least-privilege engine fails this file, when the failure is one it must give."""
        if self.engine_mode != "owner" or self.passed:
            return ""
        for fragment, why in OWNER_MODE.items():
            if fragment in self.excerpt:
                return why
        fragment, why = OWNER_MODE_FILES.get(self.name, ("\0", ""))
        return why if fragment in self.excerpt else ""

    @property
    def label(self) -> str:
        if self.passed:
            return "PASS"
        if self.name in NOT_APPLICABLE:
            return "n/a"
        if self.name in KNOWN_DIFFERENCES:
            return "known"
        if self.name in KNOWN_FAILURES and KNOWN_FAILURES[self.name][0] in self.excerpt:
            return "known"
        if self.offline and self.name in NEEDS_INTERNET:
            return "offline"
        if self.name in RACES and RACES[self.name][0] in self.excerpt:
            return "race"
        if self.owner_reason:
            return "owner"
        return "FAIL"

    @property
    def reason(self) -> str:
        return {"n/a": NOT_APPLICABLE.get(self.name, ""),
                "known": KNOWN_DIFFERENCES.get(self.name)
                         or KNOWN_FAILURES.get(self.name, ("", ""))[1],
                "race": RACES.get(self.name, ("", ""))[1],
                "owner": self.owner_reason,
                "offline": "needs the internet (httpbingo.org), unreachable here"}.get(self.label, "")


@dataclass
class Harness:
    """A throwaway cluster, its engine, and the suite's SQL files."""

    cluster: Cluster
    sql_dir: Path
    engine_mode: str
    work: Path
    verbose: bool = False
    engine: subprocess.Popen | None = None
    engine_log: Path | None = None
    outcomes: list[Outcome] = field(default_factory=list)
    playground_applied: bool = False  # pg_durable's SETUP_PLAYGROUND_APPLIED: once per run

    # -- connections -------------------------------------------------------------------------
    def dsn(self, user: str = "postgres") -> str:
        return self.cluster.dsn("postgres", user)

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn(), autocommit=True)

    def psql(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        """pg_durable's runner invokes psql as postgres on database postgres; so does this."""
        env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
        cmd = [str(self.cluster.bindir / "psql"), "-X", "-h", "127.0.0.1",
               "-p", str(self.cluster.port), "-U", "postgres", "-d", "postgres", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)

    # -- phase setup -------------------------------------------------------------------------
    def configure(self, phase: Phase) -> None:
        """Write the phase's settings to postgresql.conf (stale ones removed) and restart."""
        self.stop_engine()
        conf = self.cluster.datadir / "postgresql.conf"
        lines = [ln for ln in conf.read_text().splitlines()
                 if not ln.lstrip("# \t").startswith("pg_durable.")]
        settings = {} if phase.name == "no-preload" else {**BASE_SETTINGS, **phase.settings}
        lines += [f"{key} = {value}" for key, value in settings.items()]
        conf.write_text("\n".join(lines) + "\n")
        (self.cluster.datadir / "postgresql.auto.conf").write_text("")
        self.cluster.restart("fast")
        self.cluster.wait_ready()

    def reinstall(self) -> None:
        """pg_durable drops and creates the extension per phase: a fresh df schema each time."""
        with self.admin() as conn:
            conn.execute("SET client_min_messages = warning")
            schema.uninstall(conn)
            schema.install(conn)
            if self.engine_mode == "owner":
                self._prepare_owner(conn)

    def _prepare_owner(self, conn: psycopg.Connection) -> None:
        """A least-privilege engine role that owns the df schemas (engine/privileges.py); roles
        a test file creates later are not prepared for it, so expect more failures there."""
        conn.execute("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = "
                     "'dftui_e2e_engine') THEN CREATE ROLE dftui_e2e_engine LOGIN; "
                     "END IF; END $$")
        conn.execute(f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = "
                     f"'{E2E_USER}') THEN CREATE ROLE {E2E_USER} LOGIN; END IF; END $$")
        privileges.setup_engine_role(conn, "dftui_e2e_engine", submitters=[E2E_USER])

    def start_engine(self, phase: Phase) -> None:
        """`dftui engine` as pg_durable's background worker, with the phase's HTTP policy."""
        self.stop_engine()
        user = "dftui_e2e_engine" if self.engine_mode == "owner" else "postgres"
        cmd = [sys.executable, "-m", "dftui", "engine", "--dsn", self.dsn(user),
               "--http-policy", phase.http_policy, "--log-format", "text"]
        if phase.http_policy == "allowlist":
            for domain in TEST_BUILD_DOMAINS:
                cmd += ["--http-allow", domain]
        self.engine_log = self.work / f"engine-{phase.name}.log"
        log = self.engine_log.open("w")
        self.engine = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)

    def stop_engine(self) -> None:
        if self.engine is None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.engine.pid, signal.SIGTERM)
        try:
            self.engine.wait(20)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(self.engine.pid, signal.SIGKILL)
            self.engine.wait(10)
        self.engine = None

    def ensure_role(self) -> None:
        """pg_durable's ensure_e2e_role: the test role, public-schema grants, df usage."""
        result = self.psql("-v", "ON_ERROR_STOP=1", "-c",
                           "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = "
                           f"'{E2E_USER}') THEN CREATE ROLE {E2E_USER} LOGIN; END IF; END $$;",
                           "-c", f"GRANT USAGE, CREATE ON SCHEMA public TO {E2E_USER};",
                           "-c", f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {E2E_USER};",
                           "-c", "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES "
                           f"TO {E2E_USER};")
        if result.returncode != 0:
            raise SetupError(f"role setup failed: {result.stderr.strip()}")
        self.psql("-c", f"SELECT df.grant_usage('{E2E_USER}', include_http => true);")

    def wait_for_worker_ready(self) -> None:
        """pg_durable's readiness poll (wait_for_worker_ready), its queries unmodified."""
        for _ in range(120):
            dx = self.psql("-Atqc", "SELECT df.duroxide_schema();").stdout.strip() or "duroxide"
            ready = self.psql(
                "-Atqc",
                "SELECT CASE WHEN EXISTS (SELECT 1 FROM information_schema.tables WHERE "
                f"table_schema = '{dx}' AND table_name = '_worker_ready') THEN EXISTS(SELECT 1 "
                f"FROM {dx}._worker_ready WHERE schema_version >= 1) ELSE FALSE END;",
            ).stdout.strip()
            if ready == "t":
                return
            if self.engine is not None and self.engine.poll() is not None:
                raise SetupError(f"the engine exited: {self._engine_tail()}")
            time.sleep(0.5)
        raise SetupError("Background worker did not become ready (no _worker_ready row)")

    def _engine_tail(self) -> str:
        if self.engine_log is None or not self.engine_log.exists():
            return ""
        return self.engine_log.read_text()[-1500:]

    def prepare(self, phase: Phase) -> None:
        self.configure(phase)
        if phase.name == "no-preload":
            with self.admin() as conn:
                schema.uninstall(conn)
            return
        self.reinstall()
        self.start_engine(phase)
        if phase.setup == "playground" and not self.playground_applied:
            result = self.psql("-v", "ON_ERROR_STOP=1", "-f", str(self.sql_dir / f"{SETUP_FILE}.sql"))
            if result.returncode != 0:
                raise SetupError(f"{SETUP_FILE}.sql failed:\n{_excerpt(result)}")
            self.playground_applied = True
        elif phase.setup in ("role", "playground"):  # playground applied: as its runner, role only
            self.ensure_role()
            self.wait_for_worker_ready()
        else:
            self.wait_for_worker_ready()

    # -- running files -----------------------------------------------------------------------
    def run_file(self, phase: Phase, path: Path) -> Outcome:
        """pass = psql exit 0, no "TEST FAILED", every "-- EXPECT WARNING:" fragment printed.

        A file that aborts (psql stops at its first error) skips its own clean-up; what it left
        behind (variables it set, instances still running) is removed afterwards so that the
        abort cannot make a later file fail (15_rls counts every role's df.vars, for one)."""
        started = time.monotonic()
        with self.admin() as conn:
            started_at = conn.execute("SELECT now()").fetchone()[0]
            vars_before = self._vars(conn)
        try:
            result = self.psql("-v", "ON_ERROR_STOP=1", "-f", str(path))
        except subprocess.TimeoutExpired:
            self._clean_up_after_abort(vars_before, started_at)
            return Outcome(phase.name, path.stem, False, "timed out", time.monotonic() - started)
        if result.returncode != 0:
            cleaned = self._clean_up_after_abort(vars_before, started_at)
            if cleaned:
                result.stderr += f"\n(after the abort: {cleaned})"
        output = result.stdout + result.stderr
        passed = result.returncode == 0 and "TEST FAILED" not in output
        missing = [frag for frag in _expected_warnings(path) if frag not in output]
        if passed and missing:
            passed = False
            output += "\n" + "\n".join(f"Missing expected warning fragment: {m}" for m in missing)
        excerpt = "" if passed else _excerpt_text(output) + self._failed_instances(started_at)
        if self.verbose:
            excerpt = output
        return Outcome(phase.name, path.stem, passed, excerpt, time.monotonic() - started)


    @staticmethod
    def _vars(conn: psycopg.Connection) -> set[tuple[str, str]]:
        """Every role's df.vars rows (none when df is not installed: the no-preload phase)."""
        if conn.execute("SELECT to_regclass('df.vars')").fetchone()[0] is None:
            return set()
        return {(r[0], r[1]) for r in conn.execute("SELECT owner::text, name FROM df.vars")}

    def _clean_up_after_abort(self, vars_before: set[tuple[str, str]], since: object) -> str:
        """Undo what an aborted file left for later files: the df.vars rows it added and the
        instances it started that are still running (cancelled). Says what it did."""
        done = []
        try:
            with self.admin() as conn:
                if conn.execute("SELECT to_regclass('df.instances')").fetchone()[0] is None:
                    return ""
                added = self._vars(conn) - vars_before
                for owner, name in sorted(added):
                    conn.execute("DELETE FROM df.vars WHERE owner::text = %s AND name = %s",
                                 (owner, name))
                if added:
                    done.append(f"removed its variables {sorted(n for _, n in added)}")
                running = [r[0] for r in conn.execute(
                    "SELECT id FROM df.instances WHERE created_at >= %s AND status IN "
                    "('pending', 'running')", (since,))]
                for iid in running:
                    with suppress(psycopg.Error):  # finished meanwhile: nothing to cancel
                        conn.execute("SELECT df.cancel(%s, 'e2e harness: its file aborted')",
                                     (iid,))
                if running:
                    done.append(f"cancelled {len(running)} instance(s) it left running")
        except psycopg.Error as exc:
            done.append(f"clean-up failed: {exc}")
        return "; ".join(done)

    def _failed_instances(self, since: object) -> str:
        """Why the instances the file saw fail failed (for diagnosis; not part of the verdict)."""
        try:
            with self.admin() as conn:
                rows = conn.execute(
                    "SELECT i.id, i.label, COALESCE(s.error, (SELECT string_agg(n.error, '; ') "
                    "FROM df.nodes n WHERE n.instance_id = i.id AND n.error IS NOT NULL)) "
                    "FROM df.instances i LEFT JOIN df_internal.instance_state s "
                    "ON s.instance_id = i.id WHERE i.status = 'failed' AND i.updated_at >= %s "
                    "ORDER BY i.updated_at LIMIT 8", (since,)).fetchall()
        except psycopg.Error as exc:
            return f"\n(failed instances unavailable: {exc})"
        return "".join(f"\n  failed instance {r[0]} ({r[1]}): {str(r[2])[:300]}" for r in rows)


class SetupError(RuntimeError):
    """The harness could not prepare a phase (reported, exit 2)."""


def _expected_warnings(path: Path) -> list[str]:
    prefix = "-- EXPECT WARNING: "
    return [ln[len(prefix):].rstrip("\n") for ln in path.read_text().splitlines()
            if ln.startswith(prefix) and ln[len(prefix):].strip()]


def _excerpt_text(output: str) -> str:
    """As pg_durable's print_failure_excerpt: the last NOTICE/ERROR/TEST FAILED lines."""
    lines = output.splitlines()
    picked = [ln for ln in lines if any(k in ln for k in ("NOTICE", "ERROR", "TEST FAILED",
                                                            "Missing expected"))]
    return "\n".join((picked or lines)[-15:])


def _excerpt(result: subprocess.CompletedProcess) -> str:
    return _excerpt_text(result.stdout + result.stderr)


def phase_for(name: str) -> str:
    """pg_durable's phase_for_test."""
    for phase in PHASES:
        if name in phase.files:
            return phase.name
    return "standard"


@contextmanager
def suite_dir(source: Path | None, mirror: Path) -> Iterator[Path]:
    """tests/e2e/sql of a checkout, or of the mirror's HEAD exported to a temp dir."""
    if source is not None:
        sql_dir = source / "tests" / "e2e" / "sql"
        if not sql_dir.is_dir():
            raise SetupError(f"{source} is not a pg_durable checkout (no tests/e2e/sql)")
        yield sql_dir
        return
    tmp = Path(tempfile.mkdtemp(prefix="pg_durable-e2e-src-"))
    try:
        archive = subprocess.run(["git", f"--git-dir={mirror}", "archive", "--format=tar",
                                  "HEAD", "tests/e2e"], capture_output=True, check=False)
        if archive.returncode != 0:
            raise SetupError(f"cannot export {mirror}: {archive.stderr.decode().strip()}")
        with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
            tar.extractall(tmp, filter="data")
        yield tmp / "tests" / "e2e" / "sql"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("filter", nargs="*", help="run only files whose name contains one of these")
    parser.add_argument("--source", type=Path, help="a pg_durable checkout (default: the mirror)")
    parser.add_argument("--mirror", type=Path, default=DEFAULT_MIRROR, help="bare git mirror")
    parser.add_argument("--bindir", type=Path, help="PostgreSQL bin/ (default: embedded 18)")
    parser.add_argument("--phase", action="append", help="only these phases (repeatable)")
    parser.add_argument("--engine-mode", choices=["superuser", "owner"], default="superuser")
    parser.add_argument("--keep", action="store_true", help="keep the cluster's directory")
    parser.add_argument("-v", "--verbose", action="store_true", help="full output of failures")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="pg_durable-e2e-"))
    cluster = Cluster(work / "data", bindir=args.bindir or embedded_bindir(),
                      settings={"fsync": "off", "max_connections": "300"})
    try:
        with suite_dir(args.source, args.mirror) as sql_dir:
            files = sorted(p for p in sql_dir.glob("*.sql")
                           if p.stem != SETUP_FILE
                           and (not args.filter or any(f in p.stem for f in args.filter)))
            harness = Harness(cluster, sql_dir, args.engine_mode, work, args.verbose)
            cluster.start()
            offline = not internet_reachable()
            print(f"PostgreSQL {cluster.version_major} at {work}; engine mode {args.engine_mode}")
            try:
                for phase in PHASES:
                    if args.phase and phase.name not in args.phase:
                        continue
                    mine = [p for p in files if phase_for(p.stem) == phase.name]
                    if not mine:
                        continue
                    print(f"\n=== {phase.name} ===", flush=True)
                    harness.prepare(phase)
                    for path in mine:
                        outcome = harness.run_file(phase, path)
                        harness.outcomes.append(outcome)
                        outcome.offline = offline
                        outcome.engine_mode = args.engine_mode
                        why = f"  ({outcome.reason})" if outcome.reason else ""
                        print(f"  {path.stem:<45} {outcome.label}{why}  [{outcome.seconds:.1f}s]",
                              flush=True)
                        if outcome.label == "FAIL" or (args.verbose and not outcome.passed):
                            print("    " + outcome.excerpt.replace("\n", "\n    "), flush=True)
            finally:
                harness.stop_engine()
    except SetupError as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        return 2
    finally:
        cluster.stop("immediate")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    outcomes = harness.outcomes
    passed = sum(o.passed for o in outcomes)
    na = sum(o.label == "n/a" for o in outcomes)
    known = sum(o.label == "known" for o in outcomes)
    off = sum(o.label == "offline" for o in outcomes)
    races = sum(o.label == "race" for o in outcomes)
    owner = sum(o.label == "owner" for o in outcomes)
    failed = [o for o in outcomes if o.label == "FAIL"]
    print(f"\n{passed} passed, {len(failed)} failed, {na} not applicable, {known} known "
          f"difference(s), {off} needing the internet, {races} lost race(s), {owner} beyond a "
          f"least-privilege engine (of {len(outcomes)} files)")
    for o in failed:
        print(f"  FAIL {o.phase}/{o.name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
