"""The LLM rankers over real HTTP on loopback: an OpenAI-compatible stand-in server answering from a
deterministic word-overlap judge, with injected 5xx/429 replies, timeouts and malformed bodies/answers."""

from __future__ import annotations

import pytest

from surerank import Query, Reranker
from surerank.llm.openai import OpenAICompatibleBackend
from surerank.rankers.llm.base import LLMBackendError
from surerank.testing.judge import word_overlap
from surerank.testing.llm_server import StandInServer

QUERY = "solar panel efficiency in cold winter weather"
DOCS = [
    "Bananas are rich in potassium and easy to digest.",
    "Solar panel output drops on short winter days.",
    "Cold weather can raise solar panel efficiency because heat lowers cell voltage in winter.",
    "Efficiency of solar panel cells depends on temperature and weather.",
    "Winter tires improve grip in cold weather.",
    "The panel discussed efficiency of public transport.",
    "Solar eclipses happen when the moon blocks the sun.",
    "A guide to knitting warm scarves for winter.",
]


def truth_order(query: str = QUERY, docs: list[str] = DOCS) -> list[int]:
    scores = [word_overlap(query, d) for d in docs]
    return sorted(range(len(docs)), key=lambda i: (-scores[i], i))


@pytest.fixture
def server():
    with StandInServer() as s:
        yield s


def backend(server: StandInServer, **kwargs) -> OpenAICompatibleBackend:
    options = {"timeout": 5.0, "max_retries": 3, "backoff": 0.01, "concurrency": 4, **kwargs}
    return OpenAICompatibleBackend(model="stand-in-judge", base_url=server.base_url, **options)


def query() -> Query:
    return Query.from_texts(QUERY, DOCS, id="q1")


def indices(ranked) -> list[int]:
    return [item.index for item in ranked.items]


@pytest.mark.parametrize(("name", "options", "exact"), [
    ("llm-pointwise", {}, True),
    ("llm-pointwise", {"scale": 4}, False),
    ("llm-query-likelihood", {}, True),
    ("llm-pairwise", {"sampling": "all"}, True),
    ("llm-pairwise", {"sampling": "window", "window": 2}, False),
    ("llm-setwise", {"children": 2, "top_k": 3}, False),
    ("llm-listwise", {"window": 4, "step": 2}, False),
    ("llm-listwise", {"window": 20}, True),
    ("llm-first", {"window": 4, "step": 2}, False),
    ("llm-jointrank", {"block_size": 4, "replicas": 3}, False),
])
def test_every_method_ranks_over_http_and_carries_its_cost(server, name, options, exact):
    ranker = Reranker(name, backend=backend(server), **options)
    estimate = ranker.estimate(query())
    ranked = ranker.rank(query())
    truth = truth_order()
    assert sorted(indices(ranked)) == list(range(len(DOCS)))
    assert indices(ranked)[0] == truth[0]
    if exact:
        assert indices(ranked) == truth
    else:
        assert set(indices(ranked)[:3]) <= set(truth[:4])
    cost = ranked.cost
    assert cost.calls == server.requests > 0
    assert cost.prompt_tokens > 0 and cost.latency_s > 0
    assert cost.completion_tokens > 0 or name == "llm-query-likelihood"  # UPR scores the prompt only
    assert ranked.info["errors"] == 0
    if name != "llm-setwise":  # the estimate is exact for non-adaptive methods, an upper bound for setwise
        assert (estimate.calls, estimate.rounds) == (cost.calls, cost.rounds)
    else:
        assert estimate.calls >= cost.calls and estimate.rounds >= cost.rounds


def test_round_structure_matches_each_method(server):
    n = len(DOCS)
    point = Reranker("llm-pointwise", backend=backend(server)).rank(query())
    joint = Reranker("llm-jointrank", backend=backend(server), block_size=4, replicas=2).rank(query())
    slide = Reranker("llm-listwise", backend=backend(server), window=4, step=2).rank(query())
    pairs = Reranker("llm-pairwise", backend=backend(server)).rank(query())
    assert (point.cost.calls, point.cost.rounds) == (n, 1)
    assert (joint.cost.calls, joint.cost.rounds) == (4, 1)
    assert (slide.cost.calls, slide.cost.rounds) == (3, 3)  # starts 4, 2, 0
    assert (pairs.cost.calls, pairs.cost.rounds) == (n * (n - 1), 1)  # both orders of every pair


def test_5xx_and_429_replies_are_retried(server):
    b = backend(server)
    server.faults = ["500", "503", "429"]
    ranked = Reranker("llm-pointwise", backend=b).rank(query())
    assert b.retries == 3
    assert server.requests == len(DOCS) + 3
    assert ranked.info["errors"] == 0
    assert indices(ranked) == truth_order()


def test_a_timeout_is_retried_and_then_succeeds(server):
    b = backend(server, timeout=0.3, concurrency=1)
    server.faults = ["slow:1.0"]
    ranked = Reranker("llm-listwise", backend=b, window=20).rank(query())
    assert b.retries == 1
    assert ranked.info["errors"] == 0
    assert indices(ranked) == truth_order()


