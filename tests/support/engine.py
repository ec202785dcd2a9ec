"""Running workflows in tests: an in-process engine, starting instances, waiting for them and
reading what they left (node rows, results, errors).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dftui.vocabulary import TERMINAL_STATUSES
from engine.config import EngineConfig
from engine.runner import Engine
from tests.support.wait import wait_for


@contextmanager
def running_engine(dsn: str, **overrides: Any) -> Iterator[Engine]:
    config = EngineConfig(dsn=dsn, concurrency=overrides.pop("concurrency", 4), poll_interval=1.0,
                          shutdown_grace=2.0, **overrides)
    engine = Engine(config)
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()


def start(db: Any, role: str | None, expr: str, *params: Any) -> str:
    """Run `SELECT df.start(<expr>)` as `role` and return the instance id."""
    with db.connect(role) as conn:
        return conn.execute(f"SELECT df.start({expr})", params or None).fetchone()[0]


def wait_terminal(db: Any, instance_id: str, timeout: float = 60.0) -> str:
    def status() -> str | None:
        value = db.scalar("SELECT status FROM df.instances WHERE id = %s", (instance_id,))
        return value if value in TERMINAL_STATUSES else None

    return wait_for(status, timeout, what=f"instance {instance_id} to finish")


def node_rows(db: Any, instance_id: str) -> list[dict[str, Any]]:
    with db.connect() as conn:
        cur = conn.execute(
            "SELECT id, node_type, query, result_name, status, result, error "
            "FROM df.nodes WHERE instance_id = %s ORDER BY created_at, id", (instance_id,))
        cols = [c.name for c in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def errors(db: Any, instance_id: str) -> str:
    """The instance's own error and every node error, joined — for assertion messages and
    `in` checks (an identity refused at the claim fails the instance before any node runs, as
    pg_durable does, so its reason is not on a node)."""
    own = db.scalar("SELECT error FROM df_internal.instance_state WHERE instance_id = %s",
                    (instance_id,))
    nodes = [n["error"] for n in node_rows(db, instance_id) if n["error"]]
    return " | ".join([*([own] if own else []), *nodes])


def root_result(db: Any, instance_id: str) -> Any:
    return db.scalar(
        "SELECT n.result FROM df.instances i JOIN df.nodes n "
        "ON n.instance_id = i.id AND n.id = i.root_node WHERE i.id = %s", (instance_id,))


def nested_loops(levels: int) -> str:
    """A chain of `levels` LOOP nodes around one SQL leaf: the leaf sits at depth `levels`."""
    return (
        '{"node_type":"LOOP","left_node":' * levels
        + '{"node_type":"SQL","query":"SELECT 1"}'
        + "}" * levels
    )
