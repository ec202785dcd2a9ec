"""Fixtures for the TUI tests (their seeding helpers and `make_app` are in tests/support/tui.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.cluster import Server, TestDB, scratch_database


@pytest.fixture
def snap_db(pg_server: Server, template_db: str) -> Iterator[TestDB]:
    """Like `db` but with a fixed name, because the header shows the database name."""
    with scratch_database(pg_server, "dftui_snapshot", template_db) as fresh:
        yield fresh
