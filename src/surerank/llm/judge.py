"""Moved: the stand-in judge lives in :mod:`surerank.testing.judge`, its HTTP server in
:mod:`surerank.testing.llm_server`.  This alias keeps old imports working and warns once."""

from __future__ import annotations

import warnings

from surerank.testing.judge import Judge, JudgeBackend, ParsedPrompt, parse_prompt, word_overlap
from surerank.testing.llm_server import StandInServer

warnings.warn("surerank.llm.judge moved to surerank.testing.judge (StandInServer: surerank.testing.llm_server)",
              DeprecationWarning, stacklevel=2)

__all__ = ["Judge", "JudgeBackend", "ParsedPrompt", "StandInServer", "parse_prompt", "word_overlap"]
