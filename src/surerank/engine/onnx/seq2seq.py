"""ONNX graph of a T5 reranker's first decoder step (monoT5, RankT5), exported once and checked.

The graph takes ``input_ids`` and ``attention_mask`` (int64, ``[batch, seq]``, right padding) and returns
``logits`` ``[batch, k]``: the first decoder step's logits of the ``k`` vocabulary entries the ranker's
formula reads (``▁true`` / ``▁false`` for monoT5, the score token for RankT5), the decoder fed the
model's ``decoder_start_token_id``.

It is exported through ``torch.onnx.export`` (TorchScript tracer) from the model in fp32 with eager
attention, then run on calibration pairs against that torch forward pass at two batch shapes (the full
padded batch, and three sequences cut to their own longest length: a trace that kept a shape or a padding
branch as a constant disagrees there).  The figure is stored beside the cached graph (``<graph>.json``
and the graph's metadata); a graph over the logit bound is refused, naming ``backend='torch'``, and only
the record of the refusal is kept (a later ranker of the same checkpoint is refused at once).  torch is
needed for the export only; afterwards the graph runs on ONNX Runtime alone.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from surerank.engine.model_files import cache_dir, find_weight_files, weights_fingerprint
from surerank.engine.onnx_export import (
    EXTERNAL_DATA_BYTES,
    OPSET,
    PARITY_BOUNDS,
    ExportParityError,
    _initializer_bytes,
    _parity_line,
    _plain_node_names,
    _save,
    install_checked,
    write_record,
)
from surerank.errors import IncompleteCheckpointError, MissingDependencyError

logger = logging.getLogger(__name__)

EXPORTER_VERSION = "1"
INPUTS = ("input_ids", "attention_mask")


def first_step_graph(directory: Path, token_ids: list[int], calibration: list[list[int]], pad_id: int, *,
                     trust_remote_code: bool = False) -> tuple[Path, dict[str, Any]]:
    """The cached graph for the checkpoint in ``directory`` and the ``token_ids`` a formula reads, with its
    parity record; exported and checked on the ``calibration`` token rows when not cached."""
    root = cache_dir() / "onnx"
    root.mkdir(parents=True, exist_ok=True)
    tokens = "-".join(str(int(t)) for t in token_ids)
    stem = f"{directory.name}-{weights_fingerprint(directory, find_weight_files(directory))}-t5step-{tokens}" \
           f"-x{EXPORTER_VERSION}"
    graph, record = root / f"{stem}-fp32.onnx", root / f"{stem}-fp32.json"
    if record.is_file():
        rec = json.loads(record.read_text())
        if rec.get("refused"):  # the check failed before: refused at once, not exported again
            raise ExportParityError(f"{rec['refused']} (remembered in {record}; delete it to export again)")
        if graph.is_file():
            logger.info("using the cached T5 first-step ONNX graph %s (%s)", graph, _parity_line(rec))
            return graph, rec
    return graph, _export_checked(directory, list(token_ids), calibration, pad_id, graph, record,
                                  trust_remote_code)


def padded(rows: list[list[int]], pad_id: int) -> dict[str, np.ndarray]:
    """Right-padded ``input_ids`` / ``attention_mask`` (int64), as the reference tokenizer pads."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = row
        mask[i, :len(row)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def _first_step_module(model: Any, token_ids: list[int]) -> Any:
    import torch

    class FirstStep(torch.nn.Module):
        """Encoder and one decoder step from the start token; the logits of ``token_ids`` only."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("rows", torch.tensor(token_ids, dtype=torch.long), persistent=False)

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            start = torch.zeros_like(input_ids[:, :1]) + int(model.config.decoder_start_token_id)
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=start,
                             use_cache=False)
            return out.logits[:, 0, :].index_select(1, self.rows)

    return FirstStep().eval()


def _export_checked(directory: Path, token_ids: list[int], calibration: list[list[int]], pad_id: int,
                    graph: Path, record: Path, trust_remote_code: bool) -> dict[str, Any]:
    try:
        import onnx
        import onnxruntime
        import torch
        import transformers
    except ImportError as exc:
        raise MissingDependencyError(
            f"model: exporting {directory.name}'s first decoder step to ONNX (once, then cached in "
            f"{graph.parent}) needs torch, transformers and onnx: pip install 'surerank[torch]' (or use "
            "backend='torch')") from exc
    model, info = transformers.AutoModelForSeq2SeqLM.from_pretrained(
        str(directory), attn_implementation="eager", dtype=torch.float32, trust_remote_code=trust_remote_code,
        output_loading_info=True)
    IncompleteCheckpointError.check(str(directory), info.get("missing_keys") or [],
                                    "lacks tensors the t5-reranker needs (AutoModelForSeq2SeqLM)")
    model.eval()
    module = _first_step_module(model, token_ids)
    feed = padded(calibration, pad_id)
    subset = calibration[3:6] or calibration[:1]
    batches = [feed, padded(subset, pad_id)]  # the second: three sequences cut to their own longest length
    with torch.inference_mode():
        references = [module(*(torch.from_numpy(b[k]) for k in INPUTS)).float().numpy() for b in batches]
    with tempfile.TemporaryDirectory(dir=graph.parent, prefix=".export-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        example = padded([row[:12] for row in calibration[:2]], pad_id)  # other shapes are checked below
        logger.info("exporting %s's first decoder step to ONNX through torch.onnx.export", directory.name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings and the legacy-exporter notice
            torch.onnx.export(module, tuple(torch.from_numpy(example[k]) for k in INPUTS), str(raw), dynamo=False,
                              opset_version=OPSET, input_names=list(INPUTS), output_names=["logits"],
                              dynamic_axes={k: {0: "batch", 1: "seq"} for k in INPUTS}, do_constant_folding=True)
        exported = onnx.load(str(raw))
        _plain_node_names(exported)
        external = _initializer_bytes(exported) > EXTERNAL_DATA_BYTES
        candidate = Path(tmp) / graph.name
        _save(exported, candidate, external)
        del exported
        session = onnxruntime.InferenceSession(str(candidate), providers=["CPUExecutionProvider"])
        worst = max(float(np.max(np.abs(np.asarray(session.run(None, b)[0], np.float32) - ref)))
                    for b, ref in zip(batches, references))
        del session
        figures = {"measure": "max |Δ logit|", "value": worst, "bound": PARITY_BOUNDS["logit"],
                   "tokens": token_ids}
        rec = {"model": str(directory), "model_type": model.config.model_type, "head": "t5-first-step",
               "source": "torch.onnx.export (TorchScript)", "parity": figures,
               "calibration_sequences": len(calibration), "torch": torch.__version__,
               "transformers": transformers.__version__, "onnxruntime": onnxruntime.__version__, "opset": OPSET,
               "external_data": external}
        if not worst <= figures["bound"]:
            rec["refused"] = (
                f"model: the ONNX graph of {directory.name}'s first decoder step disagrees with the torch forward "
                f"pass: max |Δ logit| {worst:.3g} > {figures['bound']:.0e} on calibration pairs; it is not used "
                "-- run this model with backend='torch'")
            write_record(record, rec, Path(tmp))
            raise ExportParityError(rec["refused"])
        install_checked(candidate, graph, rec, record, external)
    logger.info("exported ONNX graph %s: %s", graph, _parity_line(rec))
    return rec