def test_persistent_failure_falls_back_and_is_reported_or_raises(server):
    server.faults = ["500"] * 3
    ranked = Reranker("llm-listwise", backend=backend(server, max_retries=2), window=20).rank(query())
    assert ranked.info["errors"] == 1 and ranked.cost.details["errors"] == 1
    assert "500" in ranked.cost.details["first_error"]
    assert indices(ranked) == list(range(len(DOCS)))  # the window kept its input order
    server.faults = ["slow:1.0"]
    with pytest.raises(LLMBackendError, match="failed"):
        Reranker("llm-listwise", backend=backend(server, timeout=0.2, max_retries=0), window=20,
                 on_error="raise").rank(query())


def test_client_errors_are_not_retried(server):
    b = backend(server)
    server.faults = ["400"]
    ranked = Reranker("llm-listwise", backend=b, window=20).rank(query())
    assert b.retries == 0 and server.requests == 1
    assert ranked.info["errors"] == 1


@pytest.mark.parametrize("fault", ["bad-json", "no-choices", "garbage"])
def test_malformed_replies_never_raise_and_are_counted(server, fault):
    server.faults = [fault]
    ranked = Reranker("llm-listwise", backend=backend(server, max_retries=0), window=20).rank(query())
    assert indices(ranked) == list(range(len(DOCS)))
    assert ranked.info["fallbacks"] == 1  # the one window could not be used and kept its order
    assert ranked.info["errors"] == (0 if fault == "garbage" else 1)  # transport-level vs answer-level


def test_thinking_is_stripped_and_the_flag_is_sent(server):
    server.faults = ["think"]
    ranked = Reranker("llm-listwise", backend=backend(server, thinking=False), window=20).rank(query())
    assert indices(ranked) == truth_order()
    assert server.bodies[-1]["chat_template_kwargs"] == {"enable_thinking": False}


def test_logprobs_are_requested_and_used(server):
    ranked = Reranker("llm-pairwise", backend=backend(server), sampling="window", window=1).rank(query())
    body = server.bodies[0]
    assert body["logprobs"] is True and body["top_logprobs"] == 20
    assert ranked.info["fallbacks"] == 0


def test_concurrency_limit_is_respected(server):
    server.delay = 0.05
    Reranker("llm-pointwise", backend=backend(server, concurrency=3)).rank(query())
    assert 1 < server.max_in_flight <= 3


def test_cache_answers_repeated_judgments_without_calls(server, tmp_path):
    path = tmp_path / "judgments.sqlite"
    first = Reranker("llm-jointrank", backend=backend(server, cache=str(path)), block_size=4).rank(query())
    sent = server.requests
    again = Reranker("llm-jointrank", backend=backend(server, cache=str(path)), block_size=4).rank(query())
    assert server.requests == sent
    assert again.ids == first.ids
    # reruns cost no calls: the trace says so (cache hits are not calls, and add no tokens)
    assert (again.cost.calls, again.cost.cache_hits, again.cost.prompt_tokens) == (0, first.cost.calls, 0)
    assert first.cost.cache_hits == 0 and again.info["cache_hits"] == first.cost.calls


def test_budget_stops_calls_and_is_reported(server):
    ranked = Reranker("llm-pointwise", backend=backend(server), max_calls=3).rank(query())
    assert server.requests == 3 and ranked.cost.calls == 3
    assert ranked.info["budget_exhausted"] and ranked.info["unscored"] == len(DOCS) - 3
    assert [item.index for item in ranked.items[3:]] == sorted(item.index for item in ranked.items[3:])
    slide = Reranker("llm-listwise", backend=backend(server), window=4, step=2, max_calls=2).rank(query())
    assert slide.cost.calls == 2 and slide.info["budget_exhausted"]


def test_rank_many_gives_each_query_its_own_cost_trace(server):
    ranker = Reranker("llm-listwise", backend=backend(server), window=20)
    lists = ranker.rank_many([query(), ("winter tires", DOCS[:3]), ("empty", [])])
    assert [len(r) for r in lists] == [8, 3, 0]
    assert [r.cost.calls for r in lists] == [1, 1, 0]


def test_queries_run_side_by_side_within_the_concurrency_cap(server):
    """A sliding window makes one call per round, so calls overlap only when queries do."""
    queries = [Query.from_texts(f"{QUERY} {i}", DOCS[i % 3:] + DOCS[:i % 3], id=f"q{i}") for i in range(6)]
    alone = Reranker("llm-listwise", backend=backend(server, concurrency=1), window=4, step=2).rank_many(queries)
    assert server.max_in_flight == 1
    server.delay = 0.05
    server.max_in_flight = 0
    together = Reranker("llm-listwise", backend=backend(server, concurrency=3), window=4, step=2).rank_many(queries)
    assert 1 < server.max_in_flight <= 3
    assert [r.ids for r in together] == [r.ids for r in alone]
    assert [r.query.id for r in together] == [q.id for q in queries]
    assert [r.cost.calls for r in together] == [r.cost.calls for r in alone]
