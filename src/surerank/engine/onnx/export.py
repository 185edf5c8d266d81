"""ONNX graphs for encoder architectures the hand-built graph (:mod:`surerank.engine.onnx_build`) lacks.

MPNet, ELECTRA, DeBERTa-v2/v3, ModernBERT, GTE and any other encoder transformers can load are exported
once through ``torch.onnx.export`` (the TorchScript exporter: the dynamo one needs ``onnxscript``, which
is not a dependency), or taken from the model repository's own ``onnx/model.onnx`` when it ships one.
Either graph is then **checked against the torch forward pass** on calibration text before it is used:
the parity figure is stored beside the cached graph (``<graph>.json``, and in the graph's metadata under
``surerank.parity``) and a graph over :data:`PARITY_BOUNDS` is refused.  torch is needed for the export
and check only; afterwards the cached graph runs on ONNX Runtime alone.

The exported graph has the inputs the ONNX backend feeds (``input_ids``, ``token_type_ids``,
``attention_mask``, int32, dynamic batch and sequence axes) and one output: ``embedding`` ``[batch,
hidden]`` pooled in the graph (any of :data:`POOLINGS`) or ``logits`` ``[batch, labels]``
(``classifier``).  Positions are computed inside the graph, as transformers computes them.
Graphs over 2 GB keep their weights in an external data file beside them (``<graph>.data``).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from surerank.engine.model_files import ModelFiles, cache_dir
from surerank.errors import InputError, MissingDependencyError

logger = logging.getLogger(__name__)

EXPORTER_VERSION = "3"  # 2: node names without "/"; 3: position_ids input for MPNet-like families
OPSET = 17
#: the largest graph saved as one file (protobuf's 2 GB limit, with headroom); larger ones get external data
EXTERNAL_DATA_BYTES = 1_800_000_000
#: refusal bounds of the export-time check: logits (classifier head) and cosine similarities (embeddings)
PARITY_BOUNDS = {"logit": 1e-3, "cosine": 1e-4}
#: sentence-transformers' pooling modes, applied in the exported graph
POOLINGS = ("mean", "cls", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
SHIPPED_ONNX = Path("onnx") / "model.onnx"
#: the ONNX backend's inputs; an exported graph keeps all three, used or not (and ``position_ids`` for the
#: families whose positions count from ``padding_idx + 1``, where the engine computes them: see graph_inputs)
INPUTS = ("input_ids", "token_type_ids", "attention_mask")
PARITY_KEY = "surerank.parity"
#: int8 recipes of exported graphs: ``int8`` leaves the FFN output projections fp32 (as the hand-built
#: graph does); ``int8-fast`` splits each projection input's outlier channels off into a small fp32 product,
#: then searches for the projections to leave fp32 (:mod:`surerank.engine.quant_search`)
EXPORT_INT8_RECIPES = {"int8": "pc-noff2", "int8-fast": "pc-split"}
#: the drift target of that search, in ``precision="auto"``'s measure: half its bound, so that the graph
#: chosen clears the bound on text other than the calibration sentences
GREEDY_TARGET_SHARE = 0.5


class ExportParityError(InputError):
    """An exported (or shipped) ONNX graph disagrees with the torch forward pass beyond the bound."""


def handled_by_builder(files: ModelFiles) -> bool:
    """Whether :func:`surerank.engine.onnx_build.build_encoder_graph` builds this checkpoint (no torch)."""
    from surerank.engine import onnx_build

    cfg = files.config
    return (not getattr(files, "custom_code", None)  # a repository's own code: only its export stands in
            and files.model_type in ("bert", *onnx_build._ROBERTA_LIKE)
            and cfg.get("position_embedding_type", "absolute") == "absolute"
            and cfg.get("hidden_act", "gelu") in ("gelu", "gelu_new", "gelu_python"))


def onnx_graph_path(files: ModelFiles, head: str, precision: str = "fp32", *,
                    trust_remote_code: bool = False) -> Path:
    """The ONNX graph for any encoder: hand-built for the BERT family, exported for the rest."""
    if handled_by_builder(files):
        from surerank.engine.onnx_build import onnx_model_path

        return onnx_model_path(files, head, precision)
    return exported_model_path(files, head, precision, trust_remote_code=trust_remote_code)


def graph_inputs(files: ModelFiles) -> tuple[str, ...]:
    """The inputs the ONNX backend feeds this model: :data:`INPUTS`, plus ``position_ids`` for MPNet-like
    families (the engine's positions, equal to those transformers derives from the padding)."""
    return (*INPUTS, "position_ids") if getattr(files, "position_offset", None) is not None else INPUTS


def _stem(files: ModelFiles, head: str) -> str:
    return f"{files.directory.name}-{files.fingerprint()}-{head}-x{EXPORTER_VERSION}"


def export_record(graph: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The parity record stored beside an exported fp32 graph, with the int8 drift check under ``int8``
    for an int8 graph (None for hand-built graphs)."""
    path = Path(graph)
    record = path.with_name(re.sub(r"-(fp32|int8-[\w-]+)\.onnx$", "-fp32.json", path.name))
    if record == path or not record.is_file():
        return None
    rec = json.loads(record.read_text())
    drift = path.with_suffix(".json")
    if "-int8-" in path.name and drift.is_file():
        rec["int8"] = json.loads(drift.read_text())
    return rec


def exported_model_path(files: ModelFiles, head: str, precision: str = "fp32", *,
                        trust_remote_code: bool = False) -> Path:
    """Export (or reuse from the cache) a checked ONNX graph for ``files`` with ``head`` at ``precision``."""
    if precision not in ("fp32", *EXPORT_INT8_RECIPES):
        raise InputError(f"precision: {precision!r} is not available on the ONNX backend; "
                         f"use fp32, {', '.join(EXPORT_INT8_RECIPES)}")
    if head not in (*POOLINGS, "classifier"):
        raise InputError(f"head: {head!r} is unknown to the ONNX exporter; choose from "
                         f"{', '.join((*POOLINGS, 'classifier'))}")
    root = cache_dir() / "onnx"
    root.mkdir(parents=True, exist_ok=True)
    stem = _stem(files, head)
    fp32 = root / f"{stem}-fp32.onnx"
    record = root / f"{stem}-fp32.json"
    if not (fp32.is_file() and record.is_file()):
        _export_checked(files, head, fp32, record, trust_remote_code)
    else:
        logger.info("using the cached exported ONNX graph %s (%s)", fp32, _parity_line(json.loads(
            record.read_text())))
    if precision == "fp32":
        return fp32
    recipe = EXPORT_INT8_RECIPES[precision]
    int8 = root / f"{stem}-int8-{recipe}.onnx"
    check = int8.with_suffix(".json")
    if not check.is_file() or (_accepted(check) and not int8.is_file()):  # never made, or its graph gone
        logger.info("quantising %s to int8 (ONNX Runtime dynamic quantisation, %s)", fp32.name, recipe)
        try:
            search = quantize_exported(fp32, int8, recipe, files, head)
        except InputError as exc:  # the search found nothing within its target: remembered, as a refusal
            check.write_text(json.dumps({"precision": precision, "recipe": recipe, "accepted": False,
                                         "refused": str(exc)}, indent=2) + "\n")
            raise
        rec = {"precision": precision, "recipe": recipe, **int8_drift(fp32, int8, files, head)}
        if search:
            rec["search"] = search
        rec["accepted"] = rec["drift"] <= rec["bound"]
        if not rec["accepted"]:  # a refused graph is not kept; the record is, so the refusal is quick
            for f in (int8, int8.with_name(int8.name + ".data")):
                f.unlink(missing_ok=True)
        check.write_text(json.dumps(rec, indent=2) + "\n")
        from surerank.engine.onnx_build import remove_retired_int8

        remove_retired_int8(root, stem, set(EXPORT_INT8_RECIPES.values()))
    rec = json.loads(check.read_text())
    if not rec["accepted"]:
        raise InputError(rec.get("refused") or (
            f"precision: {precision} moves {files.directory.name}'s outputs by {rec['drift']:.3g} "
            f"({rec['measure']} on calibration text, bound {rec['bound']}): dynamic int8 does not suit this "
            "model (activation outliers); use precision='fp32'"))
    return int8


#: refusal bounds of the int8 check (see :func:`int8_drift`): all-MiniLM-L6-v2 measures 0.004 (int8) and
#: 0.005 (int8-fast) in mean 1 - cosine, all-mpnet-base-v2 0.99 (its outputs are unrelated to fp32's)
INT8_DRIFT_BOUNDS = {"cosine": 0.02, "logit": 0.1}


def _accepted(check: Path) -> bool:
    return bool(json.loads(check.read_text()).get("accepted"))


def int8_drift(fp32: Path, int8: Path, files: ModelFiles, head: str) -> dict[str, Any]:
    """How far int8 moves the outputs on calibration text: mean 1 - cosine (embeddings), or mean |Δ logit|
    in units of the logits' sd (onnx_build's measure for choosing int8-fast's fp32 layers)."""
    from surerank.engine.onnx_build import _output_drift

    feed = calibration_feed(files, head)
    drift = _output_drift(_run(_session(fp32), feed), _run(_session(int8), feed), head)
    if head == "classifier":
        return {"measure": "mean |Δ logit| / sd", "drift": drift, "bound": INT8_DRIFT_BOUNDS["logit"]}
    return {"measure": "mean 1 - cosine", "drift": drift, "bound": INT8_DRIFT_BOUNDS["cosine"]}


def _parity_line(rec: dict[str, Any]) -> str:
    p = rec["parity"]
    return f"{rec['source']}: {p['measure']} {p['value']:.2e} (bound {p['bound']:.0e})"


# -- export ------------------------------------------------------------------------------------------
def _need_torch(files: ModelFiles) -> None:
    for module in ("torch", "transformers"):
        if importlib.util.find_spec(module) is None:
            raise MissingDependencyError(
                f"model: {files.directory.name} ({files.model_type}) has no hand-built ONNX graph; exporting "
                f"and checking one (once, then cached in {cache_dir() / 'onnx'}) needs the {module!r} "
                "package: pip install 'surerank[torch]' (or use backend='torch')")


def load_torch_model(files: ModelFiles, head: str, trust_remote_code: bool = False) -> Any:
    """The transformers model in fp32, eval mode, eager attention (what is exported and checked).

    A checkpoint transformers had to complete with random tensors (a cross-encoder without its trained
    head) is refused by name, as the torch backend refuses it: the export check compares the graph with
    the same randomly initialised model, so it would pass and cache a graph of noise.
    """
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification

    from surerank.engine.backends import check_loaded

    cls = AutoModelForSequenceClassification if head == "classifier" else AutoModel
    kwargs: dict[str, Any] = {"dtype": torch.float32, "trust_remote_code": trust_remote_code,
                              "output_loading_info": True}
    try:
        try:
            model, info = cls.from_pretrained(str(files.directory), attn_implementation="eager", **kwargs)
        except (ValueError, ImportError, TypeError) as exc:
            if "trust_remote_code" in str(exc):
                raise
            model, info = cls.from_pretrained(str(files.directory), **kwargs)
    except (ValueError, OSError) as exc:  # OSError: custom code or files transformers could not fetch
        if not trust_remote_code and ("trust_remote_code" in str(exc) or "auto_map" in files.config):
            raise InputError(
                f"model: {files.directory.name} ({files.model_type}) runs custom code from its repository; "
                "pass trust_remote_code=True if you trust it") from exc
        raise InputError(f"model: transformers cannot load {files.directory} for the ONNX export: "
                         f"{exc}") from exc
    check_loaded(files, head, info)
    return model.eval()


class _Exportable:
    """Builds the torch module that is exported: int32 inputs, the head's output, pooling in the graph."""

    @staticmethod
    def make(model: Any, head: str) -> Any:
        import torch

        params = inspect.signature(model.forward).parameters
        uses_types = "token_type_ids" in params and int(getattr(model.config, "type_vocab_size", 2) or 0) > 0
        uses_positions = "position_ids" in params

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids: Any, token_type_ids: Any, attention_mask: Any,
                        position_ids: Any = None) -> Any:
                kwargs = {"input_ids": input_ids.long(), "attention_mask": attention_mask.long()}
                if uses_types:
                    kwargs["token_type_ids"] = token_type_ids.long()
                if position_ids is not None and uses_positions:
                    kwargs["position_ids"] = position_ids.long()
                out = self.model(**kwargs)
                if head == "classifier":
                    return out.logits
                return pool(out.last_hidden_state, attention_mask, head)

        return Wrapped().eval()


def pool(hidden: Any, attention_mask: Any, head: str) -> Any:
    """Pool token states ``[batch, seq, hidden]`` (right padding) as sentence-transformers does."""
    import torch

    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    if head == "mean":
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    if head == "mean_sqrt_len_tokens":
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9).sqrt()
    if head == "weightedmean":  # weights 1..n over the real tokens
        weights = mask * torch.arange(1, hidden.shape[1] + 1, dtype=hidden.dtype).view(1, -1, 1)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    if head == "cls":
        return hidden[:, 0]
    if head == "max":
        return hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).max(1).values
    if head == "lasttoken":
        last = (attention_mask.long().sum(1) - 1).clamp(min=0)
        return hidden[torch.arange(hidden.shape[0]), last]
    raise InputError(f"pooling: {head!r} is unknown; choose from {', '.join(POOLINGS)}")


