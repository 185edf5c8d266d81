"""Engine internals (batch planning, windows, aggregation, templates) and long-document handling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import surerank
from engine_fixtures import cranfield_text
from surerank.engine.checkpoint.locate import default_model_dir
from surerank.engine.runtime.core import Engine, EngineConfig
from surerank.engine.text.batching import build_batch, plan_batches
from surerank.engine.text.passages import AGGREGATES, PassagePolicy, aggregate_scores, covered
from surerank.engine.text.tokenize import Sequence, TokenizerEngine, pair_sequence, single_sequence, windows
from surerank.errors import InputError

lengths_st = st.lists(st.integers(min_value=1, max_value=600), min_size=0, max_size=200)


@given(lengths_st, st.integers(1, 64), st.integers(1, 5000))
def test_plan_batches_covers_every_sequence_once_within_limits(lengths, max_batch, budget):
    plan = plan_batches(lengths, max_batch, budget)
    seen = np.concatenate(plan) if plan else np.array([], dtype=int)
    assert sorted(seen.tolist()) == list(range(len(lengths)))
    previous_longest = None
    for batch in plan:
        widths = [lengths[i] for i in batch]
        assert len(batch) <= max_batch
        assert len(batch) == 1 or len(batch) * max(widths) <= budget
        if previous_longest is not None:
            assert max(widths) <= previous_longest  # longest first: an OOM shows up at once
        previous_longest = min(widths)


@given(st.integers(0, 5000), st.integers(1, 512), st.integers(1, 512))
def test_windows_cover_the_document_with_bounded_size(n, size, stride):
    spans = windows(n, size, stride)
    assert all(0 <= a < b <= n or (n == 0 and a == b == 0) for a, b in spans)
    assert all(b - a <= size for a, b in spans)
    assert covered(spans) == n
    assert spans[0][0] == 0 and spans[-1][1] == n


@given(st.lists(st.tuples(st.integers(0, 300), st.integers(0, 300)), max_size=30))
def test_covered_counts_the_union(raw):
    spans = [(min(a, b), max(a, b)) for a, b in raw]
    expected = len({t for a, b in spans for t in range(a, b)})
    assert covered(spans) == expected


@given(st.lists(st.floats(-50, 50, allow_nan=False), min_size=1, max_size=40), st.integers(1, 10))
@settings(max_examples=200)
def test_aggregates_are_ordered(scores, k):
    values = np.array(scores)
    mx, mean = aggregate_scores(values, "max"), aggregate_scores(values, "mean")
    topk = aggregate_scores(values, "topk-mean", k)
    assert mx + 1e-9 >= topk >= mean - 1e-9
    assert aggregate_scores(values, "first") == values[0]
    shuffled = values[::-1]
    assert aggregate_scores(shuffled, "max") == mx
    assert np.isclose(aggregate_scores(shuffled, "mean"), mean)
    if k >= len(values):
        assert np.isclose(topk, mean)


def test_policy_reports_what_it_covers():
    spans, report = PassagePolicy(mode="passages", overlap=10, max_passages=3).spans(1000, 100, extra_tokens=5)
    assert len(spans) == 3 and report.passages_scored == 3
    assert report.tokens_used == covered(spans) + 5 and report.truncated
    assert report.tokens_dropped == 1000 - covered(spans)
    _, whole = PassagePolicy(mode="passages").spans(1000, 100)
    assert not whole.truncated and whole.tokens_dropped == 0 and whole.strategy == "passages-max"
    _, cut = PassagePolicy().spans(1000, 100)
    assert cut.truncated and cut.tokens_dropped == 900 and cut.passages_scored == 1


def test_bert_template_and_token_types():
    tok = TokenizerEngine(default_model_dir() / "tokenizer.json")
    t = tok.template
    assert (t.single_prefix, t.single_suffix) == ((101,), (102,))
    assert (t.pair_prefix, t.pair_middle, t.pair_suffix, t.second_type_id) == ((101,), (102,), (102,), 1)
    q, d = tok.encode(["what is lift", "lift is a force"])
    expected = tok.tokenizer.encode("what is lift", "lift is a force")
    seqs: list[Sequence] = [pair_sequence(t, q, d), single_sequence(t, q)]
    batch = build_batch(seqs, np.array([0, 1]), tok.pad_id, t.second_type_id)
    assert batch.input_ids[0].tolist() == expected.ids
    assert batch.token_type_ids[0].tolist() == expected.type_ids
    assert batch.attention_mask[1].tolist() == [1] * 5 + [0] * (len(expected.ids) - 5)


def test_roberta_positions_follow_transformers_convention():
    seqs = [Sequence((np.array([5, 6, 7], np.int32),), 3, 3), Sequence((np.array([5], np.int32),), 1, 1)]
    batch = build_batch(seqs, np.array([0, 1]), pad_id=1, second_type_id=0, position_offset=2)
    # transformers: cumsum(mask) * mask + padding_idx, with padding_idx = 1
    assert batch.position_ids.tolist() == [[2, 3, 4], [2, 1, 1]]


def test_engine_restores_input_order_across_batches():
    engine = Engine(EngineConfig(batch_size=2))
    texts = ["a", "a much longer text about wings and lift", "mid length text", "b", "another one here"]
    ids = engine.tokenizer.encode(texts)
    seqs = [single_sequence(engine.tokenizer.template, x) for x in ids]
    together = engine.run(seqs)
    assert engine.last_stats.batches == 3
    for i, s in enumerate(seqs):
        np.testing.assert_allclose(engine.run([s])[0], together[i], atol=1e-5)
    engine.on_gpu = True  # the GPU path pads the next batch on a background thread; same results
    np.testing.assert_allclose(engine.run(seqs), together, atol=1e-6)


def test_out_of_memory_splits_the_batch():
    """A GPU out-of-memory cannot happen here; a backend that raises it for batches > 2 stands in."""
    engine = Engine(EngineConfig(batch_size=8))
    real = engine.backend

    class TightMemory:
        name, precision, device = "onnx", "fp32", "cpu"

        def run(self, batch):
            if len(batch.index) > 2:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return real.run(batch)

        def is_oom(self, exc):
            return "out of memory" in str(exc)

        def empty_cache(self):
            pass

    ids = engine.tokenizer.encode([f"text number {i} " * (i + 1) for i in range(8)])
    seqs = [single_sequence(engine.tokenizer.template, x) for x in ids]
    expected = engine.run(seqs)
    engine.backend = TightMemory()
    got = engine.run(seqs)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert engine.last_stats.oom_retries >= 1 and engine.max_batch <= 2


@pytest.fixture(scope="module")
def long_document_case():
    tok = TokenizerEngine(default_model_dir() / "tokenizer.json")
    filler = cranfield_text(200_000)
    offsets = tok.tokenizer.encode(filler, add_special_tokens=False).offsets
    size = 3100
    # four ~3,100-token documents of unrelated (aeronautics) prose, cut at token boundaries
    texts = [filler[offsets[i * size][0]:offsets[(i + 1) * size][0]] for i in range(4)]
    needle = " Liquid nitrogen boils at minus 196 degrees Celsius at normal atmospheric pressure. "
    cut = offsets[2 * size + int(size * 0.93)][0] - offsets[2 * size][0]  # near the end of document 2
    texts[2] = texts[2][:cut] + needle + texts[2][cut:]
    lengths = [len(x) for x in tok.encode(texts)]
    needle_pos = len(tok.encode([texts[2][:cut]])[0])
    return texts, lengths, needle_pos


def test_relevant_sentence_near_the_end_of_a_long_document(long_document_case):
    texts, lengths, needle_pos = long_document_case
    assert all(n >= 3000 for n in lengths) and needle_pos > 2700
    query = "at what temperature does liquid nitrogen boil"
    passages = surerank.Reranker("embedding", max_length=128, long_documents="passages").rank(query, texts)
    assert passages.ids[0] == "2"
    top = passages.items[0].truncation
    assert top.passages_scored > 20 and not top.truncated and top.strategy == "passages-max"

    truncated = surerank.Reranker("embedding", max_length=128).rank(query, texts)
    item = next(i for i in truncated.items if i.id == "2")
    assert truncated.truncated and item.truncation.truncated and item.truncation.strategy == "truncate"
    assert item.truncation.tokens_dropped == lengths[2] - 126 and item.truncation.passages_scored == 1


@pytest.mark.parametrize("how", AGGREGATES)
def test_every_aggregate_runs_end_to_end(how, long_document_case):
    texts, _, _ = long_document_case
    ranked = surerank.Reranker("embedding", max_length=64, long_documents="passages", aggregate=how,
                               max_passages=4).rank("liquid nitrogen", [t[:3000] for t in texts])
    assert ranked.info["long_documents"] == f"passages-{how}"
    assert all(i.truncation.passages_scored <= 4 for i in ranked.items)


# -- reading a model's files: never guessed --------------------------------------------------------------
def _model_dir(tmp_path, config: dict | None = None, tokenizer_max: int | None = 512):
    """A model directory with the default model's weights (linked), tokenizer and a chosen config."""
    import os
    import shutil

    src = default_model_dir()
    target = tmp_path / "model"
    target.mkdir()
    os.symlink(src / "model.safetensors", target / "model.safetensors")
    shutil.copy(src / "tokenizer.json", target / "tokenizer.json")
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(config or {})
    (target / "config.json").write_text(json.dumps(cfg))
    if tokenizer_max is not None:
        (target / "tokenizer_config.json").write_text(json.dumps({"model_max_length": tokenizer_max}))
    return target


