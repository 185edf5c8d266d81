"""chrF MBR: reference aggregation (Vamvas & Sennrich 2024) against pairwise, on the same candidate lists.

Candidate lists from real text, offline: for each of ``--lists`` TREC DL 2019 then 2020 queries (97 in all),
the BM25 top passage cut to its first ``--words`` words is the "reference translation"; ``--n`` candidates are
made from it by 0 to 6 random edits each (a seeded generator): drop a word, swap two neighbouring words,
substitute a word with one drawn from the query's other top-10 passages (same topic: a stand-in for lexical
choice / synonyms), repeat a word, or a one-character typo.  So a list looks like N noisy samples around one
output, which is where MBR is used.

Both methods run in the same process on the same lists, interleaved list by list so machine load hits both
alike; the ratio is reported on CPU time (process_time; robust when other jobs share the machine) and wall time.
Optionally (``--naive K``) the first K lists are also scored the way the `mbr` package's MetricRunner computes
chrF — sacreBLEU ``sentence_score`` per (sample, reference) pair — to show what per-text n-gram caching saves.

    nice python benchmarks/mbr_speed.py                       # 40 lists, N = 64
    nice python benchmarks/mbr_speed.py --lists 97 --n 64 --naive 5 --prune --json runs/mbr_speed.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def candidate_lists(n_lists: int, n: int, words: int, seed: int) -> list[list[str]]:
    from surerank.eval.datasets import load_trec_dl

    queries = [q for year in (19, 20) for q in load_trec_dl(year)[0]]
    if n_lists > len(queries):
        raise SystemExit(f"--lists {n_lists}: TREC DL 2019 + 2020 have {len(queries)} queries")
    rng = np.random.default_rng(seed)
    lists = []
    for query in queries[:n_lists]:
        base = query.candidates[0].text.split()[:words]
        vocabulary = [w for c in query.candidates[1:10] for w in c.text.split()] or base
        cands = []
        for _ in range(n):
            toks = list(base)
            for _ in range(int(rng.integers(0, 7))):
                op = int(rng.integers(0, 5))
                k = int(rng.integers(0, len(toks)))
                if op == 0 and len(toks) > 3:
                    del toks[k]
                elif op == 1 and k + 1 < len(toks):
                    toks[k], toks[k + 1] = toks[k + 1], toks[k]
                elif op == 2:
                    toks[k] = vocabulary[int(rng.integers(0, len(vocabulary)))]
                elif op == 3:
                    toks.insert(k, toks[k])
                elif len(toks[k]) > 1:
                    j = int(rng.integers(0, len(toks[k])))
                    toks[k] = toks[k][:j] + "abcdefghijklmnopqrstuvwxyz"[int(rng.integers(0, 26))] + toks[k][j + 1:]
            cands.append(" ".join(toks))
        lists.append(cands)
    return lists


def timed(function, *args):
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def naive_choice(texts: list[str]) -> int:
    """Pairwise chrF with sacreBLEU's sentence_score on every (sample, reference) pair, as MetricRunner does."""
    from sacrebleu.metrics import CHRF

    metric = CHRF()
    scores = [np.mean([metric.sentence_score(h, [r]).score for r in texts]) for h in texts]
    return int(np.argmax(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lists", type=int, default=40)
    parser.add_argument("--n", type=int, default=64, help="candidates per list")
    parser.add_argument("--words", type=int, default=40, help="words of the passage each list is made from")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--naive", type=int, default=0, help="also time sentence_score pairwise on K lists")
    parser.add_argument("--prune", action="store_true",
                        help="also run confidence-based pruning (Cheng & Vlachos 2023) on the same lists")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    from surerank import Reranker

    lists = candidate_lists(args.lists, args.n, args.words, args.seed)
    pairwise = Reranker("mbr", utility="chrf")
    aggregate = Reranker("mbr", utility="chrf", aggregate=True)
    pairwise.rank("warm up", ["a b", "a c"])
    aggregate.rank("warm up", ["a b", "a c"])
    t = {"pairwise_wall": 0.0, "pairwise_cpu": 0.0, "aggregate_wall": 0.0, "aggregate_cpu": 0.0}
    agree = 0
    calls = {"pairwise": 0, "aggregate": 0}
    choices = []
    for texts in lists:
        a, wall_a, cpu_a = timed(pairwise.rank, "source", texts)
        b, wall_b, cpu_b = timed(aggregate.rank, "source", texts)
        t["pairwise_wall"] += wall_a
        t["pairwise_cpu"] += cpu_a
        t["aggregate_wall"] += wall_b
        t["aggregate_cpu"] += cpu_b
        agree += a.items[0].index == b.items[0].index
        calls["pairwise"] += a.cost.details["utility_calls"]
        calls["aggregate"] += b.cost.details["utility_calls"]
        choices.append(a.items[0].index)
    distinct = np.mean([len(set(x)) for x in lists])
    out = {
        "lists": len(lists), "n": args.n, "distinct_candidates_mean": round(float(distinct), 1),
        "words": args.words, "seed": args.seed,
        "pairwise_s": round(t["pairwise_wall"], 3), "aggregate_s": round(t["aggregate_wall"], 3),
        "pairwise_cpu_s": round(t["pairwise_cpu"], 3), "aggregate_cpu_s": round(t["aggregate_cpu"], 3),
        "speedup_cpu": round(t["pairwise_cpu"] / t["aggregate_cpu"], 2),
        "speedup_wall": round(t["pairwise_wall"] / t["aggregate_wall"], 2),
        "agreement": round(agree / len(lists), 4), "utility_calls": calls,
    }
    if args.prune:
        pruned = Reranker("mbr", utility="chrf", prune=True)
        cpu = time.process_time()
        runs = [pruned.rank("source", texts) for texts in lists]
        out["prune_cpu_s"] = round(time.process_time() - cpu, 3)
        out["prune_utility_calls"] = sum(r.cost.details["utility_calls"] for r in runs)
        out["prune_agreement"] = float(np.mean([r.items[0].index == c for r, c in zip(runs, choices)]))
    if args.naive:
        k = min(args.naive, len(lists))
        wall, cpu = time.perf_counter(), time.process_time()
        naive = [naive_choice(texts) for texts in lists[:k]]
        out["naive_lists"] = k
        out["naive_cpu_s_per_list"] = round((time.process_time() - cpu) / k, 3)
        out["naive_wall_s_per_list"] = round((time.perf_counter() - wall) / k, 3)
        out["naive_agreement_with_pairwise"] = float(np.mean([x == y for x, y in zip(naive, choices)]))
        out["pairwise_cpu_s_per_list"] = round(t["pairwise_cpu"] / len(lists), 3)
    print(f"chrF MBR, {len(lists)} lists of N = {args.n} (TREC DL passages, {args.words} words, perturbed)")
    print(f"  pairwise:  {out['pairwise_cpu_s']:.2f} s CPU ({out['pairwise_s']:.2f} s wall), "
          f"{calls['pairwise']} utility calls")
    print(f"  aggregate: {out['aggregate_cpu_s']:.2f} s CPU ({out['aggregate_s']:.2f} s wall), "
          f"{calls['aggregate']} utility calls")
    print(f"  speed-up {out['speedup_cpu']}x CPU ({out['speedup_wall']}x wall); same choice on "
          f"{agree}/{len(lists)} lists ({100 * out['agreement']:.1f}%)")
    if args.prune:
        print(f"  pruned (alpha 0.99): {out['prune_cpu_s']:.2f} s CPU, {out['prune_utility_calls']} utility calls; "
              f"same choice as pairwise on {100 * out['prune_agreement']:.1f}%")
    if args.naive:
        print(f"  sentence_score pairwise (as the mbr package): {out['naive_cpu_s_per_list']} s CPU per list vs "
              f"{out['pairwise_cpu_s_per_list']} s cached pairwise; same choice on "
              f"{100 * out['naive_agreement_with_pairwise']:.0f}% of {out['naive_lists']} lists")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(out, handle, indent=2)


if __name__ == "__main__":
    main()
