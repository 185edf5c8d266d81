"""The int8-fast search of exported graphs (surerank.engine.quantize.search) on a random-weight ELECTRA.

The gated graph must be the fp32 graph with its gates shut and the all-int8 graph with them open; the
search must keep the most sensitive projections fp32, stay within its target as measured on the graph it
writes, and refuse when nothing fits.  An outlier channel planted in a LayerNorm must be found, and
splitting it off must leave the fp32 outputs as they were and give int8 the drift of the model without it.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from arch_fixtures import build_model
from surerank.engine import graphs
from surerank.engine.checkpoint.files import read_model_files
from surerank.engine.onnx import calibration, drift, graph_io
from surerank.engine.quantize import dynamic, outliers, recipes, search
from surerank.errors import InputError


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """(model files, exported fp32 graph, its weight projections, a quantize(path, fp32_nodes) function)."""
    directory = build_model(tmp_path_factory.mktemp("electra-qs"), "electra", "cross-encoder", max_length=128)
    mp = pytest.MonkeyPatch()
    mp.setenv("SURERANK_CACHE", str(tmp_path_factory.mktemp("cache")))
    try:
        files = read_model_files(directory)
        fp32 = graphs.exported_graph(files, "classifier")
    finally:
        mp.undo()
    layer, _ = recipes.weight_matmuls(fp32)
    return files, fp32, layer, dynamic.projection_quantizer(fp32, layer)


def _outputs(path, feeds, gates=None):
    session = graph_io.open_session(path, threads=1)
    names = {i.name for i in session.get_inputs()}
    extra = {search.GATES: np.asarray(gates, np.float32)} if gates is not None else {}
    return np.concatenate([session.run(None, {**{k: v for k, v in f.items() if k in names}, **extra})[0]
                           for f in feeds])


def test_the_gated_graph_is_fp32_shut_and_int8_open(model, tmp_path):
    files, fp32, layer, quantize = model
    every = tmp_path / "int8.onnx"
    quantize(every, [])
    gated = tmp_path / "gated.onnx"
    search.gated_graph(fp32, every, layer, gated)
    feeds = calibration.drift_sequences(files, "classifier")[:8]
    reference, int8 = _outputs(fp32, feeds), _outputs(every, feeds)
    assert np.max(np.abs(reference - int8)) > 1e-3  # int8 moves this model: the comparison can tell them apart
    np.testing.assert_allclose(_outputs(gated, feeds, np.zeros(len(layer))), reference, rtol=0, atol=1e-5)
    np.testing.assert_allclose(_outputs(gated, feeds, np.ones(len(layer))), int8, rtol=0, atol=1e-5)
    one = tmp_path / "one.onnx"  # one gate open: the graph with that projection alone int8
    quantize(one, [n for n in layer if n != layer[3]])
    gates = np.zeros(len(layer))
    gates[3] = 1
    np.testing.assert_allclose(_outputs(gated, feeds, gates), _outputs(one, feeds), rtol=0, atol=1e-5)


def test_the_search_keeps_the_most_sensitive_projections_fp32_within_its_target(model, tmp_path):
    files, fp32, layer, quantize = model
    _, everything = search.greedy_fp32_projections(fp32, quantize, layer, files, "classifier", np.inf)
    alone = everything["alone"]
    assert everything["int8"] == len(layer) and sorted(alone) == sorted(layer)
    target = float(np.median(list(alone.values())))
    keep, figures = search.greedy_fp32_projections(fp32, quantize, layer, files, "classifier", target)
    int8 = [n for n in layer if n not in keep]
    assert 1 <= len(int8) < len(layer) and figures["int8"] == len(int8) and figures["drift"] <= target
    assert max(alone[n] for n in int8) <= min(alone[n] for n in keep)
    # the graph written with that choice moves the calibration scores as the search measured
    graph = tmp_path / "chosen.onnx"
    quantize(graph, keep)
    measured = drift.measure_drift(fp32, graph, files, "classifier")
    assert measured["drift"] == pytest.approx(figures["drift"], rel=1e-3, abs=1e-4)


def test_nothing_within_the_target_is_refused_naming_fp32(model):
    files, fp32, layer, quantize = model
    with pytest.raises(InputError, match=r"precision: no projection .* within the drift target 0.*"
                                         r"precision='fp32'"):
        search.greedy_fp32_projections(fp32, quantize, layer, files, "classifier", 0.0)


FFN_IN = "model.electra.encoder.layer.0.intermediate.dense.MatMul"
PLANTED = 5


@pytest.fixture(scope="module")
def planted(model, tmp_path_factory):
    """The fp32 graph with channel 5 of layer 0's attention LayerNorm scaled by 100: the input of that
    layer's FFN projection gets an outlier channel, as real models have (all-mpnet-base-v2: channel 555)."""
    import onnx
    from onnx import numpy_helper

    fp32 = model[1]
    graph = onnx.load(str(fp32))
    for tensor in graph.graph.initializer:
        if tensor.name.startswith("model.electra.encoder.layer.0.attention.output.LayerNorm."):
            array = numpy_helper.to_array(tensor).copy()
            array[PLANTED] *= 100
            tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
    path = tmp_path_factory.mktemp("planted") / "planted.onnx"
    onnx.save(graph, str(path))
    return path


def test_a_planted_outlier_channel_is_found(model, planted):
    import onnx

    files, _, layer, _ = model
    found = outliers.outlier_channels(planted, layer, files, "classifier")
    graph = onnx.load(str(planted))
    ffn_input = next(n.input[0] for n in graph.graph.node if n.name == FFN_IN)
    assert found[ffn_input][0] == PLANTED
    # never more than OUTLIER_MAX_SHARE of a tensor's channels (its width: the rows of a weight reading it)
    rows = {t.name: t.dims[0] for t in graph.graph.initializer}
    width = {n.input[0]: rows[n.input[1]] for n in graph.graph.node if n.name in layer}
    assert all(len(c) <= max(1, int(width[t] * outliers.OUTLIER_MAX_SHARE)) for t, c in found.items())


def test_splitting_outliers_off_keeps_the_fp32_outputs_and_lets_int8_keep_them_too(model, planted, tmp_path):
    files, fp32, layer, quantize = model
    found = outliers.outlier_channels(planted, layer, files, "classifier")
    split = tmp_path / "split.onnx"
    applied = outliers.split_outlier_channels(planted, layer, found, split)
    assert applied == found
    feeds = calibration.drift_sequences(files, "classifier")[:16]
    reference = _outputs(planted, feeds)
    np.testing.assert_allclose(_outputs(split, feeds), reference, rtol=0, atol=1e-4 * np.abs(reference).max())
    # the FFN projection reading the outlier channel, alone int8: per-tensor activation scales are set by
    # channel 5 without the split (drift far above the same projection's in the model without the outlier),
    # by the ordinary channels with it (drift as in that model)
    others = [n for n in layer if n != FFN_IN]
    unplanted, plain, with_split = (tmp_path / f"{name}-int8.onnx" for name in ("unplanted", "plain", "split"))
    quantize(unplanted, others)
    dynamic.projection_quantizer(planted, layer)(plain, others)
    dynamic.projection_quantizer(split, layer)(with_split, others)
    usual = drift.measure_drift(fp32, unplanted, files, "classifier")["drift"]
    plain_drift = drift.measure_drift(planted, plain, files, "classifier")["drift"]
    split_drift = drift.measure_drift(planted, with_split, files, "classifier")["drift"]
    assert plain_drift > 2 * usual and split_drift < 1.5 * usual, (usual, plain_drift, split_drift)
