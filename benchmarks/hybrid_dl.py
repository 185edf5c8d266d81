"""Hybrid that helps: list bm25 with background IDF, and fusion weights learned on one DL year, applied to the other.

    python benchmarks/hybrid_dl.py [--json out.json]

Each ranker scores each year's BM25 top-100 lists once (the first stage's order; ``bm25`` with the list's own
statistics and with background IDF from wordfreq; the default ``embedding`` ranker, MiniLM); every fusion is
then fused from those cached scores with the functions the fusion ranker and ``surerank train --fusion`` use
(:func:`surerank.train.fusion.fused_rankings`, ties broken by the members' scores).  Learned weights are fitted
on one year's judgments (coordinate ascent on nDCG@10) and evaluated on the other year only.  Figures are
nDCG@10 in the ranked order (``evaluate_ranking``); p is the paired t-test against MiniLM alone.  The bm25 time
ratio is background over list statistics, best of three scorings of the DL19 lists on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from surerank import Reranker
from surerank.eval.datasets import load_trec_dl
from surerank.eval.metrics import evaluate_ranking
from surerank.eval.significance import paired_p_value
from surerank.formats import lists_to_run
from surerank.train.fusion import fit_fusion, fused_rankings

YEARS = ("19", "20")
BG = {"name": "bm25", "idf": "background"}
MEMBERS = {  # key: (label, ranker spec)
    "first": ("first stage (BM25, Anserini corpus statistics)", {"name": "first-stage"}),
    "bm25-list": ("bm25 over the list (list statistics)", {"name": "bm25", "idf": "list"}),
    "bm25-bg": ("bm25 over the list (background IDF, wordfreq)", BG),
    "minilm": ("MiniLM alone (embedding, default)", {"name": "embedding"}),
}
# (label, member keys, method, weights or None = learned on the other year)
FUSIONS = [
    ("RRF(bm25-bg, MiniLM)", ("bm25-bg", "minilm"), "rrf", [1.0, 1.0]),
    ("z-CombSUM(bm25-bg, MiniLM), equal weights", ("bm25-bg", "minilm"), "combsum", [1.0, 1.0]),
    ("z-CombSUM(0.2 bm25-bg, MiniLM) (issue 24's w)", ("bm25-bg", "minilm"), "combsum", [0.2, 1.0]),
    ("z-CombSUM(bm25-bg, MiniLM), learned on the other year", ("bm25-bg", "minilm"), "combsum", None),
    ("z-CombSUM(first, bm25-bg, MiniLM), learned on the other year", ("first", "bm25-bg", "minilm"), "combsum", None),
]


def score_members(data: dict) -> tuple[dict, dict]:
    """Every member's run per year, scored once, and the seconds each took."""
    runs, seconds = {}, {}
    for key, (_, spec) in MEMBERS.items():
        ranker = Reranker(spec["name"], **{k: v for k, v in spec.items() if k != "name"})
        ranker.rank("warm up", ["one short passage", "another"])
        for year, (queries, _) in data.items():
            start = time.perf_counter()
            runs[key, year] = lists_to_run(ranker.rank_many(queries))
            seconds[key, year] = time.perf_counter() - start
            print(f"scored {key} DL{year} in {seconds[key, year]:.1f} s", flush=True)
    return runs, seconds


def bm25_time_ratio(queries: list) -> tuple[float, float]:
    """Best-of-three seconds of list and background bm25 over the same lists (time on a shared machine varies)."""
    best = {}
    for key in ("bm25-list", "bm25-bg"):
        spec = MEMBERS[key][1]
        ranker = Reranker("bm25", idf=spec["idf"])
        ranker.rank_many(queries[:2])
        times = []
        for _ in range(3):
            start = time.perf_counter()
            ranker.rank_many(queries)
            times.append(time.perf_counter() - start)
        best[key] = min(times)
    return best["bm25-list"], best["bm25-bg"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="write the rows and the learned weights here")
    args = parser.parse_args()
    data = {y: load_trec_dl(y) for y in YEARS}
    runs, _ = score_members(data)
    orders: dict[tuple[str, str], dict] = {}
    for key in MEMBERS:
        for year in YEARS:
            orders[key, year] = {q: sorted(d, key=lambda doc, d=d: -d[doc]) for q, d in runs[key, year].items()}
    learned = {}
    for label, keys, method, weights in FUSIONS:
        for year in YEARS:
            other = YEARS[1 - YEARS.index(year)]
            if weights is None:
                fitted = fit_fusion([runs[k, other] for k in keys], data[other][1],
                                    [MEMBERS[k][1] for k in keys], method=method)
                learned[label, other] = fitted.to_dict()
                use = fitted.weights
                print(f"{label}: fit on DL{other} {fitted.weights} (dev nDCG@10 {fitted.fit['fitted']:.4f})")
            else:
                use = weights
            orders[label, year] = fused_rankings([runs[k, year] for k in keys], use, method=method)
    rows = []
    for key in [*MEMBERS, *(f[0] for f in FUSIONS)]:
        row = {"ranker": MEMBERS[key][0] if key in MEMBERS else key}
        for year in YEARS:
            result = evaluate_ranking(orders[key, year], data[year][1], ["nDCG@10"])
            base = evaluate_ranking(orders["minilm", year], data[year][1], ["nDCG@10"])
            p, _ = paired_p_value(result.values("nDCG@10"), base.values("nDCG@10"))
            row[f"dl{year}"], row[f"dl{year}_p"] = result.aggregate["nDCG@10"], p
        rows.append(row)
    list_s, bg_s = bm25_time_ratio(data["19"][0])
    print(f"\n{os.cpu_count()} CPU cores. Markdown:\n")
    print("| ranker | DL19 nDCG@10 | p vs MiniLM | DL20 nDCG@10 | p vs MiniLM |\n|---|---|---|---|---|")
    for row in rows:
        cells = [f"{row[f'dl{y}']:.4f} | " + ("-" if row["ranker"] == MEMBERS["minilm"][0] else
                                               f"{row[f'dl{y}_p']:.3g}") for y in YEARS]
        print(f"| {row['ranker']} | " + " | ".join(cells) + " |")
    print(f"\nbm25 time over the DL19 lists (best of 3): background IDF {bg_s:.2f} s, list statistics {list_s:.2f} s "
          f"(ratio background/list {bg_s / list_s:.2f})")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"rows": rows, "learned": {f"{k[0]} (fit on DL{k[1]})": v for k, v in learned.items()},
                       "bm25_seconds": {"list": list_s, "background": bg_s}}, handle, indent=1)


if __name__ == "__main__":
    main()
