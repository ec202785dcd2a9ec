"""Running a step with exactly its submitter's privileges.

Design (b) of security.md: the engine stays connected as itself and runs each SQL step through a
SECURITY DEFINER *trampoline* owned by the submitter, in schema ``df_exec``:

* Inside a security-definer function PostgreSQL refuses ``SET ROLE``, ``RESET ROLE``,
  ``SET SESSION AUTHORIZATION`` and ``set_config('role', …)``, so the step cannot change identity.
* Code that could run later with the engine's privileges is flushed *inside* the trampoline:
  ``SET CONSTRAINTS ALL IMMEDIATE`` fires deferred constraint triggers and deferred unique /
  exclusion checks as the submitter, and ``CLOSE ALL`` drops holdable cursors before commit
  would materialise them.
* Session state the step leaves behind (GUCs set with plain SET, temporary objects, prepared
  statements, LISTEN, advisory locks) is wiped by ``STEP_RESET`` (DISCARD ALL minus plans) after
  the step, before the connection runs anything else, and ``SESSION_RESET`` (the same, plus the
  step's dblink connections) before its batch, which holds one role's tasks only, commits;
  within the transaction the engine only calls schema-qualified ``df_internal`` functions that
  pin their own search_path.
* Users have no USAGE on ``df_exec``, so they cannot name, alter or replace a trampoline (and
  REASSIGN OWNED cannot move one: the new owner would need CREATE on ``df_exec``).
* ``describe_<oid>`` lets the engine learn a step's result columns without parsing it as
  itself (parse analysis runs user code: domain checks in literal input functions).
* Every trampoline first locks ``df._step_marker`` (ACCESS SHARE, until the transaction ends):
  ``df_internal.in_engine_step()`` uses it to recognise, unforgeably, that user code runs inside
  an engine step, where ``session_user`` is the engine rather than the caller. (It used to be an
  advisory lock; any role could take that key exclusively and freeze every step.)

The trampoline's ``search_path`` is the submitter's configured default (role or database
setting) or ``"$user", public``, so unqualified names resolve as they would in the submitter's
own session. That value is text the submitter (or a database owner) chose: it is never spliced
into SQL. It is applied with ``set_config`` (a bind parameter, validated by PostgreSQL itself)
and captured by ``CREATE FUNCTION ... SET search_path FROM CURRENT``; every name in the
engine's own DDL is schema-qualified, so the path in force while it runs resolves nothing.

Trust what the engine owns: ``df_exec`` must be owned by the engine's own role (or a superuser)
and grant nothing to anyone else; a schema of that name made by anybody else (a database owner,
in a database an instance names) is refused, never used.
"""

from __future__ import annotations

import threading

import psycopg
from psycopg import sql

from engine.db import scalar
from engine.keys import DESCRIBE_PORTAL, SETUP_LOCK_TIMEOUT, STEP_MARKER
from engine.schema_files import sql_root

EXEC_SCHEMA = "df_exec"
_DEFAULT_PATH = '"$user", public'


# DISCARD ALL minus DISCARD PLANS, as one script (sent as one simple query). Dropping every cached
# plan would make PostgreSQL re-plan all of the engine's PL/pgSQL for every step (measured: 3 ms
# per claim); plans never depend on state a step can leave behind: they are invalidated when
# search_path or the objects they use change. Everything else a step can leave in the session
# goes. Unlike DISCARD ALL, every statement here may run inside a transaction block, so the
# engine also runs the script between the steps of one batch.
_RESET_STATEMENTS = (
    "RESET ALL",  # GUCs, including search_path (back to the pinned connection default)
    "DEALLOCATE ALL",  # prepared statements
    "CLOSE ALL",  # cursors
    "UNLISTEN *",
    "DISCARD TEMP",  # temporary tables, functions, types
    "DISCARD SEQUENCES",
)
# ... plus session-level advisory locks and, outside DISCARD's reach, the connections a step
# opened with dblink (named and unnamed: they live in the backend, and the next step on this
# session, any role's, could run SQL through them as the role that opened them).
SESSION_RESET = "; ".join((
    *_RESET_STATEMENTS,
    "SELECT pg_catalog.pg_advisory_unlock_all(), df_internal.close_step_connections()",
))
# Between two steps of one batch: everything but the dblink connections, which SESSION_RESET
# closes before the batch commits (StepTransaction.needs_discard, Worker.step_batch). A batch
# holds one role's tasks only (claim_tasks), so a connection one step opened can be seen by no
# other role's step; it is not carried into another batch either. Closing them costs a
# subtransaction and a caught error on every call (dblink has no way to ask whether its unnamed
# connection is open): measured 5-10 % of the server's time per step when paid by every step.
STEP_RESET = "; ".join((*_RESET_STATEMENTS, "SELECT pg_catalog.pg_advisory_unlock_all()"))

