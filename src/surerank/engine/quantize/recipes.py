"""The int8 recipes, in one table, and the one dispatcher that applies them to a built or an exported graph.

Every recipe uses per-channel int8 weights (per-tensor lost 0.006 nDCG@10) and keeps the heads in fp32.
A recipe says what happens to outlier activation channels first (nothing, folded into an fp32 side
branch, or split off into an fp32 product) and which encoder projections then stay fp32 (the FFN output
projections, none, or those the greedy search picks).  The FFN output projections read GELU outputs with
a few outlier channels, which per-tensor activation quantisation handles worst:

``int8``: every FFN output projection stays fp32 (``pc-noff2``), built or exported;
``int8-fast`` of a built graph: every projection int8, the outlier channels of the FFN hidden layer (2 to 4
of 1536 per layer in all-MiniLM-L6-v2) folded into a small fp32 side branch of the FFN (``pc-fold``).  It
replaced ``pc-sens`` (the most sensitive sixth of the FFN output projections kept fp32): all-MiniLM-L6-v2's
calibration drift 0.327 vs 0.343 and DL19 / DL20 nDCG@10 -0.0023 / +0.0048 vs fp32 (``pc-sens``: -0.0020 /
+0.0064); docs/engine.md has the speed;
``int8-fast`` of an exported graph: each projection input's outlier channels split off into a small fp32
product, then the greedy search picks the projections to leave fp32 (``pc-split``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from surerank.engine.checkpoint.files import ModelFiles
from surerank.engine.onnx import drift  # AUTO_DRIFT_BOUND: read at call time (tests set it)
from surerank.engine.onnx.graph_io import save_graph
from surerank.engine.quantize.dynamic import (
    FOLDED_CHANNELS_KEY,
    FP32_NODES_KEY,
    Quantizer,
    projection_quantizer,
    quantize_keeping,
)
from surerank.engine.quantize.outliers import (
    fold_ffn_outliers,
    folded_products,
    outlier_channels,
    split_outlier_channels,
)
from surerank.engine.quantize.search import greedy_fp32_projections
from surerank.errors import InputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """What an int8 recipe does: ``outliers`` (None, ``fold`` or ``split``) to the outlier channels first,
    then which encoder projections stay fp32 (``ffn_out``, ``none`` or ``search``)."""

    outliers: str | None
    fp32: str


#: every int8 recipe, by the name its graphs are cached under
RECIPES = {
    "pc-noff2": Recipe(outliers=None, fp32="ffn_out"),
    "pc-all": Recipe(outliers=None, fp32="none"),
    "pc-fold": Recipe(outliers="fold", fp32="none"),
    "pc-greedy": Recipe(outliers=None, fp32="search"),
    "pc-split": Recipe(outliers="split", fp32="search"),
}
#: the recipe of each int8 precision, for graphs the builder made and graphs the torch export made
PRECISION_RECIPES = {
    "built": {"int8": "pc-noff2", "int8-fast": "pc-fold"},
    "exported": {"int8": "pc-noff2", "int8-fast": "pc-split"},
}
#: the drift target of the search, in ``precision="auto"``'s measure: half its bound, so that the graph
#: chosen clears the bound on text other than the calibration sentences
GREEDY_TARGET_SHARE = 0.5

#: an encoder layer's weight projections in transformers' module names (BERT/MPNet/ELECTRA/DeBERTa
#: ``layer.N``, ModernBERT ``layers.N``); the heads, poolers and embedding projections stay fp32
_LAYER = re.compile(r"layers?\.(\d+)\.")
#: the FFN output projection of a layer: it reads the GELU's outlier activations
_FFN_OUT = re.compile(r"layers?\.\d+\.(output\.dense|mlp\.Wo|mlp\.down_proj|mlp\.fc2|ffn\.output|output_dense)\.")


def weight_matmuls(path: Path) -> tuple[list[str], list[str]]:
    """An exported graph's (encoder MatMul nodes with a constant weight, the FFN output projections among them)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    consts = {t.name for t in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    layer = [n.name for n in model.graph.node
             if n.op_type == "MatMul" and _LAYER.search(n.name) and any(i in consts for i in n.input)]
    return layer, [n for n in layer if _FFN_OUT.search(n)]


