"""Issue 24, must-show 1: distil all-mpnet-base-v2 into all-MiniLM-L6-v2 on one DL year, no judgments in training;
evaluate on the other year.

    python benchmarks/distil_dl.py [--train 19 --test 20] [--epochs 2] [--seeds 0,1,2] [--json out.json]
    python benchmarks/distil_dl.py --extra-queries 600 --topics pyserini-0.19.2-py3-none-any.whl --candidates 16

``--extra-queries N`` adds N real, unlabeled MS MARCO queries (the passage dev-subset topics, which ship inside
the ``pyserini==0.19.2`` wheel's Anserini jar under ``topics-and-qrels/``: ``pip download pyserini==0.19.2
--no-deps`` and give the wheel, or the extracted ``topics.msmarco-passage.dev-subset.txt``, as ``--topics``).
Their lists are BM25 (``surerank retrieve``'s index) over the training year's passages only (the test year's
passages are never seen in training); the N queries whose best pool match scores highest are kept (the pool
answers them best), any whose text is a DL19/DL20 query is dropped, and the teacher labels their lists as it
labels the training year's: no judgment of any of them exists or is read.

The teacher (``embedding`` with all-mpnet-base-v2 on the default backend) scores the first ``--candidates`` of
each training-year BM25 list once (cached in the work folder); the student (the default MiniLM bi-encoder) learns
the teacher's listwise distribution (DistillKLDivLoss, one temperature for both sides) with ``surerank train``'s
library, a seeded 20% of the training queries held out for early stopping / checkpoint selection (rank
correlation with the teacher).  Judgments of the training year are never read.  On the test year's full top-100
lists: nDCG@10 of the base MiniLM, the student (its saved folder on the default ONNX backend) and the teacher
(whose test-year scores are cached too), with the paired t-test, and the share of the base-teacher gap the
student closes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import time
import zipfile
from io import BytesIO
from pathlib import Path

from surerank import Reranker
from surerank.engine.checkpoint.training_run import TrainingRun
from surerank.eval.datasets import load_trec_dl
from surerank.eval.metrics import evaluate_ranking
from surerank.eval.significance import paired_p_value
from surerank.formats import lists_to_run
from surerank.rankers.bm25 import BM25Index
from surerank.train import TrainConfig, score_with_teacher, train_model
from surerank.train.config import DEFAULT_EMBEDDING_MIX
from surerank.train.soup import soup_students
from surerank.types import Candidate, Query

TEACHER = {"name": "embedding", "model": "all-mpnet-base-v2"}


def ndcg(run: dict, qrels: dict) -> tuple[float, dict]:
    orders = {q: sorted(docs, key=lambda d: -docs[d]) for q, docs in run.items()}
    result = evaluate_ranking(orders, qrels, ["nDCG@10"])
    return result.aggregate["nDCG@10"], result.values("nDCG@10")


TOPICS = "topics-and-qrels/topics.msmarco-passage.dev-subset.txt"


def read_topics(path: Path) -> list[tuple[str, str]]:
    """(qid, text) from the topics TSV, or from inside the pyserini wheel's Anserini jar."""
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            jar = next(n for n in wheel.namelist() if n.endswith("-fatjar.jar"))
            with zipfile.ZipFile(BytesIO(wheel.read(jar))) as inner:
                text = inner.read(TOPICS).decode("utf-8")
    else:
        text = path.read_text(encoding="utf-8")
    rows = [line.split("\t", 1) for line in text.splitlines() if "\t" in line]
    return [(qid.strip(), q.strip()) for qid, q in rows if q.strip()]


def msmarco_lists(topics: Path, pool_of: list[Query], n: int, depth: int, exclude: set[str],
                  shortlist: int = 0, cache: Path | None = None) -> tuple[list[Query], dict]:
    """N unlabeled MS MARCO queries with BM25 lists of ``depth`` passages from the training year's pool: the N
    with the highest top-1 BM25 score, or (``shortlist`` > 0) the N of that many whose top passage the teacher
    scores highest (the pool holds a passage the teacher finds close: an on-topic list)."""
    pool = {c.id: c for q in pool_of for c in q.candidates}
    index = BM25Index([Candidate(id=c.id, text=c.text) for c in pool.values()])
    rows = read_topics(topics)
    fresh = [(qid, text) for qid, text in rows if text.lower() not in exclude]
    retrieved = index.retrieve([Query(text=t, id=f"msmarco-{qid}") for qid, t in fresh], k=depth)
    full = [q for q in retrieved if len(q.candidates) == depth]
    full.sort(key=lambda q: -q.candidates[0].metadata["bm25_score"])
    chosen = full[:max(n, shortlist)]
    if shortlist:
        assert cache is not None
        scores = score_with_teacher(TEACHER, chosen, cache, group=len(chosen)).scores
        chosen.sort(key=lambda q: -max(scores[q.id].values()))
    chosen = chosen[:n]
    random.Random(0).shuffle(chosen)
    facts = {"topics": len(rows), "dropped_as_dl_queries": len(rows) - len(fresh), "with_full_list": len(full),
             "kept": len(chosen), "pool_passages": len(pool), "depth": depth,
             "weakest_kept_top1_bm25": round(min(q.candidates[0].metadata["bm25_score"] for q in chosen), 3),
             "selected_by": f"teacher top-1 among {shortlist}" if shortlist else "top-1 bm25"}
    return chosen, facts


