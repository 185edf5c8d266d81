"""Build an ONNX graph of a BERT-family encoder straight from its safetensors weights (no torch).

The graph uses ONNX Runtime's fused transformer kernels (``com.microsoft`` EmbedLayerNormalization,
Attention, BiasGelu) -- those ORT's own BERT optimiser would produce from a torch export, so the CPU
build is fast without an export step -- except SkipLayerNormalization, whose CPU kernel measured slower
than the plain Add + LayerNormalization ops it fuses (see :data:`DISABLED_OPTIMIZERS`).  Three heads:

* ``mean`` / ``cls``: sentence embedding (``embedding`` output, ``[batch, hidden]``), for bi-encoders;
* ``classifier``: BERT pooler (tanh) + linear head (``logits`` output, ``[batch, num_labels]``), for
  sequence-classification cross-encoders; RoBERTa-style heads (dense + tanh + out_proj) too.

``int8`` is ONNX Runtime dynamic quantisation of the fp32 graph (MatMul and Attention weights).
Built graphs are cached under :func:`surerank.engine.model_files.cache_dir`.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from surerank.engine.model_files import ModelFiles, cache_dir, load_weights
from surerank.errors import InputError

logger = logging.getLogger(__name__)

BUILDER_VERSION = "4"  # 4: RoBERTa position_ids input fixed, all pooling modes, tanh-GELU
_ROBERTA_LIKE = ("roberta", "xlm-roberta", "camembert")
_PREFIXES = ("bert.", "roberta.", "model.", "encoder_model.", "")


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


#: GELU variants (config ``hidden_act``) and the ORT kernel computing each with its bias: erf GELU is
#: BiasGelu; the tanh approximation (``gelu_new`` and its aliases) is FastGelu -- not interchangeable
#: (they differ by up to ~1e-3 per activation)
GELU_OPS = {"gelu": "BiasGelu", "gelu_python": "BiasGelu", "gelu_new": "FastGelu",
            "gelu_pytorch_tanh": "FastGelu", "gelu_fast": "FastGelu"}

#: Graph optimisers the session must not run: ORT's SkipLayerNormalization CPU kernel is ~3.5x slower
#: than the Add + Add + LayerNormalization it would replace (ORT 1.32, 8x80x384: 1.18 ms vs 0.34 ms).
DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


def residual_layer_norm(projection: str, bias: str, residual: str, gamma: str, beta: str, out: str,
                        eps: float) -> list[Any]:
    """``LayerNorm(projection + bias + residual)`` as plain ONNX ops (see :data:`DISABLED_OPTIMIZERS`)."""
    from onnx import helper

    return [
        helper.make_node("Add", [projection, bias], [out + "_biased"], name=out + "_bias"),
        helper.make_node("Add", [out + "_biased", residual], [out + "_sum"], name=out + "_residual"),
        helper.make_node("LayerNormalization", [out + "_sum", gamma, beta], [out], axis=-1, epsilon=eps,
                         name=out + "_ln"),
    ]


#: embedding heads: sentence-transformers' pooling modes (see :func:`pooling_nodes`)
POOLING_HEADS = ("mean", "cls", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")


def pooling_nodes(x: str, head: str, init: Any) -> list[Any]:
    """ONNX nodes pooling token states ``x`` [batch, seq, hidden] into ``embedding`` [batch, hidden], as
    sentence-transformers pools (right padding; ``attention_mask`` int32 [batch, seq])."""
    from onnx import TensorProto, helper

    init("axis1", np.array([1], np.int64))
    init("axis2", np.array([2], np.int64))
    if head == "cls":
        init("start0", np.array([0], np.int64))
        init("end1", np.array([1], np.int64))
        return [  # x[:, 0, :] as Slice + Squeeze (a scalar Gather gets a wrong shape after ORT fusions)
            helper.make_node("Slice", [x, "start0", "end1", "axis1"], ["cls_3d"]),
            helper.make_node("Squeeze", ["cls_3d", "axis1"], ["embedding"]),
        ]
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


def build_encoder_graph(files: ModelFiles, head: str) -> Any:
    """Return an ``onnx.ModelProto`` for the checkpoint with the given head (mean, cls, classifier)."""
    from onnx import TensorProto, helper, numpy_helper

    cfg = files.config
    model_type = files.model_type
    if files.custom_code:
        raise InputError(
            f"model: {files.directory.name} defines its own architecture in Python (config.json auto_map); "
            "the hand-built ONNX graph covers only the stock BERT/RoBERTa/XLM-R code, so it cannot stand in "
            "for it; use backend='torch' with trust_remote_code=True")
    if model_type not in ("bert", *_ROBERTA_LIKE):
        raise InputError(
            f"model: model_type {model_type!r} is not supported by the ONNX builder (BERT, RoBERTa, "
            "XLM-RoBERTa); use backend='torch' for other architectures"
        )
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise InputError("model: only absolute position embeddings are supported by the ONNX builder")
    act = cfg.get("hidden_act", "gelu")
    if act not in GELU_OPS:
        raise InputError(f"model: activation {act!r} is not supported by the ONNX builder "
                         f"({', '.join(GELU_OPS)} are)")
    w = _Weights(load_weights(files))
    hidden = int(cfg["hidden_size"])
    heads = int(cfg["num_attention_heads"])
    layers = int(cfg["num_hidden_layers"])
    eps = float(cfg.get("layer_norm_eps", 1e-12))
    roberta = model_type in _ROBERTA_LIKE

    inits: list[Any] = []
    nodes: list[Any] = []

    def init(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def lin(prefix: str) -> tuple[np.ndarray, np.ndarray]:
        return w(prefix + ".weight").T.astype(np.float32), w(prefix + ".bias").astype(np.float32)

    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT32, ["batch", "seq"]),
        helper.make_tensor_value_info("token_type_ids", TensorProto.INT32, ["batch", "seq"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT32, ["batch", "seq"]),
    ]
    type_emb = w("embeddings.token_type_embeddings.weight") if w.has(
        "embeddings.token_type_embeddings.weight") else np.zeros((1, hidden), np.float32)
    emb_inputs = [
        "input_ids", "token_type_ids",
        init("word_emb", w("embeddings.word_embeddings.weight")),
        init("pos_emb", w("embeddings.position_embeddings.weight")),
        init("type_emb", type_emb),
        init("emb_ln_g", w("embeddings.LayerNorm.weight")),
        init("emb_ln_b", w("embeddings.LayerNorm.bias")),
        "attention_mask",
    ]
    if roberta:  # positions start after the padding index and skip padding tokens
        inputs.append(helper.make_tensor_value_info("position_ids", TensorProto.INT32, ["batch", "seq"]))
        emb_inputs.append("position_ids")  # the 9th and last input (index 8) of EmbedLayerNormalization
    nodes.append(helper.make_node(
        "EmbedLayerNormalization", emb_inputs, ["h0", "mask_index"], domain="com.microsoft",
        epsilon=eps, name="embed"))
    x = "h0"
    for i in range(layers):
        p = f"encoder.layer.{i}"
        qw, qb = lin(f"{p}.attention.self.query")
        kw, kb = lin(f"{p}.attention.self.key")
        vw, vb = lin(f"{p}.attention.self.value")
        init(f"l{i}_qkv_w", np.concatenate([qw, kw, vw], axis=1))
        init(f"l{i}_qkv_b", np.concatenate([qb, kb, vb]))
        nodes.append(helper.make_node(
            "Attention", [x, f"l{i}_qkv_w", f"l{i}_qkv_b", "mask_index"], [f"l{i}_ctx"],
            domain="com.microsoft", num_heads=heads, name=f"l{i}_attention"))
        ow, ob = lin(f"{p}.attention.output.dense")
        init(f"l{i}_ao_w", ow)
        init(f"l{i}_ao_b", ob)
        nodes.append(helper.make_node("MatMul", [f"l{i}_ctx", f"l{i}_ao_w"], [f"l{i}_ao"], name=f"l{i}_ao"))
        init(f"l{i}_ln1_g", w(f"{p}.attention.output.LayerNorm.weight"))
        init(f"l{i}_ln1_b", w(f"{p}.attention.output.LayerNorm.bias"))
        nodes += residual_layer_norm(f"l{i}_ao", f"l{i}_ao_b", x, f"l{i}_ln1_g", f"l{i}_ln1_b", f"l{i}_x1", eps)
        iw, ib = lin(f"{p}.intermediate.dense")
        init(f"l{i}_ff1_w", iw)
        init(f"l{i}_ff1_b", ib)
        nodes.append(helper.make_node("MatMul", [f"l{i}_x1", f"l{i}_ff1_w"], [f"l{i}_ff1"], name=f"l{i}_ff1"))
        nodes.append(helper.make_node(
            GELU_OPS[act], [f"l{i}_ff1", f"l{i}_ff1_b"], [f"l{i}_gelu"], domain="com.microsoft",
            name=f"l{i}_gelu"))
        fw, fb = lin(f"{p}.output.dense")
        init(f"l{i}_ff2_w", fw)
        init(f"l{i}_ff2_b", fb)
        nodes.append(helper.make_node("MatMul", [f"l{i}_gelu", f"l{i}_ff2_w"], [f"l{i}_ff2"], name=f"l{i}_ff2"))
        init(f"l{i}_ln2_g", w(f"{p}.output.LayerNorm.weight"))
        init(f"l{i}_ln2_b", w(f"{p}.output.LayerNorm.bias"))
        nodes += residual_layer_norm(f"l{i}_ff2", f"l{i}_ff2_b", f"l{i}_x1", f"l{i}_ln2_g", f"l{i}_ln2_b",
                                     f"l{i}_out", eps)
        x = f"l{i}_out"

    outputs = []
    if head in POOLING_HEADS:
        nodes += pooling_nodes(x, head, init)
        outputs.append(helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", hidden]))
    elif head == "classifier":
        init("start0", np.array([0], np.int64))
        init("end1", np.array([1], np.int64))
        init("axis1", np.array([1], np.int64))
        nodes += [  # x[:, 0, :] as Slice + Squeeze (a scalar Gather gets a wrong shape after ORT fusions)
            helper.make_node("Slice", [x, "start0", "end1", "axis1"], ["cls_3d"]),
            helper.make_node("Squeeze", ["cls_3d", "axis1"], ["cls_vec"]),
        ]
        if w.has("classifier.dense.weight") and w.has("classifier.out_proj.weight"):  # RoBERTa-style head
            pw, pb = lin("classifier.dense")
            cw, cb = lin("classifier.out_proj")
        elif w.has("pooler.dense.weight") and w.has("classifier.weight"):  # BERT: pooler + classifier
            pw, pb = lin("pooler.dense")
            cw, cb = lin("classifier")
        else:
            expected = ("classifier.dense.weight, classifier.out_proj.weight" if roberta
                        else "pooler.dense.weight, classifier.weight")
            missing = [n for n in expected.split(", ") if not w.has(n)]
            architectures = cfg.get("architectures") or [model_type]
            raise InputError(
                f"model: {files.directory.name} ({', '.join(map(str, architectures))}) has no trained "
                f"sequence-classification head: {', '.join(missing)} not in its weights; the cross-encoder "
                "ranker needs a reranker checkpoint (e.g. use this one with the embedding ranker instead)")
        init("pool_w", pw)
        init("pool_b", pb)
        init("cls_w", cw)
        init("cls_b", cb)
        nodes += [
            helper.make_node("MatMul", ["cls_vec", "pool_w"], ["pool_mm"], name="pooler"),
            helper.make_node("Add", ["pool_mm", "pool_b"], ["pool_pre"]),
            helper.make_node("Tanh", ["pool_pre"], ["pooled"]),
            helper.make_node("MatMul", ["pooled", "cls_w"], ["logit_mm"], name="classifier"),
            helper.make_node("Add", ["logit_mm", "cls_b"], ["logits"]),
        ]
        outputs.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", cw.shape[1]]))
    else:
        raise ValueError(f"unknown head {head!r}")

    graph = helper.make_graph(nodes, f"surerank_{model_type}_{head}", inputs, outputs, inits)
    model = helper.make_model(
        graph, producer_name="surerank",
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
    )
    model.ir_version = min(model.ir_version, 9)
    return model


#: graphs with more initializer bytes than this keep them in an external data file beside the graph
#: (protobuf cannot serialise a message over 2 GB: fp32 bge-reranker-large, multilingual-e5-large, bge-m3)
EXTERNAL_DATA_BYTES = 1_800_000_000


def _initializer_bytes(model: Any) -> int:
    return sum(len(t.raw_data) for t in model.graph.initializer)


def _atomic_save(model: Any, path: Path) -> None:
    """Write ``model`` to ``path`` atomically; over :data:`EXTERNAL_DATA_BYTES` its tensors go to a data
    file named after the temporary graph (so concurrent builders never share one), which the graph
    references by that name."""
    import onnx

    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".onnx.tmp")
    os.close(fd)
    try:
        if _initializer_bytes(model) > EXTERNAL_DATA_BYTES:
            location = Path(tmp).name.replace(".onnx.tmp", ".onnx.data")
            logger.info("ONNX graph %s: %.2f GB of weights, kept in the external data file %s", path.name,
                        _initializer_bytes(model) / 1e9, location)
            onnx.save_model(model, tmp, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=location, size_threshold=1024)
        else:
            onnx.save_model(model, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def has_external_data(path: Path) -> bool:
    """Whether the graph at ``path`` keeps tensors in an external data file."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    return any(uses_external_data(t) for t in model.graph.initializer)


