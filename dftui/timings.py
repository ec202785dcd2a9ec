"""True node timings and distinct attempt numbers, derived from what the backend records.

Why this exists: the engine's per-node row (df.node_runs) keeps the start of the *last claim*
(a SLEEP's start moves to when its timer fired), a LOOP's start is reset at every iteration, an
unfinished node of a cancelled instance has no end, and attempt numbers restart at 1 after a
df.retry and carry no loop iteration for steps nested in a loop body. Operators need the real
span of each node (inside its instance's) and every attempt told apart, so this module rebuilds
them from the graph's semantics: a node is activated when its predecessor finishes (THEN), when
its parent starts (THEN's first step, JOIN/RACE branches, a LOOP body, an IF condition) or when
its IF's condition finishes (then/else). Pure functions over client dataclasses; no database.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from dftui.client.models import Attempt, InstanceDetail, NodeInfo, parse_ts
from dftui.vocabulary import TERMINAL_STATUSES

WAITS = frozenset({"SLEEP", "WAIT_SCHEDULE", "SIGNAL"})


def instance_end(detail: InstanceDetail, nodes: list[NodeInfo]) -> datetime | None:
    """When a finished instance really ended: its recorded end, or a node's later end (a step's
    checkpoint is stamped after the instance's end inside the same transaction)."""
    if detail.status not in TERMINAL_STATUSES:
        return None
    ends = [n.finished_at for n in nodes if n.finished_at is not None]
    recorded = detail.finished_at or detail.completed_at or detail.updated_at
    return max([recorded, *ends]) if ends else recorded


def fix_timings(detail: InstanceDetail, nodes: list[NodeInfo],
                parents: dict[str, tuple[str | None, str | None]]) -> None:
    """Correct each node's started_at/finished_at in place (see the module docstring).

    `parents` maps node id -> (parent id, slot) from df.node_runs."""
    by_id = {n.id: n for n in nodes}
    start = detail.started_at or detail.created_at
    end = instance_end(detail, nodes)
    for node in nodes:
        if node.node_type == "LOOP" and node.loop_iterations:
            began = [t for t in (_ts(it.get("started_at")) for it in node.loop_iterations)
                     if t is not None]
            first = min(began, default=None)
            if first is not None and (node.started_at is None or first < node.started_at):
                node.started_at = first
    for node in nodes:
        # Only waits move their start back to when they were reached: waiting is their work.
        # A SQL/HTTP step keeps its execution start (time in the queue is not its run time).
        if node.node_type not in WAITS or node.started_at is None:
            continue
        candidates = [_activation(node, by_id, parents, start)]
        if node.node_type == "SLEEP" and node.finished_at is not None:
            # A timer cannot fire before its seconds have passed (exact when it fired on time).
            candidates.append(node.finished_at - _seconds(node.query))
        for candidate in candidates:
            if candidate is not None and start <= candidate < node.started_at:
                node.started_at = candidate
    for node in nodes:
        if node.node_type in WAITS:
            _fix_wait_attempts(node, _enclosing_loop(node.id, by_id, parents))
    # A composite spans its children (after a df.retry its own start is the retry's).
    for node in nodes:
        parent_id = parents.get(node.id, (None, None))[0]
        seen: set[str] = set()
        while parent_id is not None and parent_id not in seen and node.started_at is not None:
            seen.add(parent_id)
            parent = by_id.get(parent_id)
            if parent is None:
                break
            if parent.started_at is None or node.started_at < parent.started_at:
                parent.started_at = node.started_at
            if parent.finished_at is not None and node.finished_at is not None \
                    and node.finished_at > parent.finished_at:
                parent.finished_at = node.finished_at
            parent_id = parents.get(parent_id, (None, None))[0]
    for node in nodes:
        if node.started_at is not None and node.started_at < start:
            node.started_at = start
        if end is not None and node.started_at is not None and node.finished_at is None:
            node.finished_at = end  # stopped with its instance: no longer counting
            node.stopped_with_instance = True
        if end is not None and node.finished_at is not None and node.finished_at > end:
            node.finished_at = end


