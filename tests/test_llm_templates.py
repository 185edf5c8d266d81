"""Named reranker templates and T5 rerankers against their published formulas.

Random-weight tiny models are built here from transformers configs (no weights in the repository), with a
tiny byte-level BPE tokenizer trained in code that has every token the templates need.  Each reference is
the model card's / reference code's procedure written out directly with transformers (prompt strings
spelled out here, not taken from surerank): Qwen3-Reranker, bge-reranker-v2-gemma, mxbai-rerank-v2,
monoT5, RankT5.  Then: refusals (unknown template, custom-code model without trust_remote_code), the
OpenAI-compatible path over real loopback HTTP (completions logprobs, vLLM /score and /rerank; and a server
running the tiny Qwen3 itself, for the default backend's parity), and the
llama.cpp code path through a stand-in Llama (llama-cpp-python is not installed here).
"""

from __future__ import annotations

import builtins
import ctypes
import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from http_support import send_json  # noqa: E402
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
from surerank.llm.hf import TransformersBackend  # noqa: E402
from surerank.llm.openai import OpenAICompatibleBackend  # noqa: E402

pytestmark = pytest.mark.torch

QUERY = "how do solar panels work in cold winter weather"
DOCS = [
    "Solar panels convert sunlight into electricity; cold weather raises their efficiency.",
    "Bananas are rich in potassium.",
    "In winter the days are short, so panels produce less energy overall.",
    "The stock market closed higher today after a volatile week.",
    "Photovoltaic cells lose voltage as they heat up, which is why cold helps them.",
    "Knitting a warm scarf takes a weekend.",
    "Snow on a panel blocks light until it slides off.",
    "yes no Yes No 1 0 true false",
]

# --- the published prompts (tests/published_templates.py) need these special tokens -------------------------
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<bos>"]


@pytest.fixture(scope="module")
def causal_tokenizer():
    """Byte-level BPE (as Qwen / Gemma) whose vocabulary has 'yes', 'no', 'Yes', '1', '0' as whole tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = ["yes", "no", "Yes", "No", "1", "0", QWEN3_PREFIX, QWEN3_TASK, GEMMA_PROMPT, MXBAI_TASK, QUERY, *DOCS]
    tok.train_from_iterator(corpus * 3, trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<|im_end|>",
                                                pad_token="<|endoftext|>")
    for label in ("yes", "no", "Yes", "1", "0"):
        assert fast.convert_tokens_to_ids(label) is not None
        assert fast(label, add_special_tokens=False)["input_ids"] == [fast.convert_tokens_to_ids(label)]
    return fast


def tiny_causal(config_cls, vocab_size: int, seed: int, **extra):
    """2 layers, random weights drawn wide enough that scores differ between passages."""
    config = config_cls(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=1024,
                        initializer_range=0.3, tie_word_embeddings=False, **extra)
    torch.manual_seed(seed)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


@pytest.fixture(scope="module")
def models(causal_tokenizer):
    n = len(causal_tokenizer)
    return {
        "qwen3-reranker": tiny_causal(transformers.Qwen3Config, n, 1),
        "bge-reranker-v2-gemma": tiny_causal(transformers.GemmaConfig, n, 2),
        "mxbai-rerank-v2": tiny_causal(transformers.Qwen2Config, n, 3),
    }


def left_padded_last_logits(model, tokenizer, rows: list[list[int]]):
    tokenizer.padding_side = "left"
    batch = tokenizer.pad({"input_ids": rows}, padding=True, return_tensors="pt")
    with torch.inference_mode():
        return model(**batch).logits[:, -1, :].float()


def reference_scores(name: str, model, tok) -> np.ndarray:
    """Each model card's own procedure, written out with transformers."""
    enc = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    if name == "qwen3-reranker":
        bodies = tok([f"<Instruct>: {QWEN3_TASK}\n<Query>: {QUERY}\n<Document>: {d}" for d in DOCS],
                     padding=False, truncation="longest_first", return_attention_mask=False, max_length=900)
        rows = [enc(QWEN3_PREFIX) + ids + enc(QWEN3_SUFFIX) for ids in bodies["input_ids"]]
        logits = left_padded_last_logits(model, tok, rows)
        yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
        pair = torch.stack([logits[:, no], logits[:, yes]], dim=1)
        return torch.nn.functional.log_softmax(pair, dim=1)[:, 1].exp().numpy()
    if name == "bge-reranker-v2-gemma":
        sep = enc("\n")
        rows = [[tok.bos_token_id, *enc(f"A: {QUERY}"), *sep, *enc(f"B: {d}"), *sep, *enc(GEMMA_PROMPT)]
                for d in DOCS]
        logits = left_padded_last_logits(model, tok, rows)
        return logits[:, enc("Yes")[0]].numpy()
    sep = enc("\n")
    rows = [enc(MXBAI_PREFIX) + enc(f"query: {QUERY}") + sep + enc(f"document: {d}") + sep + enc(MXBAI_TASK)
            + enc(MXBAI_SUFFIX) for d in DOCS]
    logits = left_padded_last_logits(model, tok, rows)
    return (logits[:, enc("1")[0]] - logits[:, enc("0")[0]]).numpy()


