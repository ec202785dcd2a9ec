"""The TUI's structure rules that no linter states (docs/architecture.md, "The TUI"): the app
imports its screens at the top, screens and widgets import the base module instead of the app,
and nothing imports inside a function to dodge an import circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

DFTUI = Path(__file__).resolve().parents[2] / "dftui"
TUI_MODULES = sorted([DFTUI / "app.py", *DFTUI.glob("screens/*.py"), *DFTUI.glob("widgets/*.py"),
                      *DFTUI.glob("client/*.py"), DFTUI / "graph.py"])


def _deferred_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    found.append(f"{path.name}:{inner.lineno}")
    return found


@pytest.mark.parametrize("path", TUI_MODULES, ids=lambda p: str(p.relative_to(DFTUI)))
def test_no_import_inside_a_function(path: Path) -> None:
    assert _deferred_imports(path) == []


def test_the_app_reaches_screens_by_messages_not_getattr() -> None:
    text = (DFTUI / "app.py").read_text()
    for probe in ('"reload"', '"theme_changed"', '"palette_commands"', '"HELP_TITLE"'):
        assert probe not in text


def test_the_scan_finds_a_deferred_import(tmp_path: Path) -> None:
    """The scan sees a deferred import when there is one (so the tests above can fail)."""
    sample = tmp_path / "sample.py"
    sample.write_text("import sys\n\ndef f():\n    import os\n    return os\n")
    assert _deferred_imports(sample) == ["sample.py:4"]


SCREENS = sorted(DFTUI.glob("screens/*.py"))


@pytest.mark.parametrize("path", SCREENS, ids=lambda p: str(p.relative_to(DFTUI)))
def test_screens_refresh_through_the_one_live_refresh_helper(path: Path) -> None:
    """A screen re-reads on a schedule only through BaseScreen.start_live_refresh (its own
    pace is LIVE_INTERVAL or refresh_factor), never an interval timer of its own."""
    assert "set_interval(" not in path.read_text()


def test_the_header_is_reactive() -> None:
    """The header follows the app's reactive header_state; nobody pushes text into it."""
    app = (DFTUI / "app.py").read_text()
    assert "header_state: var[HeaderState]" in app
    assert "refresh_state" not in app and "refresh_headers" not in app