def calibration_feed(files: ModelFiles, head: str) -> dict[str, np.ndarray]:
    """A padded batch of calibration text within the model's max length (pairs for a classifier)."""
    from surerank.engine.batching import build_batch
    from surerank.engine.onnx_build import CALIBRATION_TEXTS
    from surerank.engine.tokenize import TokenizerEngine, pair_sequence, single_sequence

    tok = TokenizerEngine(files.directory / "tokenizer.json")
    limit = min(int(files.max_length), 256)
    if head == "classifier":
        cut = max(1, (limit - tok.template.pair_specials) // 2)
        ids = [x[:cut] for x in tok.encode(list(CALIBRATION_TEXTS))]
        seqs = [pair_sequence(tok.template, ids[i], ids[(i + 7) % len(ids)]) for i in range(len(ids))]
    else:
        cut = max(1, limit - tok.template.single_specials)
        ids = [x[:cut] for x in tok.encode(list(CALIBRATION_TEXTS))]
        seqs = [single_sequence(tok.template, x) for x in ids]
    b = build_batch(seqs, np.arange(len(seqs)), tok.pad_id, tok.template.second_type_id,
                    getattr(files, "position_offset", None))
    feed = {"input_ids": b.input_ids, "token_type_ids": b.token_type_ids, "attention_mask": b.attention_mask}
    if b.position_ids is not None:
        feed["position_ids"] = b.position_ids
    return feed


def parity(reference: np.ndarray, output: np.ndarray, head: str) -> dict[str, Any]:
    """How far ``output`` is from ``reference``: max |Δ| of logits, or of the cosine similarities
    between every two calibration embeddings (what the embedding ranker scores with)."""
    if head == "classifier":
        value = float(np.max(np.abs(output - reference)))
        measure, bound = "max |Δ logit|", PARITY_BOUNDS["logit"]
    else:
        def cos(x: np.ndarray) -> np.ndarray:
            x = x.astype(np.float64) / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            return x @ x.T

        value = float(np.max(np.abs(cos(output) - cos(reference))))
        measure, bound = "max |Δ cosine|", PARITY_BOUNDS["cosine"]
    return {"measure": measure, "value": value, "bound": bound,
            "max_abs_output_diff": float(np.max(np.abs(output - reference))),
            "same_order": bool(head != "classifier" or np.array_equal(
                np.argsort(-reference[:, -1], kind="stable"), np.argsort(-output[:, -1], kind="stable")))}


def _session(path: Path) -> Any:
    import onnxruntime as ort

    from surerank.engine.onnx_build import DISABLED_OPTIMIZERS

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(DISABLED_OPTIMIZERS))


