"""Pointwise LLM rankers: a yes/no relevance logit or a fine-grained 0..k grade per passage, and query
likelihood (UPR: log P(query | passage)).  Every passage is judged independently, so one round per query."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from surerank.errors import InputError
from surerank.llm import LLMRequest, Session
from surerank.llm import prompts as tpl
from surerank.llm.parse import parse_grade, parse_yes_no
from surerank.llm.session import BudgetExhaustedError
from surerank.llm.templates import RerankTemplate, get_template, template_request
from surerank.rankers.llm.base import LLMRanker, answer_label_scores
from surerank.types import Query, Truncation


class PointwiseLLMRanker(LLMRanker):
    """Score = log P(Yes) - log P(No) of the first answer token (``scale=None``), or the expected grade
    over the first-token distribution of ``0..scale`` (fine-grained relevance labels).

    Without log-probabilities the parsed answer is used (yes = 1, no = -1; the grade itself), and an
    unreadable answer scores 0 (yes/no) or ``scale / 2``, counted in ``info['fallbacks']``.
    Candidates beyond the call budget are left unscored below the scored ones, in input order.

    ``template``: a named reranker template (``qwen3-reranker``, ``bge-reranker-v2-gemma``,
    ``mxbai-rerank-v2``; :mod:`surerank.llm.templates`) -- the model's own prompt and published formula
    (``instruction`` replaces the template's instruction).  Chosen explicitly, never from the model name.
    A passage whose call failed or gave no usable score then goes below every scored one, in input order,
    counted in ``info['fallbacks']``; passages keep their text as given (only a ``max_words`` cut, reported).
    """

    name: ClassVar[str] = "llm-pointwise"
    fallback_effect: ClassVar[str] = "gave {n} passages the neutral score (0, or scale / 2)"

    def __init__(self, backend: Any = "openai", *, scale: int | None = None, max_new_tokens: int = 4,
                 template: str | None = None, instruction: str | None = None, **kwargs: Any) -> None:
        # refuse an unknown template before a backend (possibly a model load) is built
        self.template: RerankTemplate | None = get_template(template) if template is not None else None
        if instruction is not None and self.template is None:
            raise InputError("instruction: only a named template has an instruction slot; set template=")
        if self.template is not None and scale is not None:
            raise InputError(f"scale: template {self.template.name!r} has its own formula; leave scale unset")
        super().__init__(backend, **kwargs)
        if scale is not None and not 1 <= scale <= 9:
            raise InputError(f"scale: fine-grained grades run 0..scale with 1 <= scale <= 9, got {scale}")
        self.scale = scale
        self.max_new_tokens = max_new_tokens
        self.instruction = instruction
        if self.template is not None:
            check = getattr(self.backend, "check_template", None)
            if check is None:
                raise InputError(f"template: the {self.backend.name} backend cannot score a named template; use "
                                 "backend='transformers', 'llama-cpp' or 'openai'")
            check(self.template)
            self.fallback_effect = "ranked {n} passages without a usable score last, in input order"

    def options(self) -> dict[str, Any]:
        if self.template is not None:
            return {"template": self.template.name, "formula": self.template.formula,
                    "instruction": self.template.instruction_or_default(self.instruction)}
        return {"scale": self.scale}

    def _passages(self, query: Query) -> tuple[list[str], list[Truncation | None]]:
        if self.template is None:
            return super()._passages(query)
        texts: list[str] = []
        truncations: list[Truncation | None] = []
        for candidate in query.candidates:
            if self.max_words is not None and len(candidate.text.split()) > self.max_words:
                text, truncation = tpl.clip(candidate.text, self.max_words)
            else:  # the text as given: the template's reference does not reflow passages
                text, truncation = candidate.text, None
            texts.append(text)
            truncations.append(truncation)
        return texts, truncations

    def _rank_template(self, template: RerankTemplate, query: Query, passages: list[str], session: Session):
        build = getattr(self.backend, "template_request", template_request)  # a score endpoint sends pairs
        requests = [build(template, query.text, p, self.instruction) for p in passages]
        try:
            responses = session.run(requests, partial=True)
        except BudgetExhaustedError:
            responses = []
        scores = np.full(len(passages), np.nan)
        for i, response in enumerate(responses):
            value = response.info.get("score")
            if response.info.get("dry_run"):
                scores[i] = 0.0
            elif response.ok and value is not None and np.isfinite(value):
                scores[i] = float(value)
            elif response.ok:
                session.fallback(str(response.info.get("template_issue") or "unparsable"))
            else:
                session.fallback_for(response)
        missing = ~np.isfinite(scores)
        if missing.any():  # failed, unusable or beyond the budget: below every scored passage, input order
            low = (scores[~missing].min() if (~missing).any() else 0.0) - 1.0
            scores[missing] = low - np.arange(int(missing.sum())) * 1e-6
        order = [int(i) for i in np.argsort(-scores, kind="stable")]
        return order, scores, {"unscored": len(passages) - len(responses), "template": template.name}

    def _rank_one(self, query: Query, passages: list[str], session: Session):
        if self.template is not None:
            return self._rank_template(self.template, query, passages, session)
        if self.scale is None:
            labels: tuple[str, ...] = ("Yes", "No")
            prompts = [tpl.pointwise_yes_no(query.text, p) for p in passages]
        else:
            labels = tuple(str(g) for g in range(self.scale + 1))
            prompts = [tpl.pointwise_grade(query.text, p, self.scale) for p in passages]
        requests = [LLMRequest.chat(p, system=tpl.SYSTEM, max_tokens=self.max_new_tokens, top_logprobs=20,
                                    labels=labels) for p in prompts]
        try:
            responses = session.run(requests, partial=True)
        except BudgetExhaustedError:
            responses = []
        n = len(passages)
        floor = -1e9
        scores = np.full(n, floor)
        for i, response in enumerate(responses):
            lp = answer_label_scores(session, response, labels)
            if lp is not None:
                if self.scale is None:
                    scores[i] = lp[0] - lp[1]
                else:
                    probs = np.exp(lp - lp.max())
                    scores[i] = float(probs @ np.arange(len(labels)) / probs.sum())
                continue
            if self.scale is None:
                verdict = parse_yes_no(response.text)
                scores[i] = {1.0: 1.0, 0.0: -1.0, None: 0.0}[verdict]
            else:
                grade = parse_grade(response.text, self.scale)
                scores[i] = self.scale / 2 if grade is None else grade
                verdict = grade
            if verdict is None:
                session.fallback_for(response)
        return _order_with_unscored_last(scores, scored=len(responses))


def _order_with_unscored_last(scores: np.ndarray, scored: int):
    """Passages the budget left unscored go below every scored one, in input order (never dropped)."""
    unscored = len(scores) - scored
    if unscored:
        low = (scores[:scored].min() if scored else 0.0) - 1.0
        scores[scored:] = low - np.arange(unscored) * 1e-6
    order = [int(i) for i in np.argsort(-scores, kind="stable")]
    return order, scores, {"unscored": unscored}


class QueryLikelihoodRanker(LLMRanker):
    """UPR: score = log P(query | passage) under the model, from echoed prompt log-probabilities
    (``/v1/completions`` with ``echo``) or in-process logits.  Needs a backend that scores continuations.

    A call that failed, scored no query token (a server that ignores ``echo``) or gave a non-finite value
    scores nothing: the passage goes below every scored one (score -1e9, input order among them), counted
    in ``info['failures']`` / ``info['fallbacks']``."""

    name: ClassVar[str] = "llm-query-likelihood"
    fallback_effect: ClassVar[str] = "ranked {n} passages that got no score last, in input order"

    def _rank_one(self, query: Query, passages: list[str], session: Session):
        pairs = []
        for passage in passages:
            prefix, template = tpl.query_likelihood(passage)
            pairs.append((prefix, template.format(query=tpl.one_line(query.text))))
        try:
            responses = session.score_continuations(pairs)
        except BudgetExhaustedError:
            responses = []
        n = len(passages)
        scores = np.full(n, -1e9)
        for i, response in enumerate(responses):
            # the backend turned a reply with no scored token or a non-finite value into a failed call
            if response.ok and "logprob" in response.info and np.isfinite(response.info["logprob"]):
                scores[i] = float(response.info["logprob"])
            else:
                session.fallback_for(response)
        return _order_with_unscored_last(scores, scored=len(responses))
