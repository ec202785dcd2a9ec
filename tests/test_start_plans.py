"""df.start and the engine's checkpoints look rows up by key even on tables that VACUUM found
empty (a fresh install, a drained queue): PL/pgSQL's cached plans must not turn into sequential
scans that grow with the tables (sql/routines/zz_plans.sql)."""

from __future__ import annotations

from tests.support import ALICE

HOT_TABLES = ("instances", "nodes", "instance_state", "node_meta", "tasks", "node_attempts")


def vacuum_empty(db) -> None:
    with db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM df.instances").fetchone()[0] == 0
        conn.execute("VACUUM ANALYZE df.instances, df.nodes, df_internal.instance_state, "
                     "df_internal.node_meta, df_internal.tasks, df_internal.node_attempts")


def seq_scans_in_this_transaction(conn) -> dict[str, int]:
    rows = conn.execute("SELECT relname, seq_scan FROM pg_catalog.pg_stat_xact_user_tables "
                        "WHERE schemaname IN ('df', 'df_internal') AND relname = ANY(%s)",
                        (list(HOT_TABLES),)).fetchall()
    return {name: n for name, n in rows if n}


def test_starts_on_tables_vacuumed_empty_use_their_keys(db):
    vacuum_empty(db)
    with db.connect(ALICE, autocommit=False) as conn:
        for _ in range(40):  # past the 5 custom plans after which PL/pgSQL caches a generic one
            conn.execute("SELECT df.start('SELECT 1', 'cold')")
        assert seq_scans_in_this_transaction(conn) == {}
        conn.execute("SELECT df.start_with_retry('SELECT 1', '{\"max_attempts\": 2}', 'cold')")
        assert seq_scans_in_this_transaction(conn) == {}
        # the setting lives only inside the call
        assert conn.execute("SHOW enable_seqscan").fetchone()[0] == "on"
        conn.commit()
    assert db.scalar("SELECT count(*) FROM df_internal.tasks") == 41


def test_checkpoints_on_tables_vacuumed_empty_use_their_keys(db):
    """complete_task as the engine calls it (the claim itself is claim_tasks' business)."""
    vacuum_empty(db)
    with db.connect(ALICE) as conn:
        for _ in range(30):
            conn.execute("SELECT df.start('SELECT 1', 'cold')")
    with db.connect() as conn:
        tasks = conn.execute("SELECT instance_id, node_id, gen FROM df_internal.tasks").fetchall()
    with db.connect(autocommit=False) as conn:  # (a fresh session: no scan of ours counted)
        for task in tasks:
            verdict = conn.execute(
                "SELECT df_internal.complete_task(%s, %s, %s, '1'::jsonb, NULL, 'SELECT 1', "
                "'test', now())", task).fetchone()[0]
            assert verdict == "done"
        assert seq_scans_in_this_transaction(conn) == {}
        conn.commit()
    assert db.scalar("SELECT count(*) FROM df.instances WHERE status = 'completed'") == 30
