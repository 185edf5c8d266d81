"""The int8-fast search of exported graphs (surerank.engine.quant_search) on a random-weight ELECTRA.

The gated graph must be the fp32 graph with its gates shut and the all-int8 graph with them open; the
search must keep the most sensitive projections fp32, stay within its target as measured on the graph it
writes, and refuse when nothing fits.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from arch_fixtures import build_model
from surerank.engine import onnx_build, onnx_export, quant_search
from surerank.engine.model_files import read_model_files
from surerank.errors import InputError


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """(model files, exported fp32 graph, its weight projections, a quantize(path, fp32_nodes) function)."""
    directory = build_model(tmp_path_factory.mktemp("electra-qs"), "electra", "cross-encoder", max_length=128)
    mp = pytest.MonkeyPatch()
    mp.setenv("SURERANK_CACHE", str(tmp_path_factory.mktemp("cache")))
    try:
        files = read_model_files(directory)
        fp32 = onnx_export.exported_model_path(files, "classifier")
    finally:
        mp.undo()
    layer, _ = onnx_export._weight_matmuls(fp32)
    return files, fp32, layer, onnx_export.projection_quantizer(fp32, layer)


def _outputs(path, feeds, gates=None):
    session = onnx_build._session(path, threads=1)
    names = {i.name for i in session.get_inputs()}
    extra = {quant_search.GATES: np.asarray(gates, np.float32)} if gates is not None else {}
    return np.concatenate([session.run(None, {**{k: v for k, v in f.items() if k in names}, **extra})[0]
                           for f in feeds])


def test_the_gated_graph_is_fp32_shut_and_int8_open(model, tmp_path):
    files, fp32, layer, quantize = model
    every = tmp_path / "int8.onnx"
    quantize(every, [])
    gated = tmp_path / "gated.onnx"
    quant_search.gated_graph(fp32, every, layer, gated)
    feeds = onnx_build._drift_sequences(files, "classifier")[:8]
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
    _, everything = quant_search.greedy_fp32_projections(fp32, quantize, layer, files, "classifier", np.inf)
    alone = everything["alone"]
    assert everything["int8"] == len(layer) and sorted(alone) == sorted(layer)
    target = float(np.median(list(alone.values())))
    keep, figures = quant_search.greedy_fp32_projections(fp32, quantize, layer, files, "classifier", target)
    int8 = [n for n in layer if n not in keep]
    assert 1 <= len(int8) < len(layer) and figures["int8"] == len(int8) and figures["drift"] <= target
    assert max(alone[n] for n in int8) <= min(alone[n] for n in keep)
    # the graph written with that choice moves the calibration scores as the search measured
    graph = tmp_path / "chosen.onnx"
    quantize(graph, keep)
    measured = onnx_build.measure_drift(fp32, graph, files, "classifier")
    assert measured["drift"] == pytest.approx(figures["drift"], rel=1e-3, abs=1e-4)


def test_nothing_within_the_target_is_refused_naming_fp32(model):
    files, fp32, layer, quantize = model
    with pytest.raises(InputError, match=r"precision: no projection .* within the drift target 0.*"
                                         r"precision='fp32'"):
        quant_search.greedy_fp32_projections(fp32, quantize, layer, files, "classifier", 0.0)
