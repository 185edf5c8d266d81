"""Outlier activation channels, and the two ways of moving them out of an int8 product's way.

A few input channels of some projections carry activations far larger than the rest (all-mpnet-base-v2's
channel 555 reaches 66 where the median is 1.3); dynamic int8 scales activations per tensor, so they
set the scale and the ordinary channels lose their precision.  :func:`outlier_channels` finds them on the
calibration text; :func:`split_outlier_channels` splits them off into a small fp32 product (LLM.int8());
:func:`fold_ffn_outliers` moves an FFN's outlier hidden channels into a small fp32 side branch (cheaper
on the hand-built BERT graph: no mask over the 4x-wide hidden tensor).  All fp32, the graphs they write
compute what their source does.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from surerank.engine.checkpoint.files import ModelFiles
from surerank.engine.onnx.calibration import drift_sequences
from surerank.engine.onnx.graph_io import open_session, save_graph


def insert_nodes(model: Any, nodes: list[Any], before: dict[int, list[Any]], after: dict[int, list[Any]]) -> None:
    """Make ``nodes`` the graph's nodes, each with ``before[id(node)]`` ahead of it and ``after[id(node)]``
    behind it (``nodes``: the objects those ids were taken from, held by the caller)."""
    ordered = [m for n in nodes for m in (*before.get(id(n), ()), n, *after.get(id(n), ()))]
    del model.graph.node[:]
    model.graph.node.extend(ordered)


#: an input channel of a projection is an outlier when its largest calibration activation is this many
#: times the median channel's (all-mpnet-base-v2: channel 555 reaches 66 where the median is 1.3).  On
#: mpnet, 6x split off 69 channels and the search then kept 2 projections fp32 at drift 0.244; 4x splits
#: off 152 and keeps 1 (layer 0's value projection) at drift 0.211
OUTLIER_RATIO = 4.0
#: at most this share of a projection input's channels is split off (LLM.int8() finds a handful per layer)
OUTLIER_MAX_SHARE = 1 / 64


def outlier_channels(fp32: Path, candidates: list[str], files: ModelFiles, head: str) -> dict[str, list[int]]:
    """Per input tensor of the candidate projections: its outlier channels on the calibration sequences
    (largest absolute activation over ``OUTLIER_RATIO`` times the median channel's, the largest first,
    at most ``OUTLIER_MAX_SHARE`` of the channels); tensors without outliers are left out."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(fp32))
    by_name = {n.name: n for n in model.graph.node}
    tensors = list(dict.fromkeys(by_name[name].input[0] for name in candidates))
    for t in tensors:
        model.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
    with tempfile.TemporaryDirectory(dir=fp32.parent, prefix=".int8-outliers-") as tmp:
        probe = Path(tmp) / "probe.onnx"
        save_graph(model, probe)
        session = open_session(probe, threads=1)
        names = {i.name for i in session.get_inputs()}
        peak: dict[str, np.ndarray] = {}
        for feed in drift_sequences(files, head):
            outs = session.run(tensors, {k: v for k, v in feed.items() if k in names})
            for t, value in zip(tensors, outs):
                channel_max = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
                peak[t] = channel_max if t not in peak else np.maximum(peak[t], channel_max)
    found = {}
    for t, channel_max in peak.items():
        median = float(np.median(channel_max))
        order = np.argsort(-channel_max, kind="stable")[:max(1, int(len(channel_max) * OUTLIER_MAX_SHARE))]
        chosen = [int(c) for c in order if channel_max[c] > OUTLIER_RATIO * median]
        if chosen:
            found[t] = chosen
    return found


