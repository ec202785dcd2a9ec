"""dftui.timings on hand-built rows: a wait's attempts start when the wait was reached."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dftui.client.models import Attempt, InstanceDetail, NodeInfo
from dftui.timings import fix_timings, number_attempts

T0 = datetime(2026, 12, 4, 1, 19, 36, tzinfo=UTC)


def _node(node_id: str, node_type: str, query: str | None, start: datetime, end: datetime | None,
          attempts: list[Attempt], left: str | None = None) -> NodeInfo:
    return NodeInfo(id=node_id, node_type=node_type, query=query, result_name=None,
                    left_node=left, right_node=None, status="completed", result=None,
                    status_details=None, inferred_status="completed", inferred_from=None,
                    updated_at=end, started_at=start, finished_at=end, attempt_history=attempts)


def _attempt(node_id: str, n: int, start: datetime, end: datetime) -> Attempt:
    return Attempt(node_id=node_id, attempt=n, status="completed", started_at=start,
                   finished_at=end, error=None, ran_sql=None)


def test_a_sleeps_attempt_spans_its_wait():
    """df.sleep(4): node and attempt were recorded as starting when the timer fired (4s 1ms
    before the fix of the node, '1ms' for the attempt)."""
    fired, done = T0 + timedelta(seconds=4), T0 + timedelta(seconds=4, milliseconds=1)
    sleep = _node("s", "SLEEP", "4", fired, done, [_attempt("s", 1, fired, done)])
    detail = InstanceDetail(id="i", label=None, status="completed", submitted_by="alice",
                            database=None, root_node="s", created_at=T0, updated_at=done,
                            completed_at=done, output=None, started_at=T0, finished_at=done)
    parents: dict[str, tuple[str | None, str | None]] = {"s": (None, None)}
    number_attempts([sleep], parents)
    fix_timings(detail, [sleep], parents)
    assert sleep.started_at == T0
    assert sleep.attempt_history[0].started_at == T0
    assert sleep.attempt_history[0].finished_at == done


def test_a_repeated_waits_attempts_start_after_the_one_before():
    """A WAIT_SCHEDULE fired three times: each attempt began when the one before it ended."""
    fires = [T0 + timedelta(minutes=m) for m in (1, 2, 3)]
    attempts = [_attempt("w", 1, f, f + timedelta(milliseconds=1)) for f in fires]
    last_activation = fires[1] + timedelta(seconds=5)
    wait = _node("w", "WAIT_SCHEDULE", "* * * * *", last_activation,
                 fires[2] + timedelta(milliseconds=1), attempts)
    detail = InstanceDetail(id="i", label=None, status="running", submitted_by="alice",
                            database=None, root_node="w", created_at=T0, updated_at=fires[2],
                            completed_at=None, output=None, started_at=T0)
    parents: dict[str, tuple[str | None, str | None]] = {"w": (None, None)}
    number_attempts([wait], parents)
    fix_timings(detail, [wait], parents)
    starts = [a.started_at for a in wait.attempt_history]
    assert starts[0] == T0  # reached with the instance's start
    assert starts[1] == attempts[0].finished_at
    assert starts[2] == attempts[1].finished_at
    assert all(a.started_at <= a.finished_at for a in wait.attempt_history)
