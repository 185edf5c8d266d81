"""Deprecated path: split-zip packages moved to :mod:`surerank.engine.checkpoint.split_packages`.

Kept because docs/models.md named ``surerank.engine.split_packages.split_package_model_dir``.
"""

from __future__ import annotations

import warnings

from surerank.engine.checkpoint.split_packages import split_package_model_dir, split_parts

__all__ = ["split_package_model_dir", "split_parts"]

warnings.warn("surerank.engine.split_packages moved to surerank.engine.checkpoint.split_packages",
              DeprecationWarning, stacklevel=2)