def _run(session: Any, feed: dict[str, np.ndarray]) -> np.ndarray:
    names = {i.name for i in session.get_inputs()}
    return np.asarray(session.run(None, {k: v for k, v in feed.items() if k in names})[0], np.float32)


def _export_checked(files: ModelFiles, head: str, fp32: Path, record: Path, trust_remote_code: bool) -> None:
    """Export (or adapt the shipped graph), check it against torch, save graph + record atomically."""
    _need_torch(files)
    import onnx
    import onnxruntime
    import torch
    import transformers

    model = load_torch_model(files, head, trust_remote_code)
    wrapped = _Exportable.make(model, head)
    names = graph_inputs(files)
    feed = calibration_feed(files, head)
    with torch.inference_mode():
        reference = wrapped(*(torch.from_numpy(feed[k]) for k in names)).float().numpy()
    shipped = files.directory / SHIPPED_ONNX
    with tempfile.TemporaryDirectory(dir=fp32.parent, prefix=".export-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        if shipped.is_file():
            source = f"shipped {SHIPPED_ONNX.as_posix()}"
            logger.info("adapting %s's own %s (checked against torch before use)", files.directory.name,
                        SHIPPED_ONNX.as_posix())
            graph = adapt_shipped(onnx.load(str(shipped)), head, names)
        else:
            source = "torch.onnx.export (TorchScript)"
            logger.info("exporting %s (%s, %s head) to ONNX through torch.onnx.export", files.directory.name,
                        files.model_type, head)
            # a short example batch: the check below runs other shapes, so a trace that baked a shape in fails
            example = tuple(torch.from_numpy(feed[k][:2, :16].copy()) for k in names)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarnings and the legacy-exporter notice
                torch.onnx.export(
                    wrapped, example, str(raw), dynamo=False, opset_version=OPSET, input_names=list(names),
                    output_names=["logits" if head == "classifier" else "embedding"],
                    dynamic_axes={k: {0: "batch", 1: "seq"} for k in names}, do_constant_folding=True)
            wrapped.eval()  # the exporter restores the training flag recursively; keep eval for later calls
            graph = onnx.load(str(raw))
            _keep_all_inputs(graph, names)
        _plain_node_names(graph)
        external = _initializer_bytes(graph) > EXTERNAL_DATA_BYTES
        candidate = Path(tmp) / fp32.name
        _save(graph, candidate, external)
        del graph
        session = _session(candidate)
        figures = parity(reference, _run(session, feed), head)
        rows = slice(3, 6)  # a second shape: 3 sequences cut to their own longest length
        width = int(feed["attention_mask"][rows].sum(1).max())
        small = {k: np.ascontiguousarray(v[rows, :width]) for k, v in feed.items()}
        with torch.inference_mode():
            ref_small = wrapped(*(torch.from_numpy(small[k]) for k in names)).float().numpy()
        figures_small = parity(ref_small, _run(session, small), head)
        del session
        if figures_small["value"] > figures["value"]:
            figures = figures_small
        rec = {
            "model": str(files.directory), "model_type": files.model_type, "head": head, "source": source,
            "parity": figures, "calibration_sequences": int(feed["input_ids"].shape[0]),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "onnxruntime": onnxruntime.__version__, "opset": OPSET, "external_data": external,
        }
        if not figures["value"] <= figures["bound"]:
            raise ExportParityError(
                f"model: the ONNX graph of {files.directory.name} ({source}) disagrees with the torch "
                f"forward pass: {figures['measure']} {figures['value']:.3g} > {figures['bound']:.0e} on "
                "calibration text; it is not used -- run this model with backend='torch'")
        install_checked(candidate, fp32, rec, record, external)
    logger.info("exported ONNX graph %s: %s", fp32, _parity_line(rec))


def write_record(record: Path, rec: dict[str, Any], scratch: Path) -> None:
    """Write a graph's JSON record through a file in ``scratch`` (same file system): readers see all or none."""
    temp = scratch / record.name
    temp.write_text(json.dumps(rec, indent=2) + "\n")
    os.replace(temp, record)


def install_checked(candidate: Path, graph: Path, rec: dict[str, Any], record: Path, external: bool) -> None:
    """Stamp a checked graph with its figure, then move it (and its external data) and its record into the
    cache, each by an atomic rename."""
    _stamp(candidate, rec, external)
    data = candidate.with_name(candidate.name + ".data")
    if data.is_file():
        os.replace(data, graph.with_name(graph.name + ".data"))
    os.replace(candidate, graph)
    write_record(record, rec, candidate.parent)


def _keep_all_inputs(model: Any, names: tuple[str, ...]) -> None:
    """The exporter drops inputs the model ignores (token_type_ids for MPNet); put them back, unused,
    so every graph takes the backend's feed."""
    from onnx import TensorProto, helper

    present = {i.name for i in model.graph.input}
    for name in names:
        if name not in present:
            model.graph.input.append(helper.make_tensor_value_info(name, TensorProto.INT32, ["batch", "seq"]))


def _plain_node_names(model: Any) -> None:
    """``/model/encoder/layer.0/output/dense/MatMul`` -> ``model.encoder.layer.0.output.dense.MatMul``:
    node names become file names when int8-fast measures each projection (onnx_build)."""
    for node in model.graph.node:
        node.name = node.name.strip("/").replace("/", ".")


def _initializer_bytes(model: Any) -> int:
    from onnx import helper

    total = 0
    for t in model.graph.initializer:
        n = int(np.prod(t.dims)) if len(t.dims) else 1
        total += n * np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    return total


def _save(model: Any, path: Path, external: bool) -> None:
    import onnx

    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=1024)
    else:
        onnx.save_model(model, str(path))


