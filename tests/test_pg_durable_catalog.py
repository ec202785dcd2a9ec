"""The df catalog against pg_durable 0.2.6's, object by object.

tests/fixtures/pg_durable_0_2_6_catalog.json is generated from pg_durable's own SQL by
scripts/pg_durable_catalog.py (its install and upgrade scripts loaded into a scratch database,
read back from pg_catalog): every df function (arguments with defaults, result, STRICT,
volatility, SECURITY DEFINER, PUBLIC EXECUTE), the DSL operators, the df tables' columns and
PUBLIC privileges, and PUBLIC USAGE on schema df. Here dftui's catalog, read the same way (by an
ordinary role), must match it; every object dftui has beyond it must be a documented addition
(named in docs/pg_durable.md) — so no difference goes unnoticed or undocumented.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scripts.pg_durable_catalog import catalog

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = json.loads((ROOT / "tests" / "fixtures" / "pg_durable_0_2_6_catalog.json").read_text())
DOC = (ROOT / "docs" / "pg_durable.md").read_text()
ALICE = "dftui_alice"

# pg_durable's Rust functions read what their caller may not (duroxide's history; the
# extension's version is compiled in); dftui's SQL equivalents do so as SECURITY DEFINER.
# Nothing a caller passes or sees changes.
DEFINER_DIFFERENCES = {
    "metrics()": "counts every role's instances, as pg_durable's does from duroxide",
    "version()": "reads the installed schema version from df_internal",
}

# dftui's additions in schema df (docs/pg_durable.md, "What dftui adds", names each one).
ADDED_FUNCTIONS = {
    "retry", "retry_policy", "start_with_retry", "graph_nodes", "set_role_limits",
    "_setting", "_role_name", "_mark_non_future_helper",
    "_refuse_non_future_helper", "ensure_durofut", "signal_loopback", "start_in_new_transaction",
    "step_activity", "cancel_step_backend", "terminate_step_backend", "instance_history",
    "_instance_status", "_file_instance_request",
}
ADDED_RELATIONS = {
    "engines", "instance_runtime", "loop_history", "node_attempt_history", "node_runs",
    "queue_depth", "retry_history", "role_limits", "step_rate", "stuck_instances",
    "waiting_instances", "_step_marker",
}


@pytest.fixture(scope="module")
def ours(pg_server, template_db) -> dict[str, Any]:
    """Read once per server, as an ordinary role, from the installed template (read only; the
    connection closes before any test database is cloned from it)."""
    with pg_server.connect_as(template_db, ALICE) as conn:
        return catalog(conn)


@pytest.mark.parametrize("signature", sorted(FIXTURE["functions"]))
def test_function_is_pg_durable_s(ours, signature) -> None:
    expected = dict(FIXTURE["functions"][signature])
    got = ours["functions"].get(signature)
    assert got is not None, f"df.{signature} is missing"
    if signature in DEFINER_DIFFERENCES:
        assert got["security_definer"], "documented as SECURITY DEFINER: update the list"
        expected["security_definer"] = True
    assert got == expected


def test_operators_are_pg_durable_s(ours) -> None:
    assert ours["operators"] == FIXTURE["operators"]


@pytest.mark.parametrize("name", sorted(FIXTURE["relations"]))
def test_table_is_pg_durable_s(ours, name) -> None:
    """Same columns, types and order (rows copy across with SELECT *), nothing for PUBLIC."""
    assert ours["relations"].get(name) == FIXTURE["relations"][name]


def test_schema_usage_is_the_gate(ours) -> None:
    assert ours["public_usage_on_df"] == FIXTURE["public_usage_on_df"] is False


def test_everything_else_is_a_documented_addition(ours) -> None:
    extra_functions = {s.split("(")[0] for s in ours["functions"]} - {
        s.split("(")[0] for s in FIXTURE["functions"]}
    assert extra_functions == ADDED_FUNCTIONS
    extra_overloads = [s for s in ours["functions"] if s not in FIXTURE["functions"]
                       and s.split("(")[0] not in ADDED_FUNCTIONS]
    assert extra_overloads == [], "a pg_durable name has an overload pg_durable lacks"
    extra_relations = set(ours["relations"]) - set(FIXTURE["relations"])
    assert extra_relations == ADDED_RELATIONS
    for name in sorted(ADDED_FUNCTIONS | ADDED_RELATIONS):
        assert f"df.{name}" in DOC, f"df.{name} is not named in docs/pg_durable.md"
    # Added views filter their rows to the caller: SELECT for PUBLIC, nothing else.
    for name in ADDED_RELATIONS:
        assert ours["relations"][name]["public"] in ("", "SELECT"), name