# The same for a session in another database, where df (and close_step_connections) may not
# be installed: the function's body, inline — read from its one definition in
# sql/routines/session_hygiene.sql, so the two cannot drift apart.
def _inline_routine_body(file: str, function: str) -> str:
    """The body of `function` in routines `file`, as a DO block (no df schema needed)."""
    text = (sql_root() / "routines" / file).read_text()
    start = text.index(f"CREATE OR REPLACE FUNCTION {function}(")
    body = text[text.index("AS $$", start) + len("AS $$"):text.index("$$;", start)]
    return f"DO $reset$\n{body.strip()}\n$reset$"


_CLOSE_DBLINK_INLINE = _inline_routine_body("session_hygiene.sql",
                                            "df_internal.close_step_connections")
FOREIGN_SESSION_RESET = "; ".join((
    *_RESET_STATEMENTS, "SELECT pg_catalog.pg_advisory_unlock_all()", _CLOSE_DBLINK_INLINE))


def reset_session(conn: psycopg.Connection) -> None:
    """Wipe what a step may have left in this session, before the engine uses it again."""
    conn.execute(SESSION_RESET)  # no parameters: the simple protocol, one round trip


def reset_foreign_session(conn: psycopg.Connection) -> None:
    """reset_session for a session in another database (df need not be installed there)."""
    conn.execute(FOREIGN_SESSION_RESET)


def step_function(role_oid: int) -> str:
    return f"{EXEC_SCHEMA}.step_{role_oid}"


def exec_function(role_oid: int) -> str:
    return f"{EXEC_SCHEMA}.exec_{role_oid}"


def rows_function(role_oid: int) -> str:
    return f"{EXEC_SCHEMA}.rows_{role_oid}"


def describe_function(role_oid: int) -> str:
    """`describe_<oid>(q)`: opens the cursor DESCRIBE_PORTAL over `q` as the submitter."""
    return f"{EXEC_SCHEMA}.describe_{role_oid}"


# Every trampoline first locks this table (ACCESS SHARE: conflicts only with ACCESS EXCLUSIVE,
# which only its owner can take, so no role can make a step wait for it). A transaction-level
# lock cannot be released by the step, so df_internal.in_engine_step() can tell, unforgeably,
# that user code is running inside an engine step, where session_user is the engine and not the
# caller. Only where df is installed (steps in other databases may have no df schema).
# (STEP_MARKER and DESCRIBE_PORTAL: engine/keys.py, the registry of coordination names)
_LOCK_MARKER = f"""    IF pg_catalog.to_regnamespace('df') IS NOT NULL
       AND pg_catalog.has_schema_privilege('df', 'USAGE')
       AND pg_catalog.to_regclass('{STEP_MARKER}') IS NOT NULL THEN
        LOCK TABLE {STEP_MARKER} IN ACCESS SHARE MODE;
    END IF;
"""
# df.in_workflow = 'true' for the step. Set in the body rather than as a function SET clause: a
# non-superuser engine (least-privilege mode) may not attach custom GUCs to functions.
_IN_WORKFLOW = "    PERFORM pg_catalog.set_config('df.in_workflow', 'true', true);\n"
# Each trampoline checks that it still runs as the role it was made for. Ownership can move
# without the engine noticing (an administrator's REASSIGN OWNED BY alice TO postgres, a common
# off-boarding step, or ALTER FUNCTION ... OWNER), and the engine caches trampolines per
# process: without this check alice's next step would run with the new owner's privileges.
# Everything in the guard is qualified (the operator too): when it fires, the function runs as
# somebody else while the search_path is still the submitter's.
_OWNER_GUARD = """    IF pg_catalog.quote_ident(current_user)::pg_catalog.regrole::pg_catalog.oid
           OPERATOR(pg_catalog.<>) '__ROLE_OID__'::pg_catalog.oid THEN
        RAISE EXCEPTION 'the step trampoline is no longer owned by the submitting role (oid __ROLE_OID__); refusing to run the step'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
"""
_MARK = _OWNER_GUARD + _LOCK_MARKER


