"""ONNX graph files and ONNX Runtime sessions: saving (atomically, with external data past 2 GB), the
JSON records kept beside graphs, and the one CPU session factory every graph is opened with."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from surerank.engine.checkpoint.files import ModelFiles
from surerank.storage import atomic_path, atomic_write_json

logger = logging.getLogger(__name__)

#: the ONNX backend's inputs; an encoder graph keeps all three, used or not (and ``position_ids`` for the
#: families whose positions count from ``padding_idx + 1``, where the engine computes them: see graph_inputs)
INPUTS = ("input_ids", "token_type_ids", "attention_mask")

#: graphs with more initializer bytes than this keep them in an external data file beside the graph
#: (protobuf cannot serialise a message over 2 GB: fp32 bge-reranker-large, multilingual-e5-large, bge-m3)
EXTERNAL_DATA_BYTES = 1_800_000_000
#: Graph optimisers the session must not run: ORT's SkipLayerNormalization CPU kernel is ~3.5x slower
#: than the Add + Add + LayerNormalization it would replace (ORT 1.32, 8x80x384: 1.18 ms vs 0.34 ms).
DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


def graph_inputs(files: ModelFiles) -> tuple[str, ...]:
    """The inputs the ONNX backend feeds this model: :data:`INPUTS`, plus ``position_ids`` for MPNet-like
    families (the engine's positions, equal to those transformers derives from the padding)."""
    return (*INPUTS, "position_ids") if getattr(files, "position_offset", None) is not None else INPUTS


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        return os.cpu_count() or 1


def cpu_session_options(threads: int) -> Any:
    """ONNX Runtime options for a CPU session: every graph optimisation, kernels in sequence on ``threads``
    intra-op threads, and no busy-waiting between kernels -- on a shared or busy CPU spinning threads steal
    the cores the other thread needs (measured +10% pairs/s under load); SURERANK_ORT_SPIN=1 turns it on."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    spin = os.environ.get("SURERANK_ORT_SPIN", "0")
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin == "1" else "0")
    return so


def open_session(path: str | os.PathLike[str], options: Any = None, *, threads: int | None = None,
                 disabled: tuple[str, ...] = DISABLED_OPTIMIZERS) -> Any:
    """An ONNX Runtime CPU session on the graph at ``path``, without the ``disabled`` optimisers.

    ``options``: the session's options; by default quiet (errors only) with every graph optimisation and
    ``threads`` intra-op threads (ONNX Runtime's own count where None).
    """
    import onnxruntime as ort

    if options is None:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(disabled))


def run_feed(session: Any, feed: dict[str, np.ndarray], extra: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """The session's first output (float32) for ``feed``, given only the inputs the graph takes."""
    names = {i.name for i in session.get_inputs()}
    inputs = {k: v for k, v in feed.items() if k in names}
    return np.asarray(session.run(None, {**inputs, **(extra or {})})[0], np.float32)


def run_feeds(session: Any, feeds: list[dict[str, np.ndarray]], extra: dict[str, np.ndarray] | None = None
              ) -> np.ndarray:
    """:func:`run_feed` over ``feeds`` one by one, the outputs stacked."""
    return np.concatenate([run_feed(session, f, extra) for f in feeds])


def initializer_bytes(model: Any) -> int:
    """The bytes of the graph's weights, counted from their shapes and types (external data included)."""
    from onnx import helper

    total = 0
    for t in model.graph.initializer:
        n = int(np.prod(t.dims)) if len(t.dims) else 1
        total += n * np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    return total


def over_size_limit(model: Any) -> bool:
    """Whether the graph's weights must go to an external data file (over :data:`EXTERNAL_DATA_BYTES`)."""
    return initializer_bytes(model) > EXTERNAL_DATA_BYTES


def save_graph(model: Any, path: Path) -> None:
    """Write ``model`` to ``path`` atomically; over :data:`EXTERNAL_DATA_BYTES` its tensors go to a data
    file named after the temporary graph (so concurrent builders never share one), which the graph
    references by that name."""
    import onnx

    with atomic_path(path, suffix=".onnx.tmp") as tmp:
        if over_size_limit(model):
            location = tmp.name.replace(".onnx.tmp", ".onnx.data")
            logger.info("ONNX graph %s: %.2f GB of weights, kept in the external data file %s", path.name,
                        initializer_bytes(model) / 1e9, location)
            onnx.save_model(model, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=location, size_threshold=1024)
        else:
            onnx.save_model(model, str(tmp))


def save_beside(model: Any, path: Path, external: bool) -> None:
    """Write ``model`` to ``path``, its tensors in ``<path>.data`` when ``external`` (a candidate graph,
    moved into the cache by :func:`install_checked`)."""
    import onnx

    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=1024)
    else:
        onnx.save_model(model, str(path))


def has_external_data(path: Path) -> bool:
    """Whether the graph at ``path`` keeps tensors in an external data file."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    return any(uses_external_data(t) for t in model.graph.initializer)


def plain_node_names(model: Any) -> None:
    """``/model/encoder/layer.0/output/dense/MatMul`` -> ``model.encoder.layer.0.output.dense.MatMul``:
    node names become file names when int8-fast measures each projection."""
    for node in model.graph.node:
        node.name = node.name.strip("/").replace("/", ".")


def set_properties(path: Path, properties: dict[str, str]) -> None:
    """Write ``properties`` into the graph's metadata (external tensors keep pointing at their file)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    onnx.helper.set_model_props(model, properties)
    onnx.save_model(model, str(path))


def write_record(record: Path, rec: dict[str, Any]) -> None:
    """Write a graph's JSON record atomically: readers see all or none."""
    atomic_write_json(record, rec, indent=2)


def install_checked(candidate: Path, graph: Path, rec: dict[str, Any], record: Path, properties: dict[str, str]
                    ) -> None:
    """Stamp a checked graph with ``properties``, then move it (and its external data) and its record into
    the cache, each by an atomic rename."""
    set_properties(candidate, properties)
    data = candidate.with_name(candidate.name + ".data")
    if data.is_file():
        os.replace(data, graph.with_name(graph.name + ".data"))
    os.replace(candidate, graph)
    write_record(record, rec)
