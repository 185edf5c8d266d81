"""Moved to :mod:`surerank.rankers.encoders.cross_encoder`;
this alias keeps the old import path working and warns once."""

from __future__ import annotations

import warnings

from surerank.rankers.encoders.cross_encoder import DEFAULT_CROSS_ENCODER, SCORE_MODES, CrossEncoderRanker

warnings.warn("surerank.rankers.cross_encoder moved to surerank.rankers.encoders.cross_encoder",
              DeprecationWarning, stacklevel=2)

__all__ = ["DEFAULT_CROSS_ENCODER", "SCORE_MODES", "CrossEncoderRanker"]
