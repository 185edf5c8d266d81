"""The rankers by family (issue 23): every old flat module path still imports, warns once that it moved, and
hands out the very objects of the new home; the registry names only new paths; and what a trust artifact or a
cache keys on (``describe()``) carries no module path, so artifacts written before the move still match."""

from __future__ import annotations

import ast
import importlib
import json
import sys
import warnings
from pathlib import Path

import pytest

from surerank.registry import all_specs, create

MOVED = {
    "embedding": ["encoders.embedding"],
    "cross_encoder": ["encoders.cross_encoder"],
    "t5": ["encoders.t5"],
    "llm_base": ["llm.base"],
    "llm_pointwise": ["llm.pointwise"],
    "llm_pairwise": ["llm.pairwise"],
    "llm_setwise": ["llm.setwise"],
    "llm_listwise": ["llm.listwise"],
    "llm_jointrank": ["llm.jointrank"],
    "mbr": ["generated.mbr"],
    "qe": ["generated.qe"],
    "vote": ["generated.vote"],
    "coder_reviewer": ["generated.coder_reviewer"],
    "code_tests": ["generated.code_tests"],
    "execution": ["generated.execution"],
    "exec_harness": ["generated.exec_harness"],
    "utilities": ["generated.answers", "generated.similarity"],
}


def _public(module: object) -> set[str]:
    """The names a module defines itself at top level (not those it imports), without a leading underscore."""
    tree = ast.parse(Path(module.__file__).read_text())  # type: ignore[attr-defined]
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if not n.startswith("_") and n != "logger"}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_path_warns_once_and_re_exports_the_new_homes_objects(old):
    path = f"surerank.rankers.{old}"
    sys.modules.pop(path, None)
    with pytest.warns(DeprecationWarning, match=f"{path} moved to surerank.rankers.{MOVED[old][0]}"):
        alias = importlib.import_module(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importlib.import_module(path)  # once: a second import is the cached module, silent
    homes = [importlib.import_module(f"surerank.rankers.{new}") for new in MOVED[old]]
    for home in homes:
        for name in _public(home):
            assert name in alias.__all__, f"{path} does not re-export {home.__name__}.{name}"
    for name in alias.__all__:
        assert any(getattr(alias, name) is getattr(home, name, None) for home in homes), name


def test_the_registry_names_the_new_paths_only():
    old = {f"surerank.rankers.{name}" for name in MOVED}
    for spec in all_specs().values():
        module = spec.target.partition(":")[0]
        assert module not in old, f"{spec.name} still points at the alias {module}"
    for name, spec in all_specs().items():
        if spec.target.startswith("surerank.") and not spec.missing():
            with warnings.catch_warnings():
                warnings.simplefilter("error", DeprecationWarning)
                assert spec.load().__module__ == spec.target.partition(":")[0], name


@pytest.mark.parametrize("name, options", [
    ("first-stage", {}),
    ("vote", {"extract": r"answer: (\d+)"}),
    ("mbr", {"utility": "exact"}),
    ("fusion", {"rankers": ["first-stage", {"name": "vote"}]}),
    ("qe", {"qe": "first-stage", "features": ["length"], "weights": {"qe:first-stage": 1.0, "length": 0.5}}),
    ("sql-exec", {}),
])
def test_a_description_carries_no_module_path(name, options):
    """Trust artifacts fingerprint ``describe()`` and caches key on it: a module path in it would refuse every
    artifact written before the move.  None is there (the ranker's registered name is)."""
    text = json.dumps(create(name, **options).describe(), default=str)
    assert "surerank." not in text, text