def onnx_model_path(files: ModelFiles, head: str, precision: str = "fp32") -> Path:
    """Build (or reuse from the cache) the ONNX graph for ``files`` with ``head`` at ``precision``."""
    if precision not in ("fp32", *INT8_RECIPES):
        raise InputError(f"precision: {precision!r} is not available on the ONNX backend; "
                         f"use fp32, {', '.join(INT8_RECIPES)}")
    root = cache_dir() / "onnx"
    root.mkdir(parents=True, exist_ok=True)
    stem = f"{files.directory.name}-{files.fingerprint()}-{head}-v{BUILDER_VERSION}"
    fp32 = root / f"{stem}-fp32.onnx"
    if not fp32.is_file():
        logger.info("building ONNX graph for %s (%s head) into %s", files.directory, head, fp32)
        _atomic_save(build_encoder_graph(files, head), fp32)
    if precision == "fp32":
        return fp32
    recipe = INT8_RECIPES[precision]
    int8 = root / f"{stem}-int8-{recipe}.onnx"
    if not int8.is_file():
        logger.info("quantising %s to int8 (ONNX Runtime dynamic quantisation, %s)", fp32.name, recipe)
        quantize_int8(fp32, int8, recipe, files, head)
        remove_retired_int8(root, stem, set(INT8_RECIPES.values()))
    return int8


