"""Choosing a graph: :func:`provision` gives the cached ONNX graph of a checkpoint, head and precision.

fp32: hand-built for the BERT family (:mod:`surerank.engine.onnx.build`), exported through torch and
checked for the rest (:mod:`surerank.engine.onnx.export`); int8: quantised from that fp32 graph by the
precision's recipe (:mod:`surerank.engine.quantize.recipes`), an exported int8 graph checked for drift
too; ``precision="auto"``: int8-fast when its drift on calibration text is within the bound, else fp32
(:func:`auto_precision`, measured once and recorded beside the graph).

Cache names (``cache_dir()/onnx``): ``<model dir>-<weights fingerprint>-<head>-v<BUILDER_VERSION>`` for
built graphs and ``...-x<EXPORTER_VERSION>`` for exported ones, then ``-fp32.onnx`` or
``-int8-<recipe>.onnx``; a graph made before is reused, never rebuilt.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from surerank.engine.checkpoint.cache import cache_dir
from surerank.engine.checkpoint.families import POOLINGS, handled_by_builder
from surerank.engine.checkpoint.files import ModelFiles
from surerank.engine.onnx import drift  # AUTO_DRIFT_BOUND, measure_drift: read at call time (tests set them)
from surerank.engine.onnx.build import BUILDER_VERSION, build_encoder_graph
from surerank.engine.onnx.drift import int8_drift, parity_line
from surerank.engine.onnx.export import export_checked, export_stem
from surerank.engine.onnx.graph_io import save_graph
from surerank.engine.quantize.recipes import PRECISION_RECIPES, quantize_graph
from surerank.errors import InputError
from surerank.storage import atomic_write_json

logger = logging.getLogger(__name__)

AUTO_RECORD_VERSION = 1


def provision(files: ModelFiles, head: str, precision: str = "fp32", *, trust_remote_code: bool = False) -> Path:
    """The ONNX graph for any encoder: hand-built for the BERT family, exported for the rest."""
    if handled_by_builder(files.config):
        return built_graph(files, head, precision)
    return exported_graph(files, head, precision, trust_remote_code=trust_remote_code)


def _onnx_cache() -> Path:
    root = cache_dir() / "onnx"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _check_precision(precision: str, origin: str) -> str | None:
    """The int8 recipe of ``precision`` for graphs of ``origin`` (None for fp32); refuses other precisions."""
    recipes = PRECISION_RECIPES[origin]
    if precision not in ("fp32", *recipes):
        raise InputError(f"precision: {precision!r} is not available on the ONNX backend; "
                         f"use fp32, {', '.join(recipes)}")
    return recipes.get(precision)


def built_graph(files: ModelFiles, head: str, precision: str = "fp32") -> Path:
    """Build (or reuse from the cache) the hand-built ONNX graph for ``files`` with ``head`` at ``precision``."""
    recipe = _check_precision(precision, "built")
    root = _onnx_cache()
    stem = f"{files.directory.name}-{files.fingerprint()}-{head}-v{BUILDER_VERSION}"
    fp32 = root / f"{stem}-fp32.onnx"
    if not fp32.is_file():
        logger.info("building ONNX graph for %s (%s head) into %s", files.directory, head, fp32)
        save_graph(build_encoder_graph(files, head), fp32)
    if recipe is None:
        return fp32
    int8 = root / f"{stem}-int8-{recipe}.onnx"
    if not int8.is_file():
        logger.info("quantising %s to int8 (ONNX Runtime dynamic quantisation, %s)", fp32.name, recipe)
        quantize_graph(fp32, int8, recipe, files, head, origin="built")
        remove_retired_int8(root, stem, set(PRECISION_RECIPES["built"].values()))
    return int8


def exported_graph(files: ModelFiles, head: str, precision: str = "fp32", *,
                   trust_remote_code: bool = False) -> Path:
    """Export (or reuse from the cache) a checked ONNX graph for ``files`` with ``head`` at ``precision``."""
    recipe = _check_precision(precision, "exported")
    if head not in (*POOLINGS, "classifier"):
        raise InputError(f"head: {head!r} is unknown to the ONNX exporter; choose from "
                         f"{', '.join((*POOLINGS, 'classifier'))}")
    root = _onnx_cache()
    stem = export_stem(files, head)
    fp32 = root / f"{stem}-fp32.onnx"
    record = root / f"{stem}-fp32.json"
    if not (fp32.is_file() and record.is_file()):
        export_checked(files, head, fp32, record, trust_remote_code)
    else:
        logger.info("using the cached exported ONNX graph %s (%s)", fp32, parity_line(json.loads(
            record.read_text())))
    if recipe is None:
        return fp32
    int8 = root / f"{stem}-int8-{recipe}.onnx"
    check = int8.with_suffix(".json")
    if not check.is_file() or (_accepted(check) and not int8.is_file()):  # never made, or its graph gone
        _quantize_checked(fp32, int8, precision, recipe, files, head)
        remove_retired_int8(root, stem, set(PRECISION_RECIPES["exported"].values()))
    rec = json.loads(check.read_text())
    if not rec["accepted"]:
        raise InputError(rec.get("refused") or (
            f"precision: {precision} moves {files.directory.name}'s outputs by {rec['drift']:.3g} "
            f"({rec['measure']} on calibration text, bound {rec['bound']}): dynamic int8 does not suit this "
            "model (activation outliers); use precision='fp32'"))
    return int8


def _accepted(check: Path) -> bool:
    return bool(json.loads(check.read_text()).get("accepted"))


def _quantize_checked(fp32: Path, int8: Path, precision: str, recipe: str, files: ModelFiles, head: str) -> None:
    """Quantise an exported graph and record its drift check beside it (``<graph>.json``); a refused graph
    is not kept, its record is, so that the refusal is quick next time."""
    check = int8.with_suffix(".json")
    logger.info("quantising %s to int8 (ONNX Runtime dynamic quantisation, %s)", fp32.name, recipe)
    try:
        search = quantize_graph(fp32, int8, recipe, files, head, origin="exported")
    except InputError as exc:  # the search found nothing within its target: remembered, as a refusal
        atomic_write_json(check, {"precision": precision, "recipe": recipe, "accepted": False,
                                  "refused": str(exc)}, indent=2)
        raise
    rec = {"precision": precision, "recipe": recipe, **int8_drift(fp32, int8, files, head)}
    if search:
        rec["search"] = search
    rec["accepted"] = rec["drift"] <= rec["bound"]
    if not rec["accepted"]:
        for f in (int8, int8.with_name(int8.name + ".data")):
            f.unlink(missing_ok=True)
    atomic_write_json(check, rec, indent=2)


def export_record(graph: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The parity record stored beside an exported fp32 graph, with the int8 drift check under ``int8``
    for an int8 graph (None for hand-built graphs)."""
    path = Path(graph)
    record = path.with_name(re.sub(r"-(fp32|int8-[\w-]+)\.onnx$", "-fp32.json", path.name))
    if record == path or not record.is_file():
        return None
    rec = json.loads(record.read_text())
    drift_check = path.with_suffix(".json")
    if "-int8-" in path.name and drift_check.is_file():
        rec["int8"] = json.loads(drift_check.read_text())
    return rec


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