def scores_by_index(ranked) -> np.ndarray:
    out = np.zeros(len(ranked.items))
    for item in ranked.items:
        out[item.index] = item.score
    return out


@pytest.mark.parametrize("name", ["qwen3-reranker", "bge-reranker-v2-gemma", "mxbai-rerank-v2"])
def test_template_on_transformers_equals_the_published_formula(name, models, causal_tokenizer):
    backend = TransformersBackend(model_obj=models[name], tokenizer_obj=causal_tokenizer, batch_size=3)
    ranker = Reranker("llm-pointwise", backend=backend, template=name, max_words=None)
    ranked = ranker.rank(Query.from_texts(QUERY, DOCS, id="q1"))
    reference = reference_scores(name, models[name], causal_tokenizer)
    ours = scores_by_index(ranked)
    assert np.abs(ours - reference).max() <= 1e-3
    assert [item.index for item in ranked.items] == list(np.argsort(-reference, kind="stable"))
    assert np.ptp(reference) > 1e-2  # the passages really are told apart: a ranking to compare
    assert ranked.info["errors"] == 0 and ranked.info["fallbacks"] == 0
    assert ranked.cost.calls == len(DOCS) and ranked.cost.prompt_tokens > 0
    assert ranker.describe()["template"] == name
    if name == "qwen3-reranker":  # P(yes)
        assert ((ours > 0) & (ours < 1)).all()


def test_failed_template_calls_are_counted_and_ranked_last_and_reruns_hit_the_cache(models, causal_tokenizer, caplog):
    from surerank.llm import JudgmentCache

    docs = ["short one", " ".join(DOCS), "short two"]  # the middle prompt is over max_length
    backend = TransformersBackend(model_obj=models["qwen3-reranker"], tokenizer_obj=causal_tokenizer,
                                  max_length=140, cache=JudgmentCache())
    ranker = Reranker("llm-pointwise", backend=backend, template="qwen3-reranker", max_words=None)
    ranked = ranker.rank(Query.from_texts(QUERY, docs, id="q1"))
    assert ranked.items[-1].index == 1 and ranked.items[-1].score < min(i.score for i in ranked.items[:2])
    assert ranked.info["failures"] == {"context_overflow": 1} and ranked.info["fallbacks"] == 1
    assert "1 of 3 calls failed (context_overflow: 1)" in caplog.text
    again = ranker.rank(Query.from_texts(QUERY, docs, id="q1"))
    assert again.cost.calls == 1 and again.cost.cache_hits == 2  # the failed call is not cached
    assert [i.score for i in again.items] == [i.score for i in ranked.items]


def test_the_generic_prompt_is_not_the_published_formula(models, causal_tokenizer):
    """Without template= the ranker keeps today's generic Yes/No prompt: a different score altogether."""
    backend = TransformersBackend(model_obj=models["qwen3-reranker"], tokenizer_obj=causal_tokenizer)
    generic = scores_by_index(Reranker("llm-pointwise", backend=backend, max_words=None).rank(QUERY, DOCS))
    reference = reference_scores("qwen3-reranker", models["qwen3-reranker"], causal_tokenizer)
    assert np.abs(generic - reference).max() > 1e-2


