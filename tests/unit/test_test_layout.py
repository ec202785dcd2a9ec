"""The suite's own structure: helpers live in one package (tests/support), test modules never
import each other or a conftest, and each shared helper is defined once."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
SUPPORT = TESTS / "support"
# Helpers every suite needs; a second definition outside tests/support is a twin to merge.
SHARED = {"wait_for", "wait_for_app", "errors", "error_of", "instance_error", "running_engine",
          "start", "bypassrls_login", "password_role",
          "wait_terminal", "node_rows", "root_result", "engine_in_mode", "make_app"}


def _modules() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__snapshots__" not in p.parts)


def _imports(path: Path) -> list[str]:
    """Every module `path` imports, relative imports resolved against tests/."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(TESTS.parent).parent.parts)
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.append(".".join([*base, *([node.module] if node.module else [])]))
            elif node.module:
                found.append(node.module)
    return found


def test_tests_are_one_package_so_each_helper_has_one_module_name() -> None:
    # Without tests/__init__.py pytest puts tests/ itself on sys.path, and `engine_support` and
    # `tests.engine_support` become two module objects of one file.
    for folder in [TESTS, *(p.parent for p in TESTS.rglob("test_*.py"))]:
        assert (folder / "__init__.py").exists(), f"{folder} is not a package"


def test_test_modules_import_only_the_support_package() -> None:
    local = {p.stem for p in TESTS.glob("*.py")} | {"conftest", "support"}
    bad = []
    for path in _modules():
        if path.is_relative_to(SUPPORT):
            continue
        for name in _imports(path):
            top = name.split(".")[0]
            if top in local - {"tests"}:
                bad.append(f"{path.relative_to(TESTS)} imports {name} (a top-level test path)")
            elif top == "tests" and not (name == "tests.support" or name.startswith("tests.support.")):
                bad.append(f"{path.relative_to(TESTS)} imports {name}")
    assert bad == []


def test_shared_helpers_are_defined_once_in_the_support_package() -> None:
    twins = []
    for path in _modules():
        if path.is_relative_to(SUPPORT):
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in SHARED:
                twins.append(f"{path.relative_to(TESTS)}: {node.name}")
    assert twins == []


def _is_fixture(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Attribute) and target.attr == "fixture":
            return True
    return False


def test_each_fixture_is_defined_once() -> None:
    """A fixture of one name in two files is either a twin (write it once, in a conftest) or
    one that silently shadows another (`eng` was an attack-mode engine in tests/conftest.py and
    a plain one in four modules): give it a name of its own."""
    where: dict[str, list[str]] = {}
    for path in _modules():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _is_fixture(node):
                where.setdefault(node.name, []).append(str(path.relative_to(TESTS)))
    assert {name: files for name, files in where.items() if len(files) > 1} == {}