# Fire the step's deferred triggers and checks here, as the submitter: what is still pending at
# COMMIT fires as the engine. A trigger fired by the flush can defer the constraints again and
# queue new events (PostgreSQL 15 leaves them pending: they fired at the engine's COMMIT, as the
# engine); so flush again until a flush changed no row. A new event needs a row change (row
# triggers, deferred unique/exclusion/foreign-key checks) on a relation with a deferrable trigger
# (such constraints have one in pg_trigger too), and the transaction's row changes are counted per
# relation (pg_stat_get_xact_tuples_*; a relation given a deferrable trigger during the flush is
# counted afterwards, so the counts differ). With no deferrable trigger at all nothing can be
# pending (a trigger with pending events cannot be dropped): one flush, one catalog scan. An
# endless chain ends with the step's timeout. Each relation is counted once, however many
# deferrable triggers it has (df's own tables carry dozens: counting per trigger row cost every
# step a few hundred lookups, issue 17). Everything is qualified: the search_path is the
# submitter's.
_CHANGED_ROWS = """(SELECT pg_catalog.sum(
                pg_catalog.pg_stat_get_xact_tuples_inserted(t.tgrelid)
                OPERATOR(pg_catalog.+) pg_catalog.pg_stat_get_xact_tuples_updated(t.tgrelid)
                OPERATOR(pg_catalog.+) pg_catalog.pg_stat_get_xact_tuples_deleted(t.tgrelid))
              FROM (SELECT DISTINCT d.tgrelid FROM pg_catalog.pg_trigger d
                     WHERE d.tgdeferrable) t)"""
_FLUSH = """    DECLARE
        changed_before pg_catalog.numeric;
        changed_after pg_catalog.numeric := """ + _CHANGED_ROWS + """;
    BEGIN
        IF changed_after IS NULL THEN  -- no deferrable trigger anywhere: nothing is deferred
            SET CONSTRAINTS ALL IMMEDIATE;
        END IF;
        WHILE changed_after IS NOT NULL LOOP  -- (NULL: every deferrable trigger dropped)
            changed_before := changed_after;
            SET CONSTRAINTS ALL IMMEDIATE;
            changed_after := """ + _CHANGED_ROWS + """;
            -- (no IS DISTINCT FROM: it looks `=` up on the submitter's search_path)
            EXIT WHEN changed_after IS NULL OR changed_after OPERATOR(pg_catalog.=) changed_before;
        END LOOP;
    END;
"""

_STEP_BODY = """
BEGIN
""" + _MARK + _IN_WORKFLOW + """    RETURN QUERY EXECUTE q;
""" + _FLUSH + """    EXECUTE 'CLOSE ALL';
END
"""

# For results with pseudo-type columns (void, record, …) that a column definition list cannot
# name: rows come back as jsonb, encoded by to_jsonb.
_ROWS_BODY = """
DECLARE
    r pg_catalog.record;
BEGIN
""" + _MARK + _IN_WORKFLOW + """    FOR r IN EXECUTE q LOOP
        RETURN NEXT pg_catalog.to_jsonb(r);
    END LOOP;
""" + _FLUSH + """    EXECUTE 'CLOSE ALL';
END
"""

_EXEC_BODY = """
DECLARE
    n pg_catalog.int8;
BEGIN
""" + _MARK + _IN_WORKFLOW + """    EXECUTE q;
    GET DIAGNOSTICS n = ROW_COUNT;
""" + _FLUSH + """    EXECUTE 'CLOSE ALL';
    RETURN n;
END
"""

# Parse analysis and planning of a step run user code (input functions of literals run domain
# CHECK constraints; planning folds immutable functions), so the engine must not describe a step
# as itself. This opens a cursor over the step as the submitter; the engine describes the portal
# (no re-analysis) inside a savepoint it rolls back. Statements that return no rows cannot be
# opened as a cursor (SQLSTATE 42P11): they have no result columns.
_DESCRIBE_BODY = """
DECLARE
    c pg_catalog.refcursor := '""" + DESCRIBE_PORTAL + """';
BEGIN
""" + _MARK + _IN_WORKFLOW + """    OPEN c FOR EXECUTE q;
END
"""

