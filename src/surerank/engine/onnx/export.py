"""fp32 ONNX graphs for encoder architectures the hand-built graph (:mod:`surerank.engine.onnx.build`) lacks.

MPNet, ELECTRA, DeBERTa-v2/v3, ModernBERT, GTE and any other encoder transformers can load are exported
once through ``torch.onnx.export`` (the TorchScript exporter: the dynamo one needs ``onnxscript``, which
is not a dependency), or taken from the model repository's own ``onnx/model.onnx`` when it ships one
(:mod:`surerank.engine.onnx.shipped`).  Either graph is then **checked against the torch forward pass** on
calibration text before it is used: the parity figure is stored beside the cached graph (``<graph>.json``,
and in the graph's metadata under ``surerank.parity``) and a graph over
:data:`surerank.engine.onnx.drift.PARITY_BOUNDS` is refused.  torch is needed for the export and check
only; afterwards the cached graph runs on ONNX Runtime alone.

The exported graph has the inputs the ONNX backend feeds (``input_ids``, ``token_type_ids``,
``attention_mask``, int32, dynamic batch and sequence axes) and one output: ``embedding`` ``[batch,
hidden]`` pooled in the graph (any of the sentence-transformers poolings) or ``logits`` ``[batch, labels]``
(``classifier``).  Positions are computed inside the graph, as transformers computes them.
Graphs over 2 GB keep their weights in an external data file beside them (``<graph>.data``).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from surerank.engine.checkpoint.cache import cache_dir
from surerank.engine.checkpoint.families import pool_tokens
from surerank.engine.checkpoint.files import ModelFiles
from surerank.engine.checkpoint.transformers_load import load_encoder
from surerank.engine.onnx.calibration import calibration_feed
from surerank.engine.onnx.drift import parity, parity_line
from surerank.engine.onnx.graph_io import (
    graph_inputs,
    install_checked,
    open_session,
    over_size_limit,
    plain_node_names,
    run_feed,
    save_beside,
)
from surerank.engine.onnx.shipped import SHIPPED_ONNX, adapt_shipped
from surerank.errors import InputError, MissingDependencyError

logger = logging.getLogger(__name__)

#: part of every exported graph's cache name: a change to the graph a checkpoint gets bumps it
EXPORTER_VERSION = "3"  # 2: node names without "/"; 3: position_ids input for MPNet-like families
OPSET = 17
PARITY_KEY = "surerank.parity"


class ExportParityError(InputError):
    """An exported (or shipped) ONNX graph disagrees with the torch forward pass beyond the bound."""


def export_stem(files: ModelFiles, head: str) -> str:
    """The cache name of a checkpoint's exported graphs, before ``-fp32.onnx`` / ``-int8-<recipe>.onnx``."""
    return f"{files.directory.name}-{files.fingerprint()}-{head}-x{EXPORTER_VERSION}"


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
    try:
        model = load_encoder(files, head, dtype="float32", attention="eager", trust_remote_code=trust_remote_code)
    except InputError:  # the remote-code refusal, or a checkpoint without the tensors the head needs
        raise
    except (ValueError, OSError) as exc:  # OSError: files transformers could not fetch
        raise InputError(f"model: transformers cannot load {files.directory} for the ONNX export: "
                         f"{exc}") from exc
    return model.eval()


def exportable(model: Any, head: str) -> Any:
    """The torch module that is exported: int32 inputs, the head's output, pooling in the graph."""
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
            return pool_tokens(out.last_hidden_state, attention_mask, head)

    return Wrapped().eval()


def trace_to_onnx(module: Any, example: dict[str, np.ndarray], path: Path, output: str) -> Any:
    """Export ``module`` through ``torch.onnx.export`` (TorchScript tracer) with dynamic batch and sequence
    axes on the ``example`` inputs; return the graph, its node names plain (see ``plain_node_names``)."""
    import onnx
    import torch

    names = list(example)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings and the legacy-exporter notice
        torch.onnx.export(
            module, tuple(torch.from_numpy(v) for v in example.values()), str(path), dynamo=False,
            opset_version=OPSET, input_names=names, output_names=[output],
            dynamic_axes={k: {0: "batch", 1: "seq"} for k in names}, do_constant_folding=True)
    graph = onnx.load(str(path))
    plain_node_names(graph)
    return graph


def save_candidate(graph: Any, folder: Path, name: str) -> tuple[Path, bool]:
    """Save a graph to be checked as ``folder/name`` (external data past the size limit); (its path,
    whether its weights are external)."""
    external = over_size_limit(graph)
    candidate = folder / name
    save_beside(graph, candidate, external)
    return candidate, external


