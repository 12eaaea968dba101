"""The layout holds: imports run one way with no circle, and every module stays short.

`make lint` runs the same import contracts (pyproject.toml, `[tool.importlinter]`); this test
keeps them in the suite too, and shows that they refuse an upward import.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "lifecycle"
MAX_LINES = 400


def lint_imports(project: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports on the project's copy of the package: it reads the package from sys.path."""
    command = [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"]
    env = {"PYTHONPATH": str(project), "PATH": os.environ["PATH"]}
    return subprocess.run(
        command, cwd=project, env=env, capture_output=True, text=True, timeout=120
    )


def test_every_module_of_the_package_is_at_most_400_lines() -> None:
    too_long = {
        str(path.relative_to(ROOT)): lines
        for path in PACKAGE.rglob("*.py")
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert too_long == {}


def test_every_package_says_what_it_owns_and_may_import() -> None:
    undocumented = [
        str(init.relative_to(ROOT))
        for init in PACKAGE.rglob("__init__.py")
        if "migrations" not in init.parts and len(init.read_text(encoding="utf-8").strip()) < 80
    ]
    assert undocumented == []


def test_every_package_has_its_place_among_the_layers() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    layers = config["tool"]["importlinter"]["contracts"][0]["layers"]
    placed = {name.strip() for layer in layers for name in layer.split("|")}
    present = {
        path.stem if path.is_file() else path.name
        for path in PACKAGE.iterdir()
        if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").exists()
    }
    assert present == placed


def test_the_import_contracts_hold() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line"),
    [
        # The transition path reaching up into the directory it serves.
        ("workflows/guards.py", "from lifecycle.directory import search"),
        # Two modules of one package importing each other.
        ("workflows/outbox.py", "from lifecycle.workflows import engine"),
    ],
)
def test_the_contracts_refuse_an_upward_import_or_a_circle(
    tmp_path: Path, module: str, line: str
) -> None:
    copy = tmp_path / "project"
    shutil.copytree(ROOT / "lifecycle", copy / "lifecycle", ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    target = copy / "lifecycle" / module
    target.write_text(f"{target.read_text(encoding='utf-8')}\n{line}\n", encoding="utf-8")

    result = lint_imports(copy)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
