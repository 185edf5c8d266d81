"""Moved to :mod:`surerank.rankers.generated.code_tests`;
this alias keeps the old import path working and warns once."""

from __future__ import annotations

import warnings

from surerank.rankers.generated.code_tests import CodeTest, docstring_examples, is_literal_call, perturbed_inputs

warnings.warn("surerank.rankers.code_tests moved to surerank.rankers.generated.code_tests",
              DeprecationWarning, stacklevel=2)

__all__ = ["CodeTest", "docstring_examples", "is_literal_call", "perturbed_inputs"]