def remove_retired_int8(root: Path, stem: str, current: set[str]) -> list[Path]:
    """Delete the cached int8 graphs of ``stem`` (and their records) made by recipes no longer in
    ``current``: a release that changes a precision's recipe builds a new graph under a new name, and the
    old one (60 MB for all-MiniLM-L6-v2, 110 MB for all-mpnet-base-v2) would otherwise stay forever."""
    removed = []
    prefix = f"{stem}-int8-"
    for path in root.glob(prefix + "*"):
        recipe = path.name[len(prefix):].split(".", 1)[0]
        if recipe not in current and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        logger.info("removed %d cached file(s) of retired int8 recipes: %s", len(removed),
                    ", ".join(sorted(p.name for p in removed)))
    return removed


#: int8 recipes, by precision name.  All use per-channel int8 weights (per-tensor lost 0.006 nDCG@10) and
#: keep the heads in fp32.  The FFN output projections read GELU outputs with a few outlier channels, which
#: per-tensor activation quantisation handles worst:
#: ``int8``: every FFN output projection stays fp32 (``pc-noff2``);
#: ``int8-fast``: every projection int8, the outlier channels of the FFN hidden layer (2 to 4 of 1536 per
#: layer in all-MiniLM-L6-v2) folded into a small fp32 side branch of the FFN (``pc-fold``,
#: :func:`surerank.engine.quant_search.fold_ffn_outliers`).  It replaced ``pc-sens`` (the most sensitive
#: sixth of the FFN output projections kept fp32): all-MiniLM-L6-v2's calibration drift 0.327 vs 0.343 and
#: DL19 / DL20 nDCG@10 -0.0023 / +0.0048 vs fp32 (``pc-sens``: -0.0020 / +0.0064); docs/engine.md has the speed.
INT8_RECIPES = {"int8": "pc-noff2", "int8-fast": "pc-fold"}
INT8_RECIPE = INT8_RECIPES["int8"]
FP32_NODES_KEY = "surerank.fp32_nodes"
#: the int8-fast graph's folded FFN outlier channels, per projection (JSON)
FOLDED_CHANNELS_KEY = "surerank.folded_channels"

