"""Moved to :mod:`surerank.rankers.generated.exec_harness`;
this alias keeps the old import path working and warns once."""

from __future__ import annotations

import warnings

from surerank.rankers.generated.exec_harness import (
    CAPTURE_KEPT,
    FORGERY_HINTS,
    MARKER,
    PR_SET_DUMPABLE,
    Harness,
    canonical,
    main,
    reap_orphans,
)

warnings.warn("surerank.rankers.exec_harness moved to surerank.rankers.generated.exec_harness",
              DeprecationWarning, stacklevel=2)

__all__ = ["CAPTURE_KEPT", "FORGERY_HINTS", "MARKER", "PR_SET_DUMPABLE", "Harness", "canonical", "main", "reap_orphans"]
