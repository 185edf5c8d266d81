"""Issue 24, must-show 6: training throughput (pairs/s) and peak RSS of each recipe in docs/train.md, on this CPU.

    nice python benchmarks/train_throughput.py [--steps 24] [--json out.json]

Every recipe trains the real all-MiniLM-L6-v2 checkpoint (the default model) on the TREC DL19 BM25 lists for
``--steps`` optimiser steps, in its own process (so peak RSS is the recipe's own), and reads its figures from the
training card it writes (``resources.pairs_per_s``: the pairs the loss read per second of optimiser steps,
evaluations and checkpoints left out; ``resources.peak_rss_mb``).  The teacher is all-mpnet-base-v2 on the
default backend, its scores of the DL19 top-32 lists read from the same cache ``benchmarks/distil_dl.py`` writes
(scored once if absent: that first call is not part of any recipe's figure).  Judgment recipes read the DL19
qrels.  The recipes and their defaults:

* distil, bi-encoder: ``--loss kl``, one 32-candidate list a step (benchmarks/distil_dl.py's setting);
* distil, bi-encoder: ``--loss margin-mse``, 16 sampled pairs per query, batch 8;
* distil, bi-encoder: ``--loss embedding-mse`` without dropout, batch 32 texts, grouped by length (the default)
  and at random (``--no-group-by-length``); the teacher's vectors of the lists' texts come from a cache beside the
  score cache (embedded once if absent, outside any recipe's figure); a "pair" here is one text;
* distil, cross-encoder: ``--loss mse`` / ``listnet`` on the teacher's scores, batch 8 pairs / 1 list;
* fine-tune on judgments: cross-encoder ``bce`` (4 mined negatives per positive, batch 8) and bi-encoder
  ``mnrl`` (batch 8 triplets).

Adapting to a new domain is the distil recipe on other lists (its cost per pair is the same); synthesising its
queries costs LLM time, measured in docs/synthetic.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

from surerank.train.examples import EMBEDDING_LOSS  # a constant: importing surerank.train loads no torch

QRELS = "qrels.dl19-passage.txt"

#: recipe -> (student, loss, batch size, uses the teacher, uses judgments, batches grouped by length: embedding-mse)
RECIPES: dict[str, tuple[str, str, int, bool, bool, bool]] = {
    "distil bi-encoder kl": ("bi-encoder", "kl", 1, True, False, True),
    "distil bi-encoder margin-mse": ("bi-encoder", "margin-mse", 8, True, False, True),
    "distil bi-encoder embedding-mse": ("bi-encoder", EMBEDDING_LOSS, 32, True, False, True),
    "distil bi-encoder embedding-mse, random batches": ("bi-encoder", EMBEDDING_LOSS, 32, True, False, False),
    "distil cross-encoder mse": ("cross-encoder", "mse", 8, True, False, True),
    "distil cross-encoder listnet": ("cross-encoder", "listnet", 1, True, False, True),
    "judgments cross-encoder bce": ("cross-encoder", "bce", 8, False, True, True),
    "judgments bi-encoder mnrl": ("bi-encoder", "mnrl", 8, False, True, True),
}


def run_one(recipe: str, steps: int, work: Path, cache: Path) -> dict:
    """Train one recipe for ``steps`` optimiser steps (``max_steps``) in this process; its card's figures."""
    from distil_dl import TEACHER  # imported on call, as surerank is: the parent process stays light

    from surerank.eval.datasets import data_root, load_trec_dl
    from surerank.train import TrainConfig, train_model

    student, loss, batch, teacher, judged, grouped = RECIPES[recipe]
    queries = [q.__class__(text=q.text, candidates=q.candidates[:32], id=q.id) for q in load_trec_dl("19")[0]]
    vectors = {"dropout": False, "group_by_length": grouped} if loss == EMBEDDING_LOSS else {}
    config = TrainConfig(output=work / "out", student=student, loss=loss, batch_size=batch, max_steps=steps, **vectors,
                         teacher=TEACHER if teacher else None, teacher_cache=cache, temperature=0.05,
                         qrels=data_root() / "trec-dl" / QRELS if judged else None, patience=0, progress=False,
                         learning_rate=2e-5, dev_fraction=0.05)  # 2 dev queries: the evaluations are not measured
    card = train_model(config, queries).card
    return {"recipe": recipe, "student": student, "loss": loss, "batch": batch, "steps": card.steps,
            "train_queries": card.data["train_queries"], "examples_per_epoch": card.data["train_examples"],
            "epochs": round(card.epochs, 3),
            "pairs_per_s": card.resources["pairs_per_s"], "step_seconds": card.resources["step_seconds"],
            "peak_rss_mib": card.resources["peak_rss_mb"], "threads": card.resources["threads"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--cache", type=Path, default=Path("/tmp/surerank-distil/teacher-dl19-top32.json"))
    p.add_argument("--one", choices=list(RECIPES), help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.one:
        print(json.dumps(run_one(args.one, args.steps, args.work, args.cache)))
        return
    from distil_dl import TEACHER

    from surerank.eval.datasets import load_trec_dl
    from surerank.train import score_with_teacher

    args.cache.parent.mkdir(parents=True, exist_ok=True)
    lists = [q.__class__(text=q.text, candidates=q.candidates[:32], id=q.id) for q in load_trec_dl("19")[0]]
    score_with_teacher(TEACHER, lists, args.cache)  # a no-op when distil_dl.py already scored them
    if any(RECIPES[r][1] == EMBEDDING_LOSS for r in args.recipes):  # the teacher's vectors, beside its scores
        from surerank.train.embedding_targets import TrainingTexts, teacher_vectors, vector_cache_beside

        teacher_vectors(TEACHER, TrainingTexts.of(lists), vector_cache_beside(args.cache))
    rows = []
    for recipe in args.recipes:
        with tempfile.TemporaryDirectory() as work:
            done = subprocess.run([sys.executable, __file__, "--one", recipe, "--steps", str(args.steps),
                                   "--work", work, "--cache", str(args.cache)], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{recipe}: failed\n{done.stderr[-3000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{recipe:32s} {r['steps']:4d} steps  {r['pairs_per_s']:7.1f} pairs/s  "
              f"peak RSS {r['peak_rss_mib'] / 1024:.2f} GiB  ({r['step_seconds']} s of steps, {r['threads']} threads)",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
