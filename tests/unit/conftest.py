"""The unit layer: pure logic, no PostgreSQL, no Textual app — runs in seconds (`pytest tests/unit`).

Every test collected here is marked `unit`, and asking for a database fixture (anything built on
`pg_server`) is a collection error, so a test that needs a server cannot slip into this layer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dftui.client import NodeInfo

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if not item.path.is_relative_to(HERE):
            continue
        item.add_marker(pytest.mark.unit)
        if "pg_server" in getattr(item, "fixturenames", ()):
            raise pytest.UsageError(
                f"{item.nodeid} uses a database fixture; tests/unit is for pure logic only")


@pytest.fixture
def node() -> Callable[..., NodeInfo]:
    """Build a NodeInfo the way Client.nodes returns one, without a database."""

    def make(id: str, node_type: str, query: str | None = None, *, left: str | None = None,
             right: str | None = None, status: str = "pending", inferred: str | None = None,
             result_name: str | None = None, **extra: Any) -> NodeInfo:
        return NodeInfo(id=id, node_type=node_type, query=query, result_name=result_name,
                        left_node=left, right_node=right, status=status, result=None,
                        status_details=None, inferred_status=inferred or status,
                        inferred_from=None, updated_at=None, **extra)

    return make
