"""The engines screen shows the fairness limits: each engine's defaults and the role's overrides."""

from __future__ import annotations

from rich.console import Console
from textual.widgets import Static

from tests.support import running_engine
from tests.support.tui import engines_health, make_app


async def test_engines_screen_shows_limits(db):
    with db.connect() as conn:
        conn.execute("SELECT df.set_role_limits('dftui_alice', max_running => 3, step_timeout => '90s')")
        conn.execute("SELECT df.set_role_limits('dftui_bob', max_pending => 7)")
    with running_engine(db.dsn(), concurrency=2, step_timeout=120, role_max_running=5):
        app = make_app(db, "dftui_alice", clock=None)
        async with app.run_test(size=(160, 48)) as pilot:
            health = await engines_health(pilot, app)
            alive = [e.data for e in health.engines if e.data.get("state") == "alive"]
            assert alive and alive[0]["role_max_running"] == 5 and alive[0]["step_timeout_ms"] == 120000
            # every role's step count is for administrators only (docs/security.md, leaks)
            assert alive[0]["steps_done"] is None
            # alice sees her own override only, never bob's
            assert [(r["role"], r["max_running"], r["step_timeout_ms"]) for r in health.limits] == [
                ("dftui_alice", 3, 90000)]
            console = Console(width=160, record=True)
            console.print(app.screen.query_one("#engines", Static).content)
            rendered = console.export_text()
            assert "Per-role limits" in rendered and "90s" in rendered and "120s" in rendered
            engine_row = next(line for line in rendered.splitlines() if "alive" in line)
            assert engine_row.rstrip().endswith("–"), engine_row
