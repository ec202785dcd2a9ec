"""The df surface is pg_durable 0.2.6's: every public function with the same argument names,
defaults, result columns and STRICT-ness; the same default privileges (schema USAGE is the
gate); pg_durable's readiness/epoch tables; and the small compatibility functions.

PG_DURABLE_FUNCTIONS is pg_durable 0.2.6's public function catalog (src/lib.rs and the sql/
upgrade scripts of microsoft/pg_durable), as pg_get_function_arguments / _result print it. Each
test runs as an ordinary role, on every test server (PostgreSQL 18 and 15).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from tests.support import ALICE, running_engine, wait_for, wait_terminal

# (identity signature, arguments with defaults, result, STRICT)
PG_DURABLE_FUNCTIONS = [
    ('as(fut text, name text)',
     'fut text, name text',
     'text', True),
    ('as_op(fut text, name text)',
     'fut text, name text',
     'text', False),
    ('await_instance(instance_id text, timeout_seconds integer)',
     'instance_id text, timeout_seconds integer DEFAULT 30',
     'text', True),
    ('break(value text)',
     'value text DEFAULT NULL::text',
     'text', False),
    ('cancel(instance_id text, reason text)',
     "instance_id text, reason text DEFAULT 'Cancelled by user'::text",
     'text', True),
    ('clearvars()',
     '',
     'text', True),
    ('duroxide_schema()',
     '',
     'text', False),
    ('explain(input text)',
     'input text',
     'text', True),
    ('getvar(name text)',
     'name text',
     'text', True),
    ('grant_usage(p_role text, include_http boolean, with_grant boolean)',
     'p_role text, include_http boolean DEFAULT false, with_grant boolean DEFAULT false',
     'void', False),
    ('http(url text, method text, body text, headers jsonb, timeout_seconds integer)',
     "url text, method text DEFAULT 'POST'::text, body text DEFAULT NULL::text, headers jsonb DEFAULT NULL::jsonb, timeout_seconds integer DEFAULT 30",
     'text', False),
    ('http_multipart(url text, method text, parts jsonb, headers jsonb, timeout_seconds integer)',
     "url text, method text DEFAULT 'POST'::text, parts jsonb DEFAULT NULL::jsonb, headers jsonb DEFAULT NULL::jsonb, timeout_seconds integer DEFAULT 30",
     'text', False),
    ('if(condition text, then_branch text, else_branch text)',
     'condition text, then_branch text, else_branch text',
     'text', True),
    ('if_else_op(partial_if text, else_branch text)',
     'partial_if text, else_branch text',
     'text', False),
    ('if_rows(result_name text, then_branch text, else_branch text)',
     'result_name text, then_branch text, else_branch text',
     'text', True),
    ('if_then_op(condition text, then_branch text)',
     'condition text, then_branch text',
     'text', False),
    ('instance_executions(instance_id text, limit_count integer)',
     'instance_id text, limit_count integer DEFAULT 5',
     'TABLE(execution_id bigint, status text, event_count bigint, duration_ms bigint, output text)', True),
    ('instance_info(instance_id text)',
     'instance_id text',
     'TABLE(instance_id text, label text, function_name text, function_version text, current_execution_id bigint, status text, output text)', True),
    ('instance_nodes(instance_id_param text)',
     'instance_id_param text',
     'TABLE(node_id text, node_type text, query text, result_name text, left_node text, right_node text, status text, result text, status_details text, inferred_status text, inferred_status_from_ancestor_id text, updated_at timestamp with time zone)', True),
    ('instance_nodes(instance_id_param text, _last_n_executions integer)',
     'instance_id_param text, _last_n_executions integer',
     'TABLE(execution_id bigint, node_id text, node_type text, query text, result_name text, left_node text, right_node text, status text, result text, updated_at timestamp with time zone)', True),
    ('join(a text, b text)',
     'a text, b text',
     'text', True),
    ('join3(a text, b text, c text)',
     'a text, b text, c text',
     'text', True),
    ('list_instances(status_filter text, limit_count integer)',
     'status_filter text DEFAULT NULL::text, limit_count integer DEFAULT 100',
     'TABLE(instance_id text, label text, function_name text, status text, execution_count bigint, output text)', False),
    ('list_instances(status_filter text, limit_count integer, label_filter text, after_cursor text)',
     'status_filter text, limit_count integer, label_filter text, after_cursor text DEFAULT NULL::text',
     'TABLE(instance_id text, label text, function_name text, status text, execution_count bigint, output text, created_at timestamp with time zone, completed_at timestamp with time zone, next_cursor text)', False),
    ('loop(body text, condition text)',
     'body text, condition text DEFAULT NULL::text',
     'text', False),
    ('loop_prefix_op(body text)',
     'body text',
     'text', False),
    ('metrics()',
     '',
     'TABLE(total_instances bigint, running_instances bigint, completed_instances bigint, failed_instances bigint, total_executions bigint, total_events bigint)', True),
    ('race(a text, b text)',
     'a text, b text',
     'text', True),
    ('result(instance_id text)',
     'instance_id text',
     'text', True),
    ('revoke_usage(p_role text)',
     'p_role text',
     'void', False),
    ('run(instance_id text)',
     'instance_id text DEFAULT NULL::text',
     'text', False),
    ('seq(a text, b text)',
     'a text, b text',
     'text', True),
    ('setvar(name text, value text)',
     'name text, value text',
     'text', True),
    ('signal(instance_id text, signal_name text, signal_data text)',
     "instance_id text, signal_name text, signal_data text DEFAULT '{}'::text",
     'text', True),
    ('sleep(seconds bigint)',
     'seconds bigint',
     'text', True),
    ('sql(query text)',
     'query text',
     'text', True),
    ('start(fut text, label text, database text, transaction_mode text)',
     "fut text, label text DEFAULT NULL::text, database text DEFAULT NULL::text, transaction_mode text DEFAULT 'caller'::text",
     'text', False),
    ('status(instance_id text)',
     'instance_id text',
     'text', True),
    ('target_database()',
     '',
     'text', True),
    ('unsetvar(name text)',
     'name text',
     'text', True),
    ('version()',
     '',
     'text', True),
    ('wait_for_completion(instance_id text, timeout_seconds integer)',
     'instance_id text, timeout_seconds integer DEFAULT 30',
     'text', True),
    ('wait_for_schedule(cron_expr text)',
     'cron_expr text',
     'text', True),
    ('wait_for_signal(name text, timeout_seconds integer)',
     'name text, timeout_seconds integer DEFAULT NULL::integer',
     'text', False),
]

# pg_durable revokes PUBLIC EXECUTE on these (fresh 0.2.6 install); df.grant_usage grants them.
SENSITIVE = {"http", "http_multipart", "grant_usage", "revoke_usage", "metrics"}

# pg_durable USER_GUIDE, "Equivalent manual grants": everything an application role needs.
MANUAL_GRANTS = [
    "GRANT USAGE ON SCHEMA df TO {role}",
    "GRANT SELECT ON df.instances TO {role}",
    "GRANT UPDATE (status, updated_at) ON df.instances TO {role}",
    "GRANT SELECT ON df.nodes TO {role}",
    "GRANT INSERT (id, label, root_node, submitted_by, database) ON df.instances TO {role}",
    "GRANT INSERT (id, instance_id, node_type, query, result_name, left_node, right_node,"
    " submitted_by, database) ON df.nodes TO {role}",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON df.vars TO {role}",
]


@pytest.fixture
def manual_role(db) -> Iterator[str]:
    """A LOGIN role given exactly pg_durable's manual grants (no df.grant_usage)."""
    role = f"dftui_manual_{uuid.uuid4().hex[:6]}"
    with db.connect() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        for grant in MANUAL_GRANTS:
            conn.execute(sql.SQL(grant).format(role=sql.Identifier(role)))
    yield role
    with db.connect() as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _catalog(db) -> dict[str, tuple[str, str, bool]]:
    with db.connect(ALICE) as conn:
        rows = conn.execute(
            "SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',"
            " pg_get_function_arguments(p.oid), pg_get_function_result(p.oid), p.proisstrict"
            " FROM pg_proc p WHERE p.pronamespace = 'df'::regnamespace").fetchall()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


