"""scripts/pg_durable_e2e.py's verdicts: a least-privilege engine's refusals are labelled "owner"
in PostgreSQL 15's wording as in 16+'s, and nothing else is (pure logic, no server)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "pg_durable_e2e.py"


def _harness():
    spec = importlib.util.spec_from_file_location("pg_durable_e2e", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("pg_durable_e2e", module)
    spec.loader.exec_module(module)
    return module


E2E = _harness()


def outcome(excerpt: str, mode: str = "owner", name: str = "15_rls"):
    return E2E.Outcome("standard", name, False, excerpt, engine_mode=mode)


@pytest.mark.parametrize("excerpt", [
    # PostgreSQL 16+
    'ERROR:  must be able to SET ROLE "df_rls_alice"',
    "ERROR:  password or GSSAPI delegated credentials required",
    # PostgreSQL 15
    'ERROR:  must be member of role "df_rls_alice"',
    "ERROR:  password is required",
])
def test_owner_mode_refusals_in_either_wording_are_owner(excerpt):
    assert outcome(excerpt).label == "owner"
    assert outcome(excerpt).reason  # says why
    # the same failure from a superuser engine is a real failure
    assert outcome(excerpt, mode="superuser").label == "FAIL"


@pytest.mark.parametrize("excerpt", [
    "ERROR:  permission denied for table test_rls",
    "ERROR:  must be owner of table test_rls",
    "ERROR:  password authentication failed for user \"x\"",
    "TEST FAILED: expected completed, got failed",
])
def test_other_failures_of_an_owner_engine_stay_failures(excerpt):
    assert outcome(excerpt).label == "FAIL"


def test_a_refused_node_rewrite_in_17_is_the_known_difference_and_nothing_else_is():
    """17's test 3: a BYPASSRLS role rewrites another role's node rows, which dftui refuses."""
    refused = ("NOTICE:  TEST 2 PASSED\n"
               "ERROR:  Instance not found or access denied: 0a92c881")
    assert outcome(refused, "superuser", "17_superuser_guc").label == "known"
    assert "refuses any change to another role's node rows" in outcome(
        refused, "superuser", "17_superuser_guc").reason
    assert outcome("ERROR:  something else", "superuser", "17_superuser_guc").label == "FAIL"


def test_07s_wait_in_one_transaction_is_owner_in_df_await_instance_s_own_words():
    """The file-specific owner verdict matches the text df.await_instance gives now (pg_durable's
    'Timeout after 10s …'; the pattern still said '10 seconds' and 07 read FAIL)."""
    excerpt = ("ERROR:  Timeout after 10s waiting for instance aeb8ad35 (status: pending). "
               "Check if background worker is running.")
    assert outcome(excerpt, "owner", "07_signals").label == "owner"
    assert outcome(excerpt, "superuser", "07_signals").label == "FAIL"
