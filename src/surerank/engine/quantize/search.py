"""Which projections of an exported graph may run int8: a greedy search on calibration text.

Some models cannot take int8 on a few projections.  all-mpnet-base-v2 is one: quantising all 72 encoder
projections moves its embeddings to a mean cosine of 0.01 with fp32's (ONNX Runtime's dynamic int8
quantises activations per tensor, and a few of its layers carry outlier channels); quantising layer 10's
FFN input projection alone moves them by 0.93 in mean 1 - cosine, most of the others by under 1e-4.
Exported graphs therefore take this search (the ``pc-split`` recipe of ``int8-fast``):

0. the outlier channels of every projection's input (a channel whose largest calibration activation is
   over four times the median channel's; all-mpnet-base-v2's channel 555 reaches 66 where the median is
   1.3) are split off into a small fp32 product, as LLM.int8() does, so that the int8 product's per-tensor
   activation scale is set by the ordinary channels (:func:`split_outlier_channels`); with it 71 of
   mpnet's 72 projections run int8 within the target instead of 46 (``pc-greedy`` is the search alone);
1. one graph holds both versions of every candidate projection, each output blended as
   ``fp32 + gate * (int8 - fp32)`` with the gates a graph input, so one ONNX Runtime session measures
   any choice of int8 projections without re-quantising the model;
2. every projection's drift is measured alone (only its gate open), on the calibration sequences the
   ``precision="auto"`` check uses and with its measure (max |Δ score| / sd of the fp32 scores);
3. the projections are taken from the least to the most sensitive, and the longest prefix whose joint
   drift stays within ``target`` is quantised (a binary search over its length); the rest stay fp32.

The hand-built BERT graph's ``int8-fast`` (``pc-fold``) quantises every projection after
:func:`fold_ffn_outliers` has moved the FFN hidden layer's outlier channels into a small fp32 side branch
(cheaper there than the split: no mask over the 4x-wide hidden tensor).
"""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from surerank.engine.model_files import ModelFiles
from surerank.errors import InputError

logger = logging.getLogger(__name__)

GATES = "surerank_int8_gates"


def _insert_nodes(model: Any, nodes: list[Any], before: dict[int, list[Any]], after: dict[int, list[Any]]) -> None:
    """Make ``nodes`` the graph's nodes, each with ``before[id(node)]`` ahead of it and ``after[id(node)]``
    behind it (``nodes``: the objects those ids were taken from, held by the caller)."""
    ordered = [m for n in nodes for m in (*before.get(id(n), ()), n, *after.get(id(n), ()))]
    del model.graph.node[:]
    model.graph.node.extend(ordered)