@pytest.mark.parametrize(("signature", "arguments", "result", "strict"), PG_DURABLE_FUNCTIONS,
                         ids=[f[0].split("(")[0] + f"/{f[0].count(',') + 1}" for f in PG_DURABLE_FUNCTIONS])
def test_function_matches_pg_durable(db, signature, arguments, result, strict) -> None:
    catalog = _catalog(db)
    assert signature in catalog, f"df.{signature} is missing"
    assert catalog[signature] == (arguments, result, strict)


def test_no_pg_durable_name_has_an_extra_overload(db) -> None:
    """A dftui-only overload of a pg_durable name would make pg_durable's calls ambiguous or
    resolve elsewhere (df.start with a fifth argument did)."""
    names = {f[0].split("(")[0] for f in PG_DURABLE_FUNCTIONS}
    expected = {f[0] for f in PG_DURABLE_FUNCTIONS}
    extra = [sig for sig in _catalog(db) if sig.split("(")[0] in names and sig not in expected]
    assert extra == []


def test_df_start_resolves_by_pg_durable_signature(db, manual_role) -> None:
    with db.connect() as conn:
        assert conn.execute("SELECT 'df.start(text, text, text, text)'::regprocedure::text").fetchone()[0] \
            == "df.start(text,text,text,text)"
        conn.execute("REVOKE EXECUTE ON FUNCTION df.start(text, text, text, text) FROM PUBLIC")
        assert conn.execute("SELECT has_function_privilege(%s, 'df.start(text, text, text, text)',"
                            " 'EXECUTE')", (manual_role,)).fetchone()[0] is False
        conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION df.start(text, text, text, text) TO {}")
                     .format(sql.Identifier(manual_role)))
    with db.connect(manual_role) as conn:
        iid = conn.execute("SELECT df.start(fut => 'SELECT 1', label => 'named',"
                           " transaction_mode => 'caller')").fetchone()[0]
        assert conn.execute("SELECT label FROM df.instances WHERE id = %s", (iid,)).fetchone()[0] == "named"


