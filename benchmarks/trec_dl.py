"""README results table: nDCG@10 on TREC DL19/DL20 (BM25 top-100) and reranking throughput here.

    python benchmarks/trec_dl.py [--years 19 20] [--json out.json]   # --json: for surerank report --throughput

Rankers: the first stage's BM25 order (Anserini, corpus statistics), bm25 over the candidate list
alone (list statistics), the embedded default embedding model (fp32, int8, int8-fast), and fusion of
first-stage BM25 or list BM25 with the embedding (RRF k=60; CombSUM over min-max scores), fused from the
member runs (the same function FusionRanker calls; tests/test_fusion.py checks both against ranx).
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
from surerank.eval.formats import lists_to_run
from surerank.eval.metrics import evaluate, paired_test

MEMBERS = [
    ("first-stage BM25 (Anserini)", "first-stage", {}),
    ("bm25 (list statistics)", "bm25", {}),
    ("embedding fp32 (default)", "embedding", {}),
    ("embedding int8", "embedding", {"precision": "int8"}),
    ("embedding int8-fast", "embedding", {"precision": "int8-fast"}),
]
FUSIONS = [  # (label, member labels, method); fused from the member runs above, exactly what FusionRanker does
    ("RRF(first-stage, embedding)", ("first-stage BM25 (Anserini)", "embedding fp32 (default)"), "rrf"),
    ("CombSUM(first-stage, embedding)", ("first-stage BM25 (Anserini)", "embedding fp32 (default)"), "combsum"),
    ("RRF(bm25, embedding)", ("bm25 (list statistics)", "embedding fp32 (default)"), "rrf"),
    ("CombSUM(bm25, embedding)", ("bm25 (list statistics)", "embedding fp32 (default)"), "combsum"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--years", nargs="+", default=["19", "20"])
    parser.add_argument("--json")
    args = parser.parse_args()
    data = {y: load_trec_dl(y) for y in args.years}
    runs: dict[tuple[str, str], dict] = {}
    seconds: dict[tuple[str, str], float] = {}
    for label, name, options in MEMBERS:
        ranker = Reranker(name, **options)
        ranker.rank("warm up", ["one short passage", "another"])
        for year, (queries, _) in data.items():
            start = time.perf_counter()
            runs[label, year] = lists_to_run(ranker.rank_many(queries))
            seconds[label, year] = time.perf_counter() - start
    for label, members, method in FUSIONS:
        for year in args.years:
            start = time.perf_counter()
            runs[label, year] = fuse_runs([runs[m, year] for m in members], method=method)
            seconds[label, year] = time.perf_counter() - start + sum(seconds[m, year] for m in members)
    rows = []
    base_label = MEMBERS[0][0]
    for label in [m[0] for m in MEMBERS] + [f[0] for f in FUSIONS]:
        row: dict = {"ranker": label}
        for year, (queries, qrels) in data.items():
            pairs = sum(len(q.candidates) for q in queries)
            result = evaluate(runs[label, year], qrels, ["nDCG@10"])
            base = evaluate(runs[base_label, year], qrels, ["nDCG@10"])
            row[f"dl{year}"] = result.aggregate["nDCG@10"]
            row[f"dl{year}_p"] = paired_test(result.values("nDCG@10"), base.values("nDCG@10")).p_value
            row[f"dl{year}_pairs_per_s"] = pairs / seconds[label, year]
        rows.append(row)
        print(f"{label:<34}" + "".join(
            f"  DL{y} nDCG@10 {row[f'dl{y}']:.4f} ({row[f'dl{y}_pairs_per_s']:,.0f} pairs/s)" for y in args.years),
            flush=True)
    print(f"\n{os.cpu_count()} CPU cores. Markdown:\n")
    print("| ranker | " + " | ".join(f"DL{y} nDCG@10" for y in args.years) + " | pairs/s (DL19) |")
    print("|---|" + "---|" * len(args.years) + "---|")
    for row in rows:
        cells = [f"{row[f'dl{y}']:.4f}" + ("*" if row[f"dl{y}_p"] < 0.05 and row["ranker"] != base_label else "")
                 for y in args.years]
        print(f"| {row['ranker']} | " + " | ".join(cells) + f" | {row[f'dl{args.years[0]}_pairs_per_s']:,.0f} |")
    print("\n* p < 0.05, paired t-test against the first-stage BM25 order; "
          "a fusion's pairs/s counts the time of its members")
    if args.json:  # a surerank.throughput table (what `surerank report --throughput` reads), nDCG@10 beside
        from surerank.eval.report import ThroughputTable

        clean = [{"name": row["ranker"], **{k: None if v != v else v for k, v in row.items()}} for row in rows]
        table = ThroughputTable(rows=clean, rate=f"dl{args.years[0]}_pairs_per_s").to_dict()
        ThroughputTable.from_dict(table, args.json)  # NaN p-values (a run against itself) became null above
        with open(args.json, "w") as handle:
            json.dump(table, handle, indent=1, allow_nan=False)


if __name__ == "__main__":
    main()
