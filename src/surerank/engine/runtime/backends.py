"""Model backends: ONNX Runtime on CPU (fp32 / int8) and torch (CPU or GPU, fp32 / fp16 / bf16).

A backend takes one padded :class:`~surerank.engine.text.batching.Batch` and returns a float32 array
``[batch, dim]``: the pooled embedding (``mean``/``cls`` heads) or the logits (``classifier`` head).
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
from typing import Any, Protocol

import numpy as np

from surerank.engine.checkpoint.families import POOLINGS, pool_tokens
from surerank.engine.checkpoint.files import ModelFiles
from surerank.engine.checkpoint.transformers_load import load_encoder
from surerank.engine.graphs import auto_precision, export_record, provision
from surerank.engine.onnx.graph_io import available_cpus, cpu_session_options, open_session
from surerank.engine.text.batching import Batch
from surerank.errors import InputError, MissingDependencyError

logger = logging.getLogger(__name__)


class Backend(Protocol):
    name: str
    precision: str
    device: str

    def run(self, batch: Batch) -> np.ndarray: ...


class OnnxBackend:
    """ONNX Runtime CPU session over the graph :func:`surerank.engine.graphs.provision` gives.

    ``threads`` is the CPU budget; ``workers`` of them run batches side by side (``session.run`` is
    thread-safe and releases the GIL), each run using ``threads // workers`` intra-op threads.  One
    thread per run measured faster here than two threads per run on small BERT batches (less
    synchronisation), and it lets int8 run one sequence per batch -- see :mod:`surerank.engine.runtime.core`.
    """

    name = "onnx"
    device = "cpu"

    def __init__(self, files: ModelFiles, head: str, precision: str = "fp32", threads: int | None = None,
                 onnx_path: str | os.PathLike[str] | None = None, workers: int | None = None,
                 trust_remote_code: bool = False):
        #: how ``precision="auto"`` was resolved (None when a precision was named)
        self.auto: dict[str, Any] | None = None
        if precision == "auto":
            if onnx_path:
                raise InputError("precision: 'auto' chooses among graphs surerank builds; with onnx_path "
                                 "name the graph's precision (fp32, int8, int8-fast)")
            self.auto = auto_precision(files, head, trust_remote_code=trust_remote_code)
            precision = self.auto["choice"]
        self.precision = precision
        # hand-built for the BERT family; other architectures exported once through torch and checked
        self.path = str(onnx_path) if onnx_path else str(
            provision(files, head, precision, trust_remote_code=trust_remote_code))
        #: an exported graph's export-time parity check against torch (None for hand-built graphs)
        self.export = export_record(self.path)
        self.threads = int(threads) if threads else available_cpus()
        self.workers = max(1, min(int(workers or self.threads), self.threads))
        so = cpu_session_options(max(1, self.threads // self.workers))
        self.session = open_session(self.path, so)
        self.input_names = {i.name for i in self.session.get_inputs()}
        meta = self.session.get_modelmeta().custom_metadata_map
        #: nodes an int8 graph keeps in fp32 (the heads, and the projections its recipe spares)
        self.fp32_nodes = [n for n in meta.get("surerank.fp32_nodes", "").split(",") if n]
        self.output = self.session.get_outputs()[0].name

    def run(self, batch: Batch) -> np.ndarray:
        feed = {"input_ids": batch.input_ids, "token_type_ids": batch.token_type_ids,
                "attention_mask": batch.attention_mask}
        if "position_ids" in self.input_names:
            feed["position_ids"] = batch.position_ids
        return np.asarray(self.session.run([self.output], feed)[0], dtype=np.float32)


_TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


class TorchBackend:
    """transformers model with SDPA attention; fp16/bf16 on GPU; batches shrink on out-of-memory.

    A checkpoint whose weights lack tensors the model needs (a cross-encoder head, say) is refused,
    naming them: transformers would initialise them at random.  ``trust_remote_code`` is passed as given
    (never None), so transformers never asks on stdin.
    """

    name = "torch"

    def __init__(self, files: ModelFiles, head: str, precision: str = "fp32", device: str | None = None,
                 threads: int | None = None, trust_remote_code: bool = False):
        for module in ("torch", "transformers"):
            if importlib.util.find_spec(module) is None:
                raise MissingDependencyError.for_extra(module, "torch", "backend='torch'")
        import torch

        #: how ``precision="auto"`` was resolved: on torch it keeps today's default, fp32 (None when named)
        self.auto: dict[str, Any] | None = None
        if precision == "auto":
            precision = "fp32"
            self.auto = {"choice": "fp32", "reason": "torch backend: auto is fp32; name fp16 or bf16 to use them"}
        if precision not in _TORCH_DTYPES:
            raise InputError(f"precision: {precision!r} is not available on the torch backend "
                             f"(choose from {', '.join(_TORCH_DTYPES)})")
        if head not in ("classifier", *POOLINGS):
            raise InputError(f"head: {head!r} is unknown; choose from classifier, {', '.join(POOLINGS)}")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cpu" and precision == "fp16":
            raise InputError("precision: fp16 needs a GPU; use fp32 or bf16 on CPU")
        if threads:
            torch.set_num_threads(int(threads))
        self.precision = precision
        self.head = head
        self.model = load_encoder(files, head, dtype=_TORCH_DTYPES[precision], attention="sdpa",
                                  trust_remote_code=bool(trust_remote_code))
        self.model.eval().to(self.device)
        self.torch = torch
        forward = inspect.signature(self.model.forward).parameters
        #: model inputs the forward takes (MPNet, DistilBERT and others take no token_type_ids)
        self.accepts = {name for name in ("token_type_ids", "position_ids") if name in forward}

    def _to(self, array: np.ndarray) -> Any:
        t = self.torch.from_numpy(array.astype(np.int64, copy=False))
        if self.device.startswith("cuda"):
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def run(self, batch: Batch) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            inputs = {"input_ids": self._to(batch.input_ids), "attention_mask": self._to(batch.attention_mask)}
            if "token_type_ids" in self.accepts and (
                    getattr(self.model.config, "type_vocab_size", 2) > 1 or batch.token_type_ids.any()):
                inputs["token_type_ids"] = self._to(batch.token_type_ids)
            if batch.position_ids is not None and "position_ids" in self.accepts:
                inputs["position_ids"] = self._to(batch.position_ids)
            out = self.model(**inputs)
            if self.head == "classifier":
                result = out.logits
            else:
                result = pool_tokens(out.last_hidden_state, inputs["attention_mask"], self.head)
            return result.float().cpu().numpy()

    def is_oom(self, exc: BaseException) -> bool:
        oom = getattr(self.torch.cuda, "OutOfMemoryError", None)
        return (oom is not None and isinstance(exc, oom)) or "out of memory" in str(exc).lower()

    def empty_cache(self) -> None:
        if self.device.startswith("cuda"):
            self.torch.cuda.empty_cache()


def make_backend(files: ModelFiles, head: str, backend: str, precision: str, device: str | None,
                 threads: int | None, onnx_path: str | None = None, workers: int | None = None, *,
                 trust_remote_code: bool = False) -> Any:
    if backend == "onnx":
        if device not in (None, "cpu"):
            raise InputError(f"device: the onnx backend runs on CPU; for {device!r} use backend='torch'")
        return OnnxBackend(files, head, precision, threads, onnx_path=onnx_path, workers=workers,
                           trust_remote_code=trust_remote_code)
    if backend == "torch":
        return TorchBackend(files, head, precision, device, threads, trust_remote_code=trust_remote_code)
    raise InputError(f"backend: {backend!r} is unknown; choose 'onnx' (default, CPU) or 'torch'")