# Calibration text for the int8 graphs (outlier channels, the drift checks, the int8-fast search): varied
# everyday and technical prose, written for this.
CALIBRATION_TEXTS = (
    "How long does it take to boil an egg so that the yolk stays soft?",
    "The mitochondria is the organelle that produces most of the chemical energy in a cell.",
    "Interest rates rose for the third time this year as inflation stayed above the target.",
    "what is the capital of australia",
    "Canberra was chosen as the capital in 1908 as a compromise between Sydney and Melbourne.",
    "To reset the router, hold the button on the back for ten seconds until the light blinks.",
    "The patient was given 500 mg of amoxicillin three times a day for a week.",
    "symptoms of vitamin d deficiency in adults",
    "Photosynthesis converts light, water and carbon dioxide into glucose and oxygen.",
    "The bridge was closed after engineers found cracks in two of its steel supports.",
    "In 1969 Apollo 11 landed on the Moon and Neil Armstrong became the first person to walk on it.",
    "Python's list comprehension builds a new list by applying an expression to each item.",
    "cheap flights from london to new york in december",
    "The recipe calls for two cups of flour, a pinch of salt and a tablespoon of olive oil.",
    "Heavy rain is expected across the north on Friday, with winds of up to 80 km/h on the coast.",
    "A boundary layer forms where the air next to a wing's surface is slowed by friction.",
    "The court ruled that the contract was void because one party had been misled about the price.",
    "how many calories are burned walking 10000 steps",
    "Glaciers in the Alps have lost more than half of their volume since 1900.",
    "The quarterly report shows revenue of 4.2 billion dollars, up 12 percent from a year earlier.",
    "Mix the cement with water slowly; too much water weakens the concrete once it sets.",
    "Shakespeare wrote Hamlet around 1600; it is his longest play.",
    "define osmosis biology",
    "Osmosis is the movement of water across a membrane from a dilute to a concentrated solution.",
    "The train to Edinburgh leaves from platform 4 at 9:15 and arrives shortly after one o'clock.",
    "Regular exercise lowers blood pressure and improves sleep in most adults.",
    "The company recalled 30,000 cars because a faulty sensor could disable the airbags.",
    "which planet has the most moons",
    "Saturn has more than 140 known moons, the largest of which is Titan.",
    "A mortgage is a loan secured against a property, repaid with interest over many years.",
    "The violinist played Bach's partitas from memory to a full concert hall.",
    "Antibiotics do not work against viruses such as the common cold or influenza.",
)


