"""int8-fast of the hand-built BERT graph (recipe ``pc-fold``): the FFN hidden layer's outlier channels are
folded into a small fp32 side branch (surerank.engine.quantize.outliers.fold_ffn_outliers), every projection
else runs int8.

On a two-layer cross-encoder made of all-MiniLM-L6-v2's first layers (no torch needed), with one hidden
channel of layer 1 planted 50x larger: the channel must be found, the folded graph must compute what the
fp32 graph does, and the FFN output projection reading it, alone int8, must move the scores far less folded
than not.  The recipe must record what it folded and keep the side branch fp32.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine_fixtures import build_tiny_cross_encoder
from surerank.engine import graphs
from surerank.engine.checkpoint.files import read_model_files
from surerank.engine.onnx import calibration, drift, graph_io
from surerank.engine.quantize import dynamic, outliers, recipes

PLANTED = 7
FFN_OUT = ["l0_ff2", "l1_ff2"]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """(model files, fp32 graph with layer 1's hidden channel 7 scaled by 50)."""
    import onnx
    from onnx import numpy_helper

    directory = build_tiny_cross_encoder(tmp_path_factory.mktemp("ce-fold"), layers=2)
    mp = pytest.MonkeyPatch()
    mp.setenv("SURERANK_CACHE", str(tmp_path_factory.mktemp("cache")))
    try:
        files = read_model_files(directory)
        fp32 = graphs.provision(files, "classifier", "fp32")
    finally:
        mp.undo()
    graph = onnx.load(str(fp32))
    for tensor in graph.graph.initializer:
        if tensor.name in ("l1_ff1_w", "l1_ff1_b"):
            array = numpy_helper.to_array(tensor).copy()
            array[..., PLANTED] *= 50
            tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
    path = tmp_path_factory.mktemp("planted") / "planted.onnx"
    onnx.save(graph, str(path))
    return files, path


def _outputs(path, feeds):
    session = graph_io.open_session(path, threads=1)
    names = {i.name for i in session.get_inputs()}
    return np.concatenate([session.run(None, {k: v for k, v in f.items() if k in names})[0] for f in feeds])


def _projections(path) -> list[str]:
    import onnx

    return [n.name for n in onnx.load(str(path)).graph.node if n.op_type in ("MatMul", "Attention")]


def test_the_planted_hidden_channel_is_found_first(planted):
    files, path = planted
    found = outliers.outlier_channels(path, FFN_OUT, files, "classifier")
    assert found["l1_gelu"][0] == PLANTED


def test_folding_keeps_the_fp32_outputs_and_lets_the_projection_run_int8(planted, tmp_path):
    import onnx
    from onnx import numpy_helper

    files, path = planted
    found = outliers.outlier_channels(path, FFN_OUT, files, "classifier")
    folded_path = tmp_path / "folded.onnx"
    folded = outliers.fold_ffn_outliers(path, FFN_OUT, found, folded_path)
    assert folded["l1_ff2"] == found["l1_gelu"]
    graph = onnx.load(str(folded_path))
    weights = {t.name: numpy_helper.to_array(t) for t in graph.graph.initializer}
    assert not weights["l1_ff1_w"][:, folded["l1_ff2"]].any() and not weights["l1_ff1_b"][folded["l1_ff2"]].any()
    assert set(outliers.folded_products(folded)) <= {n.name for n in graph.graph.node}

    feeds = calibration.drift_sequences(files, "classifier")[:24]
    reference = _outputs(path, feeds)
    np.testing.assert_allclose(_outputs(folded_path, feeds), reference, rtol=0,
                               atol=1e-4 * np.abs(reference).max())
    # layer 1's FFN output projection alone int8: its per-tensor activation scale is set by the planted
    # channel without the fold, by the ordinary channels with it
    plain, with_fold = tmp_path / "plain-int8.onnx", tmp_path / "fold-int8.onnx"
    dynamic.quantize_keeping(path, plain, [n for n in _projections(path) if n != "l1_ff2"])
    dynamic.quantize_keeping(folded_path, with_fold, [n for n in _projections(folded_path) if n != "l1_ff2"])
    plain_drift = drift.measure_drift(path, plain, files, "classifier")["drift"]
    fold_drift = drift.measure_drift(path, with_fold, files, "classifier")["drift"]
    assert fold_drift < plain_drift / 3, (plain_drift, fold_drift)


def test_the_recipe_records_the_fold_and_keeps_the_side_branch_fp32(planted, tmp_path):
    import onnx

    files, path = planted
    dst = tmp_path / "pc-fold.onnx"
    recipes.quantize_graph(path, dst, "pc-fold", files, "classifier")
    graph = onnx.load(str(dst))
    props = {p.key: p.value for p in graph.metadata_props}
    folded = json.loads(props[dynamic.FOLDED_CHANNELS_KEY])
    assert PLANTED in folded["l1_ff2"]
    kept = props[dynamic.FP32_NODES_KEY].split(",")
    assert "classifier" in kept and set(outliers.folded_products(folded)) <= set(kept)
    nodes = {n.name: n.op_type for n in graph.graph.node}
    assert all(nodes[name] == "MatMul" for name in outliers.folded_products(folded))  # not quantised
    assert not any(op == "MatMul" for name, op in nodes.items() if name.endswith(("_ff1", "_ff2", "_ao")))
    # every projection else int8, yet closer to fp32 than quantising everything as it is
    every = tmp_path / "pc-all.onnx"
    recipes.quantize_graph(path, every, "pc-all", files, "classifier")
    fold_drift = drift.measure_drift(path, dst, files, "classifier")["drift"]
    all_drift = drift.measure_drift(path, every, files, "classifier")["drift"]
    assert fold_drift < all_drift, (fold_drift, all_drift)


def test_building_a_graph_removes_the_graphs_of_retired_recipes_only(tmp_path, monkeypatch):
    monkeypatch.setenv("SURERANK_CACHE", str(tmp_path / "cache"))
    files = read_model_files(build_tiny_cross_encoder(tmp_path / "ce", layers=1))
    fp32 = graphs.built_graph(files, "classifier", "fp32")
    stem = fp32.name[: -len("-fp32.onnx")]
    retired = [fp32.with_name(f"{stem}-int8-pc-sens{suffix}") for suffix in (".onnx", ".auto.json")]
    kept = [fp32.with_name(f"{stem}-int8-pc-noff2.onnx"), fp32.with_name(f"other-{stem}-int8-pc-sens.onnx")]
    for path in retired + kept:
        path.write_bytes(b"stand-in")
    fast = graphs.built_graph(files, "classifier", "int8-fast")
    assert fast.name == f"{stem}-int8-{recipes.PRECISION_RECIPES['built']['int8-fast']}.onnx" and fast.is_file()
    assert not any(p.exists() for p in retired)
    assert all(p.read_bytes() == b"stand-in" for p in kept) and fp32.is_file()
