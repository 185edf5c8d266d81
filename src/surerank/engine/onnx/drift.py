"""How far one graph's outputs are from another's: the one home of every parity and drift measure.

* :func:`parity`: an fp32 graph against the torch forward pass (export time), refused over
  :data:`PARITY_BOUNDS`;
* :func:`int8_drift`: an exported int8 graph against its fp32 graph, refused over :data:`INT8_DRIFT_BOUNDS`;
* :func:`measure_drift`: ``precision="auto"``'s measure, max |Δ score| / sd(fp32 scores) over what the
  rankers rank by (:func:`ranking_scores`), within :data:`AUTO_DRIFT_BOUND`; the int8-fast search
  targets a share of that bound (:func:`score_drift` is the measure on scores already computed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from surerank.engine.checkpoint.files import ModelFiles
from surerank.engine.onnx.calibration import calibration_feed, drift_sequences
from surerank.engine.onnx.graph_io import open_session, run_feed, run_feeds
from surerank.scores import unit_rows

#: refusal bounds of the export-time check: logits (classifier head) and cosine similarities (embeddings)
PARITY_BOUNDS = {"logit": 1e-3, "cosine": 1e-4}
#: refusal bounds of the int8 check (see :func:`int8_drift`): all-MiniLM-L6-v2 measures 0.004 (int8) and
#: 0.005 (int8-fast) in mean 1 - cosine, all-mpnet-base-v2 0.99 (its outputs are unrelated to fp32's)
INT8_DRIFT_BOUNDS = {"cosine": 0.02, "logit": 0.1}
#: ``precision="auto"`` on the ONNX backend picks ``int8-fast`` when its drift on calibration text is at
#: most this bound, else fp32.  The drift is max |Δ score| / sd(fp32 scores): the largest move int8-fast
#: makes to any calibration score (cosine of two texts, or a pair's logit), in units of the spread of the
#: fp32 scores.  0.5 -- no score moves by more than half a standard deviation of the scores -- admits
#: all-MiniLM-L6-v2 (0.33; DL19 / DL20 nDCG@10 -0.0023 / +0.0048 vs fp32) with room for another CPU's rounding,
#: and refuses the random-weight test models (1.3 to 5); docs/engine.md gives the measurements.
AUTO_DRIFT_BOUND = 0.5
AUTO_MEASURE = "max |Δ score| / sd(fp32 scores)"


def ranking_scores(outputs: np.ndarray, head: str) -> np.ndarray:
    """What the rankers rank by: every logit (classifier), or the cosine of every two embeddings."""
    if head == "classifier":
        return outputs.astype(np.float64).ravel()
    x = unit_rows(outputs.astype(np.float64))
    return (x @ x.T)[np.triu_indices(len(x), 1)]


def parity(reference: np.ndarray, output: np.ndarray, head: str) -> dict[str, Any]:
    """How far ``output`` is from ``reference``: max |Δ| of logits, or of the cosine similarities
    between every two calibration embeddings (what the embedding ranker scores with)."""
    value = float(np.max(np.abs(ranking_scores(output, head) - ranking_scores(reference, head))))
    kind = "logit" if head == "classifier" else "cosine"
    return {"measure": f"max |Δ {kind}|", "value": value, "bound": PARITY_BOUNDS[kind],
            "max_abs_output_diff": float(np.max(np.abs(output - reference))),
            "same_order": bool(head != "classifier" or np.array_equal(
                np.argsort(-reference[:, -1], kind="stable"), np.argsort(-output[:, -1], kind="stable")))}


def parity_line(rec: dict[str, Any]) -> str:
    """A graph record's parity figure in one line, for the log."""
    p = rec["parity"]
    return f"{rec['source']}: {p['measure']} {p['value']:.2e} (bound {p['bound']:.0e})"


def output_drift(reference: np.ndarray, output: np.ndarray, head: str) -> float:
    """How far quantisation moved the outputs: mean 1 - cosine (embeddings), relative error (logits)."""
    if head == "classifier":
        return float(np.mean(np.abs(output - reference)) / (np.std(reference) + 1e-6))
    return float(np.mean(1.0 - np.sum(unit_rows(reference) * unit_rows(output), axis=1)))


def int8_drift(fp32: Path, int8: Path, files: ModelFiles, head: str) -> dict[str, Any]:
    """How far int8 moves the outputs on calibration text: mean 1 - cosine (embeddings), or mean |Δ logit|
    in units of the logits' sd; with the bound an exported int8 graph must stay within."""
    feed = calibration_feed(files, head)
    drift = output_drift(run_feed(open_session(fp32), feed), run_feed(open_session(int8), feed), head)
    if head == "classifier":
        return {"measure": "mean |Δ logit| / sd", "drift": drift, "bound": INT8_DRIFT_BOUNDS["logit"]}
    return {"measure": "mean 1 - cosine", "drift": drift, "bound": INT8_DRIFT_BOUNDS["cosine"]}


def score_drift(reference: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """:data:`AUTO_MEASURE` of ``scores`` against the fp32 ``reference`` scores (inf if they do not vary)."""
    moved = np.abs(scores - reference)
    spread = float(np.std(reference))
    return {"drift": float(moved.max() / spread) if spread > 0 else float("inf"),
            "mean_drift": float(moved.mean() / spread) if spread > 0 else float("inf"),
            "max_abs_diff": float(moved.max()), "spread": spread}


def measure_drift(fp32: Path, int8: Path, files: ModelFiles, head: str) -> dict[str, Any]:
    """How far the ``int8`` graph moves the ranking scores of the ``fp32`` one on calibration text."""
    feeds = drift_sequences(files, head)

    def scores(path: Path) -> np.ndarray:  # one short sequence at a time: more threads only synchronise
        return ranking_scores(run_feeds(open_session(path, threads=1), feeds), head)

    reference = scores(fp32)
    return {"measure": AUTO_MEASURE, **score_drift(reference, scores(int8)), "scores": int(reference.size),
            "sequences": len(feeds), "score": "logit" if head == "classifier" else "cosine"}
