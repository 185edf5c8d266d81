"""Every module path that moved in issue 23 outside rankers/ (those are in test_rankers_layout.py) still imports,
warns once naming its new home, and hands out what the new home has (docs/architecture.md "Moved paths")."""

from __future__ import annotations

import importlib
import sys
import warnings

import pytest

#: old path -> (the new home its warning names, a public name it must still hand out, the home that defines it)
MOVED = {
    "surerank.eval.formats": ("surerank.formats", "read_qrels", "surerank.formats"),
    "surerank.eval.report": ("surerank.report", "TrustFigures", "surerank.report"),
    "surerank.eval.report_svg": ("surerank.report.svg", None, None),
    "surerank.eval.robustness": ("surerank.robustness", "RobustnessConfig", "surerank.robustness"),
    "surerank.llm.judge": ("surerank.testing.judge", "JudgeBackend", "surerank.testing.judge"),
    "surerank.engine.passages": ("surerank.engine.text.passages", "PassagePolicy", "surerank.engine.text.passages"),
    "surerank.engine.split_packages": ("surerank.engine.checkpoint.split_packages", "split_parts",
                                       "surerank.engine.checkpoint.split_packages"),
    "surerank.batch.engines": ("surerank.batch.local_runner", "RankerConfig", "surerank.batch.local_runner"),
    "surerank.trust.metrics": ("surerank.trust.calibration_metrics", "expected_calibration_error",
                               "surerank.trust.calibration_metrics"),
    "surerank.trust.report": ("surerank.trust.output_metrics", "trust_metrics", "surerank.trust.output_metrics"),
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_a_moved_path_warns_once_naming_its_new_home_and_still_works(old):
    home, name, defined_in = MOVED[old]
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=home.replace(".", r"\.")):
        alias = importlib.import_module(old)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importlib.import_module(old)  # a second import is the cached module, silent
    for public in getattr(alias, "__all__", []):
        assert hasattr(alias, public), f"{old}.__all__ names {public}, which it lacks"
    if name is not None:
        assert getattr(alias, name) is getattr(importlib.import_module(defined_in), name)
