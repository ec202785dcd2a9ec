"""Least-privilege engine mode: run the engine as a non-superuser role that owns the df schemas.

Why: the engine holds the most powerful credentials in the system. Connected as a superuser, a
single hole in step isolation would hand an attacker the whole cluster; connected as the owner of
``df`` / ``df_internal`` the blast radius is the workflow data and the roles the engine may act
for. Every isolation guarantee (per-role trampolines, RLS, frozen identity) is the same in both
modes; ``tests/test_security.py`` runs its attacks against both.

What :func:`setup_engine_role` does (run it as a superuser, after ``dftui install`` and after
every ``dftui upgrade``, because new objects are created by the installing superuser; the CLI
does it with ``dftui install --engine-role ROLE``, granting the engine every role that
df.grant_usage has granted so far):

* ``ALTER ... OWNER TO role`` for the schemas ``df`` and ``df_internal`` and every table, view,
  sequence, function and type in them (extension members such as dblink stay as they are). The
  owner bypasses row-level security (it is enabled, not forced), which is what the engine needs
  to see every role's instances; ordinary roles keep their column grants from df.grant_usage.
* ``GRANT CREATE ON DATABASE`` so the engine can create its ``df_exec`` schema (created here
  right away, owned by the role, with nothing granted to PUBLIC).
* ``GRANT pg_read_all_settings``: df.signal's loopback helper reads server settings.
* ``GRANT SET ON PARAMETER df.in_workflow``: the trampolines carry that setting, and only a
  superuser or a role granted SET may put a custom parameter into a function's SET clause.
* ``GRANT submitter TO role`` for each submitter role given: a trampoline is a SECURITY DEFINER
  function *owned by the submitter*, and PostgreSQL only lets a role hand an object to a role it
  may SET ROLE to, and the engine must be able to EXECUTE it (the trampoline grants nothing to
  PUBLIC, so the engine needs the owner's privileges: INHERIT).

The engine role must be granted each *login* role that submits workflows. With the pg_durable
indirection setup (``GRANT pg_durable_user TO app_backend``) that means ``app_backend``, not
``pg_durable_user``: steps run as the role that called df.start. The equivalent SQL, for
reviewers and for operators who prefer to run it by hand::

    ALTER SCHEMA df OWNER TO dftui_engine;           -- and every object inside, likewise
    ALTER SCHEMA df_internal OWNER TO dftui_engine;  -- and every object inside
    GRANT CREATE ON DATABASE mydb TO dftui_engine;
    CREATE SCHEMA df_exec AUTHORIZATION dftui_engine; REVOKE ALL ON SCHEMA df_exec FROM PUBLIC;
    GRANT SET ON PARAMETER "df.in_workflow" TO dftui_engine;
    GRANT pg_read_all_settings TO dftui_engine;
    GRANT app_backend TO dftui_engine;   -- PostgreSQL 16+: WITH INHERIT TRUE, SET TRUE

Consequences: ``df.start(transaction_mode => 'new')`` and the dblink loopback of df.signal need
a superuser-owned SECURITY DEFINER function, so in this mode the loopback is unavailable (signals
then take effect when the caller commits, as documented in 050_lifecycle.sql).
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from engine.db import scalar

SCHEMAS = ("df", "df_internal")
EXEC_SCHEMA = "df_exec"
# Custom parameters the engine puts into the SET clause of the functions it creates.
WORKFLOW_PARAMETERS = ("df.in_workflow",)


class PrivilegeSetupError(RuntimeError):
    """The least-privilege setup cannot be applied (message is meant for the operator)."""


def _objects(conn: psycopg.Connection) -> list[tuple[str, sql.Composable]]:
    """(kind, qualified name) of every ownable object in the df schemas, extension members and
    objects that follow their table (indexes, owned sequences, row types) excluded."""
    rows = conn.execute(
        """
        WITH ns AS (
            SELECT n.oid, n.nspname FROM pg_catalog.pg_namespace n WHERE n.nspname = ANY(%s)
        ), ext AS (
            SELECT d.classid, d.objid FROM pg_catalog.pg_depend d WHERE d.deptype = 'e'
        )
        SELECT CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                              WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE'
                              ELSE 'TABLE' END,
               ns.nspname, c.relname::text, NULL::text
          FROM pg_catalog.pg_class c JOIN ns ON ns.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
           AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_catalog.pg_class'::regclass
                                                AND ext.objid = c.oid)
           -- sequences owned by a column follow their table
           AND NOT (c.relkind = 'S' AND EXISTS (
                   SELECT 1 FROM pg_catalog.pg_depend d
                    WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
                      AND d.refclassid = 'pg_catalog.pg_class'::regclass
                      AND d.deptype IN ('a', 'i')))
        UNION ALL
        SELECT CASE p.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE'
                              ELSE 'FUNCTION' END,
               ns.nspname, p.proname::text, pg_catalog.pg_get_function_identity_arguments(p.oid)
          FROM pg_catalog.pg_proc p JOIN ns ON ns.oid = p.pronamespace
         WHERE NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_catalog.pg_proc'::regclass
                                                AND ext.objid = p.oid)
        UNION ALL
        SELECT CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END,
               ns.nspname, t.typname::text, NULL
          FROM pg_catalog.pg_type t JOIN ns ON ns.oid = t.typnamespace
         WHERE t.typtype IN ('c', 'd', 'e', 'r')
           AND (t.typtype <> 'c' OR (SELECT c.relkind FROM pg_catalog.pg_class c
                                      WHERE c.oid = t.typrelid) = 'c')
           AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_catalog.pg_type'::regclass
                                                AND ext.objid = t.oid)
        ORDER BY 1, 2, 3
        """,
        (list(SCHEMAS),),
    ).fetchall()
    out: list[tuple[str, sql.Composable]] = []
    for kind, schema, name, args in rows:
        ident: sql.Composable = sql.Identifier(schema, name)
        if args is not None:
            ident = sql.Composed([ident, sql.SQL("(" + args + ")")])
        out.append((kind, ident))
    return out


def granted_submitters(conn: psycopg.Connection, exclude: str | None = None) -> list[str]:
    """Roles df.grant_usage has granted (USAGE on schema df), superusers and `exclude` left out:
    the roles the engine must be able to run steps as, by default."""
    rows = conn.execute(
        """
        SELECT r.rolname FROM pg_catalog.pg_namespace n,
               LATERAL pg_catalog.aclexplode(n.nspacl) a
          JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
         WHERE n.nspname = 'df' AND a.privilege_type = 'USAGE' AND NOT r.rolsuper
           AND r.oid <> n.nspowner AND r.rolname IS DISTINCT FROM %s
         ORDER BY 1
        """, (exclude,)).fetchall()
    return sorted({r[0] for r in rows})


def setup_engine_role(conn: psycopg.Connection, role: str, *,
                      submitters: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Make `role` (an existing non-superuser role) the owner of the df schemas; see module doc.

    `conn` is a superuser's connection, or the installing admin's on a managed service (CREATEROLE,
    owner of the database and of the df schemas, no superuser). Idempotent: run it again after
    upgrades and whenever a new submitter role appears (pass it in `submitters`). Runs in one
    transaction. Returns notes on what could not be granted and why nothing depends on it.
    """
    info = conn.execute(
        "SELECT r.rolsuper, (SELECT s.rolsuper FROM pg_catalog.pg_roles s WHERE s.rolname = current_user) "
        "FROM pg_catalog.pg_roles r WHERE r.rolname = %s", (role,)
    ).fetchone()
    if info is None:
        raise PrivilegeSetupError(f'role "{role}" does not exist; create it first '
                                  f'(CREATE ROLE "{role}" LOGIN PASSWORD ...)')
    role_is_super, me_super = info
    if not me_super and not _owns_df(conn):
        raise PrivilegeSetupError("the least-privilege setup must be run by a superuser or by "
                                  "the role that installed the df schema (its owner)")
    if role_is_super:
        raise PrivilegeSetupError(f'role "{role}" is a superuser; the point of this mode is an '
                                  "engine role without superuser")
    missing = [s for s in submitters if conn.execute(
        "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", (s,)).fetchone() is None]
    if missing:
        raise PrivilegeSetupError(f"submitter role(s) do not exist: {', '.join(missing)}")
    server = int(scalar(conn, "SHOW server_version_num"))
    owner = sql.Identifier(role)
    notes: list[str] = []
    with conn.transaction():
        if not me_super:
            _become_able_to_set_role(conn, role, server)
        for schema in SCHEMAS:
            if conn.execute("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s",
                            (schema,)).fetchone() is None:
                raise PrivilegeSetupError(f"schema {schema} is not installed (run dftui install first)")
        handed_over = not me_super and scalar(
            conn, "SELECT pg_catalog.pg_get_userbyid(nspowner) = %s FROM pg_catalog.pg_namespace "
            "WHERE nspname = 'df_internal'", (role,))
        # A managed service's admin re-running this after the hand-over (for new submitters)
        # no longer may touch the schemas, and need not: the engine role owns everything,
        # including what its own upgrades created since.
        if not handed_over:
            # The objects first, then their schemas: a non-superuser admin loses USAGE on a schema
            # the moment it hands the schema over, and could not name what is inside any more.
            # The new owner of an object needs CREATE on its schema until it owns the schema too.
            schemas = sql.SQL(", ").join(sql.Identifier(s) for s in SCHEMAS)
            conn.execute(sql.SQL("GRANT CREATE ON SCHEMA {} TO {}").format(schemas, owner))
            for kind, ident in _objects(conn):
                conn.execute(sql.SQL("ALTER {} {} OWNER TO {}").format(sql.SQL(kind), ident, owner))
            conn.execute(sql.SQL("REVOKE CREATE ON SCHEMA {} FROM {}").format(schemas, owner))
            for schema in SCHEMAS:
                conn.execute(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(sql.Identifier(schema), owner))
            db = sql.Identifier(scalar(conn, "SELECT pg_catalog.current_database()"))
            conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(db, owner))
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(EXEC_SCHEMA)))
            conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(sql.Identifier(EXEC_SCHEMA)))
            # ALTER SCHEMA ... OWNER carries the old owner's ACL entry over to the new owner, so an
            # ACL in which the old owner had lost CREATE (older engines revoked it from the owner
            # after creating a superuser's trampolines) would leave the engine unable to create
            # any new submitter's trampolines. The owner always gets both privileges back — granted
            # before the hand-over, which a non-superuser admin can no longer make after it.
            conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(
                sql.Identifier(EXEC_SCHEMA), owner))
            conn.execute(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(sql.Identifier(EXEC_SCHEMA), owner))
        # The trampolines carry `SET df.in_workflow = 'true'`; for a non-superuser, a SET clause
        # naming a custom (placeholder) parameter needs SET privilege on it (PostgreSQL 15+).
        for param in WORKFLOW_PARAMETERS:
            _optional(conn, sql.SQL("GRANT SET ON PARAMETER {} TO {}").format(
                sql.Identifier(param), owner), notes,
                f"SET on parameter {param} not granted (needs a superuser; the trampolines set "
                "it in their body, so nothing depends on it)")
        # df.signal's loopback helper reads unix_socket_directories; without a superuser owner
        # it cannot open its dblink session anyway and falls back to the caller's transaction.
        _optional(conn, sql.SQL("GRANT pg_read_all_settings TO {}").format(owner), notes,
                  "pg_read_all_settings not granted (needs its admin option); df.signal then "
                  "takes effect when the caller commits, as it does in this mode anyway")
        for submitter in submitters:
            grant = sql.SQL("GRANT {} TO {}").format(sql.Identifier(submitter), owner)
            if server >= 160000:
                grant = sql.Composed([grant, sql.SQL(" WITH INHERIT TRUE, SET TRUE")])
            conn.execute(grant)
    return notes


