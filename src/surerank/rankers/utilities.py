"""Moved: answer normalisation to :mod:`surerank.rankers.generated.answers`, the utilities (chrF, BLEU, F1, ...)
to :mod:`surerank.rankers.generated.similarity`; this alias keeps the old import path working and warns once."""

from __future__ import annotations

import warnings

from surerank.rankers.generated.answers import canonical_number, normalise_answer, regex_extractor
from surerank.rankers.generated.similarity import (
    STRING_UTILITIES,
    Features,
    Utility,
    aggregate_ngrams,
    bleu_utility,
    callable_utility,
    chrf_utility,
    cosine_matrix,
    exact_match,
    exact_utility,
    f1_utility,
    normalised_utility,
    string_utility,
    token_f1,
)

warnings.warn("surerank.rankers.utilities moved to surerank.rankers.generated.answers (answer normalisation) and "
              "surerank.rankers.generated.similarity (utilities)", DeprecationWarning, stacklevel=2)

__all__ = [
    "STRING_UTILITIES",
    "Features",
    "Utility",
    "aggregate_ngrams",
    "bleu_utility",
    "callable_utility",
    "canonical_number",
    "chrf_utility",
    "cosine_matrix",
    "exact_match",
    "exact_utility",
    "f1_utility",
    "normalise_answer",
    "normalised_utility",
    "regex_extractor",
    "string_utility",
    "token_f1",
]
