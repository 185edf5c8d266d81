"""Moved: :mod:`surerank.trust.calibration_metrics` (``metrics.py`` named three modules).  This alias keeps
old imports working and warns once."""

from __future__ import annotations

import warnings

from surerank.trust.calibration_metrics import (
    LOG_LOSS_EPS,
    brier_score,
    calibration_report,
    expected_calibration_error,
    log_loss,
    reliability_bins,
)

warnings.warn("surerank.trust.metrics moved to surerank.trust.calibration_metrics", DeprecationWarning,
              stacklevel=2)

__all__ = ["LOG_LOSS_EPS", "brier_score", "calibration_report", "expected_calibration_error", "log_loss",
           "reliability_bins"]
