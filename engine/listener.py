"""The listener: wake-ups and cancellations, on a connection of its own.

Any role can LISTEN on and NOTIFY any channel, so notifications are wake-up hints only: a
payload is never trusted (nor needed). On df_work a worker is woken. On df_cancel / df_abandon
the listener asks the database which of the steps running in this engine right now belong to an
instance that is no longer running or to a node generation that was fenced (abandoned race
branches, superseded loop iterations), and cancels exactly those (cancel_dead_steps, also run
by housekeeping every heartbeat: the database is the truth). A forged notification therefore
costs one cheap query; a malformed one nothing. The listener survives any error and reconnects.
A dedicated connection: sharing it with queries would delay notifications.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from engine.db import connect
from engine.keys import CHECK_CHANNELS, LISTENED_CHANNELS, WORK_CHANNEL

if TYPE_CHECKING:
    from engine.runner import Engine

log = logging.getLogger("dftui.engine")


def listen(engine: Engine) -> None:
    """The listener thread's body: until the engine stops."""
    backoff = 0.2
    while not engine.stopping:
        try:
            with connect(engine.config.dsn, "listen") as conn:
                for channel in LISTENED_CHANNELS:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                backoff = 0.2
                engine.wake(len(engine.workers))  # catch up on anything missed while away
                while not engine.stopping:
                    # the first notification promptly, then whatever else is queued already:
                    # a flood of (forged) notifications costs one check per round. (Polled,
                    # timeout 0: a 1 ms wait for more here delayed every wake-up by 1 ms or
                    # more, a third of an idle engine's start → done latency.)
                    notes = list(conn.notifies(timeout=1.0, stop_after=1))
                    if notes:
                        notes += list(conn.notifies(timeout=0))
                    check = False
                    work = False
                    for note in notes:
                        engine.metrics.notification(note.channel)
                        if note.channel == WORK_CHANNEL:
                            engine.wake(1)
                            work = True
                        elif note.channel in CHECK_CHANNELS:
                            check = True
                    if work:
                        engine.wake_blocked()
                    if check:
                        cancel_dead_steps(engine, conn)
        except Exception as exc:  # noqa: BLE001 - the listener must survive anything
            if engine.stopping:
                return
            engine.metrics.connection_error("listener")
            log.warning("listener: %s; reconnecting in %.1fs", exc, backoff)
            time.sleep(backoff)
            backoff = min(backoff * 2, 10.0)


def cancel_dead_steps(engine: Engine, conn: psycopg.Connection) -> int:
    """Cancel the running steps of this engine whose instance is no longer running or whose
    node generation is no longer the live one, as the database says. Returns how many.

    A step whose node is completed or failed is over, whatever its instance's status: it is the
    worker's own checkpoint, just committed, that ended the instance (the worker clears
    `current` only once the commit's round trip has returned). Cancelling it would interrupt
    whatever the worker sends next — its next claim or another instance's step (measured: one to
    three claims per engine in a drain of 3,000, each costing the worker its connection)."""
    running = [(w, w.current) for w in engine.workers if w.current is not None]
    if not running:
        return 0
    keys = [cur for _w, cur in running if cur is not None]
    rows = conn.execute(
        """
        SELECT k.i, k.n, k.g
          FROM unnest(%s::text[], %s::text[], %s::int[]) AS k(i, n, g)  -- (multi-array form: unqualified)
          LEFT JOIN df.instances x ON x.id OPERATOR(pg_catalog.=) k.i
          LEFT JOIN df_internal.instance_state s ON s.instance_id OPERATOR(pg_catalog.=) k.i
          LEFT JOIN df_internal.node_meta m
                 ON m.instance_id OPERATOR(pg_catalog.=) k.i AND m.node_id OPERATOR(pg_catalog.=) k.n
          LEFT JOIN df.nodes n
                 ON n.instance_id OPERATOR(pg_catalog.=) k.i AND n.id OPERATOR(pg_catalog.=) k.n
         WHERE m.gen IS DISTINCT FROM k.g
            OR ((x.id IS NULL OR df_internal.effective_status(x.status, s.unpublished_status)
                                   <> ALL ('{pending,running}'::text[]))
                AND (n.status IS NULL OR n.status <> ALL ('{completed,failed}'::text[])))
        """, ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys])).fetchall()
    dead = {(r[0], r[1], r[2]) for r in rows}
    cancelled = 0
    for worker, cur in running:
        if cur in dead and worker.current == cur:
            log.info("cancelling the running step %s/%s (instance ended or node superseded)",
                     cur[0], cur[1])
            worker.cancel_statement()
            cancelled += 1
    return cancelled