def _fix_wait_attempts(node: NodeInfo, loop: NodeInfo | None) -> None:
    """A wait's attempt is recorded as starting when its timer fired or its signal came (a
    SLEEP(4)'s attempt read 'started 01:19:40, took 1ms'): it began when the wait was reached.
    That is the latest known moment before the recorded start among: the node's (last)
    activation, the end of the attempt before it, the start of the loop iteration it belongs
    to. A start only ever moves back."""
    previous_end: datetime | None = None
    for attempt in node.attempt_history:
        if attempt.kind == "retry" or attempt.started_at is None:
            continue
        recorded = attempt.started_at
        known = [t for t in (node.started_at, previous_end,
                             _iteration_start(loop, attempt.loop_iteration))
                 if t is not None and t < recorded]
        if known:
            attempt.started_at = max(known)
        previous_end = attempt.finished_at or previous_end


def _iteration_start(loop: NodeInfo | None, iteration: int | None) -> datetime | None:
    if loop is None or not iteration:
        return None
    for it in loop.loop_iterations:
        if int(it.get("iteration") or 0) == iteration:
            return _ts(it.get("started_at"))
    return None


def _activation(node: NodeInfo, by_id: dict[str, NodeInfo],
                parents: dict[str, tuple[str | None, str | None]],
                instance_start: datetime) -> datetime | None:
    parent_id, slot = parents.get(node.id, (None, None))
    if parent_id is None:
        return instance_start
    parent = by_id.get(parent_id)
    if parent is None:
        return None
    if parent.node_type == "THEN" and slot == "right":
        left = by_id.get(parent.left_node or "")
        return left.finished_at if left is not None else None
    if parent.node_type == "IF" and slot in ("left", "right"):
        condition = by_id.get(str(parent.config.get("condition_node") or ""))
        if condition is not None and condition.finished_at is not None:
            return condition.finished_at
    return parent.started_at


def number_attempts(nodes: list[NodeInfo],
                    parents: dict[str, tuple[str | None, str | None]]) -> None:
    """Give every attempt of every node a distinct place: `run` counts the node's attempts in
    time order across retries and iterations, `execution` is 1 + the df.retry calls before it,
    `loop_iteration` the iteration of the nearest enclosing LOOP when the attempt ran."""
    by_id = {n.id: n for n in nodes}
    for node in nodes:
        loop = _enclosing_loop(node.id, by_id, parents)
        execution, run = 1, 0
        for attempt in node.attempt_history:
            if attempt.kind == "retry":
                execution += 1
                continue
            run += 1
            attempt.run = run
            attempt.execution = execution
            if node.node_type == "LOOP":
                attempt.loop_iteration = attempt.iteration or None
            elif loop is not None:
                attempt.loop_iteration = attempt.iteration or _iteration_at(loop, attempt)


def _enclosing_loop(node_id: str, by_id: dict[str, NodeInfo],
                    parents: dict[str, tuple[str | None, str | None]]) -> NodeInfo | None:
    seen = set()
    current = parents.get(node_id, (None, None))[0]
    while current is not None and current not in seen:
        seen.add(current)
        parent = by_id.get(current)
        if parent is not None and parent.node_type == "LOOP":
            return parent
        current = parents.get(current, (None, None))[0]
    return None


def _iteration_at(loop: NodeInfo, attempt: Attempt) -> int | None:
    """The loop iteration running when `attempt` finished: an archived iteration whose span
    holds it, else the loop's current iteration."""
    when = attempt.finished_at or attempt.started_at
    if when is None:
        return None
    for it in loop.loop_iterations:
        began, ended = _ts(it.get("started_at")), _ts(it.get("finished_at"))
        if began is not None and began <= when and (ended is None or when <= ended):
            return int(it.get("iteration") or 0) or None
    return loop.iteration or None


def _seconds(query: str | None) -> timedelta:
    try:
        return timedelta(seconds=max(float(query or 0), 0.0))
    except ValueError:
        return timedelta(0)


def _ts(value: Any) -> datetime | None:
    return parse_ts(value)