def _owns_df(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT pg_catalog.pg_has_role(n.nspowner, 'MEMBER') FROM pg_catalog.pg_namespace n "
        "WHERE n.nspname = 'df_internal'").fetchone()
    return bool(row and row[0])


def _become_able_to_set_role(conn: psycopg.Connection, role: str, server: int) -> None:
    """ALTER ... OWNER TO role needs the installing admin to be able to SET ROLE to it. A
    CREATEROLE admin holds ADMIN OPTION on the roles it created (PostgreSQL 16+) but is not a
    member of them; it grants itself membership, as a managed service's admin may."""
    mode = "SET" if server >= 160000 else "MEMBER"  # SET ROLE rights: PostgreSQL 16's term
    if scalar(conn, "SELECT pg_catalog.pg_has_role(current_user, %s, %s)", (role, mode)):
        return
    grant = sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(role))
    if server >= 160000:
        grant = sql.Composed([grant, sql.SQL(" WITH INHERIT FALSE, SET TRUE")])
    try:
        with conn.transaction():
            conn.execute(grant)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise PrivilegeSetupError(
            f'cannot make "{role}" the owner of the df schemas: {exc.diag.message_primary} '
            f"(the admin needs ADMIN OPTION on it, e.g. by having created it)") from exc


def _optional(conn: psycopg.Connection, statement: sql.SQL | sql.Composed, notes: list[str],
              note: str) -> None:
    """Run a grant that only a superuser can always make; where refused, record `note`."""
    try:
        with conn.transaction():
            conn.execute(statement)
    except psycopg.errors.InsufficientPrivilege:
        notes.append(note)