@dataclass
class _Projections:
    """A graph's projections as the recipes see them, and how its int8 version is made and written."""

    layer: list[str]  # the encoder projections int8 may take
    ffn_out: list[str]  # the FFN output projections among them
    fixed_fp32: list[str]  # projections every recipe keeps fp32 (heads, poolers)
    quantizer: Callable[[Path], Quantizer]  # source graph -> quantize(path, fp32_nodes)
    write: Callable[[Path, Path, dict[str, str]], None]  # (quantised graph, destination, metadata)


def _write_built(out: Path, dst: Path, props: dict[str, str]) -> None:
    import onnx

    quantized = onnx.load(str(out))
    onnx.helper.set_model_props(quantized, props)
    save_graph(quantized, dst)


def _write_exported(out: Path, dst: Path, props: dict[str, str]) -> None:
    """Stamp the quantised graph in place and move it, with its external data files, beside ``dst``."""
    import onnx

    quantized = onnx.load(str(out), load_external_data=False)
    onnx.helper.set_model_props(quantized, props)
    onnx.save_model(quantized, str(out))
    for extra in out.parent.iterdir():
        if extra.name != dst.name and extra.is_file():
            shutil.move(str(extra), str(dst.parent / extra.name))
    os.replace(out, dst)


def _projections(src: Path, origin: str) -> _Projections:
    import onnx

    if origin not in PRECISION_RECIPES:
        raise ValueError(f"origin: {origin!r} is not one of {', '.join(PRECISION_RECIPES)}")
    graph = onnx.load(str(src), load_external_data=False).graph
    if origin == "built":  # node names the builder gives (see surerank.engine.onnx.build)
        names = [n.name for n in graph.node]
        heads = [n for n in names if n in ("pooler", "classifier")]
        layer = [n.name for n in graph.node if n.op_type == "MatMul" and n.name not in heads]
        return _Projections(layer, [n for n in names if n.endswith("_ff2")], heads,
                            lambda source: lambda path, fp32: quantize_keeping(source, path, heads + fp32),
                            _write_built)
    layer, ffn_out = weight_matmuls(src)
    if not layer:
        raise InputError(f"precision: no encoder projections were found in {src.name} to quantise; "
                         "use precision='fp32'")
    kept = [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm") and n.name not in layer]
    return _Projections(layer, ffn_out, kept, lambda source: projection_quantizer(source, layer), _write_exported)


def quantize_graph(src: Path, dst: Path, recipe: str, files: ModelFiles | None = None, head: str = "mean", *,
                   origin: str = "built") -> dict[str, Any] | None:
    """Write the int8 version of the fp32 graph ``src`` to ``dst`` by ``recipe``; ``origin``: ``built``
    (the hand-built BERT graph) or ``exported``.  Returns the greedy search's figures (None without one)."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown int8 recipe {recipe!r}")
    plan = RECIPES[recipe]
    if (plan.outliers or plan.fp32 == "search") and files is None:
        raise ValueError(f"the {recipe} recipe needs the model files (tokenizer) for calibration")
    graph = _projections(src, origin)
    search: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".quant-") as tmp:
        source, props, fp32_nodes, outliers = src, {}, [], {}
        if plan.outliers == "fold":  # the FFN outlier channels into an fp32 side branch
            source = Path(tmp) / "folded.onnx"
            folded = fold_ffn_outliers(src, graph.ffn_out, outlier_channels(src, graph.ffn_out, files, head), source)
            fp32_nodes = folded_products(folded)
            props[FOLDED_CHANNELS_KEY] = json.dumps(folded)
            logger.info("int8-fast: %d outlier channels of %d FFN output projections folded into fp32",
                              sum(map(len, folded.values())), len(folded))
        elif plan.outliers == "split":  # the graph quantised computes the same in fp32, outlier channels apart
            source = Path(tmp) / "split" / src.name
            source.parent.mkdir()
            outliers = split_outlier_channels(src, graph.layer, outlier_channels(src, graph.layer, files, head),
                                              source)
        quantize = graph.quantizer(source)
        if plan.fp32 == "ffn_out":
            fp32_nodes = graph.ffn_out
        elif plan.fp32 == "search":
            fp32_nodes, search = greedy_fp32_projections(source, quantize, graph.layer, files, head,
                                                         GREEDY_TARGET_SHARE * drift.AUTO_DRIFT_BOUND)
            if plan.outliers == "split":
                search["outlier_channels"] = outliers
        out = Path(tmp) / dst.name
        quantize(out, fp32_nodes)
        graph.write(out, dst, {FP32_NODES_KEY: ",".join(graph.fixed_fp32 + fp32_nodes), **props})
    return search