def _st_files(target, pooling_cfg: dict, modules: list[str] = ("Pooling",), sbert: dict | None = None,
              st_cfg: dict | None = None, type_prefix: str = "sentence_transformers.models."):
    entries = [{"idx": 0, "name": "0", "path": "", "type": type_prefix + "Transformer"}]
    for i, kind in enumerate(modules, start=1):
        entries.append({"idx": i, "name": str(i), "path": f"{i}_{kind}", "type": type_prefix + kind})
        (target / f"{i}_{kind}").mkdir()
        (target / f"{i}_{kind}" / "config.json").write_text(json.dumps(pooling_cfg if kind == "Pooling" else {}))
    (target / "modules.json").write_text(json.dumps(entries))
    if sbert is not None:
        (target / "sentence_bert_config.json").write_text(json.dumps(sbert))
    if st_cfg is not None:
        (target / "config_sentence_transformers.json").write_text(json.dumps(st_cfg))


OLD_KEYS = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens", "max": "pooling_mode_max_tokens",
            "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
            "weightedmean": "pooling_mode_weightedmean_tokens", "lasttoken": "pooling_mode_lasttoken"}
NEW_TYPES = "sentence_transformers.sentence_transformer.modules.pooling."


@pytest.mark.parametrize("mode", list(OLD_KEYS))
@pytest.mark.parametrize("fmt", ["old", "new"])
def test_pooling_is_read_from_either_sentence_transformers_format(tmp_path, mode, fmt):
    from surerank.engine.checkpoint.files import read_model_files

    target = _model_dir(tmp_path)
    if fmt == "old":
        cfg = {"word_embedding_dimension": 384, **{key: m == mode for m, key in OLD_KEYS.items()}}
    else:  # sentence-transformers 6: one key
        cfg = {"embedding_dimension": 384, "pooling_mode": mode, "include_prompt": True}
    _st_files(target, cfg)
    files = read_model_files(target)
    assert files.pooling == mode
    assert files.sources["pooling"] == "1_Pooling/config.json"