def test_named_argument_calls_use_pg_durable_names(db) -> None:
    with db.connect(ALICE) as conn:
        iid = conn.execute("SELECT df.start(df.wait_for_signal(name => 'go', timeout_seconds => 60))"
                           ).fetchone()[0]
        assert conn.execute("SELECT instance_id FROM df.instance_info(instance_id => %s)",
                            (iid,)).fetchone()[0] == iid
        assert conn.execute("SELECT count(*) FROM df.instance_nodes(instance_id_param => %s)",
                            (iid,)).fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM df.instance_executions(instance_id => %s,"
                            " limit_count => 1)", (iid,)).fetchone()[0] == 1
        assert conn.execute("SELECT df.signal(instance_id => %s, signal_name => 'go',"
                            " signal_data => '{}')", (iid,)).fetchone()[0] == "OK"
        assert conn.execute("SELECT df.wait_for_schedule(cron_expr => '*/5 * * * *') IS NOT NULL"
                            ).fetchone()[0]
        assert conn.execute("SELECT df.cancel(instance_id => %s, reason => 'r')", (iid,)).fetchone()[0]
        assert conn.execute("SELECT count(*) FROM df.list_instances(status_filter => 'cancelled',"
                            " limit_count => 5, label_filter => NULL, after_cursor => NULL)"
                            ).fetchone()[0] == 1
    with db.connect() as conn:
        conn.execute("SELECT df.revoke_usage(p_role => 'dftui_carol')")
        conn.execute("SELECT df.grant_usage(p_role => 'dftui_carol', include_http => false,"
                     " with_grant => false)")
        conn.execute("SELECT df.revoke_usage(p_role => 'dftui_carol')")


def test_strict_functions_return_null_for_null(db) -> None:
    strict = [f for f in PG_DURABLE_FUNCTIONS if f[3] and "," not in f[0] and "()" not in f[0]]
    with db.connect(ALICE) as conn:
        for signature, _, result, _ in strict:
            if result.startswith("TABLE"):
                got = conn.execute(f"SELECT count(*) FROM df.{signature.split('(')[0]}(NULL)").fetchone()[0]
                assert got == 0, signature
            else:
                got = conn.execute(f"SELECT df.{signature.split('(')[0]}(NULL)").fetchone()[0]
                assert got is None, signature
        assert conn.execute("SELECT df.cancel('deadbeef', NULL)").fetchone()[0] is None
        assert conn.execute("SELECT df.if('SELECT true', 'SELECT 1', NULL)").fetchone()[0] is None