# A superuser's steps (only when pg_durable.enable_superuser_instances is on in the engine's own
# session, and only on an engine that is itself a superuser): the same four functions, but
# SECURITY INVOKER and owned by the engine. No privilege changes hands — the engine already has
# every privilege the submitter has — so nothing here is a trampoline: the function becomes the
# submitter with SET LOCAL ROLE (looked up by oid, so a rename cannot misdirect it), runs the
# text, and goes back to the engine's own identity (role and session authorization) before the
# engine's checkpoint runs. EXECUTE is revoked from PUBLIC and nobody else has USAGE on df_exec.
# (The alias is not `r`: that is the rows body's record variable, which PL/pgSQL would take.)
_AS_SUPERUSER = """    PERFORM pg_catalog.set_config('role', (SELECT su.rolname FROM pg_catalog.pg_roles su
                                             WHERE su.oid OPERATOR(pg_catalog.=) '__ROLE_OID__'::pg_catalog.oid),
                                  true);
"""
# Session-level on purpose: the function's SET clause reverts local settings when it returns,
# but not a session-level SET ROLE / SET SESSION AUTHORIZATION the step itself made.
_BACK_TO_ENGINE = """    RESET SESSION AUTHORIZATION;
    PERFORM pg_catalog.set_config('role', 'none', false);
"""


def _superuser_body(body: str) -> str:
    """A trampoline body turned into a superuser's invoker step body (see _AS_SUPERUSER)."""
    head, sep, tail = body.partition("BEGIN\n")
    body = head + sep + _AS_SUPERUSER + tail
    # back before anything returns (exec_ ends with RETURN n), else before the final END
    close = "    EXECUTE 'CLOSE ALL';\n"
    if close in body:
        return body.replace(close, close + _BACK_TO_ENGINE, 1)
    end = body.rindex("END")
    return body[:end] + _BACK_TO_ENGINE + body[end:]


