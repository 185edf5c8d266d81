"""Setwise LLM ranker: heap sort where one call picks the best of a parent and its ``c`` children.

Heapify works level by level, and the sift-downs of one level touch disjoint subtrees, so their
comparisons go out together: one round per sift step instead of one per comparison.  Extraction is
sequential and stops after the top ``k``; the rest keep their input order below.  A pick that failed
(or could not be read) takes the group's earliest passage in the input order, so with every call failing
the input order comes back unchanged.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from surerank.errors import InputError
from surerank.llm import LLMRequest, Session
from surerank.llm import prompts as tpl
from surerank.llm.parse import parse_choice
from surerank.llm.session import BudgetExhaustedError
from surerank.rankers.llm.base import LLMRanker, answer_label_scores
from surerank.types import Query


class SetwiseLLMRanker(LLMRanker):
    """Options: ``children`` (c, the heap's branching factor: c + 1 passages per call), ``top_k``."""

    name: ClassVar[str] = "llm-setwise"
    fallback_effect: ClassVar[str] = "took the earliest passage in the input order for {n} picks"

    def __init__(self, backend: Any = "openai", *, children: int = 3, top_k: int = 10, max_new_tokens: int = 4,
                 **kwargs: Any) -> None:
        super().__init__(backend, **kwargs)
        if not 1 <= children <= 25:
            raise InputError(f"children: must be in 1..25, got {children}")
        if top_k < 1:
            raise InputError(f"top_k: must be >= 1, got {top_k}")
        self.children, self.top_k, self.max_new_tokens = children, top_k, max_new_tokens

    def options(self) -> dict[str, Any]:
        return {"children": self.children, "top_k": self.top_k}

    def _best(self, session: Session, query: Query, passages: list[str], groups: list[list[int]]) -> list[int]:
        """One round: for each group of candidate indices, the position (in the group) of the best one."""
        requests = []
        for group in groups:
            labels = tpl.window_labels(len(group))
            requests.append(LLMRequest.chat(tpl.setwise(query.text, [passages[i] for i in group], labels),
                                            system=tpl.SYSTEM, max_tokens=self.max_new_tokens, top_logprobs=20,
                                            labels=tuple(labels)))
        picks = []
        for group, response in zip(groups, session.run(requests)):
            labels = tpl.window_labels(len(group))
            if response.info.get("dry_run"):  # cost estimate: the longest path (swap into the first,
                picks.append(1 if len(group) > 1 else 0)  # deepest, subtree every time)
                continue
            lp = answer_label_scores(session, response, labels)
            if lp is not None:
                picks.append(int(np.argmax(lp)))
                continue
            choice = parse_choice(response.text, labels)
            if choice is None:
                # pick the lowest input index: the input order is the prior, and a heap whose every failed
                # pick follows it extracts exactly the input order (keeping the parent would not: after an
                # extraction the parent is the last leaf, moved to the root)
                session.fallback_for(response)
                choice = int(np.argmin(group))
            picks.append(choice)
        return picks

    def _sift(self, session: Session, query: Query, passages: list[str], heap: list[int], roots: list[int],
              size: int) -> None:
        """Sift several roots of disjoint subtrees down in lockstep, one round per level."""
        c = self.children
        active = [r for r in roots if c * r + 1 < size]
        while active:
            groups = [[heap[r]] + [heap[j] for j in range(c * r + 1, min(c * r + c + 1, size))] for r in active]
            picks = self._best(session, query, passages, groups)
            nxt = []
            for r, pick in zip(active, picks):
                if pick == 0:
                    continue
                child = c * r + pick
                heap[r], heap[child] = heap[child], heap[r]
                if c * child + 1 < size:
                    nxt.append(child)
            active = nxt

    def _rank_one(self, query: Query, passages: list[str], session: Session):
        n = len(passages)
        c = self.children
        heap = list(range(n))
        top: list[int] = []
        try:
            # heapify: internal nodes level by level from the bottom; one level's sifts run in lockstep
            last_internal = (n - 2) // c if n > 1 else -1
            levels: dict[int, list[int]] = {}
            for node in range(last_internal, -1, -1):
                depth, x = 0, node
                while x > 0:
                    x = (x - 1) // c
                    depth += 1
                levels.setdefault(depth, []).append(node)
            for depth in sorted(levels, reverse=True):
                self._sift(session, query, passages, heap, levels[depth], n)
            size = n
            while size > 0 and len(top) < min(self.top_k, n):
                top.append(heap[0])
                size -= 1
                heap[0] = heap[size]
                if len(top) < min(self.top_k, n):
                    self._sift(session, query, passages, heap, [0], size)
        except BudgetExhaustedError:
            pass
        rest = [i for i in range(n) if i not in set(top)]
        return top + rest, None, {"top_k_found": len(top)}