@pytest.mark.parametrize(("pool_cfg", "message"), [
    ({"pooling_mode": ["cls", "mean"]}, "cls \\+ mean"),
    ({"pooling_mode_cls_token": True, "pooling_mode_max_tokens": True}, "cls \\+ max"),
    ({"pooling_mode": "median"}, "'median'"),
])
def test_a_pooling_the_engine_cannot_run_is_refused_by_name(tmp_path, pool_cfg, message):
    from surerank.engine.checkpoint.files import read_model_files

    target = _model_dir(tmp_path)
    _st_files(target, pool_cfg)
    with pytest.raises(InputError, match=message):
        read_model_files(target)


def test_a_module_the_engine_does_not_run_is_refused_by_name(tmp_path):
    from surerank.engine.checkpoint.files import read_model_files

    target = _model_dir(tmp_path)
    _st_files(target, {"pooling_mode": "mean"}, modules=["Pooling", "Dense", "Normalize"])
    with pytest.raises(InputError, match=r"Dense \(2_Dense\)"):
        read_model_files(target)


def test_max_length_comes_from_the_model_files_in_order(tmp_path):
    """sentence_bert_config.json max_seq_length, else tokenizer_config.json model_max_length (where
    sentence-transformers 6 writes it), else the position embeddings; never above the positions."""
    from surerank.engine.checkpoint.files import read_model_files

    target = _model_dir(tmp_path, tokenizer_max=128)
    _st_files(target, {"pooling_mode": "cls"}, modules=["Pooling", "Normalize"], type_prefix=NEW_TYPES,
              sbert={"transformer_task": "feature-extraction"})  # what sentence-transformers 6 writes
    files = read_model_files(target)
    assert (files.max_length, files.pooling, files.normalize) == (128, "cls", True)
    assert files.sources["max_length"] == "tokenizer_config.json model_max_length"
    (target / "sentence_bert_config.json").write_text('{"max_seq_length": 96}')
    assert read_model_files(target).max_length == 96
    (target / "sentence_bert_config.json").write_text('{"max_seq_length": null}')
    assert read_model_files(target).max_length == 128
    (target / "sentence_bert_config.json").write_text('{"max_seq_length": 4096}')
    capped = read_model_files(target)
    assert capped.max_length == 512 and "max_position_embeddings" in capped.sources["max_length"]
    (target / "sentence_bert_config.json").unlink()
    (target / "tokenizer_config.json").write_text('{"model_max_length": 1000000000000000019884624838656}')
    assert read_model_files(target).max_length == 512  # transformers' "no limit" placeholder