def seeds_list(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"at least one seed, none twice, got {text!r}")
    return seeds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", default="19")
    p.add_argument("--test", default="20")
    p.add_argument("--epochs", type=float, default=2)
    p.add_argument("--candidates", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--batch-size", type=int, default=1, help="lists per step (default 1: one query a step)")
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--embedding-mix", type=float, default=DEFAULT_EMBEDDING_MIX,
                   help="embedding-mse: each target this share of the way from the untrained student to the teacher")
    p.add_argument("--loss", choices=["kl", "embedding-mse"], default="kl",
                   help="kl: the teacher's listwise scores (default); embedding-mse: its vector of every training "
                        "query and passage (the --extra-queries are then training-only texts, never held out)")
    p.add_argument("--no-dropout", dest="dropout", action="store_false",
                   help="train the student with its dropout off (TrainConfig.dropout=False)")
    p.add_argument("--no-group-by-length", dest="group_by_length", action="store_false",
                   help="embedding-mse: random batches of texts (the default groups texts by length)")
    p.add_argument("--seeds", type=seeds_list, default=[0],
                   help="comma-separated: one student per seed (its dev split and data order), each reported, and "
                        "their mean (default 0)")
    p.add_argument("--extra-queries", type=int, default=0, help="unlabeled MS MARCO queries to add (needs --topics)")
    p.add_argument("--shortlist", type=int, default=0,
                   help="keep the --extra-queries whose best passage the teacher scores highest, among this many")
    p.add_argument("--topics", type=Path, help="the pyserini 0.19.2 wheel, or the MS MARCO dev-subset topics TSV")
    p.add_argument("--soup", action="store_true",
                   help="also average this run's students (one per seed) and any --soup-with students into one "
                        "(surerank train --soup) and evaluate it beside them")
    p.add_argument("--soup-with", type=lambda t: [Path(x) for x in t.split(",") if x.strip()], default=[],
                   help="comma-separated student folders from other runs (same training year) to add to the soup")
    p.add_argument("--eval-steps", type=int, help="evaluate / checkpoint every N steps (default: once an epoch)")
    p.add_argument("--work", type=Path, default=Path("/tmp/surerank-distil"))
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    train_q, _ = load_trec_dl(args.train)  # the training year's judgments are not used
    test_q, test_qrels = load_trec_dl(args.test)
    extra: dict = {}
    more: list[Query] = []
    cache = args.work / f"teacher-dl{args.train}-top{args.candidates}.json"
    tag = f"dl{args.train}"
    if args.extra_queries:
        if args.topics is None:
            p.error("--extra-queries needs --topics")
        exclude = {q.text.strip().lower() for year in ("19", "20") for q in load_trec_dl(year)[0]}
        cache = args.work / f"teacher-{tag}+msmarco-top{args.candidates}.json"
        more, extra = msmarco_lists(args.topics, train_q, args.extra_queries, args.candidates, exclude,
                                    args.shortlist, cache)
        print(json.dumps({"msmarco_queries": extra}))
        train_q = [q.__class__(text=q.text, candidates=q.candidates[:args.candidates], id=q.id) for q in train_q]
        tag += f"+msmarco{len(more)}" + (f"of{args.shortlist}" if args.shortlist else "")
        if args.loss == "kl":  # embedding-mse learns their texts' vectors: no list of theirs is scored
            train_q = train_q + more
            score_with_teacher(TEACHER, train_q, cache, group=len(train_q))  # one call: each pool passage once
    runs, seconds = {}, {}
    t = time.perf_counter()
    runs["base MiniLM"] = lists_to_run(Reranker("embedding").rank_many(test_q))
    seconds["base MiniLM"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    teacher = score_with_teacher(TEACHER, test_q, args.work / f"teacher-dl{args.test}-top100.json")
    runs["teacher mpnet"], seconds["teacher mpnet"] = teacher.scores, round(time.perf_counter() - t, 1)
    trained, train_s = {}, {}
    for seed in args.seeds:
        loss = (f"-t{args.temperature:g}" if args.loss == "kl"
                else f"-{args.loss}-m{args.embedding_mix:g}-b{args.batch_size}"
                + ("-bylength" if args.group_by_length else "")) + ("" if args.dropout else "-nodrop")
        out = args.work / (f"student-{tag}-c{args.candidates}-e{args.epochs:g}-lr{args.lr:g}{loss}"
                           + (f"-seed{seed}" if seed else ""))
        config = TrainConfig(output=out, student="bi-encoder", teacher=TEACHER, loss=args.loss,
                             candidates=args.candidates, epochs=args.epochs, learning_rate=args.lr,
                             batch_size=args.batch_size, temperature=args.temperature, patience=2,
                             embedding_mix=args.embedding_mix, dropout=args.dropout, seed=seed,
                             group_by_length=args.group_by_length,
                             eval_steps=args.eval_steps, teacher_cache=cache)
        label = f"student seed {seed}"
        t = time.perf_counter()
        if not (out / "training_card.json").exists():
            train_model(config, train_q, train_only=more if args.loss == "embedding-mse" else ())
        train_s[label] = round(time.perf_counter() - t, 1)
        trained[label] = TrainingRun.load(out)  # the card, read back typed
        t = time.perf_counter()
        runs[label] = lists_to_run(Reranker("embedding", model=str(out)).rank_many(test_q))
        seconds[label] = round(time.perf_counter() - t, 1)
    soup_members: list[str] = []
    if args.soup:
        soup_members = [str(Path(run.source).parent) for run in trained.values()] + [str(d) for d in args.soup_with]
        digest = hashlib.sha256("\n".join(sorted(soup_members)).encode()).hexdigest()[:10]
        soup_dir = args.work / f"soup-{tag}-{len(soup_members)}-{digest}"
        if not (soup_dir / "training_card.json").exists():
            soup_students(soup_members, soup_dir)
        t = time.perf_counter()
        runs["soup"] = lists_to_run(Reranker("embedding", model=str(soup_dir)).rank_many(test_q))
        seconds["soup"] = round(time.perf_counter() - t, 1)
    figures = {label: ndcg(run, test_qrels) for label, run in runs.items()}
    base, top = figures["base MiniLM"][0], figures["teacher mpnet"][0]
    students = [label for label in runs if label.startswith("student")]

    def gap(value: float) -> float | None:
        return round((value - base) / (top - base), 3) if top != base else None

    def against_base_and_teacher(label: str) -> dict:
        """A trained model's nDCG@10, the share of the gap it closes, and the paired tests."""
        value, per_query = figures[label]
        return {"ndcg@10": round(value, 4), "gap_closed": gap(value),
                "p_vs_base": paired_p_value(per_query, figures["base MiniLM"][1])[0],
                "p_vs_teacher": paired_p_value(per_query, figures["teacher mpnet"][1])[0]}

    per_seed = {}
    for label in students:
        dev = trained[label].dev
        fit = dev.training_fit
        per_seed[label] = {
            **against_base_and_teacher(label), "seconds_this_run": train_s[label], "steps": trained[label].card.steps,
            "dev_spearman_untrained": dev.base.get("spearman_teacher"),
            "dev_spearman_kept": dev.final.get("spearman_teacher"), "dev_worse_than_base": dev.worse_than_base,
            "fit_loss_untrained": fit.loss_before if fit else None, "fit_loss_kept": fit.loss_after if fit else None,
            "fit_verdict": fit.verdict if fit else None}
    mean = sum(figures[label][0] for label in students) / len(students)
    report = {"train_year": args.train, "test_year": args.test, "extra_queries": extra,
              "ndcg@10": {"base MiniLM": round(base, 4), "teacher mpnet": round(top, 4)}, "students": per_seed,
              "students_mean_ndcg@10": round(mean, 4),
              "students_mean_gap_closed": gap(mean),
              "rank_seconds": seconds, "cards": {label: run.source for label, run in trained.items()}}
    if args.soup:
        report["soup"] = {"members": soup_members, **against_base_and_teacher("soup")}
    print(json.dumps({k: report[k] for k in ("ndcg@10", "students", "students_mean_ndcg@10",
                                             "students_mean_gap_closed", "rank_seconds", "soup") if k in report},
                     indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
