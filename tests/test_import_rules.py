"""The picture in docs/architecture.md stays true: the import-linter contracts in pyproject.toml (layers,
no cycle between the modules of any package, private modules kept private) and, which import-linter does
not check, no module importing another module's private name."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "surerank"


def test_the_import_linter_contracts_are_kept():
    linter = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert linter, "lint-imports is missing: the test extras install import-linter"
    done = subprocess.run([linter, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout and "3 kept" in done.stdout, done.stdout[-2000:]


def _private_names(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "surerank":
            found += [f"{node.module}.{a.name}" + (f" as {a.asname}" if a.asname else "") for a in node.names
                      if _private(a.name) or _private(a.asname)]
    return found


def _private(name: str | None) -> bool:
    """A leading underscore, not a dunder: also as an alias, which would hide another module's name as private."""
    return bool(name) and name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_imports_another_modules_private_name(path):
    assert not _private_names(path), f"{path.relative_to(SRC)} imports {_private_names(path)}"


def test_the_private_name_check_can_fail(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from surerank.serve.body import _NUMBER\nfrom surerank import __version__\n"
                      "from surerank.robustness import run_robustness as _typed_run\n")
    assert _private_names(sample) == ["surerank.serve.body._NUMBER",
                                      "surerank.robustness.run_robustness as _typed_run"]
