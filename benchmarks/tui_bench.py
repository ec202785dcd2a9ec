"""TUI figures: time to first paint of the instance list and to page through it, with a large
df.instances table.

The app runs headless (Textual's `run_test`) on a real connection, exactly as `dftui` builds it,
with the live refresh off so only our key presses cause work. Rows beyond what the other phases
left behind are seeded directly (triggers off, as the TUI tests do): the list only reads them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from benchmarks.harness import BENCH_ROLE, BenchEnv, BenchError
from benchmarks.ui import Ui


@dataclass
class TuiResult:
    rows_in_table: int
    first_paint_ms: float
    page_ms: list[float] = field(default_factory=list)  # each `G` that loads the next 100 rows
    pagedown_ms: float = float("nan")  # one PageDown through loaded rows


def tui_available() -> str | None:
    """None when the app can be benchmarked, else why not."""
    try:
        from dftui.app import DftuiApp  # noqa: F401
        from dftui.client import connect  # noqa: F401
        from dftui.screens.instances import InstancesScreen  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import problem means "skip, with a note"
        return f"dftui.app could not be imported ({exc})"
    return None


def instance_count(env: BenchEnv) -> int:
    return int(env.scalar("SELECT count(*) FROM df.instances") or 0)


def seed(env: BenchEnv, ui: Ui, target: int) -> int:
    """Add completed one-step instances until df.instances has `target` rows."""
    have = instance_count(env)
    missing = target - have
    if missing <= 0:
        return have
    batch = 100_000
    with ui.counter(f"tui: seed {missing:,} more instances (to {target:,})", missing) as add, \
            env.connect() as conn:
        done = 0
        while done < missing:
            n = min(batch, missing - done)
            with conn.transaction():
                conn.execute("SET LOCAL session_replication_role = replica")
                conn.execute(
                    """INSERT INTO df.instances (id, label, root_node, status, submitted_by,
                           database, created_at, updated_at, completed_at)
                       SELECT lpad(to_hex(2147483648 + h), 8, '0'), 'tui-seed',
                              lpad(to_hex(2147483648 + h), 8, '0'), 'completed', %s::regrole,
                              current_database(), ts, ts + interval '40 ms', ts + interval '40 ms'
                         FROM (SELECT g AS h, now() - interval '2 days' + g * interval '100 ms' AS ts
                                 FROM generate_series(%s::bigint, %s::bigint) g) s
                       ON CONFLICT DO NOTHING""",
                    (BENCH_ROLE, have + done, have + done + n - 1))
                conn.execute(
                    """INSERT INTO df.nodes (id, instance_id, node_type, query, status, result,
                           submitted_by, database, created_at, updated_at)
                       SELECT i.id, i.id, 'SQL', 'SELECT 1', 'completed',
                              '{"rows":[{"?column?":1}],"row_count":1}', i.submitted_by,
                              i.database, i.created_at, i.updated_at
                         FROM df.instances i
                        WHERE i.label = 'tui-seed' AND i.id >= lpad(to_hex(2147483648 + %s::bigint), 8, '0')
                          AND NOT EXISTS (SELECT 1 FROM df.nodes n WHERE n.instance_id = i.id)""",
                    (have + done,))
            done += n
            add(n)
        conn.execute("VACUUM (ANALYZE) df.instances")
        conn.execute("VACUUM (ANALYZE) df.nodes")
    return instance_count(env)


async def _until(pilot, predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchError(f"tui: timed out waiting for {what}")
        await pilot.pause()
        await asyncio.sleep(0.002)


async def _measure(dsn: str, pages: int, rows: int) -> TuiResult:
    from textual.widgets import DataTable

    from dftui.app import DftuiApp
    from dftui.client import connect
    from dftui.screens.instances import InstancesScreen

    client = connect(dsn)
    try:
        app = DftuiApp(client, refresh_interval=None)
        t0 = time.perf_counter()
        async with app.run_test(size=(160, 50)) as pilot:
            def listed() -> bool:
                screen = app.screen
                return (isinstance(screen, InstancesScreen) and screen.loaded_once
                        and screen.query_one(DataTable).row_count > 0)

            await _until(pilot, listed, 60, "the first page of instances")
            result = TuiResult(rows_in_table=rows, first_paint_ms=(time.perf_counter() - t0) * 1000)
            screen = app.screen
            assert isinstance(screen, InstancesScreen)
            for _ in range(pages):
                if screen.next_cursor is None:
                    break
                before = len(screen.rows)
                t = time.perf_counter()
                await pilot.press("G")
                await _until(pilot, lambda b=before: len(screen.rows) > b and not screen.loading_more,
                             60, "the next page")
                result.page_ms.append((time.perf_counter() - t) * 1000)
            await pilot.press("g")
            await pilot.pause()
            table = screen.query_one(DataTable)
            t = time.perf_counter()
            target = min(table.row_count - 1, table.cursor_row + 10)
            await pilot.press("pagedown")
            await _until(pilot, lambda: table.cursor_row >= target, 30, "PageDown")
            result.pagedown_ms = (time.perf_counter() - t) * 1000
        return result
    finally:
        client.close()


def measure(env: BenchEnv, pages: int, rows: int) -> TuiResult:
    return asyncio.run(_measure(env.dsn(), pages, rows))