class Trampolines:
    """Creates (once per role and database, until the engine opens a new session to a database
    other than its home: see forget) and names the per-role trampolines."""

    def __init__(self) -> None:
        # keyed by (database, role oid): trampolines live in each database that runs steps
        self._ready: dict[tuple[str, int], str] = {}
        self._gone: set[tuple[str, int]] = set()
        self._problems: dict[tuple[str, int], str] = {}
        self._lock = threading.Lock()

    def forget(self, database: str) -> None:
        """Forget all that is known of `database`'s trampolines, to check them again.

        Called whenever the engine opens a new session to a database other than its home: the
        name may now be another database (dropped and re-created, or renamed, while the engine
        had no session there — PostgreSQL refuses both while anyone is connected), in which a
        role with CREATEDB may have made her own `df_exec`. Trust is decided per session, never
        per name: the next ensure() checks df_exec's owner and recreates the trampolines.
        """
        with self._lock:
            for key in [k for k in self._ready if k[0] == database]:
                del self._ready[key]
            for key in [k for k in self._problems if k[0] == database]:
                del self._problems[key]
            self._gone = {k for k in self._gone if k[0] != database}

    def problem(self, database: str, role_oid: int) -> str | None:
        """Why the role's trampolines could not be created, if they could not."""
        return self._problems.get((database, role_oid))

    def needs_setup(self, database: str, role_oid: int) -> bool:
        key = (database, role_oid)
        return key not in self._ready and key not in self._gone

    def search_path(self, database: str, role_oid: int) -> str | None:
        return self._ready.get((database, role_oid))

    def ensure(self, conn: psycopg.Connection, role_oid: int) -> str:
        """Make sure the role's trampolines exist; returns the role's search_path for steps.

        Runs in its own short transaction on `conn` (autocommit connection, no step in flight).
        """
        key = (conn.info.dbname, role_oid)
        cached = self._ready.get(key)
        if cached is not None:
            return cached
        with self._lock:
            cached = self._ready.get(key)
            if cached is not None:
                return cached
            try:
                path = self._create(conn, role_oid)
            except RoleGone:
                self._gone.add(key)
                return ""
            except RoleRefused as exc:
                self._gone.add(key)
                self._problems[key] = str(exc)
                return ""
            except ForeignExecSchema as exc:
                self._gone.add(key)
                self._problems[key] = str(exc)
                return ""
            except psycopg.errors.LockNotAvailable:
                return ""  # not remembered: the step is tried again later
            except psycopg.errors.InsufficientPrivilege as exc:
                # Least-privilege mode: the engine role was not granted this submitter (or the
                # submitter is a superuser). Remember it: the step fails with this message
                # instead of the worker retrying the setup forever.
                self._gone.add(key)
                self._problems[key] = (
                    f"the engine cannot run steps as this role: {exc.diag.message_primary or exc} "
                    "(grant the role to the engine role, see engine/privileges.py)")
                return ""
            self._ready[key] = path
            return path

    def _create(self, conn: psycopg.Connection, role_oid: int) -> str:
        """Create the role's trampolines, tolerating other engines doing the same at once.

        No lock serialises this (an advisory lock could be taken by any role and would stall
        every new role's first step): a concurrent creation shows up as a duplicate or a
        concurrently updated catalog row, and the whole transaction is simply tried again.
        """
        for attempt in range(6):
            try:
                with conn.transaction():
                    return self._create_once(conn, role_oid)
            except _CONCURRENT_DDL:
                if attempt == 5:
                    raise
        raise AssertionError("unreachable")

    def _create_once(self, conn: psycopg.Connection, role_oid: int) -> str:
        # Bounded waits only: nothing a user does may park this worker.
        conn.execute(f"SET LOCAL lock_timeout = '{SETUP_LOCK_TIMEOUT}'")
        conn.execute("SET LOCAL check_function_bodies = off")
        row = conn.execute(
            "SELECT r.rolname, r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid = %s", (role_oid,)
        ).fetchone()
        if row is None:
            raise RoleGone(f"role with oid {role_oid} no longer exists")
        role, is_super = row
        # A SECURITY DEFINER function owned by a superuser that executes any text it is given
        # must never exist, whether or not superuser instances are enabled. Only an engine that
        # is a superuser itself runs a superuser's steps, as invoker functions it owns (callers
        # only get here when superuser instances are enabled).
        if is_super and not scalar(conn, "SELECT r.rolsuper FROM pg_catalog.pg_roles r "
                                         "WHERE r.rolname = session_user"):
            raise RoleRefused(f'role "{role}" is a superuser; only an engine connected as a '
                              "superuser runs superuser instances, and this one is not")
        ensure_exec_schema(conn)
        configured = self._configured_path(conn, role_oid)
        definer = "SECURITY INVOKER" if is_super else "SECURITY DEFINER"
        for name, args, returns, body in (
            (f"step_{role_oid}", "q pg_catalog.text", "SETOF pg_catalog.record", _STEP_BODY),
            (f"exec_{role_oid}", "q pg_catalog.text", "pg_catalog.int8", _EXEC_BODY),
            (f"rows_{role_oid}", "q pg_catalog.text", "SETOF pg_catalog.jsonb", _ROWS_BODY),
            (f"describe_{role_oid}", "q pg_catalog.text", "pg_catalog.void", _DESCRIBE_BODY),
        ):
            fn = sql.Identifier(EXEC_SCHEMA, name)
            argtypes = sql.SQL("pg_catalog.text")
            # Drop and recreate: ownership or body may be stale (role renamed, path changed).
            # Only the engine can create functions in df_exec (ensure_exec_schema), so the
            # name has no other overload.
            conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}({})").format(fn, argtypes))
            # The submitter's search_path, applied as data: set_config validates it (an invalid
            # value falls back to the default) and FROM CURRENT copies it into the function.
            _apply_path(conn, configured)
            if is_super:
                body = _superuser_body(body)
            conn.execute(
                sql.SQL(
                    "CREATE FUNCTION {fn}({args}) RETURNS {returns} LANGUAGE plpgsql "
                    "{definer} SET search_path FROM CURRENT AS {body}"
                ).format(fn=fn, args=sql.SQL(args), returns=sql.SQL(returns),
                         definer=sql.SQL(definer),
                         body=sql.Literal(body.replace("__ROLE_OID__", str(int(role_oid)))))
            )
            conn.execute("SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true)")
            conn.execute(sql.SQL("REVOKE ALL ON FUNCTION {}({}) FROM PUBLIC").format(fn, argtypes))
            if is_super:
                continue  # the engine's own function: no hand-over to the submitter
            # ALTER OWNER needs the new owner to have CREATE on the schema; grant it only for
            # the duration of this transaction (matters in least-privilege mode). Never for
            # a role that has CREATE already (the schema's owner): revoking it afterwards
            # would take the owner's own CREATE away, and with it every later setup.
            lend = not scalar(
                conn, "SELECT pg_catalog.has_schema_privilege(%s::oid, %s, 'CREATE')",
                (role_oid, EXEC_SCHEMA))
            if lend:
                conn.execute(sql.SQL("GRANT CREATE ON SCHEMA {} TO {}").format(
                    sql.Identifier(EXEC_SCHEMA), sql.Identifier(role)))
            conn.execute(
                sql.SQL("ALTER FUNCTION {}({}) OWNER TO {}").format(fn, argtypes, sql.Identifier(role))
            )
            if lend:
                conn.execute(sql.SQL("REVOKE CREATE ON SCHEMA {} FROM {}").format(
                    sql.Identifier(EXEC_SCHEMA), sql.Identifier(role)))
        path = conn.execute(
            "SELECT pg_catalog.array_to_string(p.proconfig, ',') FROM pg_catalog.pg_proc p "
            "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = %s AND p.proname = %s", (EXEC_SCHEMA, f"step_{role_oid}")).fetchone()
        return (path[0] if path and path[0] else "search_path=" + _DEFAULT_PATH)

    @staticmethod
    def _configured_path(conn: psycopg.Connection, role_oid: int) -> str | None:
        """The search_path the role would get in a fresh session of this database, if set
        (role and database setting, then role, then database, as PostgreSQL applies them)."""
        rows = conn.execute(
            """
            SELECT pg_catalog.substr(cfg, 13)
              FROM pg_catalog.pg_db_role_setting s,
                   LATERAL pg_catalog.unnest(s.setconfig) AS cfg
             WHERE pg_catalog.starts_with(cfg, 'search_path=')
               AND s.setrole IN (0, %s)
               AND s.setdatabase IN (0, (SELECT d.oid FROM pg_catalog.pg_database d
                                          WHERE d.datname = pg_catalog.current_database()))
             ORDER BY (s.setrole <> 0) DESC, (s.setdatabase <> 0) DESC
             LIMIT 1
            """,
            (role_oid,),
        ).fetchone()
        return rows[0] if rows else None


