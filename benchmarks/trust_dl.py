"""Trust-layer figures on TREC DL19/DL20 (issue 5's "must show" 1-4).

Scores every query once with a ranker (cached under --cache, default /tmp/surerank-trust-cache) and then
runs only statistics, so re-running is cheap:

    nice python benchmarks/trust_dl.py --ranker embedding            # all sections
    nice python benchmarks/trust_dl.py --ranker bm25-first-stage     # the hits' own BM25 scores, no model
    python benchmarks/trust_dl.py --ranker embedding --sections calibration,crc --splits 1000

Sections: calibration (fit on one year, test on the other), abstention (random 50/50 splits, nAUC),
crc (conformal risk control and Learn-then-Test over random calibration/test splits), adaptive (cutoffs).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from surerank.eval.datasets import load_trec_dl
from surerank.report import TrustFigures
from surerank.trust.abstention import (
    LinearConfidence,
    LogisticConfidence,
    coverage_curve,
    nauc,
    reference_free,
)
from surerank.trust.calibration import CALIBRATORS, fit_calibrator
from surerank.trust.calibration_metrics import calibration_report, reliability_bins
from surerank.trust.conformal import crc_index, ltt_index, threshold_losses, topk_losses
from surerank.trust.cutoffs import AdaptiveCutoff
from surerank.trust.labels import LabelledList, calibration_pairs, ndcg_from_qrels
from surerank.types import Query, RankedList

REL = 2


def load_year(year: int) -> tuple[list[Query], dict[str, dict[str, int]]]:
    queries, qrels = load_trec_dl(year)
    return list(queries), {str(q): dict(v) for q, v in qrels.items()}


def scored_lists(ranker: str, year: int, cache: Path) -> tuple[list[RankedList], dict, float]:
    """Ranked lists for one year, from the cache or by running the ranker once."""
    queries, qrels = load_year(year)
    path = cache / f"{ranker}-dl{year}.json"
    seconds = 0.0
    if path.exists():
        scores = json.loads(path.read_text())
    else:
        start = time.perf_counter()
        if ranker == "bm25-first-stage":
            scores = {q.id: [float(c.metadata["bm25_score"]) for c in q.candidates] for q in queries}
        else:
            import surerank

            ranked = surerank.Reranker(ranker).rank_many(queries)
            scores = {r.query.id: [0.0] * len(r.items) for r in ranked}
            for r in ranked:
                for item in r.items:
                    scores[r.query.id][item.index] = item.score
        seconds = time.perf_counter() - start
        cache.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(scores))
    lists = [RankedList.from_scores(q, scores[q.id], ranker=ranker) for q in queries]
    return lists, qrels, seconds


def labelled(lists: list[RankedList], qrels: dict) -> list[LabelledList]:
    from surerank.trust.labels import label_lists

    return label_lists(lists, qrels, REL)


def input_order_scores(ranked: RankedList) -> list[float]:
    """Scores by candidate position (what from_scores takes), not by rank."""
    scores = [0.0] * len(ranked.items)
    for item in ranked.items:
        scores[item.index] = item.score
    return scores


def ndcg10(lists: list[RankedList], qrels: dict) -> np.ndarray:
    return np.array([ndcg_from_qrels(r.ids, qrels[r.query.id], 10) for r in lists])


# ------------------------------------------------------------------------------------------ sections


def section_calibration(data: dict, out: dict) -> None:
    print("\n## 1. Calibration: fit on one year, test on the other (relevant = grade >= 2, unjudged = 0)")
    print(f"{'fit -> test':<12}{'map':<13}{'ECE':>8}{'Brier':>8}{'logloss':>9}{'mean p':>8}{'base':>7}"
          f"{'nDCG@10 before':>16}{'after':>8}")
    for fit_year, test_year in ((20, 19), (19, 20)):
        fit_lists, fit_qrels = data[fit_year]
        test_lists, test_qrels = data[test_year]
        s_fit, y_fit = calibration_pairs(labelled(fit_lists, fit_qrels))
        s_test, y_test = calibration_pairs(labelled(test_lists, test_qrels))
        before_ndcg = ndcg10(test_lists, test_qrels).mean()
        rows = [("raw score", np.clip(s_test, 0, 1))]
        for method in CALIBRATORS:
            cal = fit_calibrator(method, s_fit, y_fit)
            applied = [RankedList.from_scores(r.query, input_order_scores(r), ranker=r.ranker)
                       for r in test_lists]
            cal.apply(applied)
            assert [r.ids for r in applied] == [r.ids for r in test_lists]  # ranking unchanged
            after_ndcg = ndcg10(applied, test_qrels).mean()
            rows.append((method, cal.predict(s_test), after_ndcg))
        for row in rows:
            rep = calibration_report(row[1], y_test)
            out.setdefault("reliability", {})[f"DL{fit_year}->DL{test_year} {row[0]}"] = {
                "bins": reliability_bins(row[1], y_test), "ece": rep["ece"], "brier": rep["brier"]}
            after = f"{row[2]:.4f}" if len(row) > 2 else "-"
            print(f"DL{fit_year}->DL{test_year}  {row[0]:<13}{rep['ece']:>8.4f}{rep['brier']:>8.4f}"
                  f"{rep['log_loss']:>9.4f}{rep['mean_probability']:>8.3f}{rep['base_rate']:>7.3f}"
                  f"{before_ndcg:>16.4f}{after:>8}")


def section_abstention(data: dict, splits: int, rng: np.random.Generator, k: int, out: dict) -> None:
    lists = data[19][0] + data[20][0]
    qrels = {**data[19][1], **data[20][1]}
    metric = ndcg10(lists, qrels)
    scores = [np.array(r.scores) for r in lists]
    n = len(lists)
    print(f"\n## 2. Abstention: {splits} random 50/50 splits of DL19+DL20 ({n} queries), metric nDCG@10, "
          f"K={k}; u_* fitted on one half, nAUC on the other")
    results: dict[str, list[float]] = defaultdict(list)
    for _ in range(splits):
        perm = rng.permutation(n)
        fit_idx, test_idx = perm[: n // 2], perm[n // 2:]
        fit_s, test_s = [scores[i] for i in fit_idx], [scores[i] for i in test_idx]
        test_m = metric[test_idx]
        for name in ("max", "std", "gap"):
            results[name].append(nauc(reference_free(test_s, name, k), test_m))
        lin = LinearConfidence(k=k, alpha=1.0).fit(fit_s, metric[fit_idx])
        results["u_lin"].append(nauc(lin.predict(test_s), test_m))
        log = LogisticConfidence(k=k, alpha=1.0).fit(fit_s, metric[fit_idx])
        results["u_log"].append(nauc(log.predict(test_s), test_m))
    for name, values in results.items():
        v = np.array(values)
        print(f"  {name:<6} nAUC mean {v.mean():+.3f}  sd {v.std():.3f}  "
              f"(MC error {v.std() / np.sqrt(v.size):.3f})")
    # one curve per confidence for the report: u_lin fitted on DL20, all confidences evaluated on DL19
    n19 = len(data[19][0])
    lin = LinearConfidence(k=k, alpha=1.0).fit(scores[n19:], metric[n19:])
    confs = {name: reference_free(scores[:n19], name, k) for name in ("max", "std", "gap")}
    confs["u_lin"] = lin.predict(scores[:n19])
    curves = {}
    for name, conf in confs.items():
        coverage, quality = coverage_curve(conf, metric[:n19])
        curves[name] = {"coverage": coverage.tolist(), "nDCG@10": quality.tolist()}
    out["risk_coverage"] = curves
    out["nauc"] = {name: float(np.mean(v)) for name, v in results.items()}
    diff = np.array(results["u_lin"]) - np.array(results["max"])
    print(f"  u_lin - max: mean {diff.mean():+.3f}, u_lin better on {np.mean(diff > 0):.0%} of splits")


def section_crc(data: dict, splits: int, rng: np.random.Generator, delta: float, out: dict) -> None:
    lists = data[19][0] + data[20][0]
    qrels = {**data[19][1], **data[20][1]}
    lab_all = labelled(lists, qrels)
    usable = [lab for lab in lab_all if lab.n_relevant_retrieved > 0]  # no_relevant="skip"
    n = len(usable)
    k_grid = np.arange(0, 101)
    loss_k = topk_losses(usable, k_grid, "candidates")
    all_scores = np.concatenate([lab.scores for lab in usable])
    t_grid = np.r_[np.quantile(all_scores, np.linspace(1, 0, 1001)), -np.inf]  # fixed grid, keep-more order
    loss_t = threshold_losses(usable, t_grid, "candidates", use="score", k_min=0)
    kept_t = np.array([[int(np.sum(lab.scores >= t)) for t in t_grid] for lab in usable])
    pooled_miss_by_k = loss_k.mean(axis=0)
    judged = topk_losses(lab_all, [100], "judged").mean()
    print(f"\n## 3. Risk-controlled cutoffs: {splits} random calibration/test splits (50/50) of the {n} "
          f"DL19+DL20 queries with a relevant passage among the top 100 ({len(lab_all) - n} without are "
          f"skipped); risk = miss rate of relevant (grade >= 2) candidates.")
    print(f"  (end to end, even keeping all 100 candidates misses {judged:.1%} of the judged relevant "
          f"passages: the first stage never retrieved them, so scope='judged' with alpha <= 0.3 "
          f"cannot be met and the library warns)")
    print(f"{'method':<16}{'alpha':>6}{'mean miss':>11}{'MC err':>8}{'mean kept':>11}"
          f"{'fixed k same miss':>19}{'P(risk>alpha) test':>20}{'pop.':>7}")
    for alpha in (0.1, 0.2, 0.3):
        for name, losses, kept_of in (("CRC top-k", loss_k, None), ("CRC threshold", loss_t, kept_t),
                                      ("LTT top-k", loss_k, None), ("LTT threshold", loss_t, kept_t)):
            test_miss, kept, over, over_pop = [], [], [], []
            for _ in range(splits):
                perm = rng.permutation(n)
                cal, test = perm[: n // 2], perm[n // 2:]
                if name.startswith("CRC"):
                    j = crc_index(losses[cal], alpha)
                else:
                    j = ltt_index(losses[cal], alpha, delta, "fixed_sequence")
                j = losses.shape[1] - 1 if j is None else j
                risk = losses[test, j].mean()
                test_miss.append(risk)
                over.append(risk > alpha)
                over_pop.append(losses[:, j].mean() > alpha)
                kept.append(k_grid[j] if kept_of is None else kept_of[test, j].mean())
            miss = float(np.mean(test_miss))
            fixed_k = int(k_grid[np.flatnonzero(pooled_miss_by_k <= miss + 1e-12)[0]])
            out.setdefault("rows", []).append({
                "method": name, "alpha": alpha, "mean_miss": miss,
                "mc_error": float(np.std(test_miss) / np.sqrt(splits)), "mean_kept": float(np.mean(kept)),
                "fixed_k_same_miss": fixed_k,
                "share_over_alpha_test": float(np.mean(over)) if name.startswith("LTT") else None,
                "share_over_alpha_population": float(np.mean(over_pop)) if name.startswith("LTT") else None})
            print(f"{name:<16}{alpha:>6.1f}{miss:>11.4f}{np.std(test_miss) / np.sqrt(splits):>8.4f}"
                  f"{np.mean(kept):>11.1f}{fixed_k:>19d}"
                  f"{np.mean(over) if name.startswith('LTT') else float('nan'):>20.3f}"
                  f"{np.mean(over_pop) if name.startswith('LTT') else float('nan'):>7.3f}")
    print(f"  LTT: delta={delta}, Hoeffding-Bentkus p-values, fixed-sequence testing; 'test' = risk on the "
          f"test half, 'pop.' = risk on all {n} queries (the finite population the splits are drawn from)")


def section_adaptive(data: dict, out: dict) -> None:
    print("\n## 4. Adaptive cutoffs (k_min=1, k_max=100); probabilities from Platt fitted on the other year")
    print(f"{'year':<6}{'cutoff':<26}{'mean k':>8}{'recall':>8}{'precision':>11}"
          f"{'| fixed k':>9}{'recall':>8}{'precision':>11}  (fixed k = round(mean k))")
    for year, other in ((19, 20), (20, 19)):
        lists, qrels = data[year]
        cal = fit_calibrator("platt", *calibration_pairs(labelled(*data[other])))
        cal.apply(lists)
        lab = labelled(lists, qrels)

        def recall_precision(ks: list[int], lab: list[LabelledList] = lab) -> tuple[float, float]:
            rel = [x.binary_labels() for x in lab]
            total = np.array([r.sum() for r in rel])
            kept_rel = np.array([r[:k].sum() for r, k in zip(rel, ks, strict=True)])
            mask = total > 0
            recall = float(np.mean(kept_rel[mask] / total[mask]))
            precision = float(np.mean([kr / k if k else 0.0 for kr, k in zip(kept_rel, ks, strict=True)]))
            return recall, precision

        def row(label: str, ks: list[int], lab: list[LabelledList] = lab, year: int = year) -> None:
            recall, precision = recall_precision(ks)
            same = max(1, round(float(np.mean(ks))))  # a fixed k with the same mean budget
            fixed_recall, fixed_precision = recall_precision([same] * len(lab))
            adaptive = not label.startswith("fixed")
            tail = f"{same:>9d}{fixed_recall:>8.3f}{fixed_precision:>11.3f}" if adaptive else ""
            print(f"DL{year:<4}{label:<26}{np.mean(ks):>8.1f}{recall:>8.3f}{precision:>11.3f}{tail}")
            out.setdefault("rows", []).append({
                "dataset": f"DL{year}", "cutoff": label, "mean_k": float(np.mean(ks)), "recall": recall,
                "precision": precision, "fixed_k_same_budget": same if adaptive else None,
                "fixed_recall": fixed_recall if adaptive else None,
                "fixed_precision": fixed_precision if adaptive else None})

        by_qid = {r.query.id: r for r in lists}
        for cutoff in (AdaptiveCutoff("gap"), AdaptiveCutoff("zscore", z=1.0),
                       AdaptiveCutoff("zscore", z=2.0), AdaptiveCutoff("elbow"),
                       AdaptiveCutoff("mass", mass=0.5), AdaptiveCutoff("mass", mass=0.8),
                       AdaptiveCutoff("threshold", threshold=0.5),
                       AdaptiveCutoff("threshold", threshold=0.3)):
            cutoff.apply(lists)
            ks = [by_qid[x.qid].info["cutoff"]["kept"] for x in lab]
            extra = {k: v for k, v in cutoff.params().items() if k not in ("k_min", "k_max")}
            row(f"{cutoff.method} {extra}".replace("{", "").replace("}", "").replace("'", ""), ks)
        for k in (1, 3, 5, 10, 20, 50):
            row(f"fixed k={k}", [k] * len(lab))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranker", default="embedding")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/surerank-trust-cache"))
    parser.add_argument("--sections", default="calibration,abstention,crc,adaptive")
    parser.add_argument("--splits", type=int, default=1000)
    parser.add_argument("--abstention-splits", type=int, default=500)
    parser.add_argument("--k", type=int, default=10, help="top-K scores used by abstention confidences")
    parser.add_argument("--delta", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures (for `surerank report --trust`)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rng = np.random.default_rng(args.seed)
    data = {}
    for year in (19, 20):
        lists, qrels, seconds = scored_lists(args.ranker, year, args.cache)
        data[year] = (lists, qrels)
        print(f"DL{year}: {len(lists)} queries, ranker {args.ranker}, "
              f"nDCG@10 {ndcg10(lists, qrels).mean():.4f}"
              + (f" (scored in {seconds:.1f}s)" if seconds else " (cached scores)"))
    sections = args.sections.split(",")
    parts: dict = {"calibration": {}, "abstention": {}, "conformal": {}, "adaptive": {}}
    if "calibration" in sections:
        section_calibration(data, parts["calibration"])
    if "abstention" in sections:
        section_abstention(data, args.abstention_splits, rng, args.k, parts["abstention"])
    if "crc" in sections:
        section_crc(data, args.splits, rng, args.delta, parts["conformal"])
    if "adaptive" in sections:
        section_adaptive(data, parts["adaptive"])
    if args.json:
        document = trust_figures(parts, args.ranker)
        TrustFigures.from_dict(document, str(args.json))  # exactly what `surerank report --trust` reads
        args.json.write_text(json.dumps(document, indent=1, allow_nan=False))
        print(f"\nwrote {args.json}")


def trust_figures(parts: dict, ranker: str) -> dict:
    """The sections' figures as a ``surerank.trust-figures`` document (what ``surerank report --trust`` reads)."""
    figures = TrustFigures()
    for label, rel in parts["calibration"].get("reliability", {}).items():
        figures.add_bins(label, rel["bins"], {"ece": rel["ece"], "brier": rel["brier"]})
    for name, curve in parts["abstention"].get("risk_coverage", {}).items():
        figures.add_curve(f"{name} on DL19 (u_lin fitted on DL20)", "nDCG@10", curve["coverage"], curve["nDCG@10"])
    if parts["conformal"].get("rows"):
        figures.add_rows("conformal cutoffs over random splits", parts["conformal"]["rows"], x="alpha")
    if parts["adaptive"].get("rows"):
        figures.add_rows("adaptive cutoffs beside fixed k", parts["adaptive"]["rows"])
    # the nAUC means are recorded beside the figures (the report draws the curves, not this table)
    return {**figures.to_dict(), "ranker": ranker, "nauc": parts["abstention"].get("nauc", {})}

if __name__ == "__main__":
    main()
