"""Deprecated: the file formats moved to :mod:`surerank.formats` (they serve batch and the CLI, not only eval)."""

import warnings

from surerank.formats import *  # noqa: F403  (the whole public API, re-exported)
from surerank.formats import __all__  # noqa: F401

warnings.warn("surerank.eval.formats is deprecated; import from surerank.formats", DeprecationWarning,
              stacklevel=2)