def _apply_path(conn: psycopg.Connection, configured: str | None) -> None:
    """SET LOCAL search_path to the submitter's configured value, bound as a parameter; the
    default when there is none or PostgreSQL rejects it."""
    if configured is not None:
        try:
            with conn.transaction():  # a savepoint: a rejected value must not abort the setup
                conn.execute("SELECT pg_catalog.set_config('search_path', %s, true)", (configured,))
            return
        except psycopg.errors.DataError:
            pass
        except psycopg.errors.InvalidParameterValue:
            pass
    conn.execute("SELECT pg_catalog.set_config('search_path', %s, true)", (_DEFAULT_PATH,))


# Errors a concurrent creation of the same trampolines by another engine can cause.
_CONCURRENT_DDL = (
    psycopg.errors.UniqueViolation,
    psycopg.errors.DuplicateFunction,
    psycopg.errors.DuplicateSchema,
    psycopg.errors.UndefinedFunction,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.InternalError_,  # "tuple concurrently updated"
)


class ForeignExecSchema(RuntimeError):
    """df_exec exists but is not the engine's own: refuse to use it."""


def ensure_exec_schema(conn: psycopg.Connection) -> None:
    """Make sure `df_exec` in this database is the engine's: create it if missing; refuse it
    (ForeignExecSchema) if it is owned by anyone but the engine's own role or a superuser, or
    if it grants any privilege to another role. Call inside a transaction."""
    row = conn.execute(
        """
        SELECT o.rolname, o.rolsuper, o.rolname = session_user,
               (SELECT pg_catalog.string_agg(DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                                            ELSE a.grantee::pg_catalog.regrole::pg_catalog.text END,
                                              ', ')
                  FROM pg_catalog.aclexplode(n.nspacl) a WHERE a.grantee <> n.nspowner)
          FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles o ON o.oid = n.nspowner
         WHERE n.nspname = %s
        """, (EXEC_SCHEMA,)).fetchone()
    if row is None:
        # Normally created by the installer (sql/0.1.0/000_schemas.sql); creating it here needs
        # CREATE on the database, which a least-privilege engine has only where granted.
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(EXEC_SCHEMA)))
        conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(sql.Identifier(EXEC_SCHEMA)))
        return
    owner, owner_super, owner_is_me, grantees = row
    if not (owner_super or owner_is_me):
        raise ForeignExecSchema(
            f'schema {EXEC_SCHEMA} in database "{conn.info.dbname}" is owned by role "{owner}", not by '
            "the engine; refusing to run steps through it (drop it, or have an administrator "
            "hand it to the engine's role)")
    if grantees:
        raise ForeignExecSchema(
            f'schema {EXEC_SCHEMA} in database "{conn.info.dbname}" grants privileges to {grantees}; '
            "refusing to run steps through it (REVOKE ALL ON SCHEMA df_exec FROM them)")


class RoleGone(RuntimeError):
    """The submitter role was dropped after the instance started."""


class RoleRefused(RuntimeError):
    """The engine never runs steps as this role (a superuser): no trampolines are made for it."""
