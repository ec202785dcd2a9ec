"""df.grant_usage / df.revoke_usage: the exact grant set, quoting, and nothing for PUBLIC.

These run against real PostgreSQL and check privileges both through the catalog
(has_*_privilege) and by actually trying the forbidden statements as the role.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

ADMIN_FUNCS = {"grant_usage", "revoke_usage", "metrics"}
HTTP_FUNCS = {"http", "http_multipart"}


@pytest.fixture
def make_role(db) -> Iterator:
    """Create throw-away LOGIN roles (cluster-global, so uniquely named) and drop them after."""
    created: list[str] = []

    def _make(base: str) -> str:
        name = f"{base}_{uuid.uuid4().hex[:6]}"
        with db.connect() as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
        created.append(name)
        return name

    yield _make
    with db.connect() as conn:
        for name in created:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def _grant(db, role: str, *args: bool, as_role: str | None = None) -> list[str]:
    """Call df.grant_usage and return the NOTICE messages it emitted."""
    notices: list[str] = []
    with db.connect(as_role) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        params = ", ".join(["%s"] * (1 + len(args)))
        conn.execute(f"SELECT df.grant_usage({params})", (role, *args))
    return notices


def _df_functions(db) -> list[tuple[str, str, str]]:
    """(regprocedure text, proname, return type) of every function in schema df."""
    with db.connect() as conn:
        return conn.execute(
            "SELECT p.oid::regprocedure::text, p.proname, p.prorettype::regtype::text "
            "FROM pg_proc p WHERE p.pronamespace = 'df'::regnamespace"
        ).fetchall()


def _can_execute(db, role: str, signature: str) -> bool:
    return db.scalar("SELECT has_function_privilege(%s, %s, 'EXECUTE')", (role, signature))


def _add_probe_functions(db) -> None:
    """Add overloads named like the admin/http/internal functions, so the tests do not depend
    on which of the real ones other files have created yet (grant_usage is computed from
    pg_proc at call time, so new functions must be classified by name)."""
    with db.connect() as conn:
        for name in ["http", "http_multipart", "metrics", "_probe_internal", "probe_user"]:
            conn.execute(
                sql.SQL(
                    "CREATE FUNCTION df.{}(probe_arg bigint, probe_arg2 bigint) RETURNS int "
                    "LANGUAGE sql SET search_path = pg_catalog, pg_temp AS 'SELECT 1'"
                ).format(sql.Identifier(name))
            )
            conn.execute(
                sql.SQL("REVOKE EXECUTE ON FUNCTION df.{}(bigint, bigint) FROM PUBLIC").format(
                    sql.Identifier(name)
                )
            )


def test_notice_text_is_exact(db, make_role) -> None:
    role = make_role("plain")
    assert _grant(db, role) == [f'pg_durable: granted df usage privileges to "{role}"']


def test_exact_table_privileges(db) -> None:
    role = "dftui_alice"
    # Table-level: SELECT only; INSERT/UPDATE are column-level; DELETE/TRUNCATE never.
    for priv, expected in {"SELECT": True, "INSERT": False, "UPDATE": False, "DELETE": False,
                           "TRUNCATE": False}.items():
        got = db.scalar("SELECT has_table_privilege(%s, 'df.instances', %s)", (role, priv))
        assert got is expected, priv
    with db.connect() as conn:
        cols = dict(
            conn.execute(
                "SELECT attname, array[has_column_privilege(%s, 'df.instances'::regclass, attname, 'UPDATE'),"
                " has_column_privilege(%s, 'df.instances'::regclass, attname, 'INSERT')]"
                " FROM pg_attribute WHERE attrelid = 'df.instances'::regclass AND attnum > 0"
                " AND NOT attisdropped",
                (role, role),
            ).fetchall()
        )
    assert {c for c, (upd, _) in cols.items() if upd} == {"status", "updated_at"}
    assert {c for c, (_, ins) in cols.items() if ins} == {
        "id", "label", "root_node", "submitted_by", "database"
    }
    with db.connect() as conn:
        node_ins = {
            r[0]
            for r in conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = 'df.nodes'::regclass AND attnum > 0"
                " AND NOT attisdropped AND has_column_privilege(%s, 'df.nodes'::regclass, attname, 'INSERT')",
                (role,),
            )
        }
        node_upd = conn.execute(
            "SELECT bool_or(has_column_privilege(%s, 'df.nodes'::regclass, attname, 'UPDATE'))"
            " FROM pg_attribute WHERE attrelid = 'df.nodes'::regclass AND attnum > 0",
            (role,),
        ).fetchone()[0]
    assert node_ins == {
        "id", "instance_id", "node_type", "query", "result_name", "left_node", "right_node",
        "submitted_by", "database",
    }
    assert node_upd is False
    assert db.scalar("SELECT has_table_privilege(%s, 'df.nodes', 'DELETE')", (role,)) is False
    for priv in ["SELECT", "INSERT", "UPDATE", "DELETE"]:
        assert db.scalar("SELECT has_table_privilege(%s, 'df.vars', %s)", (role, priv)) is True
    assert db.scalar("SELECT has_schema_privilege(%s, 'df', 'USAGE')", (role,)) is True
    assert db.scalar("SELECT has_schema_privilege(%s, 'df_internal', 'USAGE')", (role,)) is False


def test_delete_and_submitted_by_update_are_denied(db) -> None:
    with db.connect("dftui_alice") as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM df.instances")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE df.instances SET submitted_by = 'dftui_bob'::regrole")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE df.nodes SET status = 'completed'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM df_internal.tasks")


def _callable(db, role: str, signature: str) -> bool:
    """What a role can really call: schema USAGE on df is the gate (pg_durable 0.2.4+, #242)."""
    return bool(db.scalar("SELECT has_schema_privilege(%s, 'df', 'USAGE')", (role,))
                and _can_execute(db, role, signature))


def test_function_classes(db, make_role) -> None:
    _add_probe_functions(db)
    plain, http, admin = make_role("plain"), make_role("http"), make_role("admin")
    _grant(db, plain)
    _grant(db, http, True)
    _grant(db, admin, False, True)
    funcs = _df_functions(db)
    assert len(funcs) >= 7
    for signature, name, rettype in funcs:
        internal = name.startswith("_") or rettype in ("trigger", "event_trigger")
        user = not internal and name not in ADMIN_FUNCS | HTTP_FUNCS
        if name == "probe_user":
            user = False  # the probe revoked PUBLIC itself and nobody granted it back
        if name in ("_setting", "_role_name", "_mark_non_future_helper", "_refuse_non_future_helper",
                    "_instance_status", "_file_instance_request"):
            # The callable "_" functions (sql/routines/zz_settings.sql): the SECURITY INVOKER
            # df functions read pg_durable.* settings through one, a delegated admin's
            # df.grant_usage / df.revoke_usage look the role up through another, the
            # builders tell a helper's return value from a step through the next two, and
            # df.status / df.cancel / df.signal read an instance's status and file a request
            # past a held row through the last two (sql/routines/02_published_status.sql).
            user = True
        assert _callable(db, plain, signature) is user, signature
        assert _callable(db, http, signature) is (user or name in HTTP_FUNCS), signature
        assert _callable(db, admin, signature) is (user or name in ADMIN_FUNCS), signature
        assert _callable(db, "dftui_carol", signature) is False, signature
    # The conftest-granted roles: dave has HTTP, alice does not.
    assert _can_execute(db, "dftui_dave", "df.http(bigint, bigint)") is False  # granted before it existed
    _grant(db, "dftui_dave", True)
    assert _can_execute(db, "dftui_dave", "df.http(bigint, bigint)") is True


def test_public_gets_what_pg_durable_gives_it(db) -> None:
    """PUBLIC: EXECUTE on the ordinary df functions and SELECT on the self-filtering views, as
    pg_durable 0.2.4+; nothing on the sensitive functions, the tables, the schemas, internals."""
    with db.connect() as conn:
        public_funcs = {r[0] for r in conn.execute(
            "SELECT p.proname FROM pg_proc p, aclexplode(coalesce(p.proacl,"
            " acldefault('f', p.proowner))) a WHERE p.pronamespace = 'df'::regnamespace"
            " AND a.grantee = 0")}
        internal_funcs = conn.execute(
            "SELECT p.oid::regprocedure::text FROM pg_proc p, aclexplode(coalesce(p.proacl,"
            " acldefault('f', p.proowner))) a WHERE p.pronamespace = 'df'::regnamespace"
            " AND a.grantee = 0 AND (p.proname LIKE '\\_%%' OR p.prorettype = 'trigger'::regtype)"
            # df._setting and df._role_name: see test_function_classes
            " AND p.oid <> 'df._setting(text)'::regprocedure"
            " AND p.oid <> 'df._role_name(text)'::regprocedure"
            " AND p.oid <> 'df._mark_non_future_helper(text)'::regprocedure"
            " AND p.oid <> 'df._refuse_non_future_helper(text)'::regprocedure"
            " AND p.oid <> 'df._instance_status(text)'::regprocedure"
            " AND p.oid <> 'df._file_instance_request(text, text, text, text, jsonb)'::regprocedure"
        ).fetchall()
        public_rels = {r[0]: r[1] for r in conn.execute(
            "SELECT c.relname, c.relkind FROM pg_class c, aclexplode(coalesce(c.relacl,"
            " acldefault('r', c.relowner))) a WHERE c.relnamespace IN"
            " ('df'::regnamespace, 'df_internal'::regnamespace) AND a.grantee = 0"
            # the step marker (sql/migrations/0150_engine_locks.sql): an empty table every
            # trampoline locks in ACCESS SHARE mode as its submitter; schema USAGE is the gate
            " AND c.oid <> 'df._step_marker'::regclass"
            # the calling role's own vars (sql/routines/vars.sql), read by df.getvar only: a
            # view filtering on current_user, unreachable by name without USAGE on df_internal
            " AND c.oid <> 'df_internal.my_var_values'::regclass"
            # the calling role's own unpublished statuses (sql/routines/02_published_status.sql),
            # the same shape: read by df._instance_status only
            " AND c.oid <> 'df_internal.my_unpublished_statuses'::regclass"
            # requests past a held instance row: INSERT of the request columns only (requested_by
            # is the inserter by default); its trigger refuses anyone else's instance
            " AND c.oid <> 'df_internal.instance_requests'::regclass"
            " AND c.oid <> 'df_internal.instance_requests_id_seq'::regclass")}
        df_views = {r[0] for r in conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'df'::regnamespace AND relkind = 'v'")}
        public_schema = conn.execute(
            "SELECT n.nspname FROM pg_namespace n, aclexplode(n.nspacl) a"
            " WHERE n.nspname IN ('df', 'df_internal') AND a.grantee = 0"
        ).fetchall()
    assert {"start", "sql", "status", "cancel", "signal", "list_instances", "instance_info"} <= public_funcs
    assert public_funcs.isdisjoint(ADMIN_FUNCS | HTTP_FUNCS)
    assert internal_funcs == []
    assert set(public_rels) == df_views and set(public_rels.values()) == {"v"}
    assert public_schema == []
    with db.connect("dftui_carol") as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT df.grant_usage('dftui_carol')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM df.instances")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # no USAGE: the gate holds
            conn.execute("SELECT df.status('deadbeef')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM df.node_runs")


@pytest.mark.parametrize("base", ["labUser", "role with space", 'role"with"quote'])
def test_quoted_role_names(db, make_role, base: str) -> None:
    role = make_role(base)
    assert _grant(db, role) == [f'pg_durable: granted df usage privileges to "{role}"']
    assert db.scalar("SELECT has_table_privilege(%s, 'df.vars', 'INSERT')", (role,)) is True
    with db.connect(role) as conn:
        conn.execute("INSERT INTO df.vars (name, value) VALUES ('k2', 'v2')")
        owner = conn.execute("SELECT owner::text FROM df.vars WHERE name = 'k2'").fetchone()[0]
    assert owner == db.scalar("SELECT quote_ident(%s)", (role,))
    # The quoted-identifier spelling resolves to the same role.
    quoted = '"' + role.replace('"', '""') + '"'
    with db.connect() as conn:
        conn.execute("SELECT df.revoke_usage(%s)", (quoted,))
    assert db.scalar("SELECT has_table_privilege(%s, 'df.vars', 'INSERT')", (role,)) is False
    assert _grant(db, quoted) == [f'pg_durable: granted df usage privileges to "{role}"']
    assert db.scalar("SELECT has_schema_privilege(%s, 'df', 'USAGE')", (role,)) is True


def test_conftest_quoted_role_is_granted(db) -> None:
    assert db.scalar("SELECT has_schema_privilege('Quoted Role', 'df', 'USAGE')") is True
    with db.connect("Quoted Role") as conn:
        assert conn.execute("SELECT count(*) FROM df.instances").fetchone()[0] == 0


def test_unknown_role_raises_and_changes_nothing(db) -> None:
    with db.connect() as conn:
        with pytest.raises(psycopg.errors.UndefinedObject, match='role "no_such_role_x" does not exist'):
            conn.execute("SELECT df.grant_usage('no_such_role_x')")
        with pytest.raises(psycopg.errors.UndefinedObject, match="does not exist"):
            conn.execute("SELECT df.revoke_usage('no_such_role_x')")
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            conn.execute("SELECT df.grant_usage('')")


def test_revoke_usage_removes_everything(db, make_role) -> None:
    _add_probe_functions(db)
    role = make_role("rev")
    _grant(db, role, True, True)
    notices: list[str] = []
    with db.connect() as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute("SELECT df.revoke_usage(%s)", (role,))
    assert notices == [f'pg_durable: revoked df usage privileges from "{role}"']
    for signature, _, _ in _df_functions(db):
        assert _callable(db, role, signature) is False, signature
    for signature, name, _ in _df_functions(db):  # explicit grants gone too, not just USAGE
        if name in ADMIN_FUNCS | HTTP_FUNCS:
            assert _can_execute(db, role, signature) is False, signature
    for table in ["df.instances", "df.nodes", "df.vars"]:
        for priv in ["SELECT", "INSERT", "UPDATE", "DELETE"]:
            assert db.scalar("SELECT has_table_privilege(%s, %s, %s)", (role, table, priv)) is False
    assert db.scalar("SELECT has_schema_privilege(%s, 'df', 'USAGE')", (role,)) is False
    with db.connect(role) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM df.instances")


def test_with_grant_makes_a_delegated_admin(db, make_role) -> None:
    admin, user = make_role("deleg"), make_role("sub")
    _grant(db, admin, False, True)
    # The delegated admin (not a superuser) can grant and revoke on its own.
    assert _grant(db, user, as_role=admin) == [f'pg_durable: granted df usage privileges to "{user}"']
    assert db.scalar("SELECT has_table_privilege(%s, 'df.vars', 'INSERT')", (user,)) is True
    with db.connect(admin) as conn:
        conn.execute("SELECT df.revoke_usage(%s)", (user,))
        # Revoking from itself keeps the access it was given (pg_durable's e2e test 18: REVOKE
        # removes only what the caller granted).
        conn.execute("SELECT df.revoke_usage(%s)", (admin,))
        assert conn.execute("SELECT has_schema_privilege('df', 'USAGE')").fetchone()[0] is True
    # But it cannot cut itself off through a group it belongs to and granted.
    group = make_role("deleg_group")
    with db.connect() as conn:
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(admin)))
    _grant(db, group, as_role=admin)
    with db.connect(admin) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege,
                                                  match="member of it"):
        conn.execute("SELECT df.revoke_usage(%s)", (group,))
    assert db.scalar("SELECT has_table_privilege(%s, 'df.vars', 'INSERT')", (user,)) is False
    # A plain grantee cannot grant further.
    with db.connect("dftui_alice") as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT df.grant_usage(%s)", (user,))


