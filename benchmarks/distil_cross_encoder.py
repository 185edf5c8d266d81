"""Issue 24, must-show 2: a cross-encoder student trained on a teacher's scores and DL19 judgments together
(``bce-mix``), evaluated on DL20 beside the bi-encoder student, with its ONNX int8 drift.

    nice -n 10 python benchmarks/distil_cross_encoder.py [--epochs 2] [--candidates 32] [--lr 1e-4] [--json F]

The student is a cross-encoder seeded from the default MiniLM checkpoint (all-MiniLM-L6-v2, a bi-encoder: the
classification head is fresh, randomly initialised, and the card says so: ``seeded_head``).  It learns from the
first ``--candidates`` of each DL19 BM25 list: a judged pair's label is its DL19 judgment (grade >= 2 relevant,
TREC DL), an unjudged pair's the teacher's score (all-mpnet-base-v2, from the cache ``benchmarks/distil_dl.py``
wrote) as a sigmoid of its z-score within the list; BCE on those soft labels, a seeded 20% of the queries held
out for checkpoint selection (dev nDCG@10).  On DL20's top-``--test-candidates`` lists: nDCG@10 of the student
on the default ONNX backend (precision auto) with ``describe()["precision_auto"]`` (the drift check's figures
and its choice), and at fp32, int8-fast and int8 named explicitly; beside it the base MiniLM bi-encoder, the
bi-encoder student of must-show 1 (``--bi-student``) and the teacher, with paired t-tests.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from distil_dl import TEACHER, ndcg

from surerank import Reranker
from surerank.eval.datasets import dataset_file, load_trec_dl
from surerank.eval.significance import paired_p_value
from surerank.formats import lists_to_run
from surerank.train import TrainConfig, score_with_teacher, train_model
from surerank.types import Query

BI_STUDENT = Path("/tmp/surerank-distil/student-dl19-e2-lr0.0001-t0.05")  # must-show 1's best (DL20 0.6202)


def rank(spec: dict[str, Any], queries: list[Query]) -> tuple[dict, float, dict]:
    """A ranker's run over ``queries``, its seconds, and its describe()."""
    started = time.perf_counter()
    ranker = Reranker(spec["name"], **{k: v for k, v in spec.items() if k != "name"})
    run = lists_to_run(ranker.rank_many(queries))
    return run, round(time.perf_counter() - started, 1), ranker.describe()


def student_runs(folder: Path, test_q: list[Query], qrels: dict) -> tuple[dict, dict]:
    """The student cross-encoder at precision auto (the default) and at each named precision: nDCG@10 per query,
    seconds, and what auto chose (a named precision equal to auto's choice is not run twice)."""
    figures, info = {}, {}
    run, seconds, described = rank({"name": "cross-encoder", "model": str(folder)}, test_q)
    figures["auto"] = ndcg(run, qrels)
    info["auto"] = {"seconds": seconds, "precision": described["precision"],
                    "precision_auto": described.get("precision_auto")}
    for precision in ("fp32", "int8-fast", "int8"):
        if precision == described["precision"]:
            figures[precision], info[precision] = figures["auto"], {"same_as": "auto"}
            continue
        run, seconds, _ = rank({"name": "cross-encoder", "model": str(folder), "precision": precision}, test_q)
        figures[precision], info[precision] = ndcg(run, qrels), {"seconds": seconds}
    return figures, info


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=float, default=2)
    p.add_argument("--candidates", type=int, default=32, help="DL19 candidates per list in training")
    p.add_argument("--test-candidates", type=int, default=100, help="DL20 candidates per list in evaluation")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=256, help="tokens per (query, passage) pair in training")
    p.add_argument("--judgment-weight", type=float, default=1.0)
    p.add_argument("--bi-student", type=Path, default=BI_STUDENT)
    p.add_argument("--work", type=Path, default=Path("/tmp/surerank-distil"))
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    train_q, _ = load_trec_dl(19)
    test_q, test_qrels = load_trec_dl(20)
    test_q = [Query(text=q.text, candidates=q.candidates[:args.test_candidates], id=q.id) for q in test_q]
    out = args.work / (f"ce-student-dl19-bce-mix-c{args.candidates}-m{args.max_length}-e{args.epochs:g}-lr{args.lr:g}"
                       f"-w{args.judgment_weight:g}")
    config = TrainConfig(output=out, student="cross-encoder", teacher=TEACHER, qrels=dataset_file("dl19", "qrels"),
                         loss="bce-mix", judgment_weight=args.judgment_weight, candidates=args.candidates,
                         epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size,
                         max_length=args.max_length, patience=2, seed=0,
                         teacher_cache=args.work / f"teacher-dl19-top{args.candidates}.json")
    started = time.perf_counter()
    card = train_model(config, train_q).card if not (out / "training_card.json").exists() else None
    train_s = round(time.perf_counter() - started, 1)
    figures, info = student_runs(out, test_q, test_qrels)
    seconds = {}
    for label, spec in (("base MiniLM", {"name": "embedding"}),
                        ("bi-encoder student", {"name": "embedding", "model": str(args.bi_student)})):
        run, seconds[label], _ = rank(spec, test_q)
        figures[label] = ndcg(run, test_qrels)
    teacher = score_with_teacher(TEACHER, test_q, args.work / "teacher-dl20-top100.json")
    figures["teacher mpnet"] = ndcg(teacher.scores, test_qrels)
    student = figures["auto"][1]
    report = {"train_seconds": train_s, "card": card.to_dict() if card else str(out / "training_card.json"),
              "ndcg@10": {k: round(v[0], 4) for k, v in figures.items()}, "student": info,
              "rank_seconds": seconds, "test_candidates": args.test_candidates,
              "p_student_vs_base": paired_p_value(student, figures["base MiniLM"][1])[0],
              "p_student_vs_bi_student": paired_p_value(student, figures["bi-encoder student"][1])[0],
              "p_student_vs_teacher": paired_p_value(student, figures["teacher mpnet"][1])[0],
              "p_int8_fast_vs_fp32": paired_p_value(figures["int8-fast"][1], figures["fp32"][1])[0]}
    print(json.dumps({k: report[k] for k in ("ndcg@10", "p_student_vs_base", "p_student_vs_bi_student",
                                             "p_student_vs_teacher", "p_int8_fast_vs_fp32", "train_seconds",
                                             "rank_seconds")}, indent=2))
    print(json.dumps(info, indent=2))
    if card:
        print(json.dumps({"resources": card.resources, "dev": card.dev["final"], "dev_base": card.dev["base"],
                          "steps": card.steps, "seeded_head": card.seeded_head,
                          "label_sources": card.data.get("label_sources")}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