def _session(path: Path, threads: int | None = None) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(DISABLED_OPTIMIZERS))


def _output_drift(reference: np.ndarray, output: np.ndarray, head: str) -> float:
    """How far quantisation moved the outputs: mean 1 - cosine (embeddings), relative error (logits)."""
    if head == "classifier":
        return float(np.mean(np.abs(output - reference)) / (np.std(reference) + 1e-6))
    a = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    b = output / np.linalg.norm(output, axis=1, keepdims=True)
    return float(np.mean(1.0 - np.sum(a * b, axis=1)))


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
    """Dynamic int8 of every MatMul and Attention node except ``fp32_nodes``."""
    quantize_dynamic_int8(src, dst, op_types_to_quantize=["MatMul", "Attention"],
                          nodes_to_exclude=list(fp32_nodes))


def quantize_int8(src: Path, dst: Path, recipe: str = INT8_RECIPE, files: ModelFiles | None = None,
                  head: str = "mean") -> None:
    """Dynamic int8 quantisation of the weights; activations are quantised at run time."""
    import json

    import onnx

    model = onnx.load(str(src), load_external_data=False)
    names = [n.name for n in model.graph.node]
    heads = [n for n in names if n in ("pooler", "classifier")]
    ffn_out = [n for n in names if n.endswith("_ff2")]
    if recipe == "pc-fold" and files is None:
        raise ValueError(f"the {recipe} recipe needs the model files (tokenizer) for calibration")
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".quant-") as work:
        source = src  # the graph quantised: ``src``, or ``src`` with its FFN outlier channels folded
        props: dict[str, str] = {}
        if recipe == "pc-noff2":
            fp32_nodes = ffn_out
        elif recipe == "pc-all":
            fp32_nodes = []
        elif recipe == "pc-fold":
            from surerank.engine.quant_search import fold_ffn_outliers, folded_products, outlier_channels

            source = Path(work) / "folded.onnx"
            folded = fold_ffn_outliers(src, ffn_out, outlier_channels(src, ffn_out, files, head), source)
            fp32_nodes = folded_products(folded)
            props[FOLDED_CHANNELS_KEY] = json.dumps(folded)
            logger.info("int8-fast: %d outlier channels of %d FFN output projections folded into fp32",
                        sum(map(len, folded.values())), len(folded))
        else:
            raise ValueError(f"unknown int8 recipe {recipe!r}")
        out = Path(work) / "int8.onnx"
        quantize_keeping(source, out, heads + fp32_nodes)
        quantized = onnx.load(str(out))
        onnx.helper.set_model_props(quantized, {FP32_NODES_KEY: ",".join(heads + fp32_nodes), **props})
        _atomic_save(quantized, dst)


