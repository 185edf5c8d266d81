"""Issue 24, must-show 4: calibrate a trained student on one TREC DL year, measure its calibration on the other.

    nice -n 10 python benchmarks/calibrate_student.py --student DIR [--fit 19 --test 20] [--method platt] \
        [--json out.json] [--no-base]

The trust layer is fitted the way ``surerank train --calibrate`` fits it: the saved student folder is run by its
serving ranker (``embedding`` for a bi-encoder, ``cross-encoder`` for a cross-encoder) on the default ONNX backend
(precision ``auto``), and :func:`surerank.trust.artifact.fit_trust` fits the map on the fit year's judged BM25
top-100 lists (:func:`surerank.train.calibrate.calibrate_student`).  On the test year the artifact is checked
against the ranker (its score fingerprint) and applied; ECE (15 equal-width bins), Brier and log loss
(:mod:`surerank.trust.calibration_metrics`; relevant = grade >= 2, unjudged = not relevant) are reported before and
after.  "Before" is the raw score turned into a probability naively, two ways: clipped to [0, 1] (what
``benchmarks/trust_dl.py`` reports as "raw"; for a cosine it is the cosine) and the sigmoid of the score (what the
HTTP service's TEI ``raw_scores: false`` returns).  The base MiniLM (``Reranker("embedding")``) is calibrated and
measured the same way for comparison (``--no-base`` skips it).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit

from surerank import Reranker
from surerank.engine.checkpoint.card import TrainingCard
from surerank.eval.datasets import dataset_file, load_trec_dl
from surerank.train.calibrate import SERVING_RANKER, CalibrationSettings, calibrate_ranker, calibrate_student
from surerank.trust.calibration_metrics import calibration_report
from surerank.trust.labels import calibration_pairs, label_lists, ndcg_from_qrels

REL = 2
NAIVE = {"clip01": "raw score clipped to [0, 1]", "sigmoid": "sigmoid(raw score)"}


def measure(name: str, ranker: Any, artifact: Any, test_q: list, test_qrels: dict) -> dict[str, Any]:
    """The test year ranked by ``ranker``: ECE/Brier/log loss of the naive probabilities and of the artifact's."""
    artifact.check_ranker(ranker.describe())  # the artifact must fit the ranker it is applied to
    start = time.perf_counter()
    lists = ranker.rank_many(test_q)
    seconds = time.perf_counter() - start
    scores, labels = calibration_pairs(label_lists(lists, test_qrels, REL))
    artifact.apply(lists)  # the real path: probabilities on the ranked items, order untouched
    probs, labels_after = calibration_pairs(label_lists(lists, test_qrels, REL), use="probability")
    assert np.array_equal(labels, labels_after)
    rows = {"clip01": calibration_report(np.clip(scores, 0, 1), labels),
            "sigmoid": calibration_report(expit(scores), labels),
            f"{artifact.calibration.method} (fitted)": calibration_report(probs, labels)}
    ndcg = float(np.mean([ndcg_from_qrels(r.ids, test_qrels[r.query.id], 10) for r in lists]))
    return {"model": name, "test": rows, "ndcg@10": ndcg, "test_seconds": round(seconds, 1),
            "score_range": [float(scores.min()), float(scores.max())],
            "calibration": artifact.calibration.to_dict(), "fitted_on": {
                k: v for k, v in artifact.fitted_on.items() if k != "calibration_in_sample"},
            "in_sample": {k: v for k, v in artifact.fitted_on["calibration_in_sample"].items() if k != "reliability"},
            "precision": artifact.ranker.get("precision"), "backend": artifact.ranker.get("backend")}


def run_model(name: str, student: Path | None, args: argparse.Namespace, data: dict) -> dict[str, Any]:
    fit_q, fit_qrels, test_q, test_qrels = data["fit_q"], data["fit_qrels"], data["test_q"], data["test_qrels"]
    settings = CalibrationSettings(qrels=dataset_file(f"dl{args.fit}", "qrels"), method=args.method)
    source = f"DL{args.fit} BM25 top-100 ({len(fit_q)} queries)"
    start = time.perf_counter()
    if student is not None:
        kind = TrainingCard.load(student / "training_card.json").student
        artifact = calibrate_student(student, fit_q, settings, kind, source=source, qrels=fit_qrels)
        ranker = Reranker(SERVING_RANKER[kind], model=str(student))
    else:
        ranker = Reranker("embedding")
        artifact = calibrate_ranker(ranker, fit_q, settings, source=source, qrels=fit_qrels)
    fit_seconds = time.perf_counter() - start
    if args.save_artifacts:
        artifact.save(args.save_artifacts / f"{name}.trust.json")
    result = measure(name, ranker, artifact, test_q, test_qrels)
    result["fit_seconds"] = round(fit_seconds, 1)
    return result


def table(results: list[dict[str, Any]], fit: int, test: int) -> None:
    print(f"\nCalibration fitted on DL{fit} (judged BM25 top-100), measured on DL{test} "
          f"(relevant = grade >= {REL}, unjudged = not relevant, ECE with 15 bins)")
    print(f"{'model':<10}{'probability':<30}{'ECE':>8}{'Brier':>8}{'log loss':>10}{'mean p':>8}{'base rate':>10}")
    for r in results:
        for label, rep in r["test"].items():
            shown = NAIVE.get(label, label)
            print(f"{r['model']:<10}{shown:<30}{rep['ece']:>8.4f}{rep['brier']:>8.4f}{rep['log_loss']:>10.4f}"
                  f"{rep['mean_probability']:>8.3f}{rep['base_rate']:>10.3f}")
    for r in results:
        cal = r["calibration"]["params"]
        print(f"{r['model']}: DL{test} nDCG@10 {r['ndcg@10']:.4f} (calibration never reorders); {r['backend']} "
              f"{r['precision']}; map {json.dumps(cal)[:90]}; in-sample DL{fit} ECE {r['in_sample']['ece']:.4f}; "
              f"fit {r['fit_seconds']} s, test {r['test_seconds']} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", type=Path, required=True, help="a model folder written by surerank train --student")
    p.add_argument("--fit", type=int, default=19, choices=(19, 20), help="the year the calibration is fitted on")
    p.add_argument("--test", type=int, default=20, choices=(19, 20), help="the year it is measured on")
    p.add_argument("--method", default="platt", choices=("platt", "isotonic", "temperature"))
    p.add_argument("--no-base", action="store_true", help="skip the base MiniLM")
    p.add_argument("--save-artifacts", type=Path, help="a folder: write each fitted artifact there")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    if args.fit == args.test:
        p.error("--fit and --test must be different years")
    fit_q, fit_qrels = load_trec_dl(args.fit)
    test_q, test_qrels = load_trec_dl(args.test)
    data = {"fit_q": list(fit_q), "fit_qrels": fit_qrels, "test_q": list(test_q), "test_qrels": test_qrels}
    results = [run_model("student", args.student, args, data)]
    if not args.no_base:
        results.append(run_model("base", None, args, data))
    table(results, args.fit, args.test)
    report = {"kind": "surerank.calibrate-student", "student": str(args.student), "fit": f"DL{args.fit}",
              "test": f"DL{args.test}", "method": args.method, "naive": NAIVE, "results": results}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
