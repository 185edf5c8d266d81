"""Build an ONNX graph of a BERT-family encoder straight from its safetensors weights (no torch).

The graph uses ONNX Runtime's fused transformer kernels (``com.microsoft`` EmbedLayerNormalization,
Attention, BiasGelu) -- those ORT's own BERT optimiser would produce from a torch export, so the CPU
build is fast without an export step -- except SkipLayerNormalization, whose CPU kernel measured slower
than the plain Add + LayerNormalization ops it fuses (see ``graph_io.DISABLED_OPTIMIZERS``).  Three heads:

* ``mean`` / ``cls``: sentence embedding (``embedding`` output, ``[batch, hidden]``), for bi-encoders;
* ``classifier``: BERT pooler (tanh) + linear head (``logits`` output, ``[batch, num_labels]``), for
  sequence-classification cross-encoders; RoBERTa-style heads (dense + tanh + out_proj) too.

Which checkpoints it covers is :func:`surerank.engine.checkpoint.families.builder_refusal`; the cached
graph and its int8 versions are made by :mod:`surerank.engine.graphs`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from surerank.engine.checkpoint.families import GELU_OPS, POOLINGS, ROBERTA_LIKE, builder_refusal
from surerank.engine.checkpoint.files import ModelFiles, load_weights
from surerank.errors import InputError

#: part of every built graph's cache name: a change to the graph a checkpoint gets bumps it
BUILDER_VERSION = "4"  # 4: RoBERTa position_ids input fixed, all pooling modes, tanh-GELU
_PREFIXES = ("bert.", "roberta.", "model.", "encoder_model.", "")


#: adds a named constant to the graph (once per name) and returns its name
Init = Callable[[str, np.ndarray], str]


class _Weights:
    """Looks a tensor up under the usual HF prefixes (``bert.``, ``roberta.`` or none)."""

    def __init__(self, tensors: dict[str, np.ndarray]):
        self.t = tensors

    def has(self, name: str) -> bool:
        return any(p + name in self.t for p in _PREFIXES)

    def __call__(self, name: str) -> np.ndarray:
        for p in _PREFIXES:
            if p + name in self.t:
                return self.t[p + name]
        raise InputError(f"model weights: tensor {name!r} not found (is this a BERT-family checkpoint?)")


def residual_layer_norm(projection: str, bias: str, residual: str, gamma: str, beta: str, out: str,
                        eps: float) -> list[Any]:
    """``LayerNorm(projection + bias + residual)`` as plain ONNX ops (see ``graph_io.DISABLED_OPTIMIZERS``)."""
    from onnx import helper

    return [
        helper.make_node("Add", [projection, bias], [out + "_biased"], name=out + "_bias"),
        helper.make_node("Add", [out + "_biased", residual], [out + "_sum"], name=out + "_residual"),
        helper.make_node("LayerNormalization", [out + "_sum", gamma, beta], [out], axis=-1, epsilon=eps,
                         name=out + "_ln"),
    ]


def first_token_nodes(x: str, out: str, init: Init) -> list[Any]:
    """``out = x[:, 0, :]`` as Slice + Squeeze (a scalar Gather gets a wrong shape after ORT fusions)."""
    from onnx import helper

    init("start0", np.array([0], np.int64))
    init("end1", np.array([1], np.int64))
    init("axis1", np.array([1], np.int64))
    return [helper.make_node("Slice", [x, "start0", "end1", "axis1"], ["cls_3d"]),
            helper.make_node("Squeeze", ["cls_3d", "axis1"], [out])]


def pooling_nodes(x: str, head: str, init: Init) -> list[Any]:
    """ONNX nodes pooling token states ``x`` [batch, seq, hidden] into ``embedding`` [batch, hidden], as
    sentence-transformers pools (right padding; ``attention_mask`` int32 [batch, seq])."""
    from onnx import TensorProto, helper

    init("axis1", np.array([1], np.int64))
    init("axis2", np.array([2], np.int64))
    if head == "cls":
        return first_token_nodes(x, "embedding", init)
    nodes = [helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT)]
    if head == "max":  # padded positions -> -inf, then the maximum over the sequence
        init("neg_inf", np.array(-np.inf, np.float32))
        return [*nodes,
                helper.make_node("Unsqueeze", ["mask_f", "axis2"], ["mask_f3"]),
                helper.make_node("Cast", ["mask_f3"], ["mask_b3"], to=TensorProto.BOOL),
                helper.make_node("Where", ["mask_b3", x, "neg_inf"], ["masked"]),
                helper.make_node("ReduceMax", ["masked"], ["embedding"], axes=[1], keepdims=0)]
    if head in ("weightedmean", "lasttoken"):  # positions 1..n of the real tokens (right padding)
        nodes += [
            helper.make_node("CumSum", ["mask_f", init("axis1_scalar", np.array(1, np.int64))], ["rank_f"]),
            helper.make_node("Mul", ["rank_f", "mask_f"], ["rank_masked"]),
        ]
    if head == "lasttoken":  # weight 1 on the token whose rank is the sequence's length, 0 elsewhere
        nodes += [
            helper.make_node("ReduceSum", ["mask_f", "axis1"], ["length"], keepdims=1),
            helper.make_node("Equal", ["rank_masked", "length"], ["is_last"]),
            helper.make_node("Cast", ["is_last"], ["weights"], to=TensorProto.FLOAT),
        ]
    elif head == "weightedmean":
        nodes.append(helper.make_node("Identity", ["rank_masked"], ["weights"]))
    else:  # mean, mean_sqrt_len_tokens
        nodes.append(helper.make_node("Identity", ["mask_f"], ["weights"]))
    nodes += [
        helper.make_node("Unsqueeze", ["weights", "axis2"], ["weights3"]),
        helper.make_node("Mul", [x, "weights3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
    ]
    if head == "lasttoken":
        return [*nodes, helper.make_node("Identity", ["summed"], ["embedding"])]
    nodes += [
        helper.make_node("ReduceSum", ["weights", "axis1"], ["count"], keepdims=1),
        helper.make_node("Max", ["count", init("tiny", np.array(1e-9, np.float32))], ["count1"]),
    ]
    if head == "mean_sqrt_len_tokens":
        return [*nodes, helper.make_node("Sqrt", ["count1"], ["root"]),
                helper.make_node("Div", ["summed", "root"], ["embedding"])]
    return [*nodes, helper.make_node("Div", ["summed", "count1"], ["embedding"])]




class _GraphParts:
    """The initializers and nodes of a graph being built, and the checkpoint's tensors they come from."""

    def __init__(self, weights: _Weights):
        self.w = weights
        self.inits: list[Any] = []
        self.nodes: list[Any] = []
        self._names: set[str] = set()

    def init(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        if name not in self._names:
            self._names.add(name)
            self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def lin(self, prefix: str) -> tuple[np.ndarray, np.ndarray]:
        """A linear layer's weight (transposed for MatMul) and bias, float32."""
        return self.w(prefix + ".weight").T.astype(np.float32), self.w(prefix + ".bias").astype(np.float32)

    def projection(self, prefix: str, x: str, name: str) -> str:
        """``x @ W`` of the linear layer ``prefix`` as node ``name``; its bias is added to ``name + "_b"``."""
        from onnx import helper

        weight, bias = self.lin(prefix)
        self.init(f"{name}_w", weight)
        self.init(f"{name}_b", bias)
        self.nodes.append(helper.make_node("MatMul", [x, f"{name}_w"], [name], name=name))
        return name


def _embedding_inputs(g: _GraphParts, hidden: int, eps: float, roberta: bool) -> list[Any]:
    """The graph inputs and EmbedLayerNormalization (word + position + type embeddings, LayerNorm, and
    the attention mask index); token states leave it as ``h0``."""
    from onnx import TensorProto, helper

    w = g.w
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT32, ["batch", "seq"])
              for name in ("input_ids", "token_type_ids", "attention_mask")]
    type_emb = w("embeddings.token_type_embeddings.weight") if w.has(
        "embeddings.token_type_embeddings.weight") else np.zeros((1, hidden), np.float32)
    emb_inputs = [
        "input_ids", "token_type_ids",
        g.init("word_emb", w("embeddings.word_embeddings.weight")),
        g.init("pos_emb", w("embeddings.position_embeddings.weight")),
        g.init("type_emb", type_emb),
        g.init("emb_ln_g", w("embeddings.LayerNorm.weight")),
        g.init("emb_ln_b", w("embeddings.LayerNorm.bias")),
        "attention_mask",
    ]
    if roberta:  # positions start after the padding index and skip padding tokens
        inputs.append(helper.make_tensor_value_info("position_ids", TensorProto.INT32, ["batch", "seq"]))
        emb_inputs.append("position_ids")  # the 9th and last input (index 8) of EmbedLayerNormalization
    g.nodes.append(helper.make_node(
        "EmbedLayerNormalization", emb_inputs, ["h0", "mask_index"], domain="com.microsoft",
        epsilon=eps, name="embed"))
    return inputs


