"""`pip install .` must give a working install: the SQL files travel inside the wheel and are
found from the installed package, and the console script runs.

The wheel is built once (hatchling, like `pip install .` does) and installed with pip into a
target directory; checks then run in a subprocess whose import path holds only that directory and
the test environment's dependencies — never the source checkout.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from engine import schema

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(out)]
    if importlib.util.find_spec("hatchling") is not None:
        cmd.append("--no-build-isolation")  # offline: use the hatchling we already have
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    wheels = list(out.glob("dftui-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
         "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return target


def _run_installed(target: Path, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run Python with the installed copy first on the path, from a directory outside the repo."""
    env = dict(os.environ, PYTHONPATH=str(target), PYTHONSAFEPATH="1")
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True, text=True, cwd=target.parent, env=env, timeout=120,
    )


def test_wheel_contains_every_sql_file(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"engine/sql/{p.relative_to(REPO / 'sql').as_posix()}"
        for p in (REPO / "sql").rglob("*.sql")
    }
    assert expected, "no SQL files in the checkout?"
    assert expected <= names, sorted(expected - names)
    assert "dftui/cli/__init__.py" in names and "engine/schema.py" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "dftui = dftui.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_package_finds_its_sql(installed: Path):
    result = _run_installed(
        installed,
        "import engine, engine.schema as s; print(engine.__file__); print(s.sql_root()); "
        "print(s.latest_version()); print(len(s.version_sql(s.latest_version())))",
    )
    assert result.returncode == 0, result.stderr
    module_file, sql_root, version, size = result.stdout.split("\n")[:4]
    assert Path(module_file).is_relative_to(installed), "imported the checkout, not the wheel"
    assert Path(sql_root) == installed / "engine" / "sql"
    assert version == schema.latest_version()
    assert int(size) == len(schema.version_sql(version))


def test_installed_cli_installs_the_schema(installed: Path, empty_db):
    result = _run_installed(
        installed,
        "import sys; from dftui.cli import main; sys.exit(main(sys.argv[1:]))",
        "install", "--dsn", empty_db.dsn(),
    )
    assert result.returncode == 0, result.stderr
    assert f"installed df schema {schema.latest_version()}" in result.stdout
    assert empty_db.scalar("SELECT max(version) FROM df_internal.schema_version") == (
        schema.latest_version()
    )


def test_ci_runs_exactly_the_readme_test_command():
    """README's second command is what CI runs, verbatim (so the README never goes stale)."""
    readme = (REPO / "README.md").read_text()
    commands = [
        line.strip()
        for line in readme.splitlines()
        if line.strip().startswith("python3 -m venv .venv && ")
    ]
    assert len(commands) == 2, commands
    assert commands[0].endswith("pip install . && dftui demo")
    assert commands[1].endswith("pytest")
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert ci[0].startswith("#!") and "set -euo pipefail" in ci
    # Verbatim, with only its exit status kept so the static checks after it still run.
    runs = [line for line in ci if line.startswith("python3 -m venv .venv && ")]
    assert runs == [f"{commands[1]} || tests=$?"], runs
    assert os.access(REPO / ".ci" / "run", os.X_OK)


def _fake_ci(tmp_path: Path, failing: set[str]) -> tuple[int, list[str]]:
    """Run a copy of .ci/run with every tool it calls replaced by a stub that logs its name.

    The stub `python3 -m venv .venv` writes an empty activate script; a stub whose name is in
    `failing` exits 3. Returns the script's exit status and the tools in the order they ran.
    """
    (tmp_path / ".ci").mkdir(parents=True)
    (tmp_path / ".ci" / "run").write_bytes((REPO / ".ci" / "run").read_bytes())
    (tmp_path / ".ci" / "run").chmod(0o755)
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    log = tmp_path / "ran.log"
    for tool in ("python3", "pip", "pytest", "ruff", "mypy", "lint-imports"):
        body = f'echo {tool} >> "{log}"\n'
        if tool == "python3":
            body += "mkdir -p .venv/bin && : > .venv/bin/activate\n"
        body += f"exit {3 if tool in failing else 0}\n"
        (stubs / tool).write_text("#!/bin/sh\n" + body)
        (stubs / tool).chmod(0o755)
    env = dict(os.environ, PATH=f"{stubs}:/usr/bin:/bin")
    result = subprocess.run(["bash", str(tmp_path / ".ci" / "run")], env=env,
                            capture_output=True, text=True, timeout=60)
    return result.returncode, log.read_text().split()


def test_ci_runs_the_static_checks_after_the_tests_and_fails_on_any(tmp_path: Path):
    """Every check runs even when an earlier one fails; any failure fails CI."""
    everything = ["python3", "pip", "pytest", "ruff", "mypy", "lint-imports"]
    assert _fake_ci(tmp_path / "green", set()) == (0, everything)
    for culprit in ("pytest", "ruff", "mypy", "lint-imports"):
        assert _fake_ci(tmp_path / culprit, {culprit}) == (1, everything), culprit


def test_wheel_contains_every_stylesheet(wheel: Path):
    """The screens' styles live beside them (dftui/screens/*.tcss): they must travel too."""
    names = set(zipfile.ZipFile(wheel).namelist())
    sheets = {p.relative_to(REPO).as_posix() for p in (REPO / "dftui").rglob("*.tcss")}
    assert "dftui/app.tcss" in sheets and "dftui/screens/dialogs.tcss" in sheets
    assert sheets <= names, sheets - names
