"""Utilities for selecting among generated candidates (``mbr``, ``qe``): how close a hypothesis is to a reference.

A utility says how good a hypothesis is if a reference were right: ``u(hyp, ref) -> float``, higher is better.
Each one here is split into ``features(texts)`` — the per-text work done once (n-gram counts, token bags,
normalised strings) — and ``pair(hyp_features, ref_features)``, so that MBR over N candidates extracts N feature
sets, not N² of them.  chrF and BLEU are sacreBLEU's own statistics and formulas (the pair score equals
``sacrebleu``'s ``sentence_score``); chrF also has ``aggregate`` (Vamvas & Sennrich 2024): the mean of the
references' n-gram counts as one reference, so expected chrF costs N pair scores instead of N².

The ``normalised`` and ``f1`` utilities compare answers by :func:`~surerank.rankers.generated.answers.normalise_answer`,
the key the ``vote`` ranker votes with, so the three agree on what "the same answer" means.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from surerank.errors import InputError, MissingDependencyError
from surerank.rankers.generated.answers import normalise_answer

Features = list[Any]


@dataclass(frozen=True)
class Utility:
    """A utility as two pure functions: per-text ``features`` (once per text) and a ``pair`` score.

    ``symmetric``: ``pair(a, b) == pair(b, a)``, so MBR computes each unordered pair once.
    ``aggregate``: optional; features of one reference standing for many (reference aggregation).
    """

    name: str
    features: Callable[[Sequence[str]], Features]
    pair: Callable[[Any, Any], float]
    symmetric: bool = False
    aggregate: Callable[[Features], Any] | None = None


# ------------------------------------------------------------------------------------------------ pair scores

def exact_match(a: str, b: str) -> float:
    return float(a == b)


def token_f1(hyp_tokens: Sequence[str], ref_tokens: Sequence[str]) -> float:
    """SQuAD-style F1 of two token bags (1.0 for two empty bags)."""
    if not hyp_tokens or not ref_tokens:
        return float(not hyp_tokens and not ref_tokens)
    common = sum((Counter(hyp_tokens) & Counter(ref_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(hyp_tokens), common / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def _bag_f1(hyp: Counter, ref: Counter) -> float:
    n_h, n_r = sum(hyp.values()), sum(ref.values())
    if not n_h or not n_r:
        return float(not n_h and not n_r)
    common = sum((hyp & ref).values())
    return 0.0 if not common else 2 * common / (n_h + n_r)


def cosine_matrix(hyp_vectors: Any, ref_vectors: Any) -> Any:
    """Cosine of unit-normalised row vectors (``H @ R.T``)."""
    return np.asarray(hyp_vectors, dtype=np.float64) @ np.asarray(ref_vectors, dtype=np.float64).T


# ------------------------------------------------------------------------------------------------ sacreBLEU

def _sacrebleu(what: str) -> Any:
    try:
        import sacrebleu
    except ImportError:
        raise MissingDependencyError.for_extra("sacrebleu", "generation", what) from None
    return sacrebleu


def chrf_utility(char_order: int = 6, word_order: int = 0, beta: int = 2, lowercase: bool = False,
                 whitespace: bool = False, eps_smoothing: bool = False) -> Utility:
    """sacreBLEU's chrF (chrF++ with ``word_order=2``) with n-grams counted once per text; aggregatable."""
    sacrebleu = _sacrebleu("the chrf utility")
    metric = sacrebleu.metrics.CHRF(char_order=char_order, word_order=word_order, beta=beta, lowercase=lowercase,
                                    whitespace=whitespace, eps_smoothing=eps_smoothing)

    def features(texts: Sequence[str]) -> Features:
        return [metric._extract_reference_info([metric._preprocess_segment(t)])["ref_ngrams"][0] for t in texts]

    def pair(hyp: list[Counter], ref: list[Mapping[str, float]]) -> float:
        stats: list[float] = []
        for h, r in zip(hyp, ref):
            stats.extend(_match_statistics(h, r))
        return float(metric._compute_f_score(stats))

    return Utility("chrf" if word_order == 0 else "chrf++", features, pair, symmetric=False,
                   aggregate=aggregate_ngrams)