def test_unknown_template_is_refused_listing_the_known_ones(models, causal_tokenizer):
    from surerank.llm.templates import TEMPLATES

    backend = TransformersBackend(model_obj=models["qwen3-reranker"], tokenizer_obj=causal_tokenizer)
    with pytest.raises(InputError) as caught:
        Reranker("llm-pointwise", backend=backend, template="qwen3")
    message = str(caught.value)
    assert "template" in message and "'qwen3'" in message
    assert all(name in message for name in TEMPLATES)
    # refused before any backend is built (no server is reachable at this address)
    with pytest.raises(InputError, match="qwen3-reranker"):
        Reranker("llm-pointwise", backend="openai", base_url="http://127.0.0.1:9/v1", model="m", template="nope")
    with pytest.raises(InputError, match="instruction"):
        Reranker("llm-pointwise", backend=backend, instruction="find answers")


def test_a_tokenizer_without_the_template_tokens_is_refused(models):
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers import models as tok_models

    bare = Tokenizer(tok_models.WordLevel({"[UNK]": 0, "hello": 1}, unk_token="[UNK]"))
    bare.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=bare, unk_token="[UNK]", pad_token="[UNK]")
    backend = TransformersBackend(model_obj=models["qwen3-reranker"], tokenizer_obj=fast)
    with pytest.raises(InputError, match="no token 'yes'"):
        Reranker("llm-pointwise", backend=backend, template="qwen3-reranker")