def split_outlier_channels(fp32: Path, candidates: list[str], outliers: dict[str, list[int]],
                           out: Path) -> dict[str, list[int]]:
    """Write to ``out`` the graph of ``fp32`` with each candidate's outlier input channels split off, as
    LLM.int8() does: ``x @ W = x_rest @ W + x[:, outliers] @ W[outliers]``, where ``x_rest`` is ``x``
    with those channels zeroed.  The candidate keeps its name on the ``x_rest`` product (the one int8 will
    quantise, its activations' per-tensor scale now set by ordinary channels); the outlier product stays
    fp32 (a few rows of the weight).  All fp32, the graph computes what ``fp32`` does.  Returns the outlier
    channels split off, per input tensor."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(fp32))
    weights = {t.name: t for t in model.graph.initializer}
    shared: dict[str, tuple[str, str]] = {}  # input tensor -> (its rest, its outlier channels)
    nodes = list(model.graph.node)  # held, so that the ids below stay those of these nodes
    before: dict[int, list[Any]] = {}
    after: dict[int, list[Any]] = {}
    for node in nodes:
        if node.name not in candidates or node.input[0] not in outliers or node.input[1] not in weights:
            continue
        x, w = node.input[0], node.input[1]
        channels = outliers[x]
        weight = numpy_helper.to_array(weights[w])
        pre = []
        if x not in shared:
            keep = np.ones(weight.shape[0], dtype=np.float32)
            keep[channels] = 0
            model.graph.initializer.append(numpy_helper.from_array(keep, f"{x}::keep"))
            model.graph.initializer.append(numpy_helper.from_array(np.array(channels, np.int64), f"{x}::channels"))
            pre = [helper.make_node("Mul", [x, f"{x}::keep"], [f"{x}::rest"], name=f"{x}::rest"),
                   helper.make_node("Gather", [x, f"{x}::channels"], [f"{x}::outliers"], name=f"{x}::outliers",
                                    axis=-1)]
            shared[x] = (f"{x}::rest", f"{x}::outliers")
        rest, outl = shared[x]
        y = node.output[0]
        if f"{w}::outliers" not in weights:  # a weight two projections share is sliced once
            weights[f"{w}::outliers"] = numpy_helper.from_array(np.ascontiguousarray(weight[channels]),
                                                                 f"{w}::outliers")
            model.graph.initializer.append(weights[f"{w}::outliers"])
        node.input[0] = rest
        node.output[0] = f"{y}::rest"
        before[id(node)] = pre
        after[id(node)] = [
            helper.make_node("MatMul", [outl, f"{w}::outliers"], [f"{y}::outliers"], name=f"{node.name}::outliers"),
            helper.make_node("Add", [f"{y}::rest", f"{y}::outliers"], [y], name=f"{node.name}::join"),
        ]
    insert_nodes(model, nodes, before, after)
    save_graph(model, out)
    return {x: outliers[x] for x in shared}


#: activations (``com.microsoft`` ops taking the FFN input projection's bias) whose value at 0 is 0, so a
#: channel whose weights and bias are zeroed stays 0 through them
_ZERO_PRESERVING_ACTIVATIONS = ("BiasGelu", "FastGelu")


def fold_ffn_outliers(fp32: Path, candidates: list[str], outliers: dict[str, list[int]],
                      out: Path) -> dict[str, list[int]]:
    """Write to ``out`` the graph of ``fp32`` with the outlier channels of each candidate FFN output
    projection's input moved into a small fp32 side branch of the whole FFN.

    For ``ff2(act(ff1(x) + b))`` with outlier hidden channels ``o``: ``ff1``'s weight columns and bias
    entries ``o`` are zeroed (the activation then yields exactly 0 there, so the int8 ``ff2`` input's
    per-tensor scale is set by the ordinary channels), and ``act(x @ W1[:, o] + b[o]) @ W2[o]`` is added
    to ``ff2``'s output in fp32.  Cheaper than :func:`split_outlier_channels` on these projections (no mask
    over the wide hidden tensor: the side branch is a few columns wide).  All fp32, the graph computes what
    ``fp32`` does.  A candidate whose input does not come from ``act(MatMul)`` is left alone.  Returns
    the channels folded, per candidate; the side branch's two products, to keep fp32, are
    :func:`folded_products`.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(fp32))
    weights = {t.name: t for t in model.graph.initializer}
    nodes = list(model.graph.node)  # held, so that the ids below stay those of these nodes
    producer = {o: n for n in nodes for o in n.output}
    uses = Counter(i for n in nodes for i in n.input)
    after: dict[int, list[Any]] = {}
    folded: dict[str, list[int]] = {}
    for node in nodes:
        hidden = node.input[0] if node.name in candidates else None
        act = producer.get(hidden) if hidden in outliers else None
        if act is None or act.op_type not in _ZERO_PRESERVING_ACTIVATIONS or len(act.input) != 2:
            continue
        ff1 = producer.get(act.input[0])
        if ff1 is None or ff1.op_type != "MatMul" or node.input[1] not in weights or any(
                t not in weights or uses[t] != 1 for t in (ff1.input[1], act.input[1])) or any(
                uses[t] != 1 for t in (act.input[0], hidden)):
            continue  # not act(MatMul), or a tensor the fold changes is read by another node too
        channels = outliers[hidden]
        w1 = numpy_helper.to_array(weights[ff1.input[1]]).copy()
        b1 = numpy_helper.to_array(weights[act.input[1]]).copy()
        w2 = numpy_helper.to_array(weights[node.input[1]])
        side = f"{node.name}::outliers"
        model.graph.initializer.extend([
            numpy_helper.from_array(np.ascontiguousarray(w1[:, channels]), f"{side}_w1"),
            numpy_helper.from_array(b1[channels], f"{side}_b1"),
            numpy_helper.from_array(np.ascontiguousarray(w2[channels]), f"{side}_w2")])
        w1[:, channels] = 0
        b1[channels] = 0
        weights[ff1.input[1]].CopyFrom(numpy_helper.from_array(w1, ff1.input[1]))
        weights[act.input[1]].CopyFrom(numpy_helper.from_array(b1, act.input[1]))
        y = node.output[0]
        node.output[0] = f"{y}::rest"
        after[id(node)] = [
            helper.make_node("MatMul", [ff1.input[0], f"{side}_w1"], [f"{side}_h"], name=f"{side}_in"),
            helper.make_node(act.op_type, [f"{side}_h", f"{side}_b1"], [f"{side}_act"], name=f"{side}_act",
                             domain=act.domain),
            helper.make_node("MatMul", [f"{side}_act", f"{side}_w2"], [f"{side}_y"], name=side),
            helper.make_node("Add", [f"{y}::rest", f"{side}_y"], [y], name=f"{node.name}::join"),
        ]
        folded[node.name] = channels
    insert_nodes(model, nodes, {}, after)
    save_graph(model, out)
    return folded


def folded_products(folded: dict[str, list[int]]) -> list[str]:
    """The fp32 side-branch products :func:`fold_ffn_outliers` added for the candidates it folded."""
    return [f"{name}::outliers{part}" for name in folded for part in ("_in", "")]
