"""A model repository's own ``onnx/model.onnx`` (optimum / sentence-transformers layout), given the
interface the ONNX backend feeds: int32 inputs, pooling in the graph for an embedding head, one output.
The export (:mod:`surerank.engine.onnx.export`) checks it against torch before it is used."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from surerank.engine.onnx.graph_io import INPUTS
from surerank.errors import InputError

SHIPPED_ONNX = Path("onnx") / "model.onnx"
_TOKEN_OUTPUTS = ("last_hidden_state", "token_embeddings")


def _final_output(graph: Any, head: str) -> str:
    """The shipped graph's output the head reads: ``logits``, or its token states; refuses others."""
    outputs = {o.name: o for o in graph.output}
    if head == "classifier":
        if "logits" not in outputs:
            raise InputError(f"model: the shipped {SHIPPED_ONNX.as_posix()} has no 'logits' output "
                             f"(outputs: {sorted(outputs)}); is it a sequence-classification export?")
        return "logits"
    found = [n for n in _TOKEN_OUTPUTS if n in outputs]
    if not found:
        raise InputError(f"model: the shipped {SHIPPED_ONNX.as_posix()} has no token-state output "
                         f"({' or '.join(_TOKEN_OUTPUTS)}; it has {sorted(outputs)})")
    return found[0]


def _int32_inputs(graph: Any, names: tuple[str, ...]) -> None:
    """Make every input int32, cast inside the graph to the type the shipped graph took; add the inputs
    in ``names`` it lacks (unused), so that it takes the backend's feed."""
    from onnx import TensorProto, helper

    inputs = {i.name: i for i in graph.input}
    renames: dict[str, str] = {}
    casts = []
    for name, vi in inputs.items():
        if vi.type.tensor_type.elem_type != TensorProto.INT32:
            renames[name] = f"{name}__typed"
            casts.append(helper.make_node("Cast", [name], [renames[name]], to=vi.type.tensor_type.elem_type,
                                          name=f"surerank_cast_{name}"))
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name in renames:
                node.input[k] = renames[name]
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    for vi in inputs.values():
        vi.type.tensor_type.elem_type = TensorProto.INT32
    for name in names:
        if name not in inputs:
            graph.input.append(helper.make_tensor_value_info(name, TensorProto.INT32, ["batch", "seq"]))


def _pooling(graph: Any, final: str, head: str) -> None:
    """Append the ``mean`` or ``cls`` pooling of the token states ``final`` as the ``embedding`` output."""
    from onnx import TensorProto, helper, numpy_helper

    def const(name: str, value: np.ndarray) -> str:
        graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    ax1 = const("surerank_axis1", np.array([1], np.int64))
    ax2 = const("surerank_axis2", np.array([2], np.int64))
    if head == "mean":
        graph.node.extend([
            helper.make_node("Cast", ["attention_mask"], ["sr_mask_f"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["sr_mask_f", ax2], ["sr_mask_f3"]),
            helper.make_node("Mul", [final, "sr_mask_f3"], ["sr_masked"]),
            helper.make_node("ReduceSum", ["sr_masked", ax1], ["sr_summed"], keepdims=0),
            helper.make_node("ReduceSum", ["sr_mask_f", ax1], ["sr_count"], keepdims=1),
            helper.make_node("Max", ["sr_count", const("surerank_one", np.array(1.0, np.float32))],
                             ["sr_count1"]),
            helper.make_node("Div", ["sr_summed", "sr_count1"], ["embedding"]),
        ])
    elif head == "cls":
        graph.node.extend([
            helper.make_node("Slice", [final, const("surerank_start0", np.array([0], np.int64)), ax1, ax1],
                             ["sr_cls3"]),
            helper.make_node("Squeeze", ["sr_cls3", ax1], ["embedding"]),
        ])
    else:
        raise InputError(f"pooling: {head!r} on a shipped {SHIPPED_ONNX.as_posix()} is not supported "
                         "(mean, cls); delete or rename it to have the model exported instead")


def adapt_shipped(model: Any, head: str, names: tuple[str, ...] = INPUTS) -> Any:
    """Give a shipped graph (optimum / sentence-transformers layout) the backend's interface: int32
    inputs cast to what it takes, pooling appended for an embedding head, one output."""
    from onnx import TensorProto, helper

    graph = model.graph
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < 13:
        raise InputError(f"model: the shipped {SHIPPED_ONNX.as_posix()} uses opset {opset}; surerank adapts "
                         "opset 13 or later (delete or rename it to have the model exported instead)")
    inputs = [i.name for i in graph.input]
    unknown = [n for n in inputs if n not in names]
    if unknown or "input_ids" not in inputs:
        raise InputError(f"model: the shipped {SHIPPED_ONNX.as_posix()} takes inputs {sorted(inputs)}; "
                         f"surerank feeds {', '.join(names)}")
    final = _final_output(graph, head)
    elem = next(o for o in graph.output if o.name == final).type.tensor_type.elem_type
    _int32_inputs(graph, names)
    if head != "classifier":
        _pooling(graph, final, head)
    del graph.output[:]
    if elem != TensorProto.FLOAT:
        raise InputError(f"model: the shipped {SHIPPED_ONNX.as_posix()} outputs {TensorProto.DataType.Name(elem)}; "
                         "surerank adapts float32 graphs")
    graph.output.append(helper.make_tensor_value_info("logits" if head == "classifier" else "embedding",
                                                      TensorProto.FLOAT, ["batch", None]))
    return model
