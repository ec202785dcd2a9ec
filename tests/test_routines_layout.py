"""sql/routines is where every live definition is: each function, view, trigger and policy of the
df schemas has exactly one definition there, in one file (docs/engine.md, "Schema
versions").

What a routines file defines is read from PostgreSQL itself, not parsed from the text: an event
trigger records the identity of every object each file creates (function signatures included),
while the file is applied over an installed schema exactly as engine/schema.py applies it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pytest

from dftui.vocabulary import COMPOSITE_NODE_TYPES, NODE_TYPES, STATUSES, TERMINAL_STATUSES
from engine import schema

ROUTINES = Path(schema.sql_root()) / "routines"
TAGS = ("CREATE FUNCTION", "CREATE PROCEDURE", "CREATE VIEW", "CREATE TRIGGER", "CREATE POLICY")
# Live objects deliberately defined outside sql/routines, and why.
ELSEWHERE = {
    # Written by engine/schema.py on every install: its body is the shipped migration level.
    "df_internal.schema_level()",
}

RECORDER = """
CREATE TABLE public.routine_defs (file text NOT NULL, tag text NOT NULL, identity text NOT NULL);
CREATE FUNCTION public.record_routine_defs() RETURNS event_trigger LANGUAGE plpgsql
SET search_path = pg_catalog, public AS $$
BEGIN
    -- Once per statement (CREATE OR REPLACE VIEW ... WITH (options) reports its view twice).
    INSERT INTO public.routine_defs (file, tag, identity)
    SELECT DISTINCT current_setting('dftui_test.file'), c.command_tag, c.object_identity
      FROM pg_event_trigger_ddl_commands() c
     WHERE c.command_tag = ANY (ARRAY[{tags}]);
END $$;
CREATE EVENT TRIGGER record_routine_defs ON ddl_command_end
    EXECUTE FUNCTION public.record_routine_defs();
"""

# Every live object of the df schemas, by the identity pg_event_trigger_ddl_commands reports.
LIVE = """
SELECT (pg_identify_object('pg_proc'::regclass, p.oid, 0)).identity
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname IN ('df', 'df_internal')
   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                      AND d.objid = p.oid AND d.deptype = 'e')
UNION ALL
SELECT (pg_identify_object('pg_class'::regclass, c.oid, 0)).identity
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname IN ('df', 'df_internal') AND c.relkind IN ('v', 'm')
UNION ALL
SELECT (pg_identify_object('pg_trigger'::regclass, t.oid, 0)).identity
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname IN ('df', 'df_internal') AND NOT t.tgisinternal
UNION ALL
SELECT (pg_identify_object('pg_policy'::regclass, p.oid, 0)).identity
  FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname IN ('df', 'df_internal')
"""


def record(conn, files: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Apply each (name, SQL text) as engine/schema.py applies routines; identity -> the names of
    the files (one entry per defining statement) that defined it."""
    conn.execute(RECORDER.format(tags=", ".join(f"'{t}'" for t in TAGS)))
    try:
        for name, text in files:
            with conn.transaction():
                conn.execute("SET LOCAL check_function_bodies = off")
                conn.execute("SET LOCAL client_min_messages = warning")
                conn.execute("SET LOCAL search_path = pg_catalog, pg_temp")
                conn.execute("SELECT set_config('dftui_test.file', %s, true)", (name,))
                conn.execute(text.encode())
    finally:
        conn.execute("DROP EVENT TRIGGER record_routine_defs")
    found: dict[str, list[str]] = defaultdict(list)
    for file, identity in conn.execute("SELECT file, identity FROM public.routine_defs"):
        found[identity].append(file)
    conn.execute("DROP TABLE public.routine_defs")
    conn.execute("DROP FUNCTION public.record_routine_defs()")
    return found


@pytest.fixture
def definitions(db) -> dict[str, list[str]]:
    with db.connect() as conn:
        return record(conn, [(p.name, p.read_text()) for p in sorted(ROUTINES.glob("*.sql"))])


def test_every_live_object_has_exactly_one_definition_in_routines(db, definitions):
    with db.connect() as conn:
        live = {row[0] for row in conn.execute(LIVE)}
    twice = {name: files for name, files in definitions.items() if len(files) > 1}
    assert twice == {}, f"defined more than once in sql/routines (keep the one live definition): {twice}"
    missing = sorted(live - set(definitions) - ELSEWHERE)
    assert missing == [], (
        "live only in sql/0.1.0 or a migration (move its current definition into the "
        "sql/routines file of its job):\n  " + "\n  ".join(missing))
    stale = sorted(set(definitions) - live)
    assert stale == [], "defined in sql/routines but not live after an install: " + ", ".join(stale)


def test_the_recorder_sees_every_kind_of_definition(definitions):
    # Guards the test above against a recorder that misses a kind of object (it would then call
    # every such object "missing", or, worse, see no twins).
    assert definitions["df.start(pg_catalog.text,pg_catalog.text,pg_catalog.text,pg_catalog.text)"] \
        == ["start.sql"]
    assert definitions["df.engines"] == ["monitoring.sql"]
    assert definitions["instances_after_update on df.instances"] == ["triggers.sql"]
    assert definitions["instances_owner on df.instances"] == ["policies.sql"]


def test_a_definition_in_two_files_is_seen_twice(db):
    # The check itself: the same CREATE OR REPLACE in a second file is recorded a second time.
    graph = (ROUTINES / "graph.sql").read_text()
    with db.connect() as conn:
        found = record(conn, [("graph.sql", graph), ("twin.sql", graph)])
    assert found["df_internal.subtree(character varying,character varying)"] == [
        "graph.sql", "twin.sql"]


def test_the_sql_vocabulary_agrees_with_the_python_one_and_the_table_checks(db):
    """sql/routines/00_vocabulary.sql and dftui/vocabulary.py are one vocabulary in two languages;
    the node types they know are the ones df.nodes accepts."""
    with db.connect() as conn:
        composite = {t for t in NODE_TYPES
                     if conn.execute("SELECT df_internal.is_composite(%s)", (t,)).fetchone()[0]}
        live = {s for s in STATUSES
                if conn.execute("SELECT df_internal.is_live(%s)", (s,)).fetchone()[0]}
        accepted = conn.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conname = 'nodes_node_type_check'").fetchone()[0]
        unknown = conn.execute("SELECT df_internal.is_composite('NOPE'), df_internal.has_config('SQL'),"
                               " df_internal.is_live(NULL)").fetchone()
    assert composite == COMPOSITE_NODE_TYPES
    assert live == set(STATUSES) - TERMINAL_STATUSES
    assert set(re.findall(r"'(\w+)'", accepted)) == NODE_TYPES
    assert unknown == (False, False, None)  # NULL in, NULL out: as the IN lists they replace