@pytest.mark.parametrize(("model_type", "limit"), [("bert", 512), ("roberta", 512), ("xlm-roberta", 512),
                                                   ("mpnet", 512), ("camembert", 512)])
def test_position_offsets_per_family(tmp_path, model_type, limit):
    """RoBERTa, XLM-R, CamemBERT and MPNet count positions from padding_idx + 1: 514 embeddings take 512
    tokens (MPNet accepted 514 and raised IndexError past 512)."""
    from surerank.engine.checkpoint.files import read_model_files

    positions = 512 if model_type == "bert" else 514
    target = _model_dir(tmp_path, {"model_type": model_type, "max_position_embeddings": positions,
                                   "pad_token_id": 0 if model_type == "bert" else 1}, tokenizer_max=None)
    files = read_model_files(target)
    assert files.max_length == limit
    assert files.position_offset == (None if model_type == "bert" else 2)
    with pytest.raises(InputError, match=f"exceeds the model's {limit} position embeddings"):
        Engine(EngineConfig(model=str(target), max_length=limit + 2))


def test_prompts_come_from_the_model_unless_given(tmp_path):
    target = _model_dir(tmp_path)
    _st_files(target, {"pooling_mode": "mean"}, st_cfg={"prompts": {"query": "query: ", "document": "passage: "},
                                                        "default_prompt_name": None})
    ranker = surerank.Reranker("embedding", model=str(target), precision="fp32")
    assert (ranker.query_prefix, ranker.passage_prefix) == ("query: ", "passage: ")
    assert ranker.sources["query_prefix"] == "config_sentence_transformers.json prompts['query']"
    explicit = surerank.Reranker("embedding", model=str(target), precision="fp32", query_prefix="",
                                 passage_prefix="doc: ")
    assert (explicit.query_prefix, explicit.passage_prefix) == ("", "doc: ")
    # the prompt really reaches the model: scores with the model's prompts equal scores with them given
    docs = ["fleas live for months", "the stock market fell"]
    a = ranker.rank("how long do fleas live", docs).scores
    b = surerank.Reranker("embedding", model=str(target), precision="fp32", query_prefix="query: ",
                          passage_prefix="passage: ").rank("how long do fleas live", docs).scores
    c = surerank.Reranker("embedding", model=str(target), precision="fp32", query_prefix="",
                          passage_prefix="").rank("how long do fleas live", docs).scores
    assert a == b and a != c