def library_versions() -> dict[str, str]:
    """The versions an export's record names (what made and checked the graph)."""
    import onnxruntime
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "onnxruntime": onnxruntime.__version__}


def _keep_all_inputs(model: Any, names: tuple[str, ...]) -> None:
    """The exporter drops inputs the model ignores (token_type_ids for MPNet); put them back, unused,
    so every graph takes the backend's feed."""
    from onnx import TensorProto, helper

    present = {i.name for i in model.graph.input}
    for name in names:
        if name not in present:
            model.graph.input.append(helper.make_tensor_value_info(name, TensorProto.INT32, ["batch", "seq"]))


def _candidate(files: ModelFiles, head: str, wrapped: Any, feed: dict[str, np.ndarray], tmp: Path
               ) -> tuple[Any, str]:
    """The graph to check: the repository's own ``onnx/model.onnx`` adapted, else the torch export;
    with where it came from."""
    import onnx

    names = graph_inputs(files)
    shipped = files.directory / SHIPPED_ONNX
    if shipped.is_file():
        logger.info("adapting %s's own %s (checked against torch before use)", files.directory.name,
                    SHIPPED_ONNX.as_posix())
        graph = adapt_shipped(onnx.load(str(shipped)), head, names)
        plain_node_names(graph)
        return graph, f"shipped {SHIPPED_ONNX.as_posix()}"
    logger.info("exporting %s (%s, %s head) to ONNX through torch.onnx.export", files.directory.name,
                files.model_type, head)
    # a short example batch: the check below runs other shapes, so a trace that baked a shape in fails
    example = {k: np.ascontiguousarray(feed[k][:2, :16]) for k in names}
    graph = trace_to_onnx(wrapped, example, tmp / "raw.onnx", "logits" if head == "classifier" else "embedding")
    wrapped.eval()  # the exporter restores the training flag recursively; keep eval for later calls
    _keep_all_inputs(graph, names)
    return graph, "torch.onnx.export (TorchScript)"


def _parity_at_two_shapes(candidate: Path, wrapped: Any, names: tuple[str, ...], feed: dict[str, np.ndarray],
                          head: str) -> dict[str, Any]:
    """The candidate's parity with torch on the padded calibration batch and on 3 sequences cut to their
    own longest length (a trace that kept a shape or a padding branch disagrees there): the worse."""
    import torch

    def reference(batch: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            return wrapped(*(torch.from_numpy(batch[k]) for k in names)).float().numpy()

    session = open_session(candidate)
    rows = slice(3, 6)
    width = int(feed["attention_mask"][rows].sum(1).max())
    small = {k: np.ascontiguousarray(v[rows, :width]) for k, v in feed.items()}
    figures = [parity(reference(batch), run_feed(session, batch), head) for batch in (feed, small)]
    return figures[1] if figures[1]["value"] > figures[0]["value"] else figures[0]


def export_checked(files: ModelFiles, head: str, fp32: Path, record: Path, trust_remote_code: bool) -> None:
    """Export (or adapt the shipped graph), check it against torch, save graph + record atomically."""
    _need_torch(files)
    model = load_torch_model(files, head, trust_remote_code)
    wrapped = exportable(model, head)
    feed = calibration_feed(files, head)
    with tempfile.TemporaryDirectory(dir=fp32.parent, prefix=".export-") as tmp:
        graph, source = _candidate(files, head, wrapped, feed, Path(tmp))
        candidate, external = save_candidate(graph, Path(tmp), fp32.name)
        del graph
        figures = _parity_at_two_shapes(candidate, wrapped, graph_inputs(files), feed, head)
        rec = {
            "model": str(files.directory), "model_type": files.model_type, "head": head, "source": source,
            "parity": figures, "calibration_sequences": int(feed["input_ids"].shape[0]),
            **library_versions(), "opset": OPSET, "external_data": external,
        }
        if not figures["value"] <= figures["bound"]:
            raise ExportParityError(
                f"model: the ONNX graph of {files.directory.name} ({source}) disagrees with the torch "
                f"forward pass: {figures['measure']} {figures['value']:.3g} > {figures['bound']:.0e} on "
                "calibration text; it is not used -- run this model with backend='torch'")
        install_checked(candidate, fp32, rec, record, stamp(rec))
    logger.info("exported ONNX graph %s: %s", fp32, parity_line(rec))


def stamp(rec: dict[str, Any]) -> dict[str, str]:
    """The graph metadata that carries a checked graph's parity record (read back by the ONNX backend)."""
    return {PARITY_KEY: json.dumps(rec["parity"]), "surerank.source": rec["source"]}