def _stamp(path: Path, record: dict[str, Any], external: bool) -> None:
    """Write the parity record into the graph's metadata (read back by the ONNX backend)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    onnx.helper.set_model_props(model, {PARITY_KEY: json.dumps(record["parity"]),
                                        "surerank.source": record["source"]})
    onnx.save_model(model, str(path))  # external tensors keep pointing at <name>.data


# -- a repository's own ONNX file --------------------------------------------------------------------
_TOKEN_OUTPUTS = ("last_hidden_state", "token_embeddings")


def adapt_shipped(model: Any, head: str, names: tuple[str, ...] = INPUTS) -> Any:
    """Give a shipped graph (optimum / sentence-transformers layout) the backend's interface: int32
    inputs cast to what it takes, pooling appended for an embedding head, one output."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < 13:
        raise InputError(f"model: the shipped {SHIPPED_ONNX.as_posix()} uses opset {opset}; surerank adapts "
                         "opset 13 or later (delete or rename it to have the model exported instead)")
    inputs = {i.name: i for i in graph.input}
    unknown = [n for n in inputs if n not in names]
    if unknown or "input_ids" not in inputs:
        raise InputError(f"model: the shipped {SHIPPED_ONNX.as_posix()} takes inputs {sorted(inputs)}; "
                         f"surerank feeds {', '.join(names)}")
    outputs = {o.name: o for o in graph.output}
    if head == "classifier":
        if "logits" not in outputs:
            raise InputError(f"model: the shipped {SHIPPED_ONNX.as_posix()} has no 'logits' output "
                             f"(outputs: {sorted(outputs)}); is it a sequence-classification export?")
        final = "logits"
    else:
        found = [n for n in _TOKEN_OUTPUTS if n in outputs]
        if not found:
            raise InputError(f"model: the shipped {SHIPPED_ONNX.as_posix()} has no token-state output "
                             f"({' or '.join(_TOKEN_OUTPUTS)}; it has {sorted(outputs)})")
        final = found[0]
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
    out_name = "logits"
    if head != "classifier":
        out_name = "embedding"

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
    del graph.output[:]
    elem = outputs[final].type.tensor_type.elem_type
    if elem != TensorProto.FLOAT:
        raise InputError(f"model: the shipped {SHIPPED_ONNX.as_posix()} outputs {TensorProto.DataType.Name(elem)}; "
                         "surerank adapts float32 graphs")
    graph.output.append(helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["batch", None]))
    return model


