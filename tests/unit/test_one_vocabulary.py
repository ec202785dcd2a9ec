"""The vocabulary stays defined once: no other module of dftui spells a status symbol or lists
the composite node types or the terminal statuses itself (read from the source, not run)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from dftui import vocabulary

DFTUI = Path(vocabulary.__file__).parent
MODULES = sorted(p for p in DFTUI.rglob("*.py") if p.name != "vocabulary.py")


def _literal_strings(node: ast.AST) -> set[str] | None:
    """The strings of a tuple/list/set literal made only of strings (else None)."""
    if isinstance(node, ast.Tuple | ast.List | ast.Set) and node.elts and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
        return {e.value for e in node.elts if isinstance(e, ast.Constant)}
    return None


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(DFTUI)))
def test_no_module_keeps_its_own_copy(path):
    symbols = set(vocabulary.STATUS_SYMBOLS.values())
    copies = {"composite node types": set(vocabulary.COMPOSITE_NODE_TYPES),
              "terminal statuses": set(vocabulary.TERMINAL_STATUSES),
              "statuses": set(vocabulary.STATUSES)}
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in symbols:
            found.append(f"line {node.lineno}: status symbol {node.value!r}")
        strings = _literal_strings(node)
        for name, values in copies.items():
            if strings == values:
                found.append(f"line {getattr(node, 'lineno', '?')}: a list of the {name}")
    assert not found, f"use dftui.vocabulary instead: {found}"