def gated_graph(fp32: Path, quantized: Path, candidates: list[str], out: Path) -> dict[str, int]:
    """Write to ``out`` the graph of ``quantized`` (every candidate int8) with each candidate's fp32
    MatMul beside it and its output blended by the ``GATES`` input (1 = int8, 0 = fp32); return each
    candidate's weight size (its multiply-adds per token)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from surerank.engine.onnx_build import _atomic_save

    src = onnx.load(str(fp32))
    model = onnx.load(str(quantized))
    by_name = {n.name: n for n in src.graph.node}
    weights = {t.name: t for t in src.graph.initializer}
    nodes = list(model.graph.node)  # held, so that the ids below stay those of these nodes
    producer = {o: n for n in nodes for o in n.output}
    have = {t.name for t in model.graph.initializer}
    after: dict[int, list[Any]] = {}  # nodes to insert after the int8 chain's last node (by its id)
    sizes: dict[str, int] = {}
    for index, name in enumerate(candidates):
        node = by_name[name]
        x, w = node.input[0], node.input[1]
        y = node.output[0]
        last = producer.get(y)
        if last is None:
            raise ValueError(f"{name}: its output {y} is not produced in the quantised graph")
        last.output[0] = f"{y}::int8"
        sizes[name] = int(np.prod(weights[w].dims))
        if w not in have:
            model.graph.initializer.append(weights[w])
            have.add(w)
        idx = f"{y}::gate_index"
        model.graph.initializer.append(numpy_helper.from_array(np.array(index, dtype=np.int64), idx))
        after[id(last)] = [
            helper.make_node("MatMul", [x, w], [f"{y}::fp32"], name=f"{name}::fp32"),
            helper.make_node("Gather", [GATES, idx], [f"{y}::gate"], name=f"{name}::gate", axis=0),
            helper.make_node("Sub", [f"{y}::int8", f"{y}::fp32"], [f"{y}::delta"], name=f"{name}::delta"),
            helper.make_node("Mul", [f"{y}::delta", f"{y}::gate"], [f"{y}::gated"], name=f"{name}::gated"),
            helper.make_node("Add", [f"{y}::fp32", f"{y}::gated"], [y], name=f"{name}::blend"),
        ]
    model.graph.input.append(helper.make_tensor_value_info(GATES, TensorProto.FLOAT, [len(candidates)]))
    # the quantised graph is in topological order, and each blend reads only what precedes the int8
    # chain's last node: inserted right after it, the order stays valid
    _insert_nodes(model, nodes, {}, after)
    _atomic_save(model, out)
    return sizes


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

    from surerank.engine.onnx_build import _atomic_save, _drift_sequences, _session

    model = onnx.load(str(fp32))
    by_name = {n.name: n for n in model.graph.node}
    tensors = list(dict.fromkeys(by_name[name].input[0] for name in candidates))
    for t in tensors:
        model.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
    with tempfile.TemporaryDirectory(dir=fp32.parent, prefix=".int8-outliers-") as tmp:
        probe = Path(tmp) / "probe.onnx"
        _atomic_save(model, probe)
        session = _session(probe, threads=1)
        names = {i.name for i in session.get_inputs()}
        peak: dict[str, np.ndarray] = {}
        for feed in _drift_sequences(files, head):
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

    from surerank.engine.onnx_build import _atomic_save

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
    _insert_nodes(model, nodes, before, after)
    _atomic_save(model, out)
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

    from surerank.engine.onnx_build import _atomic_save

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
    _insert_nodes(model, nodes, {}, after)
    _atomic_save(model, out)
    return folded


def folded_products(folded: dict[str, list[int]]) -> list[str]:
    """The fp32 side-branch products :func:`fold_ffn_outliers` added for the candidates it folded."""
    return [f"{name}::outliers{part}" for name in folded for part in ("_in", "")]


def greedy_fp32_projections(fp32: Path, quantize: Callable[[Path, list[str]], None], candidates: list[str],
                            files: ModelFiles, head: str, target: float) -> tuple[list[str], dict[str, Any]]:
    """The candidates to keep fp32 so that the rest, int8, move the calibration scores by at most
    ``target`` (in :func:`surerank.engine.onnx_build.measure_drift`'s measure); with the search's figures.

    ``quantize(path, fp32_nodes)`` writes the graph with every candidate not in ``fp32_nodes`` int8.
    """
    from surerank.engine.onnx_build import _drift_sequences, _ranking_scores, _session

    feeds = _drift_sequences(files, head)
    with tempfile.TemporaryDirectory(dir=fp32.parent, prefix=".int8-search-") as tmp:
        every = Path(tmp) / "int8-all.onnx"
        quantize(every, [])
        gated = Path(tmp) / "gated.onnx"
        sizes = gated_graph(fp32, every, candidates, gated)
        session = _session(gated, threads=1)
        names = {i.name for i in session.get_inputs()}

        def scores(open_gates: np.ndarray) -> np.ndarray:
            gates = open_gates.astype(np.float32)
            rows = [session.run(None, {**{k: v for k, v in f.items() if k in names}, GATES: gates})[0]
                    for f in feeds]
            return _ranking_scores(np.concatenate(rows), head)

        reference = scores(np.zeros(len(candidates)))
        spread = float(np.std(reference))
        if not spread > 0:
            raise InputError("precision: the calibration scores do not vary; int8 cannot be checked")

        def drift(open_gates: np.ndarray) -> float:
            return float(np.max(np.abs(scores(open_gates) - reference)) / spread)

        alone = {}
        for i, name in enumerate(candidates):
            gates = np.zeros(len(candidates))
            gates[i] = 1
            alone[name] = drift(gates)
        # least drift first (ordering by drift per multiply-add instead put 51% of mpnet's projection work
        # in int8 rather than 44%, for no measurable speed: kept simple)
        order = sorted(range(len(candidates)), key=lambda i: (alone[candidates[i]], i))

        def prefix(k: int) -> np.ndarray:
            gates = np.zeros(len(candidates))
            gates[order[:k]] = 1
            return gates

        lo, hi = 0, len(candidates)  # lo: the longest prefix known within the target
        measured = {lo: 0.0, hi: drift(prefix(hi))}
        if measured[hi] <= target:
            lo = hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            measured[mid] = drift(prefix(mid))
            if measured[mid] <= target:
                lo = mid
            else:
                hi = mid
    int8 = {candidates[i] for i in order[:lo]}
    keep = [n for n in candidates if n not in int8]
    figures = {"target": target, "int8": lo, "fp32": len(keep), "drift": measured[lo],
               "int8_work_share": round(sum(sizes[n] for n in int8) / sum(sizes.values()), 4),
               "alone": {n: round(d, 6) for n, d in alone.items()}}
    logger.info("int8-fast search: %d of %d projections int8 (%.0f%% of their work; drift %.3f, target %.3f); "
                "fp32: %s", lo, len(candidates), 100 * figures["int8_work_share"], measured[lo], target,
                ", ".join(keep) or "none")
    if lo == 0:
        raise InputError(f"precision: no projection of {fp32.name} can run int8 within the drift target "
                         f"{target} (the least sensitive alone moves the scores by "
                         f"{min(alone.values()):.3g}); use precision='fp32'")
    return keep, figures