def test_result_types_are_pg_durable_s(db) -> None:
    """bigint execution ids, text output/result/status_details (checked by value, not only by
    catalog): a monitoring query written for pg_durable reads them unchanged."""
    with db.connect(ALICE) as conn:
        iid = conn.execute("SELECT df.start('SELECT 1 AS x')").fetchone()[0]
        cur = conn.execute("SELECT execution_count, output FROM df.list_instances()")
        assert [c.type_code for c in cur.description] == [20, 25]  # int8, text
        cur = conn.execute("SELECT current_execution_id, output FROM df.instance_info(%s)", (iid,))
        assert [c.type_code for c in cur.description] == [20, 25]
        cur = conn.execute("SELECT result, status_details FROM df.instance_nodes(%s)", (iid,))
        assert [c.type_code for c in cur.description] == [25, 25]
        cur = conn.execute("SELECT execution_id, output FROM df.instance_executions(%s)", (iid,))
        assert [c.type_code for c in cur.description] == [20, 25]


def test_public_privileges_match_pg_durable(db, manual_role) -> None:
    """Schema USAGE is the gate: ordinary functions keep PUBLIC EXECUTE, the sensitive ones do
    not; a role without USAGE cannot reach any of them."""
    with db.connect() as conn:
        for signature, *_ in PG_DURABLE_FUNCTIONS:
            name = signature.split("(")[0]
            oid = conn.execute(
                "SELECT p.oid FROM pg_proc p WHERE p.pronamespace = 'df'::regnamespace AND"
                " p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' = %s",
                (signature,)).fetchone()[0]
            public = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_proc p, aclexplode(coalesce(p.proacl,"
                " acldefault('f', p.proowner))) a WHERE p.oid = %s AND a.grantee = 0"
                " AND a.privilege_type = 'EXECUTE')", (oid,)).fetchone()[0]
            assert public is (name not in SENSITIVE), signature
            assert conn.execute("SELECT has_function_privilege(%s, %s, 'EXECUTE')",
                                (manual_role, oid)).fetchone()[0] is (name not in SENSITIVE), signature
    with db.connect("dftui_carol") as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT df.sql('SELECT 1')")


def test_compatibility_functions(db) -> None:
    with db.connect(ALICE) as conn:
        assert conn.execute("SELECT df.target_database() = current_database()").fetchone()[0] is True
        assert conn.execute("SELECT df.run()").fetchone()[0] == "Triggered run for all pending instances"
        assert conn.execute("SELECT df.run('abcd1234')").fetchone()[0] == "Triggered run for instance: abcd1234"
        assert conn.execute("SELECT df.as_op('SELECT 1', 'x') = df.as('SELECT 1', 'x')").fetchone()[0]
        assert conn.execute("SELECT 'SELECT 1' |=> 'x' = df.as_op('SELECT 1', 'x')").fetchone()[0]
        iid = conn.execute("SELECT df.start('SELECT 1' ~> 'SELECT 2')").fetchone()[0]
        legacy = conn.execute("SELECT execution_id, node_type, result FROM"
                              " df.instance_nodes(%s, 5) ORDER BY node_type", (iid,)).fetchall()
        assert legacy == [(1, "SQL", None), (1, "SQL", None), (1, "THEN", None)]


def test_readiness_and_epoch_tables_as_pg_durable_polls_them(db) -> None:
    """pg_durable's e2e setup waits with exactly this query (as a superuser) before it runs
    anything; df._worker_epoch.epoch_id is a uuid."""
    poll = ("SELECT EXISTS(SELECT 1 FROM information_schema.tables WHERE table_schema = %s"
            " AND table_name = '_worker_ready')")
    with db.connect() as conn:
        schema = conn.execute("SELECT df.duroxide_schema()").fetchone()[0]
        assert conn.execute(poll, (schema,)).fetchone()[0] is True
        ready = sql.SQL("SELECT EXISTS(SELECT 1 FROM {}._worker_ready WHERE schema_version >= 1)"
                        ).format(sql.Identifier(schema))
        assert conn.execute(ready).fetchone()[0] is False  # no engine yet
        assert conn.execute("SELECT atttypid::regtype::text FROM pg_attribute WHERE attrelid ="
                            " 'df._worker_epoch'::regclass AND attname = 'epoch_id'").fetchone()[0] == "uuid"
    with running_engine(db.dsn()), running_engine(db.dsn()):
        with db.connect() as conn:
            assert conn.execute(ready).fetchone()[0] is True
            rows = conn.execute(sql.SQL("SELECT sentinel, schema_version FROM {}._worker_ready")
                                .format(sql.Identifier(schema))).fetchall()
            assert rows == [(True, 1)]  # one sentinel row, however many engines
            assert conn.execute("SELECT count(DISTINCT epoch_id) FROM df._worker_epoch").fetchone()[0] == 2
        with db.connect(ALICE) as conn:
            iid = conn.execute("SELECT df.start('SELECT 1')").fetchone()[0]
        assert wait_terminal(db, iid) == "completed"


def test_a_role_with_only_the_manual_grants_can_use_df(db, manual_role) -> None:
    """pg_durable's USER_GUIDE says its manual grants are all a role needs; so here."""
    with running_engine(db.dsn()), db.connect(manual_role) as conn:
        conn.execute("SELECT df.setvar('who', 'manual')")
        done = conn.execute("SELECT df.start('SELECT ''{who}'' AS who', 'manual')").fetchone()[0]
        assert conn.execute("SELECT df.await_instance(%s, 60)", (done,)).fetchone()[0] == "completed"
        assert '"manual"' in conn.execute("SELECT df.result(%s)", (done,)).fetchone()[0]
        waiting = conn.execute("SELECT df.start(df.wait_for_signal('go') ~> 'SELECT 1')").fetchone()[0]
        wait_for(lambda: conn.execute("SELECT inferred_status FROM df.instance_nodes(%s)"
                                      " WHERE node_type = 'SIGNAL'", (waiting,)).fetchone()[0] == "running",
                 what="the signal wait")
        assert conn.execute("SELECT df.signal(%s, 'go')", (waiting,)).fetchone()[0] == "OK"
        assert conn.execute("SELECT df.await_instance(%s, 60)", (waiting,)).fetchone()[0] == "completed"
        stopped = conn.execute("SELECT df.start(df.sleep(3600))").fetchone()[0]
        assert conn.execute("SELECT df.cancel(%s)", (stopped,)).fetchone()[0]
        assert conn.execute("SELECT df.status(%s)", (stopped,)).fetchone()[0] == "cancelled"
        listed = conn.execute("SELECT instance_id, status FROM df.list_instances()").fetchall()
        assert {r[0] for r in listed} == {done, waiting, stopped}
        assert conn.execute("SELECT status FROM df.instance_info(%s)", (done,)).fetchone()[0] == "completed"
        assert conn.execute("SELECT count(*) FROM df.instance_executions(%s)", (done,)).fetchone()[0] == 1
        assert "SQL" in conn.execute("SELECT df.explain(%s)", (done,)).fetchone()[0]


def _dblink_available(db) -> bool:
    return bool(db.scalar("SELECT count(*) FROM pg_available_extensions WHERE name = 'dblink'"))


def test_dblink_is_installed_where_users_expect_it(db) -> None:
    """Never dftui's private copy: a user's CREATE EXTENSION IF NOT EXISTS dblink is then a
    no-op, so dblink(...) must already be on the default search_path (schema public)."""
    if not _dblink_available(db):
        pytest.skip("dblink is not available on this server")
    assert db.scalar("SELECT extnamespace::regnamespace::text FROM pg_extension"
                     " WHERE extname = 'dblink'") == "public"
    with db.connect(ALICE) as conn:
        assert conn.execute("SELECT dblink_get_connections()").fetchone()[0] is None
        iid = conn.execute("SELECT df.start('SELECT 1', transaction_mode => 'new')").fetchone()[0]
    assert db.scalar("SELECT count(*) FROM df.instances WHERE id = %s", (iid,)) == 1


def test_an_existing_dblink_stays_where_it_is(empty_db) -> None:
    from engine import schema

    if not _dblink_available(empty_db):
        pytest.skip("dblink is not available on this server")
    with empty_db.connect() as conn:
        conn.execute("CREATE SCHEMA ext")
        conn.execute("CREATE EXTENSION dblink SCHEMA ext")
        schema.install(conn)
        conn.execute("SET client_min_messages = warning")
        conn.execute("SELECT df.grant_usage('dftui_alice')")
        assert conn.execute("SELECT extnamespace::regnamespace::text FROM pg_extension"
                            " WHERE extname = 'dblink'").fetchone()[0] == "ext"
    with empty_db.connect(ALICE) as conn:
        iid = conn.execute("SELECT df.start('SELECT 1', transaction_mode => 'new')").fetchone()[0]
    assert empty_db.scalar("SELECT count(*) FROM df.instances WHERE id = %s", (iid,)) == 1
