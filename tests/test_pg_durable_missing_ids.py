"""What every df function that takes an instance id answers for an id the caller cannot see,
as pg_durable 0.2.6 does (src/explain.rs, src/dsl.rs, src/monitoring.rs): another role's
instance answers exactly as an id that does not exist, so the answer reveals nothing.

As an ordinary role, on every test server (PostgreSQL 18 and 15).
"""

from __future__ import annotations

import psycopg
import pytest

from tests.support import ALICE, BOB, start

MISSING = "0badc0de"


@pytest.fixture
def ids(db):
    """(an id that exists nowhere, bob's instance), both invisible to alice."""
    return MISSING, start(db, BOB, "df.sleep(3600)")


def _answer(db, sql: str, iid: str):
    """Rows, or ('error', message) when the call raises, as alice."""
    with db.connect(ALICE) as conn:
        try:
            return conn.execute(sql, (iid,)).fetchall()
        except psycopg.Error as exc:
            return ("error", exc.diag.message_primary.replace(iid, "<id>"))


@pytest.mark.parametrize(("sql", "expected"), [
    # pg_durable's explain_instance: a text, not an error
    ("SELECT df.explain(%s)", [("Instance '<id>' not found",)]),
    ("SELECT df.explain('  ' || %s || E'\\n')", [("Instance '<id>' not found",)]),
    ("SELECT df.status(%s)", [(None,)]),
    ("SELECT df.result(%s)", [(None,)]),
    ("SELECT * FROM df.instance_info(%s)", []),
    ("SELECT * FROM df.instance_info(instance_id => %s)", []),
    ("SELECT * FROM df.instance_nodes(%s)", []),
    ("SELECT * FROM df.instance_nodes(%s, 3)", []),
    ("SELECT * FROM df.instance_executions(%s)", []),
    ("SELECT df.await_instance(%s, 1)", ("error", "Instance not found: <id>")),
    ("SELECT df.signal(%s, 'go')", ("error", "Instance not found or access denied: <id>")),
    ("SELECT df.cancel(%s)", ("error", "Instance not found or access denied: <id>")),
])
def test_an_invisible_id_answers_as_a_missing_one(db, ids, sql, expected):
    missing, foreign = ids
    got = {which: _answer(db, sql, iid) for which, iid in (("missing", missing), ("foreign", foreign))}
    if isinstance(expected, list) and expected and expected[0][0] and "<id>" in expected[0][0]:
        got = {k: [tuple(str(c).replace(iid, "<id>") for c in row) for row in v]
               if isinstance(v, list) else v
               for (k, v), iid in zip(got.items(), ids, strict=True)}
    assert got == {"missing": expected, "foreign": expected}
    # and nothing changed for bob
    assert db.scalar("SELECT status FROM df.instances WHERE id = %s", (foreign,)) == "pending"


def test_explain_of_a_visible_instance_still_draws_it(db):
    iid = start(db, ALICE, "'SELECT 1' ~> df.sleep(30)")
    text = db.scalar("SELECT df.explain(%s)", (iid,), role=ALICE)
    assert text.startswith(f"Instance: {iid}") and "SLEEP" in text