# --- custom-code models -----------------------------------------------------------------------------------
@pytest.fixture
def custom_code_dir(tmp_path, causal_tokenizer):
    """A local model folder whose config.json maps the model class to the repository's own Python file."""
    causal_tokenizer.save_pretrained(tmp_path)
    config = {"model_type": "qwen3", "architectures": ["CustomForCausalLM"], "vocab_size": len(causal_tokenizer),
              "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "head_dim": 8,
              "auto_map": {"AutoConfig": "modeling_custom.CustomConfig",
                           "AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "modeling_custom.py").write_text("raise RuntimeError('repository code ran')\n")
    return tmp_path


def test_custom_code_model_is_refused_without_trust_remote_code(custom_code_dir, monkeypatch):
    def no_prompt(*args, **kwargs):
        raise AssertionError("an interactive [y/N] prompt was shown")

    monkeypatch.setattr(builtins, "input", no_prompt)
    with pytest.raises(InputError, match="trust_remote_code=True") as caught:
        TransformersBackend(model=str(custom_code_dir))
    assert "auto_map" in str(caught.value) and "modeling_custom.CustomForCausalLM" in str(caught.value)
    with pytest.raises(InputError, match="trust_remote_code=True"):
        Reranker("llm-pointwise", backend="transformers", model=str(custom_code_dir), template="qwen3-reranker")
    from surerank.rankers.encoders.t5 import T5Ranker

    with pytest.raises(InputError, match="trust_remote_code=True"):
        T5Ranker(str(custom_code_dir))
    with pytest.raises(InputError, match="trust_remote_code: must be true or false"):
        TransformersBackend(model=str(custom_code_dir), trust_remote_code="yes")


# --- T5 rerankers -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def t5_parts():
    """A sentencepiece-style (Metaspace) BPE tokenizer with '▁true', '▁false', '<extra_id_10>' and '</s>'
    appended, and a tiny random T5 at transformers' default initialisation scale (at 3x, this T5's untrained
    attention, unscaled as in T5, saturated to one-hot and fp32 rounding alone moved a logit by 1e-2 against
    float64 on one calibration pair: a test of numerics, not of the formula or the export)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=["<pad>", "</s>", "<unk>", "<extra_id_10>"],
                                  show_progress=False)
    tok.train_from_iterator(["true false true false Query: Document: Relevant:", QUERY, *DOCS] * 3, trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                                unk_token="<unk>")
    for token in ("▁true", "▁false", "<extra_id_10>"):
        assert fast.convert_tokens_to_ids(token) != fast.unk_token_id
    config = transformers.T5Config(vocab_size=len(fast), d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                   num_decoder_layers=2, num_heads=4, decoder_start_token_id=0, pad_token_id=0,
                                   eos_token_id=1, initializer_factor=1.0)
    torch.manual_seed(5)
    return transformers.T5ForConditionalGeneration(config).eval(), fast


def t5_reference(model, tok, template: str) -> torch.Tensor:
    """pygaggle / InRanker's procedure: the whole input tokenized and padded, one decoder step."""
    batch = tok([template.format(q=QUERY, d=d) for d in DOCS], padding=True, truncation=True, max_length=512,
                return_tensors="pt")
    start = torch.full((len(DOCS), 1), model.config.decoder_start_token_id, dtype=torch.long)
    with torch.inference_mode():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     decoder_input_ids=start).logits[:, -1, :].float()


@pytest.mark.parametrize("variant", ["monot5", "rankt5"])
def test_t5_reranker_equals_the_published_formula(variant, t5_parts):
    model, tok = t5_parts
    if variant == "monot5":
        logits = t5_reference(model, tok, "Query: {q} Document: {d} Relevant:")
        pair = logits[:, [tok.convert_tokens_to_ids("▁false"), tok.convert_tokens_to_ids("▁true")]]
        reference = torch.log_softmax(pair, dim=-1)[:, 1].numpy()
    else:
        logits = t5_reference(model, tok, "Query: {q} Document: {d}")
        reference = logits[:, tok.convert_tokens_to_ids("<extra_id_10>")].numpy()
    ranker = Reranker("t5-reranker", model_obj=model, tokenizer_obj=tok, variant=variant, batch_size=3,
                      device="cpu")
    ranked = ranker.rank(Query.from_texts(QUERY, DOCS, id="q1"))
    ours = scores_by_index(ranked)
    assert np.abs(ours - reference).max() <= 1e-3
    assert [item.index for item in ranked.items] == list(np.argsort(-reference, kind="stable"))
    assert np.ptp(reference) > 1e-2
    if variant == "monot5":
        assert (ours < 0).all()  # log P(true)
    assert ranked.cost.calls == 3 and all(item.truncation is None for item in ranked.items)
    assert ranker.describe()["variant"] == variant


@pytest.fixture(scope="module")
def t5_dir(t5_parts, tmp_path_factory):
    """The tiny T5 and its tokenizer saved as a model folder, as a user names a checkpoint."""
    model, tok = t5_parts
    path = tmp_path_factory.mktemp("tiny-t5")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def t5_formula_reference(model, tok, variant: str) -> np.ndarray:
    if variant == "monot5":
        logits = t5_reference(model, tok, "Query: {q} Document: {d} Relevant:")
        pair = logits[:, [tok.convert_tokens_to_ids("▁false"), tok.convert_tokens_to_ids("▁true")]]
        return torch.log_softmax(pair, dim=-1)[:, 1].numpy()
    logits = t5_reference(model, tok, "Query: {q} Document: {d}")
    return logits[:, tok.convert_tokens_to_ids("<extra_id_10>")].numpy()


@pytest.mark.parametrize("variant", ["monot5", "rankt5"])
def test_t5_reranker_default_backend_is_a_checked_onnx_graph_at_the_formula(variant, t5_parts, t5_dir,
                                                                           monkeypatch):
    """A named checkpoint on the CPU runs on ONNX Runtime (the default there): the first decoder step is
    exported, checked against torch and cached; its scores equal the formula's, as torch's do."""
    from surerank.engine.onnx import seq2seq as onnx_seq2seq

    model, tok = t5_parts
    reference = t5_formula_reference(model, tok, variant)
    onnx_ranker = Reranker("t5-reranker", model=str(t5_dir), variant=variant, batch_size=3, device="cpu")
    torch_ranker = Reranker("t5-reranker", model=str(t5_dir), variant=variant, batch_size=3, backend="torch",
                            device="cpu")
    described = onnx_ranker.describe()
    assert described["backend"] == "onnx" and described["backend_choice"].startswith("auto -> onnx")
    parity = described["export_parity"]
    assert parity["measure"] == "max |Δ logit|" and 0 <= parity["value"] <= 1e-3
    assert torch_ranker.describe()["backend"] == "torch"
    for ranker in (onnx_ranker, torch_ranker):
        ranked = ranker.rank(Query.from_texts(QUERY, DOCS, id="q1"))
        ours = scores_by_index(ranked)
        assert np.abs(ours - reference).max() <= 1e-3
        assert [item.index for item in ranked.items] == list(np.argsort(-reference, kind="stable"))
        assert ranked.cost.calls == 3
    # the second ranker of the same checkpoint and tokens reuses the cached graph: no export
    monkeypatch.setattr(onnx_seq2seq, "_export_checked", lambda *a, **k: pytest.fail("exported again"))
    again = Reranker("t5-reranker", model=str(t5_dir), variant=variant, device="cpu")
    assert again.describe()["onnx_path"] == described["onnx_path"]
    assert again.describe()["export_parity"] == parity


def test_t5_onnx_backend_refuses_what_it_cannot_run(t5_parts, t5_dir, tmp_path, monkeypatch, caplog):
    model, tok = t5_parts
    # a graph over the parity bound is refused, naming the way out; only the refusal is cached, so a second
    # ranker is refused at once; "auto" then runs torch and says so
    import shutil

    from surerank.engine.checkpoint.cache import cache_dir
    from surerank.engine.onnx import seq2seq as onnx_seq2seq

    copy = shutil.copytree(t5_dir, tmp_path / "copy-of-tiny-t5")
    monkeypatch.setattr(onnx_seq2seq, "PARITY_BOUNDS", {"logit": -1.0})  # any figure is over it
    with pytest.raises(onnx_seq2seq.ExportParityError, match=r"max \|Δ logit\| .* > -1e\+00.*backend='torch'"):
        Reranker("t5-reranker", model=str(copy), backend="onnx")
    cached = sorted(p.name for p in (cache_dir() / "onnx").glob("copy-of-tiny-t5-*"))
    assert len(cached) == 1 and cached[0].endswith("-fp32.json")  # the refusal, no graph
    monkeypatch.undo()  # the bound is back: the remembered refusal still holds, without an export
    with pytest.raises(onnx_seq2seq.ExportParityError, match="remembered in"):
        Reranker("t5-reranker", model=str(copy), backend="onnx")
    ranker = Reranker("t5-reranker", model=str(copy), device="cpu")
    assert ranker.describe()["backend"] == "torch"
    assert ranker.describe()["backend_choice"].startswith("auto -> torch (the ONNX graph was refused")
    assert "backend auto -> torch instead" in caplog.text
    reference = t5_formula_reference(model, tok, "monot5")
    ranked = ranker.rank(Query.from_texts(QUERY, DOCS))
    assert np.abs(scores_by_index(ranked) - reference).max() <= 1e-3
    assert ranked.info["backend"] == "torch"  # the fallback travels with the result too
    assert ranked.info["backend_choice"].startswith("auto -> torch (the ONNX graph was refused")
    with pytest.raises(InputError, match="model_obj runs on backend='torch'"):
        Reranker("t5-reranker", model_obj=model, tokenizer_obj=tok, backend="onnx")
    with pytest.raises(InputError, match="dtype: the onnx backend runs float32"):
        Reranker("t5-reranker", model=str(t5_dir), backend="onnx", dtype="bfloat16")
    half = Reranker("t5-reranker", model=str(t5_dir), dtype="bfloat16", device="cpu").describe()
    assert (half["backend"], half["dtype"]) == ("torch", "bfloat16") and "dtype=bfloat16" in half["backend_choice"]
    with pytest.raises(InputError, match="backend: 'tensorrt' is unknown"):
        Reranker("t5-reranker", model=str(t5_dir), backend="tensorrt")


def test_checkpoints_missing_what_the_formula_reads_are_refused(t5_parts, causal_tokenizer, tmp_path):
    """A T5 checkpoint whose weights hold fewer decoder layers than its config names (a truncated save, an
    edited config), a base causal LM without its untied LM head given to the transformers backend:
    transformers would fill the gaps with random tensors and score noise. Refused on every backend, naming
    the tensors -- the ONNX export would otherwise check itself against the same noise and pass."""
    from safetensors.torch import load_file, save_file

    from surerank.errors import IncompleteCheckpointError

    model, tok = t5_parts
    partial = tmp_path / "t5-partial-decoder"
    model.save_pretrained(partial)
    tok.save_pretrained(partial)
    weights = load_file(partial / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("decoder.block.1.")},
              partial / "model.safetensors", metadata={"format": "pt"})
    for backend in ("onnx", "torch", "auto"):
        with pytest.raises(IncompleteCheckpointError,
                           match=r"lacks tensors the t5-reranker needs .*decoder\.block\.1\."):
            Reranker("t5-reranker", model=str(partial), backend=backend, device="cpu")

    base = tmp_path / "qwen3-base-no-lm-head"
    config = transformers.Qwen3Config(vocab_size=len(causal_tokenizer), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                      tie_word_embeddings=False)
    transformers.AutoModel.from_config(config).save_pretrained(base)
    causal_tokenizer.save_pretrained(base)
    with pytest.raises(IncompleteCheckpointError, match=r"lacks tensors the transformers backend needs.*lm_head"):
        Reranker("llm-pointwise", backend="transformers", model=str(base), template="qwen3-reranker")