# -- precision="auto" --------------------------------------------------------------------------------
#: ``precision="auto"`` on the ONNX backend picks ``int8-fast`` when its drift on calibration text is at
#: most this bound, else fp32.  The drift is max |Δ score| / sd(fp32 scores): the largest move int8-fast
#: makes to any calibration score (cosine of two texts, or a pair's logit), in units of the spread of the
#: fp32 scores.  0.5 -- no score moves by more than half a standard deviation of the scores -- admits
#: all-MiniLM-L6-v2 (0.33; DL19 / DL20 nDCG@10 -0.0023 / +0.0048 vs fp32) with room for another CPU's rounding,
#: and refuses the random-weight test models (1.3 to 5); docs/engine.md gives the measurements.
AUTO_DRIFT_BOUND = 0.5
AUTO_MEASURE = "max |Δ score| / sd(fp32 scores)"
AUTO_RECORD_VERSION = 1
#: neighbours each calibration text is paired with for a classifier head (32 texts -> 96 pairs)
_AUTO_PAIR_OFFSETS = (1, 2, 3)


def _drift_sequences(files: ModelFiles, head: str) -> list[dict[str, np.ndarray]]:
    """Calibration sequences one by one (as the engine runs int8: one sequence per batch), within the
    model's max length: the 32 texts alone (embeddings) or 96 pairs of them (classifier head)."""
    from surerank.engine.batching import build_batch
    from surerank.engine.tokenize import TokenizerEngine, pair_sequence, single_sequence

    tok = TokenizerEngine(files.directory / "tokenizer.json")
    limit = min(int(files.max_length), 256)
    encoded = tok.encode(list(CALIBRATION_TEXTS))
    n = len(encoded)
    if head == "classifier":
        cut = max(1, (limit - tok.template.pair_specials) // 2)
        seqs = [pair_sequence(tok.template, encoded[i][:cut], encoded[(i + k) % n][:cut])
                for k in _AUTO_PAIR_OFFSETS for i in range(n)]
    else:
        cut = max(1, limit - tok.template.single_specials)
        seqs = [single_sequence(tok.template, x[:cut]) for x in encoded]
    feeds = []
    for i in range(len(seqs)):
        b = build_batch(seqs, np.array([i]), tok.pad_id, tok.template.second_type_id, files.position_offset)
        feed = {"input_ids": b.input_ids, "token_type_ids": b.token_type_ids, "attention_mask": b.attention_mask}
        if b.position_ids is not None:
            feed["position_ids"] = b.position_ids
        feeds.append(feed)
    return feeds


def _ranking_scores(outputs: np.ndarray, head: str) -> np.ndarray:
    """What the rankers rank by: every logit (classifier), or the cosine of every two embeddings."""
    if head == "classifier":
        return outputs.astype(np.float64).ravel()
    x = outputs.astype(np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return (x @ x.T)[np.triu_indices(len(x), 1)]


def measure_drift(fp32: Path, int8: Path, files: ModelFiles, head: str) -> dict[str, Any]:
    """How far the ``int8`` graph moves the ranking scores of the ``fp32`` one on calibration text."""
    feeds = _drift_sequences(files, head)

    def outputs(path: Path) -> np.ndarray:
        session = _session(path, threads=1)  # one short sequence at a time: more threads only synchronise
        names = {i.name for i in session.get_inputs()}
        return np.concatenate([session.run(None, {k: v for k, v in f.items() if k in names})[0] for f in feeds])

    reference = _ranking_scores(outputs(fp32), head)
    moved = np.abs(_ranking_scores(outputs(int8), head) - reference)
    spread = float(np.std(reference))
    drift = float(moved.max() / spread) if spread > 0 else float("inf")
    return {"measure": AUTO_MEASURE, "drift": drift,
            "mean_drift": float(moved.mean() / spread) if spread > 0 else float("inf"),
            "max_abs_diff": float(moved.max()), "spread": spread, "scores": int(reference.size),
            "sequences": len(feeds), "score": "logit" if head == "classifier" else "cosine"}


def _auto_record_path(int8: Path) -> Path:
    return int8.with_name(int8.name[: -len(".onnx")] + ".auto.json")


def auto_precision(files: ModelFiles, head: str, *, trust_remote_code: bool = False) -> dict[str, Any]:
    """Resolve ``precision="auto"`` on the ONNX backend: ``int8-fast`` if its drift on calibration text is
    within :data:`AUTO_DRIFT_BOUND`, else ``fp32``.

    The drift is measured once per int8-fast graph and kept beside it (``<graph>.auto.json``, with the
    graph's mtime and the ONNX Runtime version it was measured with); a later call reads it back and only
    compares it with the bound.  A model whose int8-fast graph cannot be made gets fp32, saying why.
    """
    import json

    import onnxruntime

    from surerank.engine.onnx_export import onnx_graph_path

    bound = float(AUTO_DRIFT_BOUND)
    fp32 = onnx_graph_path(files, head, "fp32", trust_remote_code=trust_remote_code)
    try:
        int8 = onnx_graph_path(files, head, "int8-fast", trust_remote_code=trust_remote_code)
    except InputError as exc:
        logger.warning("precision auto: %s runs in fp32: its int8-fast graph could not be made (%s)",
                       files.directory.name, exc)
        return {"choice": "fp32", "bound": bound, "measure": AUTO_MEASURE, "drift": None,
                "reason": f"int8-fast graph not available: {exc}"}
    record_path = _auto_record_path(int8)
    stamp = {"version": AUTO_RECORD_VERSION, "graph": int8.name, "graph_mtime_ns": int8.stat().st_mtime_ns,
             "onnxruntime": onnxruntime.__version__}
    record: dict[str, Any] | None = None
    if record_path.is_file():
        try:
            cached = json.loads(record_path.read_text())
        except (OSError, ValueError):
            cached = None
        if isinstance(cached, dict) and all(cached.get(k) == v for k, v in stamp.items()):
            record = cached
    if record is None:
        logger.info("precision auto: measuring %s's int8-fast drift on calibration text (once, cached)",
                    files.directory.name)
        record = {**stamp, **measure_drift(fp32, int8, files, head)}
    cached_bound = record.get("bound")
    record["bound"] = bound
    record["choice"] = "int8-fast" if record["drift"] <= bound else "fp32"
    if cached_bound != bound or not record_path.is_file():
        fd, tmp = tempfile.mkstemp(dir=record_path.parent, suffix=".auto.json.tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle, indent=1)
        os.replace(tmp, record_path)
        logger.info("precision auto: %s -> %s (%s %.3f, bound %.3f)", files.directory.name, record["choice"],
                    AUTO_MEASURE, record["drift"], bound)
    return {"choice": record["choice"], "bound": bound, "measure": record["measure"],
            "drift": round(float(record["drift"]), 6), "mean_drift": round(float(record["mean_drift"]), 6),
            "score": record["score"], "scores": record["scores"]}
