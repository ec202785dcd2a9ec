"""Everything the tests share, in one package (tests/conftest.py holds only the fixtures).

- `cluster`: the servers, per-test databases and the standard roles (ALICE, BOB, ...).
- `engine`: an in-process engine, starting instances, waiting for them, reading their rows.
- `wait`: the one polling loop (`wait_for`, and `wait_for_app` for a running Textual app).
- `attack`: the attack suites' hostile schema, witness and the two engine modes.
- `tui`: seeded instances and a connected app for the TUI tests.
- `poison_crash`: an engine process that dies on a marked step (`python -m tests.support.poison_crash`).

The names most tests use are re-exported here: `from tests.support import start, wait_terminal`.
Test modules import from this package only, never from each other or from a conftest
(tests/unit/test_test_layout.py checks it).
"""

from tests.support.attack import (
    ENGINE_ROLE,
    SUBMITTERS,
    assert_no_escalation,
    counters,
    engine_in_mode,
    engine_user,
    prepare_attacker,
    reset_attacker,
    setup_engine_owner,
)
from tests.support.cluster import (
    ALICE,
    ALL_ROLES,
    BOB,
    CAROL,
    DAVE,
    GRANTED_ROLES,
    QUOTED,
    Server,
    TestDB,
    error_of,
    password_role,
    prepare_app,
)
from tests.support.engine import (
    errors,
    nested_loops,
    node_rows,
    root_result,
    running_engine,
    start,
    wait_terminal,
)
from tests.support.wait import wait_for, wait_for_app

__all__ = [
    "ALICE", "ALL_ROLES", "BOB", "CAROL", "DAVE", "ENGINE_ROLE", "GRANTED_ROLES", "QUOTED",
    "SUBMITTERS", "Server", "TestDB", "assert_no_escalation", "counters", "engine_in_mode",
    "engine_user", "error_of", "errors", "nested_loops", "node_rows", "password_role", "prepare_app", "prepare_attacker",
    "reset_attacker",
    "root_result", "running_engine", "setup_engine_owner", "start", "wait_for", "wait_for_app",
    "wait_terminal",
]
