"""The dependency direction of DESIGN.md holds (import-linter contracts in pyproject.toml), and the check can fail."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


@pytest.fixture()
def copy(tmp_path):
    """The two packages and pyproject.toml, in a folder of their own."""
    for name in ("derive", "codegen"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def test_contracts_hold():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("module, line, broken", [
    ("derive/report.py", "import codegen.printer", "derive (the SymPy side) never imports codegen"),
    ("derive/train.py", "from codegen.build import module_outputs", "derive (the SymPy side) never imports codegen"),
    ("derive/program.py", "import jinja2", "never imports codegen or Jinja2"),
    ("derive/expansion.py", "from . import verify", "no import cycles"),
    ("codegen/printer.py", "from . import render", "no import cycles"),
])
def test_a_planted_import_breaks_a_contract(copy, module, line, broken):
    path = copy / module
    path.write_text(path.read_text() + f"\n\ndef _planted():\n    {line}\n")
    result = lint(copy)
    assert result.returncode != 0
    assert broken in result.stdout and "BROKEN" in result.stdout