def test_dot_similarity_is_honoured_without_normalize(tmp_path):
    target = _model_dir(tmp_path)
    _st_files(target, {"pooling_mode": "mean"}, st_cfg={"similarity_fn_name": "dot"})
    ranked = surerank.Reranker("embedding", model=str(target), precision="fp32").rank("how long do fleas live",
                                                                    ["fleas live for months"])
    assert ranked.items[0].score > 1.5  # an unnormalised dot product, not a cosine
    (target / "config_sentence_transformers.json").write_text(json.dumps({"similarity_fn_name": "manhattan"}))

    with pytest.raises(InputError, match="manhattan"):
        surerank.Reranker("embedding", model=str(target), precision="fp32")


def test_graphs_over_the_size_limit_keep_weights_in_external_data(tmp_path, monkeypatch):
    """fp32 models over 2 GB need ONNX external data; a tiny threshold stands in for a 2 GB model."""
    from engine_fixtures import build_tiny_cross_encoder
    from surerank.engine.onnx import graph_io
    from surerank.engine.runtime import core

    model_dir = build_tiny_cross_encoder(tmp_path / "ce")
    monkeypatch.setenv("SURERANK_CACHE", str(tmp_path / "cache-normal"))
    docs = ["lift is an upward force on a wing", "a cat sat on a mat", "drag opposes motion"]
    normal = surerank.Reranker("cross-encoder", model=str(model_dir), precision="fp32").rank("what is lift", docs)
    monkeypatch.setattr(graph_io, "EXTERNAL_DATA_BYTES", 1024)
    monkeypatch.setenv("SURERANK_CACHE", str(tmp_path / "cache-external"))
    monkeypatch.setattr(core, "_ENGINES", {})  # engines are cached per configuration: build anew
    for precision in ("fp32", "int8"):
        ranker = surerank.Reranker("cross-encoder", model=str(model_dir), precision=precision)
        ranked = ranker.rank("what is lift", docs)
        if precision == "fp32":
            assert graph_io.has_external_data(Path(ranker.engine.backend.path))
            np.testing.assert_allclose(ranked.scores, normal.scores, atol=1e-6)
            assert ranked.ids == normal.ids
        else:
            assert np.corrcoef(ranked.scores, normal.scores)[0, 1] > 0.9
    data = list((tmp_path / "cache-external" / "onnx").glob("*.data"))
    assert data and all(f.stat().st_size > 1024 for f in data)


def test_a_copy_of_a_model_reuses_its_graph_and_a_changed_config_builds_anew(tmp_path, monkeypatch):
    """The graph cache is keyed by content (weights, config.json): a new virtualenv or a re-download at another
    path reuses the graph; editing the config (here the LayerNorm epsilon the graph bakes in) does not."""
    import shutil

    from engine_fixtures import build_tiny_cross_encoder
    from surerank.engine import graphs
    from surerank.engine.checkpoint.files import read_model_files

    monkeypatch.setenv("SURERANK_CACHE", str(tmp_path / "cache"))
    first = build_tiny_cross_encoder(tmp_path / "a" / "ce")
    built = graphs.built_graph(read_model_files(first), "classifier", "fp32")
    copy = tmp_path / "b" / "ce"
    shutil.copytree(first, copy)  # new path, new mtimes, same bytes

    class BuildAskedError(Exception):
        pass

    def refuse_to_build(*args, **kwargs):
        raise BuildAskedError

    monkeypatch.setattr(graphs, "build_encoder_graph", refuse_to_build)
    assert graphs.built_graph(read_model_files(copy), "classifier", "fp32") == built

    config = json.loads((copy / "config.json").read_text())
    config["layer_norm_eps"] = config.get("layer_norm_eps", 1e-12) * 10
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(BuildAskedError):  # not in the cache: the builder is asked for a new graph
        graphs.built_graph(read_model_files(copy), "classifier", "fp32")