# -- int8 --------------------------------------------------------------------------------------------
#: an encoder layer's weight projections in transformers' module names (BERT/MPNet/ELECTRA/DeBERTa
#: ``layer.N``, ModernBERT ``layers.N``); the heads, poolers and embedding projections stay fp32
_LAYER = re.compile(r"layers?\.(\d+)\.")
#: the FFN output projection of a layer: it reads the GELU's outlier activations (see onnx_build)
_FFN_OUT = re.compile(r"layers?\.\d+\.(output\.dense|mlp\.Wo|mlp\.down_proj|mlp\.fc2|ffn\.output|output_dense)\.")


def _weight_matmuls(path: Path) -> tuple[list[str], list[str]]:
    """(encoder MatMul nodes with a constant weight, the FFN output projections among them)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    consts = {t.name for t in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    layer = [n.name for n in model.graph.node
             if n.op_type == "MatMul" and _LAYER.search(n.name) and any(i in consts for i in n.input)]
    return layer, [n for n in layer if _FFN_OUT.search(n)]


def projection_quantizer(src: Path, layer: list[str]) -> Callable[[Path, list[str]], None]:
    """``quantize(path, fp32_nodes)``: write ``src`` to ``path`` with every projection of ``layer`` but
    ``fp32_nodes`` dynamically quantised (int8 per-channel weights, activations per tensor at run time)."""
    from surerank.engine.onnx_build import quantize_dynamic_int8

    def quantize(path: Path, fp32_nodes: list[str]) -> None:
        quantize_dynamic_int8(src, path, nodes_to_quantize=[n for n in layer if n not in fp32_nodes])

    return quantize


def quantize_exported(src: Path, dst: Path, recipe: str, files: ModelFiles, head: str) -> dict[str, Any] | None:
    """Dynamic int8 of an exported graph's encoder projections, with onnx_build's recipes or the greedy
    search (``pc-greedy``; ``pc-split`` after splitting off outlier channels), whose figures it returns."""
    import onnx

    from surerank.engine.onnx_build import AUTO_DRIFT_BOUND, FP32_NODES_KEY
    from surerank.engine.quant_search import greedy_fp32_projections, outlier_channels, split_outlier_channels

    layer, ffn_out = _weight_matmuls(src)
    if not layer:
        raise InputError(f"precision: no encoder projections were found in {src.name} to quantise; "
                         "use precision='fp32'")
    search = None
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".quant-") as tmp:
        source = src
        outliers: dict[str, list[int]] = {}
        if recipe == "pc-split":  # the graph quantised computes the same in fp32, outlier channels apart
            outliers = outlier_channels(src, layer, files, head)
            source = Path(tmp) / "split" / src.name
            source.parent.mkdir()
            outliers = split_outlier_channels(src, layer, outliers, source)
        quantize = projection_quantizer(source, layer)
        if recipe == "pc-noff2":
            fp32_nodes = ffn_out
        elif recipe == "pc-all":
            fp32_nodes = []
        elif recipe in ("pc-greedy", "pc-split"):
            fp32_nodes, search = greedy_fp32_projections(source, quantize, layer, files, head,
                                                         GREEDY_TARGET_SHARE * AUTO_DRIFT_BOUND)
            if recipe == "pc-split":
                search["outlier_channels"] = outliers
        else:
            raise ValueError(f"unknown int8 recipe {recipe!r}")
        out = Path(tmp) / dst.name
        quantize(out, fp32_nodes)
        quantized = onnx.load(str(out), load_external_data=False)
        kept = [n.name for n in onnx.load(str(src), load_external_data=False).graph.node
                if n.op_type in ("MatMul", "Gemm") and n.name not in layer] + fp32_nodes
        onnx.helper.set_model_props(quantized, {FP32_NODES_KEY: ",".join(kept)})
        onnx.save_model(quantized, str(out))
        for extra in Path(tmp).iterdir():
            if extra.name != dst.name and extra.is_file():
                shutil.move(str(extra), str(dst.parent / extra.name))
        os.replace(out, dst)
    return search