def _encoder_layer(g: _GraphParts, i: int, x: str, heads: int, act: str, eps: float) -> str:
    """Layer ``i`` on token states ``x``: fused attention, then the FFN, each with its residual LayerNorm."""
    from onnx import helper

    p = f"encoder.layer.{i}"
    qw, qb = g.lin(f"{p}.attention.self.query")
    kw, kb = g.lin(f"{p}.attention.self.key")
    vw, vb = g.lin(f"{p}.attention.self.value")
    g.init(f"l{i}_qkv_w", np.concatenate([qw, kw, vw], axis=1))
    g.init(f"l{i}_qkv_b", np.concatenate([qb, kb, vb]))
    g.nodes.append(helper.make_node(
        "Attention", [x, f"l{i}_qkv_w", f"l{i}_qkv_b", "mask_index"], [f"l{i}_ctx"],
        domain="com.microsoft", num_heads=heads, name=f"l{i}_attention"))
    g.projection(f"{p}.attention.output.dense", f"l{i}_ctx", f"l{i}_ao")
    g.init(f"l{i}_ln1_g", g.w(f"{p}.attention.output.LayerNorm.weight"))
    g.init(f"l{i}_ln1_b", g.w(f"{p}.attention.output.LayerNorm.bias"))
    g.nodes += residual_layer_norm(f"l{i}_ao", f"l{i}_ao_b", x, f"l{i}_ln1_g", f"l{i}_ln1_b", f"l{i}_x1", eps)
    g.projection(f"{p}.intermediate.dense", f"l{i}_x1", f"l{i}_ff1")
    g.nodes.append(helper.make_node(
        GELU_OPS[act], [f"l{i}_ff1", f"l{i}_ff1_b"], [f"l{i}_gelu"], domain="com.microsoft",
        name=f"l{i}_gelu"))
    g.projection(f"{p}.output.dense", f"l{i}_gelu", f"l{i}_ff2")
    g.init(f"l{i}_ln2_g", g.w(f"{p}.output.LayerNorm.weight"))
    g.init(f"l{i}_ln2_b", g.w(f"{p}.output.LayerNorm.bias"))
    g.nodes += residual_layer_norm(f"l{i}_ff2", f"l{i}_ff2_b", f"l{i}_x1", f"l{i}_ln2_g", f"l{i}_ln2_b",
                                   f"l{i}_out", eps)
    return f"l{i}_out"