def auto_record_path(int8: Path) -> Path:
    """Where ``precision="auto"``'s drift measurement of an int8-fast graph is kept."""
    return int8.with_name(int8.name[: -len(".onnx")] + ".auto.json")


def _recorded_drift(record_path: Path, stamp: dict[str, Any]) -> dict[str, Any] | None:
    """The drift measurement kept at ``record_path`` if it was made of this graph with this ONNX Runtime."""
    if not record_path.is_file():
        return None
    try:
        cached = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(cached, dict) and all(cached.get(k) == v for k, v in stamp.items()):
        return cached
    return None


def _write_auto_record(record_path: Path, record: dict[str, Any]) -> None:
    atomic_write_json(record_path, record, indent=1)


def auto_precision(files: ModelFiles, head: str, *, trust_remote_code: bool = False) -> dict[str, Any]:
    """Resolve ``precision="auto"`` on the ONNX backend: ``int8-fast`` if its drift on calibration text is
    within :data:`surerank.engine.onnx.drift.AUTO_DRIFT_BOUND`, else ``fp32``.

    The drift is measured once per int8-fast graph and kept beside it (``<graph>.auto.json``, with the
    graph's mtime and the ONNX Runtime version it was measured with); a later call reads it back and only
    compares it with the bound.  A model whose int8-fast graph cannot be made gets fp32, saying why.
    """
    import onnxruntime

    bound = float(drift.AUTO_DRIFT_BOUND)
    fp32 = provision(files, head, "fp32", trust_remote_code=trust_remote_code)
    try:
        int8 = provision(files, head, "int8-fast", trust_remote_code=trust_remote_code)
    except InputError as exc:
        logger.warning("precision auto: %s runs in fp32: its int8-fast graph could not be made (%s)",
                       files.directory.name, exc)
        return {"choice": "fp32", "bound": bound, "measure": drift.AUTO_MEASURE, "drift": None,
                "reason": f"int8-fast graph not available: {exc}"}
    record_path = auto_record_path(int8)
    stamp = {"version": AUTO_RECORD_VERSION, "graph": int8.name, "graph_mtime_ns": int8.stat().st_mtime_ns,
             "onnxruntime": onnxruntime.__version__}
    record = _recorded_drift(record_path, stamp)
    if record is None:
        logger.info("precision auto: measuring %s's int8-fast drift on calibration text (once, cached)",
                    files.directory.name)
        record = {**stamp, **drift.measure_drift(fp32, int8, files, head)}
    cached_bound = record.get("bound")
    record["bound"] = bound
    record["choice"] = "int8-fast" if record["drift"] <= bound else "fp32"
    if cached_bound != bound or not record_path.is_file():
        _write_auto_record(record_path, record)
        logger.info("precision auto: %s -> %s (%s %.3f, bound %.3f)", files.directory.name, record["choice"],
                    drift.AUTO_MEASURE, record["drift"], bound)
    return {"choice": record["choice"], "bound": bound, "measure": record["measure"],
            "drift": round(float(record["drift"]), 6), "mean_drift": round(float(record["mean_drift"]), 6),
            "score": record["score"], "scores": record["scores"]}
