"""Pairwise LLM ranker: ask "A or B?" in both orders, debias, sample pairs sparsely, aggregate.

With first-token log-probabilities, ``l_ab = log P(A) - log P(B)`` when ``a`` is shown first and ``l_ba``
the same with the two swapped; ``p(a beats b) = sigmoid((l_ab - l_ba) / 2)`` cancels the position bias.
Without log-probabilities the parsed choice gives ``l = ±text_logit`` (0 when unreadable).  All pairs are
independent, so one round per query; the comparisons go through :mod:`surerank.aggregate`.
"""

from __future__ import annotations

import itertools
from typing import Any, ClassVar

import numpy as np

from surerank.aggregate import AGGREGATORS, aggregate, wins_matrix
from surerank.errors import InputError
from surerank.llm import LLMRequest, Session
from surerank.llm import prompts as tpl
from surerank.llm.parse import parse_choice
from surerank.llm.session import BudgetExhaustedError
from surerank.rankers.llm.base import LLMRanker, answer_label_scores
from surerank.scores import sigmoid
from surerank.types import Query

SAMPLINGS = ("all", "random", "window")


def sample_pairs(n: int, sampling: str = "all", fraction: float = 0.3, window: int = 3,
                 seed: int = 0) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j`` in input order.

    ``all``: every pair (n(n-1)/2); ``random``: a ``fraction`` of them, drawn without replacement;
    ``window``: each item against the next ``window`` items cyclically (n·window pairs, every item in
    2·window comparisons, the comparison graph connected).
    """
    if sampling == "all":
        return list(itertools.combinations(range(n), 2))
    if sampling == "random":
        if not 0 < fraction <= 1:
            raise InputError(f"fraction: must be in (0, 1], got {fraction}")
        every = list(itertools.combinations(range(n), 2))
        k = max(1, round(fraction * len(every))) if every else 0
        chosen = np.random.default_rng(seed).choice(len(every), size=k, replace=False) if k else []
        return sorted(every[int(c)] for c in chosen)
    if sampling == "window":
        if window < 1:
            raise InputError(f"window: must be >= 1, got {window}")
        pairs = set()
        for i in range(n):
            for d in range(1, min(window, n - 1) + 1):
                j = (i + d) % n
                pairs.add((min(i, j), max(i, j)))
        return sorted(pairs)
    raise InputError(f"sampling: expected one of {', '.join(SAMPLINGS)}, got {sampling!r}")


class PairwiseLLMRanker(LLMRanker):
    """Options: ``sampling`` (all | random | window), ``fraction``, ``window``, ``both_orders``,
    ``aggregation`` (one of :data:`surerank.aggregate.AGGREGATORS`), ``text_logit``."""

    name: ClassVar[str] = "llm-pairwise"
    fallback_effect: ClassVar[str] = "counted {n} judgments as ties"

    def __init__(self, backend: Any = "openai", *, sampling: str = "all", fraction: float = 0.3,
                 window: int = 3, both_orders: bool = True, aggregation: str = "bradley-terry",
                 text_logit: float = 3.0, max_new_tokens: int = 4, **kwargs: Any) -> None:
        super().__init__(backend, **kwargs)
        if sampling not in SAMPLINGS:
            raise InputError(f"sampling: expected one of {', '.join(SAMPLINGS)}, got {sampling!r}")
        if aggregation not in AGGREGATORS:
            raise InputError(f"aggregation: expected one of {', '.join(AGGREGATORS)}, got {aggregation!r}")
        self.sampling, self.fraction, self.window = sampling, fraction, window
        self.both_orders = both_orders
        self.aggregation = aggregation
        self.text_logit = text_logit
        self.max_new_tokens = max_new_tokens

    def options(self) -> dict[str, Any]:
        return {"sampling": self.sampling, "fraction": self.fraction, "window": self.window,
                "both_orders": self.both_orders, "aggregation": self.aggregation}

    def _logit(self, response: Any, session: Session) -> float:
        lp = answer_label_scores(session, response, ("A", "B"))
        if lp is not None:
            return float(np.clip(lp[0] - lp[1], -30, 30))
        choice = parse_choice(response.text, ("A", "B"))
        if choice is None:  # no preference from this answer: a tie
            session.fallback_for(response)
            return 0.0
        return self.text_logit if choice == 0 else -self.text_logit

    def _rank_one(self, query: Query, passages: list[str], session: Session):
        n = len(passages)
        pairs = sample_pairs(n, self.sampling, self.fraction, self.window, self.seed)
        requests = []
        for i, j in pairs:
            orders = [(i, j), (j, i)] if self.both_orders else [(i, j)]
            for a, b in orders:
                requests.append(LLMRequest.chat(tpl.pairwise(query.text, passages[a], passages[b]), system=tpl.SYSTEM,
                                                max_tokens=self.max_new_tokens, top_logprobs=20, labels=("A", "B")))
        per_pair = 2 if self.both_orders else 1
        fit = session.allowance(requests) // per_pair * per_pair
        try:
            responses = session.run(requests[:fit]) if fit else []
        except BudgetExhaustedError:
            responses = []
        if fit < len(requests):
            session.budget_exhausted = True
        comparisons = []
        for k, (i, j) in enumerate(pairs[: len(responses) // per_pair]):
            l_ab = self._logit(responses[per_pair * k], session)
            if self.both_orders:
                l_ba = self._logit(responses[per_pair * k + 1], session)
                comparisons.append((i, j, sigmoid((l_ab - l_ba) / 2)))
            else:
                comparisons.append((i, j, sigmoid(l_ab)))
        w = wins_matrix(n, comparisons)
        if not comparisons:
            return list(range(n)), None, {"pairs": 0}
        order, scores = aggregate(w, self.aggregation, seed=self.seed)
        return order, scores, {"pairs": len(comparisons), "pairs_planned": len(pairs)}