def _classifier_head(g: _GraphParts, x: str, files: ModelFiles, roberta: bool) -> Any:
    """The sequence-classification head on the first token (BERT: pooler + classifier; RoBERTa: dense +
    out_proj), as ``logits``; refuses a checkpoint without trained head tensors, naming them."""
    from onnx import TensorProto, helper

    w = g.w
    g.nodes += first_token_nodes(x, "cls_vec", g.init)
    if w.has("classifier.dense.weight") and w.has("classifier.out_proj.weight"):  # RoBERTa-style head
        pw, pb = g.lin("classifier.dense")
        cw, cb = g.lin("classifier.out_proj")
    elif w.has("pooler.dense.weight") and w.has("classifier.weight"):  # BERT: pooler + classifier
        pw, pb = g.lin("pooler.dense")
        cw, cb = g.lin("classifier")
    else:
        expected = ("classifier.dense.weight, classifier.out_proj.weight" if roberta
                    else "pooler.dense.weight, classifier.weight")
        missing = [n for n in expected.split(", ") if not w.has(n)]
        architectures = files.config.get("architectures") or [files.model_type]
        raise InputError(
            f"model: {files.directory.name} ({', '.join(map(str, architectures))}) has no trained "
            f"sequence-classification head: {', '.join(missing)} not in its weights; the cross-encoder "
            "ranker needs a reranker checkpoint (e.g. use this one with the embedding ranker instead)")
    for name, array in (("pool_w", pw), ("pool_b", pb), ("cls_w", cw), ("cls_b", cb)):
        g.init(name, array)
    g.nodes += [
        helper.make_node("MatMul", ["cls_vec", "pool_w"], ["pool_mm"], name="pooler"),
        helper.make_node("Add", ["pool_mm", "pool_b"], ["pool_pre"]),
        helper.make_node("Tanh", ["pool_pre"], ["pooled"]),
        helper.make_node("MatMul", ["pooled", "cls_w"], ["logit_mm"], name="classifier"),
        helper.make_node("Add", ["logit_mm", "cls_b"], ["logits"]),
    ]
    return helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", cw.shape[1]])


def build_encoder_graph(files: ModelFiles, head: str) -> Any:
    """Return an ``onnx.ModelProto`` for the checkpoint with the given head (a pooling or classifier)."""
    from onnx import TensorProto, helper

    refusal = builder_refusal(files.config, files.directory.name)
    if refusal:
        raise InputError(refusal)
    cfg = files.config
    g = _GraphParts(_Weights(load_weights(files)))
    hidden = int(cfg["hidden_size"])
    eps = float(cfg.get("layer_norm_eps", 1e-12))
    roberta = files.model_type in ROBERTA_LIKE
    inputs = _embedding_inputs(g, hidden, eps, roberta)
    x = "h0"
    for i in range(int(cfg["num_hidden_layers"])):
        x = _encoder_layer(g, i, x, int(cfg["num_attention_heads"]), cfg.get("hidden_act", "gelu"), eps)
    if head in POOLINGS:
        g.nodes += pooling_nodes(x, head, g.init)
        output = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", hidden])
    elif head == "classifier":
        output = _classifier_head(g, x, files, roberta)
    else:
        raise ValueError(f"unknown head {head!r}")
    graph = helper.make_graph(g.nodes, f"surerank_{files.model_type}_{head}", inputs, [output], g.inits)
    model = helper.make_model(
        graph, producer_name="surerank",
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
    )
    model.ir_version = min(model.ir_version, 9)
    return model
