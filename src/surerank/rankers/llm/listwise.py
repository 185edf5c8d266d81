"""Listwise LLM rankers: a sliding window (RankGPT-style, with its flaws fixed), FIRST (single-token
first-identifier logits) and permutation self-consistency, all built on :func:`rank_windows`.

Fixes over the RankGPT reference loop: the window start always reaches 0 (when ``N - window`` is not a
multiple of ``step`` the top ranks are still revisited), a list shorter than the window is ranked as one
window, and a malformed answer is repaired (:func:`surerank.llm.parse.parse_permutation`) instead of
dropping or duplicating passages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from surerank.aggregate import aggregate, rankings_to_wins
from surerank.errors import InputError
from surerank.llm import LLMRequest, LLMResponse, Session
from surerank.llm import prompts as tpl
from surerank.llm.parse import parse_permutation
from surerank.llm.session import BudgetExhaustedError
from surerank.rankers.llm.base import LLMRanker, answer_label_scores
from surerank.types import Query


def window_starts(n: int, window: int, step: int) -> list[int]:
    """Window start positions, back to front, always ending at 0; ``[0]`` when ``n <= window``."""
    if window < 2:
        raise InputError(f"window: must be >= 2, got {window}")
    if not 1 <= step <= window:
        raise InputError(f"step: must be in 1..window ({window}), got {step}")
    if n <= window:
        return [0]
    starts = list(range(n - window, 0, -step))
    starts.append(0)
    return starts


def _window_request(text: str, labels: Sequence[str], one_token: bool, max_new_tokens: int | None) -> LLMRequest:
    if one_token:
        return LLMRequest.chat(text, system=tpl.SYSTEM, max_tokens=max_new_tokens or 1, top_logprobs=20,
                               labels=tuple(labels))
    return LLMRequest.chat(text, system=tpl.SYSTEM, max_tokens=max_new_tokens or 6 * len(labels) + 8)


def _parsed_order(session: Session, response: LLMResponse, labels: Sequence[str], count_repairs: bool) -> list[int]:
    parsed = parse_permutation(response.text, labels)
    if parsed.fallback:
        session.fallback_for(response)
    elif parsed.repaired and count_repairs:
        session.repairs += 1
    return parsed.order


def rank_windows(session: Session, query: Query, passages: Sequence[str], windows: Sequence[Sequence[int]],
                 *, first: bool = False, shuffles: int = 1, aggregation: str = "kemeny", seed: int = 0,
                 max_new_tokens: int | None = None) -> list[list[int]]:
    """Rank several windows of candidate indices in ONE round (all calls independent), best first.

    ``first``: one-token calls ordered by the first identifier's log-probabilities (FIRST).  An answer
    without usable log-probabilities is counted (``info['no_logprobs']``) and its window is asked again for
    the whole ranking, parsed like a listwise answer (one more round); the rest of the list then asks for
    whole rankings directly (``session.notes['first_full_generation']``), since a server that sent none once
    is unlikely to start.  ``shuffles > 1``: permutation self-consistency -- each window is asked ``shuffles``
    times with its passages in different orders (the first in the given order), and the answers are
    aggregated with ``aggregation``.
    Raises BudgetExhaustedError when the round does not fit; the caller keeps its current order.
    """
    rng = np.random.default_rng(seed)
    one_token = first and not session.notes.get("first_full_generation")
    requests, plans = [], []
    for w_index, window in enumerate(windows):
        labels = tpl.window_labels(len(window))
        for s in range(max(1, shuffles)):
            presented = list(window) if s == 0 else [window[i] for i in rng.permutation(len(window))]
            text = tpl.listwise(query.text, [passages[i] for i in presented], labels, bare=first)
            requests.append(_window_request(text, labels, one_token, max_new_tokens))
            plans.append((w_index, presented, labels, text))
    responses = session.run(requests)
    orders: list[list[int]] = []
    again: list[int] = []
    for k, (response, (_, _, labels, _)) in enumerate(zip(responses, plans)):
        if one_token:
            lp = answer_label_scores(session, response, labels)
            if lp is not None:
                orders.append([int(i) for i in np.argsort(-lp, kind="stable")])
                continue
            if response.ok and not response.info.get("dry_run"):  # no logprobs: ask for the whole ranking
                again.append(k)
                orders.append([])
                continue
        orders.append(_parsed_order(session, response, labels, count_repairs=not one_token))
    if again:
        session.notes["first_full_generation"] = True
        try:
            retried = session.run([_window_request(plans[k][3], plans[k][2], False, None) for k in again])
        except BudgetExhaustedError:  # no budget for the full answers: the one-token answers' first ids
            retried = None
        for j, k in enumerate(again):
            labels = plans[k][2]
            if retried is None:
                parsed = parse_permutation(responses[k].text, labels)
                session.fallback("budget" if not parsed.fallback else "unparsable")
                orders[k] = parsed.order
            else:
                orders[k] = _parsed_order(session, retried[j], labels, count_repairs=True)
    per_window: list[list[list[int]]] = [[] for _ in windows]
    for order, (w_index, presented, _, _) in zip(orders, plans):
        per_window[w_index].append([presented[i] for i in order])
    results = []
    for window, answers in zip(windows, per_window):
        if len(answers) == 1:
            results.append(answers[0])
            continue
        local = {item: k for k, item in enumerate(window)}
        w = rankings_to_wins(len(window), [[local[i] for i in a] for a in answers])
        order, _ = aggregate(w, aggregation, seed=seed)
        results.append([window[k] for k in order])
    return results


class ListwiseLLMRanker(LLMRanker):
    """Sliding window, back to front: ``window`` passages per call, moved up by ``step``; ``passes`` > 1
    repeats the sweep.  ``shuffles`` > 1 turns on permutation self-consistency per window, aggregated by
    ``psc_aggregation`` (Kemeny by default).  Each window is one sequential round."""

    name: ClassVar[str] = "llm-listwise"
    first_token: ClassVar[bool] = False
    fallback_effect: ClassVar[str] = "kept the input order for {n} windows"

    def __init__(self, backend: Any = "openai", *, window: int = 20, step: int = 10, passes: int = 1,
                 shuffles: int = 1, psc_aggregation: str = "kemeny", max_new_tokens: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(backend, **kwargs)
        window_starts(window + 1, window, step)  # validates window/step
        if self.first_token and window > 20:
            raise InputError(f"window: FIRST reads the top-20 first-token log-probabilities; window {window} > 20")
        if passes < 1 or shuffles < 1:
            raise InputError(f"passes and shuffles must be >= 1, got passes={passes}, shuffles={shuffles}")
        self.window, self.step, self.passes, self.shuffles = window, step, passes, shuffles
        self.psc_aggregation = psc_aggregation
        self.max_new_tokens = max_new_tokens

    def options(self) -> dict[str, Any]:
        return {"window": self.window, "step": self.step, "passes": self.passes, "shuffles": self.shuffles,
                "first_token": self.first_token}

    def _rank_one(self, query: Query, passages: list[str], session: Session):
        n = len(passages)
        order = list(range(n))
        windows_done = 0
        try:
            for _ in range(self.passes):
                for start in window_starts(n, self.window, self.step):
                    end = min(n, start + self.window)
                    ranked = rank_windows(session, query, passages, [order[start:end]], first=self.first_token,
                                          shuffles=self.shuffles, aggregation=self.psc_aggregation,
                                          seed=self.seed + windows_done, max_new_tokens=self.max_new_tokens)[0]
                    order[start:end] = ranked
                    windows_done += 1
        except BudgetExhaustedError:
            pass
        return order, None, {"windows": windows_done}


class FirstLLMRanker(ListwiseLLMRanker):
    """FIRST: the sliding window, each window ordered by the log-probabilities of the first generated
    identifier token (one output token per call instead of a whole permutation)."""

    name: ClassVar[str] = "llm-first"
    first_token: ClassVar[bool] = True
    no_logprobs_effect: ClassVar[str] = "asked again for the whole ranking, parsed from the text"
