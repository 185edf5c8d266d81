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
from pathlib import Path
from typing import Any

import numpy as np

from surerank.engine.checkpoint.cache import cache_dir
from surerank.engine.checkpoint.files import find_weight_files, weights_fingerprint
from surerank.engine.checkpoint.transformers_load import dtype_option, load_complete
from surerank.engine.onnx.drift import PARITY_BOUNDS, parity_line
from surerank.engine.onnx.export import (
    OPSET,
    ExportParityError,
    library_versions,
    save_candidate,
    stamp,
    trace_to_onnx,
)
from surerank.engine.onnx.graph_io import install_checked, open_session, run_feed, write_record
from surerank.errors import MissingDependencyError

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
            logger.info("using the cached T5 first-step ONNX graph %s (%s)", graph, parity_line(rec))
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
        import onnx  # noqa: F401  (the export and the check need both)
        import onnxruntime  # noqa: F401
        import torch
        import transformers
    except ImportError as exc:
        raise MissingDependencyError(
            f"model: exporting {directory.name}'s first decoder step to ONNX (once, then cached in "
            f"{graph.parent}) needs torch, transformers and onnx: pip install 'surerank[torch]' (or use "
            "backend='torch')") from exc
    model = load_complete(transformers.AutoModelForSeq2SeqLM, str(directory), "the t5-reranker", attention="eager",
                          trust_remote_code=trust_remote_code, **dtype_option(transformers, torch, "float32"))
    model.eval()
    module = _first_step_module(model, token_ids)
    subset = calibration[3:6] or calibration[:1]
    batches = [padded(calibration, pad_id), padded(subset, pad_id)]  # the second: 3 cut to their own length
    with torch.inference_mode():
        references = [module(*(torch.from_numpy(b[k]) for k in INPUTS)).float().numpy() for b in batches]
    with tempfile.TemporaryDirectory(dir=graph.parent, prefix=".export-") as tmp:
        example = padded([row[:12] for row in calibration[:2]], pad_id)  # other shapes are checked below
        logger.info("exporting %s's first decoder step to ONNX through torch.onnx.export", directory.name)
        exported = trace_to_onnx(module, {k: example[k] for k in INPUTS}, Path(tmp) / "raw.onnx", "logits")
        candidate, external = save_candidate(exported, Path(tmp), graph.name)
        del exported
        session = open_session(candidate, disabled=())
        worst = max(float(np.max(np.abs(run_feed(session, b) - ref))) for b, ref in zip(batches, references))
        del session
        figures = {"measure": "max |Δ logit|", "value": worst, "bound": PARITY_BOUNDS["logit"],
                   "tokens": token_ids}
        rec = {"model": str(directory), "model_type": model.config.model_type, "head": "t5-first-step",
               "source": "torch.onnx.export (TorchScript)", "parity": figures,
               "calibration_sequences": len(calibration), **library_versions(), "opset": OPSET,
               "external_data": external}
        if not worst <= figures["bound"]:
            rec["refused"] = (
                f"model: the ONNX graph of {directory.name}'s first decoder step disagrees with the torch forward "
                f"pass: max |Δ logit| {worst:.3g} > {figures['bound']:.0e} on calibration pairs; it is not used "
                "-- run this model with backend='torch'")
            write_record(record, rec)
            raise ExportParityError(rec["refused"])
        install_checked(candidate, graph, rec, record, stamp(rec))
    logger.info("exported ONNX graph %s: %s", graph, parity_line(rec))
    return rec
