"""Which projections of an exported graph may run int8: a greedy search on calibration text.

Some models cannot take int8 on a few projections.  all-mpnet-base-v2 is one: quantising all 72 encoder
projections moves its embeddings to a mean cosine of 0.01 with fp32's (ONNX Runtime's dynamic int8
quantises activations per tensor, and a few of its layers carry outlier channels); quantising layer 10's
FFN input projection alone moves them by 0.93 in mean 1 - cosine, most of the others by under 1e-4.
Exported graphs therefore take this search (the ``pc-split`` recipe of ``int8-fast``):

0. the outlier channels of every projection's input (a channel whose largest calibration activation is
   over four times the median channel's; all-mpnet-base-v2's channel 555 reaches 66 where the median is
   1.3) are split off into a small fp32 product, as LLM.int8() does, so that the int8 product's per-tensor
   activation scale is set by the ordinary channels (``outliers.split_outlier_channels``); with it 71 of
   mpnet's 72 projections run int8 within the target instead of 46 (``pc-greedy`` is the search alone);
1. one graph holds both versions of every candidate projection, each output blended as
   ``fp32 + gate * (int8 - fp32)`` with the gates a graph input, so one ONNX Runtime session measures
   any choice of int8 projections without re-quantising the model;
2. every projection's drift is measured alone (only its gate open), on the calibration sequences the
   ``precision="auto"`` check uses and with its measure (max |Δ score| / sd of the fp32 scores);
3. the projections are taken from the least to the most sensitive, and the longest prefix whose joint
   drift stays within ``target`` is quantised (a binary search over its length); the rest stay fp32.

The hand-built BERT graph's ``int8-fast`` (``pc-fold``) quantises every projection after
:func:`surerank.engine.quantize.outliers.fold_ffn_outliers` has moved the FFN hidden layer's outlier
channels into a small fp32 side branch (cheaper there than the split: no mask over the 4x-wide hidden
tensor).  Which recipe a graph gets is :mod:`surerank.engine.quantize.recipes`.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from surerank.engine.checkpoint.files import ModelFiles
from surerank.engine.onnx.calibration import drift_sequences
from surerank.engine.onnx.drift import ranking_scores, score_drift
from surerank.engine.onnx.graph_io import open_session, run_feeds, save_graph
from surerank.engine.quantize.dynamic import Quantizer
from surerank.engine.quantize.outliers import insert_nodes
from surerank.errors import InputError

logger = logging.getLogger(__name__)

GATES = "surerank_int8_gates"


def gated_graph(fp32: Path, quantized: Path, candidates: list[str], out: Path) -> dict[str, int]:
    """Write to ``out`` the graph of ``quantized`` (every candidate int8) with each candidate's fp32
    MatMul beside it and its output blended by the ``GATES`` input (1 = int8, 0 = fp32); return each
    candidate's weight size (its multiply-adds per token)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

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
    insert_nodes(model, nodes, {}, after)
    save_graph(model, out)
    return sizes


def _gate_scorer(session: Any, feeds: list[dict[str, np.ndarray]], head: str) -> Callable[[np.ndarray], np.ndarray]:
    """``scores(open_gates)``: the calibration ranking scores of the gated graph with those gates open."""

    def scores(open_gates: np.ndarray) -> np.ndarray:
        return ranking_scores(run_feeds(session, feeds, {GATES: open_gates.astype(np.float32)}), head)

    return scores


def _longest_prefix(drift: Callable[[np.ndarray], float], order: list[int], target: float
                    ) -> tuple[int, dict[int, float]]:
    """The longest prefix of ``order`` whose gates, open together, drift within ``target`` (a binary search
    over its length); with the drift of every length measured."""
    n = len(order)

    def prefix(k: int) -> np.ndarray:
        gates = np.zeros(n)
        gates[order[:k]] = 1
        return gates

    lo, hi = 0, n  # lo: the longest prefix known within the target
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
    return lo, measured


def greedy_fp32_projections(fp32: Path, quantize: Quantizer, candidates: list[str],
                            files: ModelFiles, head: str, target: float) -> tuple[list[str], dict[str, Any]]:
    """The candidates to keep fp32 so that the rest, int8, move the calibration scores by at most
    ``target`` (in :func:`surerank.engine.onnx.drift.measure_drift`'s measure); with the search's figures.

    ``quantize(path, fp32_nodes)`` writes the graph with every candidate not in ``fp32_nodes`` int8.
    """
    feeds = drift_sequences(files, head)
    with tempfile.TemporaryDirectory(dir=fp32.parent, prefix=".int8-search-") as tmp:
        every = Path(tmp) / "int8-all.onnx"
        quantize(every, [])
        gated = Path(tmp) / "gated.onnx"
        sizes = gated_graph(fp32, every, candidates, gated)
        scores = _gate_scorer(open_session(gated, threads=1), feeds, head)
        reference = scores(np.zeros(len(candidates)))
        if not float(np.std(reference)) > 0:
            raise InputError("precision: the calibration scores do not vary; int8 cannot be checked")

        def drift(open_gates: np.ndarray) -> float:
            return score_drift(reference, scores(open_gates))["drift"]

        alone = {name: drift(np.eye(len(candidates))[i]) for i, name in enumerate(candidates)}
        # least drift first (ordering by drift per multiply-add instead put 51% of mpnet's projection work
        # in int8 rather than 44%, for no measurable speed: kept simple)
        order = sorted(range(len(candidates)), key=lambda i: (alone[candidates[i]], i))
        lo, measured = _longest_prefix(drift, order, target)
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