def test_indirection_role(db, make_role) -> None:
    group, member = make_role("durable_users"), make_role("app")
    with db.connect() as conn:
        conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(group)))
        conn.execute("SELECT df.grant_usage(%s)", (group,))
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(member)))
    assert db.scalar("SELECT has_table_privilege(%s, 'df.vars', 'INSERT')", (member,)) is True
    assert db.scalar("SELECT has_schema_privilege(%s, 'df', 'USAGE')", (member,)) is True


def test_views_are_selectable_by_grantees(db, make_role) -> None:
    with db.connect() as conn:
        views = [r[0] for r in conn.execute(
            "SELECT c.oid::regclass::text FROM pg_class c WHERE c.relnamespace = 'df'::regnamespace"
            " AND c.relkind = 'v'"
        )]
    role = make_role("views")
    _grant(db, role)
    for view in views:
        assert db.scalar("SELECT has_table_privilege(%s, %s, 'SELECT')", (role, view)) is True, view
    # carol has no USAGE on df, so the views are out of her reach (checked in
    # test_public_gets_what_pg_durable_gives_it).
    assert db.scalar("SELECT has_schema_privilege('dftui_carol', 'df', 'USAGE')") is False


def test_grant_usage_to_public_and_back(db, make_role) -> None:
    """pg_durable's USER_GUIDE: df.grant_usage('public') is allowed and gives every role df
    (a deliberate act, like any GRANT ... TO PUBLIC); df.revoke_usage('public') takes back what
    it gave and leaves what a fresh install gives PUBLIC (EXECUTE on the ordinary functions,
    SELECT on the self-filtering views), so roles granted by name keep working."""
    nobody = make_role("nobody")
    public_acl = ("SELECT count(*) FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', "
                  "p.proowner))) a WHERE p.pronamespace = 'df'::regnamespace AND a.grantee = 0")
    view_acl = ("SELECT count(*) FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', "
                "c.relowner))) a WHERE c.relnamespace = 'df'::regnamespace AND a.grantee = 0 "
                "AND c.relkind = 'v'")
    before = (db.scalar(public_acl), db.scalar(view_acl))
    assert not db.scalar("SELECT has_schema_privilege(%s, 'df', 'USAGE')", (nobody,))
    try:
        assert _grant(db, "public") == ['pg_durable: granted df usage privileges to "public"']
        assert db.scalar("SELECT has_schema_privilege(%s, 'df', 'USAGE')", (nobody,))
        with db.connect(nobody) as conn:
            assert conn.execute("SELECT df.start('SELECT 1')").fetchone()[0]
            conn.execute("SELECT df.setvar('v', '1')")
    finally:
        with db.connect() as conn:
            conn.execute("SELECT df.revoke_usage('public')")
    assert not db.scalar("SELECT has_schema_privilege(%s, 'df', 'USAGE')", (nobody,))
    assert (db.scalar(public_acl), db.scalar(view_acl)) == before
    with db.connect("dftui_alice") as conn:  # granted by name: unaffected
        assert conn.execute("SELECT df.start('SELECT 1')").fetchone()[0]
