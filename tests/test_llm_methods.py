"""Method-level properties, run in-process against the stand-in judge (no transport)."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from surerank import Query, Reranker
from surerank.errors import InputError
from surerank.rankers.llm.jointrank import block_design, connected
from surerank.rankers.llm.listwise import window_starts
from surerank.rankers.llm.pairwise import sample_pairs
from surerank.testing.judge import Judge, JudgeBackend


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 300), window=st.integers(2, 40), data=st.data())
def test_sliding_window_always_reaches_the_top_and_covers_every_position(n, window, data):
    step = data.draw(st.integers(1, window))
    starts = window_starts(n, window, step)
    assert starts[-1] == 0  # the top ranks are always revisited (RankGPT misses them when (n-w) % step != 0)
    assert starts == sorted(starts, reverse=True)
    covered = set().union(*(range(s, min(n, s + window)) for s in starts))
    assert covered == set(range(n))
    if n <= window:
        assert starts == [0]  # a short list is still ranked, as one window
    else:
        assert all(0 < a - b <= step for a, b in itertools.pairwise(starts))


@settings(max_examples=100, deadline=None)
@given(n=st.integers(2, 150), block=st.integers(2, 30), replicas=st.integers(1, 4), seed=st.integers(0, 99))
def test_jointrank_design_puts_every_item_in_r_blocks_and_is_connected(n, block, replicas, seed):
    blocks = block_design(n, block, replicas, seed)
    counts = Counter(i for b in blocks for i in b)
    if n <= block:
        assert blocks == [list(range(n))]
        return
    assert set(counts) == set(range(n)) and min(counts.values()) == replicas
    assert sum(c - replicas for c in counts.values()) <= (replicas if block == 2 and n % 2 else 0)
    assert all(2 <= len(b) <= block for b in blocks)
    if replicas >= 2:
        assert connected(n, blocks)


@settings(max_examples=100, deadline=None)
@given(n=st.integers(2, 60), window=st.integers(1, 8), fraction=st.floats(0.05, 1.0), seed=st.integers(0, 9))
def test_pair_sampling(n, window, fraction, seed):
    every = n * (n - 1) // 2
    assert len(sample_pairs(n, "all")) == every
    cyclic = sample_pairs(n, "window", window=window)
    assert len(cyclic) == len(set(cyclic)) and all(i < j for i, j in cyclic)
    assert Counter(i for p in cyclic for i in p).keys() == set(range(n))  # nobody left out
    assert len(cyclic) <= min(every, n * window)
    drawn = sample_pairs(n, "random", fraction=fraction, seed=seed)
    assert len(drawn) == max(1, round(fraction * every)) and len(set(drawn)) == len(drawn)


def judged_query(n: int = 30) -> tuple[Query, list[int]]:
    texts = [f"passage {i} " + " ".join(["match"] * (i % 7) + ["filler"] * 5) for i in range(n)]
    truth = sorted(range(n), key=lambda i: (-(i % 7), i))
    return Query.from_texts("match", texts), truth


def test_setwise_finds_the_true_top_k_and_leaves_the_rest_in_input_order():
    query, _ = judged_query()
    ranked = Reranker("llm-setwise", backend=JudgeBackend(Judge(utility=lambda q, p: p.count("match"))),
                      children=3, top_k=5).rank(query)
    order = [item.index for item in ranked.items]
    assert [i % 7 for i in order[:5]] == [6, 6, 6, 6, 5]
    assert order[5:] == sorted(order[5:])
    estimate = Reranker("llm-setwise", backend="judge", children=3, top_k=5).estimate(query)
    assert estimate.calls >= ranked.cost.calls and estimate.rounds >= ranked.cost.rounds


def test_permutation_self_consistency_beats_a_single_noisy_pass_on_average():
    query, truth = judged_query(12)

    def misplaced(order: list[int]) -> int:
        return sum(1 for a, b in zip(order, truth) if a % 7 != b % 7)

    single, psc = 0, 0
    for seed in range(6):
        judge = Judge(utility=lambda q, p: p.count("match"), noise=2.0, seed=seed)
        one = Reranker("llm-listwise", backend=JudgeBackend(judge), window=20).rank(query)
        many = Reranker("llm-listwise", backend=JudgeBackend(judge), window=20, shuffles=7, seed=seed).rank(query)
        assert many.cost.calls == 7 and many.cost.rounds == 1
        single += misplaced([i.index for i in one.items])
        psc += misplaced([i.index for i in many.items])
    assert psc < single


def test_pairwise_debiasing_cancels_a_position_bias():
    query, truth = judged_query(8)
    biased = Judge(utility=lambda q, p: p.count("match") / 6, position_bias=3.0)
    both = Reranker("llm-pairwise", backend=JudgeBackend(biased)).rank(query)
    one = Reranker("llm-pairwise", backend=JudgeBackend(biased), both_orders=False).rank(query)
    assert [i.index % 7 for i in both.items] == [t % 7 for t in truth]
    assert [i.index % 7 for i in one.items] != [t % 7 for t in truth]


def test_options_are_validated_with_the_field_named():
    with pytest.raises(InputError, match="step"):
        Reranker("llm-listwise", backend="judge", window=10, step=11)
    with pytest.raises(InputError, match="window"):
        Reranker("llm-first", backend="judge", window=26)
    with pytest.raises(InputError, match="scale"):
        Reranker("llm-pointwise", backend="judge", scale=12)
    with pytest.raises(InputError, match="sampling"):
        Reranker("llm-pairwise", backend="judge", sampling="most")
    with pytest.raises(InputError, match="temperature_typo"):
        Reranker("llm-listwise", backend="judge", temperature_typo=1)
    with pytest.raises(InputError, match="base_url"):
        Reranker("llm-listwise", backend="openai", model="m")


def test_token_budget_stops_a_method_and_the_estimate_predicts_the_spend():
    query, _ = judged_query(30)
    free = Reranker("llm-listwise", backend="judge", window=10, step=5)
    estimate = free.estimate(query)
    full = free.rank(query)
    assert (estimate.calls, estimate.rounds) == (full.cost.calls, full.cost.rounds) == (5, 5)
    assert estimate.prompt_tokens == pytest.approx(full.cost.prompt_tokens, rel=0.2)  # windows hold other texts
    assert estimate.completion_tokens >= full.cost.completion_tokens  # max_tokens per call: an upper bound
    per_call = estimate.prompt_tokens // estimate.calls + estimate.completion_tokens // estimate.calls
    capped = Reranker("llm-listwise", backend="judge", window=10, step=5, max_total_tokens=2 * per_call + 10)
    ranked = capped.rank(query)
    assert ranked.info["budget_exhausted"] and ranked.cost.calls == 2
    assert ranked.cost.prompt_tokens + ranked.cost.completion_tokens <= 2 * per_call + 10
