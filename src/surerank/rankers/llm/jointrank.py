"""JointRank: rank overlapping blocks in parallel, then aggregate the implied pairwise wins.

The design puts every item in ``replicas`` blocks of about ``block_size`` items (one shuffled partition of
the list per replica), re-drawn until the co-occurrence graph is connected so that one global order is
identifiable.  All blocks go out in ONE round (listwise text answers or FIRST-style logits), so latency is
one call deep however long the list; :mod:`surerank.aggregate` turns the block rankings into the order.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from surerank.aggregate import AGGREGATORS, aggregate, rankings_to_wins
from surerank.errors import InputError
from surerank.llm import Session
from surerank.llm.session import BudgetExhaustedError
from surerank.rankers.llm.base import LLMRanker
from surerank.rankers.llm.listwise import rank_windows
from surerank.types import Query


def connected(n: int, blocks: list[list[int]]) -> bool:
    """Whether the blocks link all ``n`` items (union-find): only then is one global order identifiable."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for block in blocks:
        for item in block[1:]:
            parent[find(item)] = find(block[0])
    return len({find(i) for i in range(n)}) == 1


def block_design(n: int, block_size: int, replicas: int, seed: int = 0, max_tries: int = 50) -> list[list[int]]:
    """``replicas`` shuffled partitions of ``range(n)`` into near-equal blocks of at most ``block_size``.

    The first replica keeps the input order (the first stage's ranking is informative: its top items
    meet each other), the others are random; redrawn until connected.  Every item is in ``replicas``
    blocks (if ``block_size`` is 2 and ``n`` odd, the top item -- or the second -- is in one more per replica).
    """
    if block_size < 2:
        raise InputError(f"block_size: must be >= 2, got {block_size}")
    if replicas < 1:
        raise InputError(f"replicas: must be >= 1, got {replicas}")
    if n <= block_size:
        return [list(range(n))]
    n_blocks = -(-n // block_size)
    rng = np.random.default_rng(seed)
    blocks: list[list[int]] = []
    for _ in range(max_tries):
        blocks = []
        for r in range(replicas):
            perm = np.arange(n) if r == 0 else rng.permutation(n)
            for part in np.array_split(perm, n_blocks):
                block = [int(i) for i in part]
                if len(block) == 1:  # only when block_size is 2 and n is odd: pair it with the first stage's
                    # top item (its second for the top item itself) -- the same partner in every replica, so
                    # the extra appearances never spread to every item
                    block.append(0 if block[0] != 0 else 1)
                blocks.append(block)
        if replicas == 1 or connected(n, blocks):
            return blocks
    return blocks


class JointRankLLMRanker(LLMRanker):
    """Options: ``block_size``, ``replicas`` (r: blocks per item), ``aggregation`` (Bradley-Terry by default:
    it beat PageRank, win counts and Kemeny in ``benchmarks/llm_strategies.py``), ``first_token`` (rank blocks
    by first-identifier logits, FIRST-style), ``refine`` (re-rank the aggregated top ``refine`` items in one
    more listwise call: a second round that sharpens the head of the list)."""

    name: ClassVar[str] = "llm-jointrank"
    fallback_effect: ClassVar[str] = "kept the input order for {n} blocks"
    no_logprobs_effect: ClassVar[str] = "asked again for the whole ranking, parsed from the text"

    def __init__(self, backend: Any = "openai", *, block_size: int = 20, replicas: int = 3,
                 aggregation: str = "bradley-terry", first_token: bool = False, refine: int = 0,
                 max_new_tokens: int | None = None, **kwargs: Any) -> None:
        super().__init__(backend, **kwargs)
        if aggregation not in AGGREGATORS:
            raise InputError(f"aggregation: expected one of {', '.join(AGGREGATORS)}, got {aggregation!r}")
        if first_token and block_size > 20:
            raise InputError(f"block_size: FIRST-style blocks read top-20 logprobs; {block_size} > 20")
        block_design(block_size + 1, block_size, replicas)  # validates
        if refine < 0 or refine == 1:
            raise InputError(f"refine: 0 (off) or the number of top items to re-rank (>= 2), got {refine}")
        self.refine = refine
        self.block_size, self.replicas = block_size, replicas
        self.aggregation, self.first_token = aggregation, first_token
        self.max_new_tokens = max_new_tokens

    def options(self) -> dict[str, Any]:
        return {"block_size": self.block_size, "replicas": self.replicas, "aggregation": self.aggregation,
                "first_token": self.first_token, "refine": self.refine}

    def _rank_one(self, query: Query, passages: list[str], session: Session):
        n = len(passages)
        blocks = block_design(n, self.block_size, self.replicas, seed=self.seed)
        left = session.calls_left()
        if left is not None and left < len(blocks):  # rank the blocks that fit; the aggregation orders every
            session.budget_exhausted = True           # item seen
            blocks = blocks[:left]
        if not blocks:
            return list(range(n)), None, {"blocks": 0}
        try:
            rankings = rank_windows(session, query, passages, blocks, first=self.first_token,
                                    max_new_tokens=self.max_new_tokens)
        except BudgetExhaustedError:
            return list(range(n)), None, {"blocks": 0}
        if len(blocks) == 1:
            return rankings[0], None, {"blocks": 1}
        w = rankings_to_wins(n, rankings)
        order, scores = aggregate(w, self.aggregation, seed=self.seed)
        info = {"blocks": len(blocks), "refined": 0}
        if self.refine:
            head = order[: self.refine]
            try:
                order[: len(head)] = rank_windows(session, query, passages, [head], first=self.first_token,
                                                  max_new_tokens=self.max_new_tokens)[0]
                info["refined"] = len(head)
                return order, None, info
            except BudgetExhaustedError:
                pass
        return order, scores, info