def _match_statistics(hyp: Counter, ref: Mapping[str, float]) -> list[float]:
    """[hyp n-grams, ref n-grams, matches] of one order — sacreBLEU's CHRF._get_match_statistics, for
    fractional reference counts too (an aggregate reference)."""
    match = 0.0
    total = 0
    for ngram, count in hyp.items():
        total += count
        r = ref.get(ngram)
        if r:
            match += count if count < r else r
    ref_total = ref.total() if isinstance(ref, Counter) else sum(ref.values())
    return [total if ref else 0, ref_total, match]


def aggregate_ngrams(references: Features) -> list[dict[str, float]]:
    """The aggregate reference of Vamvas & Sennrich (2024): per n-gram order, the mean count over references."""
    if not references:
        raise InputError("aggregate: no reference to aggregate")
    orders = len(references[0])
    out: list[dict[str, float]] = []
    n = len(references)
    for order in range(orders):
        total: Counter = Counter()
        for ref in references:
            total.update(ref[order])
        out.append({k: v / n for k, v in total.items()})
    return out


def bleu_utility(tokenize: str | None = None, lowercase: bool = False, smooth_method: str = "exp",
                 smooth_value: float | None = None, max_ngram_order: int = 4) -> Utility:
    """sacreBLEU's sentence BLEU (effective order), n-grams counted once per text."""
    sacrebleu = _sacrebleu("the bleu utility")
    from sacrebleu.metrics.helpers import extract_all_word_ngrams

    metric = sacrebleu.metrics.BLEU(tokenize=tokenize, lowercase=lowercase, smooth_method=smooth_method,
                                    smooth_value=smooth_value, max_ngram_order=max_ngram_order,
                                    effective_order=True)

    def features(texts: Sequence[str]) -> Features:
        return [extract_all_word_ngrams(metric._preprocess_segment(t), 1, max_ngram_order) for t in texts]

    def pair(hyp: tuple[Counter, int], ref: tuple[Counter, int]) -> float:
        (h_ngrams, h_len), (r_ngrams, r_len) = hyp, ref
        correct = [0] * max_ngram_order
        total = [0] * max_ngram_order
        for ngram, count in h_ngrams.items():
            n = len(ngram) - 1
            total[n] += count
            if ngram in r_ngrams:
                correct[n] += min(count, r_ngrams[ngram])
        return float(metric._compute_score_from_stats([h_len, r_len, *correct, *total]).score)

    return Utility("bleu", features, pair, symmetric=False)


# ------------------------------------------------------------------------------------------------ the table

def exact_utility() -> Utility:
    return Utility("exact", lambda texts: list(texts), exact_match, symmetric=True)


def normalised_utility(**normalise: bool) -> Utility:
    return Utility("normalised", lambda texts: [normalise_answer(t, **normalise) for t in texts], exact_match,
                   symmetric=True)


def f1_utility(**normalise: bool) -> Utility:
    options = {"articles": True, **normalise}
    return Utility("f1", lambda texts: [Counter(normalise_answer(t, **options).split()) for t in texts], _bag_f1,
                   symmetric=True)


def callable_utility(function: Callable[[str, str], float], symmetric: bool = False,
                     name: str | None = None) -> Utility:
    """A user's ``u(hyp, ref) -> float`` on the raw texts."""
    if not callable(function):
        raise InputError(f"utility: expected a callable u(hyp, ref), got {type(function).__name__}")

    def pair(hyp: str, ref: str) -> float:
        return float(function(hyp, ref))

    return Utility(name or getattr(function, "__name__", "callable"), lambda texts: list(texts), pair,
                   symmetric=symmetric)


#: The string utilities by name; ``embedding`` and ``ranker:NAME`` need a model and live in the mbr ranker.
STRING_UTILITIES: dict[str, Callable[..., Utility]] = {
    "chrf": chrf_utility,
    "chrf++": lambda **o: chrf_utility(**{"word_order": 2, **o}),
    "bleu": bleu_utility,
    "exact": exact_utility,
    "normalised": normalised_utility,
    "f1": f1_utility,
}


def string_utility(name: str, **options: Any) -> Utility:
    """A utility of :data:`STRING_UTILITIES` by name, its options checked."""
    if name not in STRING_UTILITIES:
        raise InputError(f"utility: unknown {name!r}; use one of {', '.join(sorted(STRING_UTILITIES))}, "
                         "'embedding', 'ranker:NAME' or a callable")
    try:
        return STRING_UTILITIES[name](**options)
    except TypeError as error:
        raise InputError(f"utility_options for {name!r}: {error}") from None