def test_t5_long_document_keeps_the_prompt_end_and_says_so(t5_parts, caplog):
    model, tok = t5_parts
    ranker = Reranker("t5-reranker", model_obj=model, tokenizer_obj=tok, max_length=24, device="cpu")
    long_doc = " ".join(DOCS)
    ranked = ranker.rank(QUERY, [long_doc, DOCS[1]])
    cut = next(item for item in ranked.items if item.index == 0).truncation
    assert cut is not None and cut.truncated and 0 < cut.tokens_used < cut.tokens_total
    ids, _ = ranker._encode(QUERY, long_doc)
    assert len(ids) <= 24 and tok.decode(ids, skip_special_tokens=True).endswith("Relevant:")
    assert "lost the end of their document" in caplog.text
    with pytest.raises(InputError, match="variant"):
        Reranker("t5-reranker", model_obj=model, tokenizer_obj=tok, variant="monot5-guess")
    with pytest.raises(InputError, match="true_token"):
        Reranker("t5-reranker", model_obj=model, tokenizer_obj=tok, true_token="▁maybe")


# --- OpenAI-compatible servers over loopback HTTP ---------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.bodies.append((self.path, body))
        if self.path.endswith("/completions"):
            i = next(k for k, d in enumerate(DOCS) if d in body["prompt"])
            top = {"yes": -0.1 - 0.3 * i, "no": -1.0, "Yes": -0.5, " yes": -2.0}
            if i == 5:
                top.pop("no")  # 'no' below the top log-probabilities: no score, never a guess
            reply = {"choices": [{"text": "yes", "logprobs": {"tokens": ["yes"], "top_logprobs": [top]}}],
                     "usage": {"prompt_tokens": 50, "completion_tokens": 1}}
        elif self.path.endswith("/score"):
            i = next(k for k, d in enumerate(DOCS) if d in body["text_2"])
            reply = {"data": [{"index": 0, "score": 1.0 / (i + 1)}], "usage": {"prompt_tokens": 40}}
        else:
            i = next(k for k, d in enumerate(DOCS) if d in body["documents"][0])
            reply = {"results": [{"index": 0, "relevance_score": 10.0 - i}]}
        send_json(self, reply)


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.bodies = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _base(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/v1"


def test_template_over_completions_sends_the_raw_prompt_and_scores_p_yes(server):
    backend = OpenAICompatibleBackend(model="qwen3-reranker", base_url=_base(server), concurrency=2)
    ranker = Reranker("llm-pointwise", backend=backend, template="qwen3-reranker", max_words=None)
    assert ranker.estimate(Query.from_texts(QUERY, DOCS, id="q1")).calls == len(DOCS) and not server.bodies
    ranked = ranker.rank(Query.from_texts(QUERY, DOCS, id="q1"))
    sent = {body["prompt"]: body for path, body in server.bodies}
    assert all(path == "/v1/completions" for path, _ in server.bodies)
    expected = QWEN3_PREFIX + f"<Instruct>: {QWEN3_TASK}\n<Query>: {QUERY}\n<Document>: {DOCS[2]}" + QWEN3_SUFFIX
    assert expected in sent and sent[expected]["max_tokens"] == 1 and sent[expected]["logprobs"] == 20
    scores = scores_by_index(ranked)
    for i in range(len(DOCS)):
        if i != 5:  # P(yes) from the exact 'yes'/'no' tokens (not 'Yes' or ' yes')
            assert scores[i] == pytest.approx(1 / (1 + math.exp(-1.0 - (-0.1 - 0.3 * i))), abs=1e-9)
    assert ranked.items[-1].index == 5  # no score: below every scored passage
    assert ranked.info["fallbacks"] == 1 and ranked.info["fallback_causes"] == {"label_not_in_top_logprobs": 1}
    assert ranked.info["errors"] == 0 and ranked.cost.calls == len(DOCS)


def test_raw_logit_template_over_completions_is_refused(server):
    backend = OpenAICompatibleBackend(model="gemma", base_url=_base(server))
    with pytest.raises(InputError, match="score_endpoint"):
        Reranker("llm-pointwise", backend=backend, template="bge-reranker-v2-gemma")


@pytest.mark.parametrize("endpoint", ["score", "rerank"])
def test_template_through_vllm_score_and_rerank_endpoints(server, endpoint):
    ranked = Reranker("llm-pointwise", backend="openai", base_url=_base(server), model="m", template="qwen3-reranker",
                      score_endpoint=endpoint, max_words=None).rank(QUERY, DOCS)
    assert [item.index for item in ranked.items] == list(range(len(DOCS)))
    assert all(path == f"/v1/{endpoint}" for path, _ in server.bodies)
    body = next(b for _, b in server.bodies if DOCS[0] in json.dumps(b))
    query_side, doc_side = (body["text_1"], body["text_2"]) if endpoint == "score" else (body["query"],
                                                                                         body["documents"][0])
    assert query_side == QWEN3_PREFIX + f"<Instruct>: {QWEN3_TASK}\n<Query>: {QUERY}\n"
    assert doc_side == f"<Document>: {DOCS[0]}" + QWEN3_SUFFIX
    expected = [1.0 / (i + 1) for i in range(len(DOCS))] if endpoint == "score" else [10.0 - i for i in range(8)]
    assert scores_by_index(ranked) == pytest.approx(expected)
    raw = Reranker("llm-pointwise", backend="openai", base_url=_base(server), model="m", template="qwen3-reranker",
                   score_endpoint=endpoint, score_inputs="raw", max_words=None)
    raw.rank(QUERY, DOCS[:1])
    last = server.bodies[-1][1]
    assert (last.get("text_1") or last.get("query")) == QUERY


# --- llama.cpp: the code path through a stand-in Llama ------------------------------------------------------
# --- the default backend (an OpenAI-compatible server) with a real model behind it ----------------------------
@pytest.fixture(scope="module")
def yes_no_qwen3(models, causal_tokenizer):
    """The tiny Qwen3 trained for a few steps to answer 'yes' or 'no' to the reranking prompts, as
    Qwen3-Reranker is: a server returns the top-20 log-probabilities only, and an untrained model puts
    'yes' / 'no' far below them.  The split between the two is left to the random weights."""
    import copy

    model = copy.deepcopy(models["qwen3-reranker"]).train()
    tok = causal_tokenizer
    prompts = [QWEN3_PREFIX + f"<Instruct>: {QWEN3_TASK}\n<Query>: {QUERY}\n<Document>: {d}" + QWEN3_SUFFIX
               for d in DOCS]
    rows = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    labels = [tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    for _ in range(30):
        optimizer.zero_grad()
        loss = sum(-torch.log_softmax(model(torch.tensor([r])).logits[0, -1], -1)[labels].sum() for r in rows)
        loss.backward()
        optimizer.step()
    return model.eval()


class _ModelServer(BaseHTTPRequestHandler):
    """``POST /v1/completions`` as vLLM serves it: the prompt text tokenized whole, one forward pass, the
    next token's ``logprobs`` most likely tokens (decoded) with their log-probabilities."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        model, tok = self.server.model, self.server.tokenizer
        ids = tok(body["prompt"], add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].float(), -1)
        values, indices = logprobs.topk(int(body["logprobs"]))
        top = {tok.decode([int(i)]): float(v) for v, i in zip(values, indices)}
        text = tok.decode([int(indices[0])])
        reply = {"choices": [{"text": text, "logprobs": {"tokens": [text], "top_logprobs": [top]}}],
                 "usage": {"prompt_tokens": len(ids), "completion_tokens": 1}}
        send_json(self, reply)


def test_qwen3_template_on_the_default_backend_with_a_real_model_equals_the_published_formula(
        yes_no_qwen3, causal_tokenizer):
    """llm-pointwise's default backend is an OpenAI-compatible server: here one on loopback that runs the
    (trained tiny) Qwen3 model; surerank's P(yes) from its top log-probabilities against the model card's
    procedure written out with transformers."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _ModelServer)
    httpd.model, httpd.tokenizer = yes_no_qwen3, causal_tokenizer
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        ranker = Reranker("llm-pointwise", base_url=f"http://127.0.0.1:{httpd.server_address[1]}/v1",
                          model="qwen3-reranker", template="qwen3-reranker", max_words=None)
        assert ranker.describe()["backend"] == "openai"  # the default, not named here
        ranked = ranker.rank(Query.from_texts(QUERY, DOCS, id="q1"))
    finally:
        httpd.shutdown()
        httpd.server_close()
    reference = reference_scores("qwen3-reranker", yes_no_qwen3, causal_tokenizer)
    ours = scores_by_index(ranked)
    assert ranked.info["fallbacks"] == 0 and ranked.info["errors"] == 0
    assert np.abs(ours - reference).max() <= 1e-3
    assert [item.index for item in ranked.items] == list(np.argsort(-reference, kind="stable"))
    assert np.ptp(reference) > 1e-2


class _StandInLlama:
    """What LlamaCppBackend uses of llama_cpp.Llama, computed by a transformers model (CI does not build
    llama-cpp-python: its source build takes 13 minutes; tests/test_llm_llama.py runs the real library)."""

    def __init__(self, model, tok) -> None:
        self.model, self.tok = model, tok
        self._input_ids = np.zeros(0, dtype=np.intc)
        self.n_tokens = 0
        self.ctx = None
        self._logits = np.zeros(0, dtype=np.float32)

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        ids = self.tok(text.decode("utf-8"), add_special_tokens=False)["input_ids"]
        return ([self.tok.bos_token_id] if add_bos else []) + list(ids)

    def token_bos(self) -> int:
        return int(self.tok.bos_token_id)

    def n_vocab(self) -> int:
        return int(self.model.config.vocab_size)

    def eval(self, tokens: list[int]) -> None:
        sequence = list(self._input_ids[:self.n_tokens]) + list(tokens)
        self._input_ids = np.array(sequence, dtype=np.intc)
        self.n_tokens = len(sequence)
        with torch.inference_mode():
            self._logits = self.model(torch.tensor([sequence])).logits[0, -1].float().numpy().copy()

    def logits_pointer(self, ctx, index):
        return self._logits.ctypes.data_as(ctypes.POINTER(ctypes.c_float))


def test_llama_cpp_template_path_equals_the_published_formula(models, causal_tokenizer):
    import types

    from surerank.llm.backend import LLMBackend
    from surerank.llm.llama_cpp import LlamaCppBackend

    llm = _StandInLlama(models["qwen3-reranker"], causal_tokenizer)
    backend = object.__new__(LlamaCppBackend)
    LLMBackend.__init__(backend, model="stand-in.gguf", concurrency=1)
    backend._llm, backend._lock, backend.n_ctx = llm, threading.Lock(), 2048
    backend._label_ids, backend._vocab = {}, None
    backend._lib = types.SimpleNamespace(  # llama.cpp's vocabulary API: entries spelled as the tokenizer's
        llama_get_logits_ith=llm.logits_pointer, llama_model_get_vocab=lambda model: None,
        llama_vocab_get_text=lambda vocab, i: (causal_tokenizer.convert_ids_to_tokens(i) or "").encode())
    ranked = Reranker("llm-pointwise", backend=backend, template="qwen3-reranker", max_words=None).rank(QUERY, DOCS)
    reference = reference_scores("qwen3-reranker", models["qwen3-reranker"], causal_tokenizer)
    assert np.abs(scores_by_index(ranked) - reference).max() <= 1e-3
    assert [item.index for item in ranked.items] == list(np.argsort(-reference, kind="stable"))
