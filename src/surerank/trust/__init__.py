"""surerank.trust: turn ranker scores into decisions with known risk.

Calibrated probabilities (:mod:`.calibration`), per-query abstention (:mod:`.abstention`),
risk-controlled cutoffs (:mod:`.conformal`) and adaptive cutoffs (:mod:`.cutoffs`), plus the JSON
artifact that carries what was fitted (:mod:`.artifact`).  numpy/scipy only, no model code; nothing
here reorders a ranked list.
"""

from __future__ import annotations

from surerank.trust.abstention import Abstainer, coverage_curve, curve_auc, nauc, reference_free
from surerank.trust.artifact import FitSummary, TrustArtifact, fit_trust
from surerank.trust.calibration import (
    Calibrator,
    IsotonicCalibrator,
    PlattCalibrator,
    TemperatureCalibrator,
    fit_calibrator,
)
from surerank.trust.calibration_metrics import brier_score, calibration_report, expected_calibration_error, log_loss
from surerank.trust.conformal import ConformalCutoff
from surerank.trust.cutoffs import AdaptiveCutoff
from surerank.trust.labels import LabelledList, calibration_pairs, label_lists

__all__ = [
    "Abstainer", "AdaptiveCutoff", "Calibrator", "ConformalCutoff", "FitSummary", "IsotonicCalibrator",
    "LabelledList",
    "PlattCalibrator", "TemperatureCalibrator", "TrustArtifact", "brier_score", "calibration_pairs",
    "calibration_report", "coverage_curve", "curve_auc", "expected_calibration_error", "fit_calibrator",
    "fit_trust", "label_lists", "log_loss", "nauc", "reference_free",
]
