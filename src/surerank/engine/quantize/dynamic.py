"""ONNX Runtime dynamic int8 quantisation (int8 per-channel weights, activations per tensor at run time),
and the metadata keys an int8 graph carries."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from surerank.engine.onnx.graph_io import has_external_data

#: the nodes an int8 graph keeps in fp32 (the heads, and the projections its recipe spares), comma-separated
FP32_NODES_KEY = "surerank.fp32_nodes"
#: the int8-fast graph's folded FFN outlier channels, per projection (JSON)
FOLDED_CHANNELS_KEY = "surerank.folded_channels"

#: writes the graph with every candidate projection int8 but the fp32 ones given
Quantizer = Callable[[Path, list[str]], None]


class _DropPreprocessAdvice(logging.Filter):
    """ONNX Runtime's quantiser logs advice to run its shape-inference pre-processing on the root logger at
    every call; surerank's graphs are built with shapes it needs, so the advice is noise in users' logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Please consider to run pre-processing before quantization")


def quantize_dynamic_int8(src: Path, dst: Path, **options: Any) -> None:
    """ONNX Runtime dynamic quantisation with int8 per-channel weights, fp32 elsewhere (``options``:
    ``op_types_to_quantize`` / ``nodes_to_quantize`` / ``nodes_to_exclude``)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    advice = _DropPreprocessAdvice()
    root = logging.getLogger()
    root.addFilter(advice)
    try:
        quantize_dynamic(
            str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, reduce_range=False,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            use_external_data_format=has_external_data(src), **options)
    finally:
        root.removeFilter(advice)


def quantize_keeping(src: Path, dst: Path, fp32_nodes: list[str]) -> None:
    """Dynamic int8 of every MatMul and Attention node except ``fp32_nodes`` (the hand-built graph)."""
    quantize_dynamic_int8(src, dst, op_types_to_quantize=["MatMul", "Attention"],
                          nodes_to_exclude=list(fp32_nodes))


def projection_quantizer(src: Path, layer: list[str]) -> Quantizer:
    """``quantize(path, fp32_nodes)``: write ``src`` to ``path`` with every projection of ``layer`` but
    ``fp32_nodes`` dynamically quantised (int8 per-channel weights, activations per tensor at run time)."""

    def quantize(path: Path, fp32_nodes: list[str]) -> None:
        quantize_dynamic_int8(src, path, nodes_to_quantize=[n for n in layer if n not in fp32_nodes])

    return quantize
