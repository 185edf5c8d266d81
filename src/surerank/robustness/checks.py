"""The robustness checks: each reranks perturbed copies of judged lists and measures what changed.

Every check calls only ``rank_many`` and reads the returned order, so it works for score-based and
comparison-based rankers alike; every perturbation is a deterministic function of the seeds in
:class:`~surerank.robustness.config.RobustnessConfig`.  Each returns its typed figures
(:mod:`surerank.robustness.result`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from surerank.eval.metrics import evaluate
from surerank.registry import create
from surerank.robustness.config import RobustnessConfig
from surerank.robustness.result import (
    MEASURE,
    CleanFigures,
    DepthFigures,
    DepthRow,
    OrderFigures,
    PositionFigures,
    Slice,
    TrapFigures,
    TypoExample,
    TypoFigures,
    TypoKind,
    TypoSeed,
)
from surerank.robustness.typos import make_typo, typo_rng
from surerank.types import Candidate, Query, RankedList

Qrels = Mapping[str, Mapping[str, int]]
Run = dict[str, dict[str, float]]


def ndcg_per_query(run: Run, qrels: Qrels, rel_level: int = 2) -> dict[str, float]:
    """nDCG@10 of every query of ``run`` (trec_eval convention, via surerank.eval.metrics)."""
    judged = {qid: qrels[qid] for qid in run if qid in qrels}  # only the queries this run covers
    result = evaluate(run, judged, measures=(MEASURE,), rel_level=rel_level)
    out = {qid: float(values[MEASURE]) for qid, values in result.per_query.items()}
    for qid in run:  # a query with no retrieved judged passage still counts, as 0
        out.setdefault(qid, 0.0)
    return out


def ranked_to_scores(ranked: RankedList, tail: Sequence[str] = ()) -> dict[str, float]:
    """The ranker's order as descending scores (so evaluation follows its order, not docid tie-breaks).

    ``tail`` are candidates the ranker did not see (beyond the reranking depth); they follow in order.
    """
    ids = ranked.ids + [t for t in tail if t not in set(ranked.ids)]
    n = len(ids)
    return {doc_id: float(n - i) for i, doc_id in enumerate(ids)}


def first_stage_order(query: Query) -> list[Candidate]:
    """Candidates in first-stage order (metadata ``first_stage_rank`` if every candidate has it)."""
    candidates = list(query.candidates)
    if candidates and all("first_stage_rank" in c.metadata for c in candidates):
        candidates.sort(key=lambda c: float(c.metadata["first_stage_rank"]))
    return candidates


def with_candidates(query: Query, candidates: Iterable[Candidate], suffix: str = "",
                    text: str | None = None) -> Query:
    return Query(text=query.text if text is None else text, candidates=tuple(candidates),
                 id=query.id + suffix, metadata=query.metadata)


def mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return float(np.mean(values)) if values else None


class Timer:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return round(time.perf_counter() - self.start, 3)


def rank_all(ranker: Any, queries: list[Query], progress: Callable[[str], None]) -> list[RankedList]:
    ranked = ranker.rank_many(queries)
    if len(ranked) != len(queries):
        raise RuntimeError(f"ranker returned {len(ranked)} lists for {len(queries)} queries")
    progress(f"ranked {len(queries)} lists")
    return ranked


@dataclass(frozen=True)
class Job:
    """One ranking to do: a query, how deep to rerank, and an optional replacement query text."""

    query: Query
    depth: int | None
    text: str | None = None


def run_jobs(ranker: Any, jobs: Sequence[Job], progress: Callable[[str], None]) -> list[dict[str, float]]:
    """All jobs in one ``rank_many`` call (a batching ranker encodes a repeated passage once).

    Each result is the scores of one job's query: the reranked head, then the first-stage tail.
    """
    batch, tails = [], []
    for j, job in enumerate(jobs):
        ordered = first_stage_order(job.query)
        head = ordered if job.depth is None else ordered[: job.depth]
        batch.append(with_candidates(job.query, head, f"#job{j}", job.text))
        tails.append([c.id for c in ordered])
    ranked = rank_all(ranker, batch, progress)
    return [ranked_to_scores(r, tail) for r, tail in zip(ranked, tails, strict=True)]


def clean_figures(per_query: Mapping[str, float], depth: int | None) -> CleanFigures:
    """The reference every other figure is compared with: nDCG@10 of the unperturbed lists."""
    return CleanFigures(ndcg=mean(per_query.values()), n_queries=len(per_query), depth=depth,
                        per_query=dict(per_query))


def text_groups(candidates: Sequence[Candidate]) -> dict[str, int]:
    """Candidate id → group number, one group per distinct text (numbered in first-seen order).

    Identical passages (DL21 has 593 groups of them) are one item for the order check: which copy a
    ranker puts first is a tie-break, not a change of its judgment.
    """
    numbers: dict[str, int] = {}
    return {c.id: numbers.setdefault(c.text, len(numbers)) for c in candidates}


def group_order(ids: Sequence[str], group: Mapping[str, int]) -> list[int]:
    """The order of the groups in a ranking: each group where its first copy is ranked."""
    return list(dict.fromkeys(group[i] for i in ids))


def order_check(ranker: Any, queries: list[Query], config: RobustnessConfig,
                progress: Callable[[str], None]) -> OrderFigures:
    """Rerank M shuffles of each list; Kendall tau to the unshuffled output and top-1 flip rate.

    Candidates with identical texts count as one item (see :func:`text_groups`): the orders compared
    are orders of distinct texts, so tie-breaks between copies of one passage are not order sensitivity.
    """
    from scipy.stats import kendalltau  # lazily: the CLI imports this module to build its help
    timer = Timer()
    depth = config.order_depth or config.depth
    rng = np.random.default_rng(config.seed)
    lists = [first_stage_order(q)[:depth] if depth else first_stage_order(q) for q in queries]
    batch = []
    for query, cands in zip(queries, lists, strict=True):
        batch.append(with_candidates(query, cands, "#ref"))
        for m in range(config.shuffles):
            batch.append(with_candidates(query, [cands[i] for i in rng.permutation(len(cands))], f"#s{m}"))
    ranked = rank_all(ranker, batch, progress)
    per_query: dict[str, dict[str, float]] = {}
    taus_all, flips_all = [], []
    duplicate_groups = duplicate_items = 0
    step = config.shuffles + 1
    for qi, (query, cands) in enumerate(zip(queries, lists, strict=True)):
        group = text_groups(cands)
        sizes = np.bincount(list(group.values())) if group else np.zeros(0, dtype=int)
        duplicate_groups += int((sizes > 1).sum())
        duplicate_items += int(sizes[sizes > 1].sum())
        reference = group_order(ranked[qi * step].ids, group)
        ref_rank = {g: r for r, g in enumerate(reference)}
        taus, flips = [], []
        for shuffled in ranked[qi * step + 1:(qi + 1) * step]:
            order = group_order(shuffled.ids, group)
            if len(order) > 1:
                tau = kendalltau([ref_rank[g] for g in order], list(range(len(order)))).statistic
                taus.append(1.0 if np.isnan(tau) else float(tau))
            flips.append(float(order[:1] != reference[:1]))
        per_query[query.id] = {"kendall_tau": mean(taus) if taus else 1.0, "top1_flip_rate": mean(flips)}
        taus_all.extend(taus)
        flips_all.extend(flips)
    return OrderFigures(
        shuffles=config.shuffles, depth=depth, duplicate_groups=duplicate_groups, duplicate_items=duplicate_items,
        kendall_tau_mean=mean(taus_all), kendall_tau_min=float(min(taus_all)) if taus_all else None,
        top1_flip_rate=mean(flips_all), n_queries=len(queries), per_query=per_query, seconds=timer.seconds(),
    )


def judged_grade(qrels: Qrels, qid: str, doc_id: str) -> int | None:
    value = qrels.get(qid, {}).get(doc_id)
    return None if value is None else int(value)


def position_check(ranker: Any, queries: list[Query], qrels: Qrels, config: RobustnessConfig,
                   progress: Callable[[str], None]) -> PositionFigures:
    """Top-1 accuracy with one relevant passage placed at each position among judged non-relevant ones.

    Per query the positive is its best-graded relevant candidate (first-stage order breaks ties) and the
    negatives are its highest first-stage judged grade-0 candidates: hard negatives, known non-relevant.
    A ranker without position bias has the same accuracy at every position.
    """
    timer = Timer()
    size = config.position_list_size
    batch, positives, used, skipped = [], [], [], []
    for query in queries:
        ordered = first_stage_order(query)
        graded = [(c, judged_grade(qrels, query.id, c.id)) for c in ordered]
        relevant = [(c, g) for c, g in graded if g is not None and g >= config.rel_level]
        negatives = [c for c, g in graded if g == 0][: size - 1]
        if not relevant or len(negatives) < size - 1:
            skipped.append(query.id)
            continue
        positive = max(relevant, key=lambda cg: cg[1])[0]
        for p in range(size):
            batch.append(with_candidates(query, [*negatives[:p], positive, *negatives[p:]], f"#p{p}"))
        positives.append(positive.id)
        used.append(query.id)
    if not batch:
        return PositionFigures(list_size=size, n_queries=0, skipped=skipped, seconds=timer.seconds())
    ranked = rank_all(ranker, batch, progress)
    hits = np.zeros((len(used), size))
    for qi, positive in enumerate(positives):
        for p in range(size):
            hits[qi, p] = float(ranked[qi * size + p].ids[:1] == [positive])
    accuracy = hits.mean(axis=0)
    return PositionFigures(
        list_size=size, positions=list(range(1, size + 1)), top1_accuracy=[float(a) for a in accuracy],
        spread=float(accuracy.max() - accuracy.min()), n_queries=len(used), skipped=skipped, seconds=timer.seconds(),
    )


def typo_jobs(queries: list[Query], config: RobustnessConfig, depth: int | None
              ) -> tuple[list[Job], list[tuple[str, int, str]], dict[str, set[str]], list[TypoExample]]:
    """The typo check's rankings: (jobs, their (kind, seed, qid) keys, queries skipped per kind, examples)."""
    jobs: list[Job] = []
    examples: list[TypoExample] = []
    keys: list[tuple[str, int, str]] = []
    skipped: dict[str, set[str]] = {kind: set() for kind in config.typo_kinds}
    for kind in config.typo_kinds:
        for seed in config.typo_seeds:
            for query in queries:
                typo = make_typo(query.text, kind, typo_rng(seed, kind, query.id))
                if typo is None:
                    skipped[kind].add(query.id)
                    continue
                jobs.append(Job(query, depth, typo.text))
                keys.append((kind, seed, query.id))
                if seed == config.typo_seeds[0] and sum(e.kind == kind for e in examples) < 3:
                    examples.append(TypoExample(kind=kind, seed=seed, qid=query.id, query=query.text,
                                                typo=typo.text))
    return jobs, keys, skipped, examples


def typo_kind(runs: Mapping[int, Run], qrels: Qrels, clean: Mapping[str, float], skipped: set[str],
              rel_level: int) -> TypoKind:
    """One kind's figures from its runs per seed, against the clean nDCG@10 at the same depth."""
    per_seed: list[TypoSeed] = []
    per_query_delta: dict[str, list[float]] = {}
    perturbed_ids: set[str] = set()
    for seed, run in runs.items():
        values = ndcg_per_query(run, qrels, rel_level)
        deltas = {qid: values[qid] - clean[qid] for qid in values}
        for qid, d in deltas.items():
            per_query_delta.setdefault(qid, []).append(d)
        perturbed_ids.update(values)
        per_seed.append(TypoSeed(seed=seed, ndcg=mean(values.values()), clean=mean(clean[q] for q in values),
                                 delta=mean(deltas.values()), n_queries=len(values)))
    deltas_mean = {q: float(np.mean(v)) for q, v in per_query_delta.items()}
    return TypoKind(
        ndcg=mean(s.ndcg for s in per_seed), clean=mean(s.clean for s in per_seed),
        delta=mean(s.delta for s in per_seed),
        delta_std_over_seeds=float(np.std([s.delta for s in per_seed])) if per_seed else None,
        queries_hurt=sum(d < -1e-9 for d in deltas_mean.values()),
        queries_helped=sum(d > 1e-9 for d in deltas_mean.values()),
        n_queries=len(perturbed_ids), skipped=sorted(skipped), per_seed=per_seed,
    )


def typo_check(ranker: Any, queries: list[Query], qrels: Qrels, clean: Mapping[str, float],
               config: RobustnessConfig, progress: Callable[[str], None]) -> TypoFigures:
    """nDCG@10 after one typo in one content word, per typo kind, averaged over seeds.

    ``clean`` is the ranker's nDCG@10 at ``config.depth``; at another ``typo_depth`` the clean
    reference is rerun at that depth, so a delta only ever compares equal depths.
    """
    timer = Timer()
    depth = config.typo_depth or config.depth
    jobs, keys, skipped, examples = typo_jobs(queries, config, depth)
    if depth != config.depth:
        jobs = [Job(q, depth) for q in queries] + jobs
    scored = run_jobs(ranker, jobs, progress) if jobs else []
    if depth != config.depth:
        clean_run = {q.id: scores for q, scores in zip(queries, scored[: len(queries)], strict=True)}
        clean = ndcg_per_query(clean_run, qrels, config.rel_level)
        scored = scored[len(queries):]
    runs: dict[str, dict[int, Run]] = {kind: {} for kind in config.typo_kinds}
    for (kind, seed, qid), scores in zip(keys, scored, strict=True):
        runs[kind].setdefault(seed, {})[qid] = scores
    kinds = {kind: typo_kind({seed: runs[kind][seed] for seed in config.typo_seeds if seed in runs[kind]},
                             qrels, clean, skipped[kind], config.rel_level) for kind in config.typo_kinds}
    all_deltas = [k.delta for k in kinds.values() if k.delta is not None]
    return TypoFigures(seeds=list(config.typo_seeds), depth=depth, kinds=kinds, delta_mean=mean(all_deltas),
                       examples=examples, seconds=timer.seconds())


def bm25_scores(queries: list[Query], bm25: Any | None) -> dict[str, dict[str, float]]:
    """First-stage BM25 scores from candidate metadata, or computed over the candidate list when absent."""
    scores: dict[str, dict[str, float]] = {}
    missing = []
    for query in queries:
        if query.candidates and all("bm25_score" in c.metadata for c in query.candidates):
            scores[query.id] = {c.id: float(c.metadata["bm25_score"]) for c in query.candidates}
        else:
            missing.append(query)
    if missing:
        if bm25 is None:
            bm25 = create("bm25")
        for query, ranked in zip(missing, bm25.rank_many(missing), strict=True):
            scores[query.id] = {item.id: float(item.score) for item in ranked}
    return scores


def trap_check(queries: list[Query], qrels: Qrels, clean: Mapping[str, float], config: RobustnessConfig,
               bm25: Any | None = None) -> TrapFigures:
    """nDCG@10 on queries whose best judged non-relevant (grade 0) passage out-scores every relevant one
    under BM25: the lexical trap.  The ranker's figure beside BM25's, on the slice and on the rest."""
    timer = Timer()
    lexical = bm25_scores(queries, bm25)
    trap, rest, margins = [], [], {}
    for query in queries:
        by_doc = lexical[query.id]
        graded = {d: judged_grade(qrels, query.id, d) for d in by_doc}
        relevant = [by_doc[d] for d, g in graded.items() if g is not None and g >= config.rel_level]
        non_relevant = [by_doc[d] for d, g in graded.items() if g == 0]
        if not relevant or not non_relevant:
            continue
        margin = max(non_relevant) - max(relevant)
        margins[query.id] = float(margin)
        (trap if margin > 0 else rest).append(query.id)
    bm25_run = {qid: dict(lexical[qid]) for qid in trap + rest}
    bm25_ndcg = ndcg_per_query(bm25_run, qrels, config.rel_level) if bm25_run else {}
    return TrapFigures(
        definition="best judged grade-0 candidate has a higher BM25 score than the best relevant one "
                   f"(grade >= {config.rel_level})",
        n_queries=len(trap), n_rest=len(rest), qids=trap,
        ranker=Slice(trap=mean(clean[q] for q in trap), rest=mean(clean[q] for q in rest)),
        bm25=Slice(trap=mean(bm25_ndcg[q] for q in trap), rest=mean(bm25_ndcg[q] for q in rest)),
        bm25_margin=margins, seconds=timer.seconds(),
    )


def depth_check(ranker: Any, queries: list[Query], qrels: Qrels, config: RobustnessConfig,
                progress: Callable[[str], None], known: Mapping[int | None, Mapping[str, float]]
                ) -> DepthFigures:
    """nDCG@10 when reranking the first-stage top k, for each k in ``depths``."""
    timer = Timer()
    longest = max(len(q.candidates) for q in queries)
    wanted = sorted(set(config.depths))
    todo = sorted({min(k, longest) for k in wanted} - set(known))
    jobs = [Job(q, k) for k in todo for q in queries]
    scored = run_jobs(ranker, jobs, progress) if jobs else []
    by_depth: dict[int | None, Mapping[str, float]] = dict(known)
    for i, k in enumerate(todo):
        part = scored[i * len(queries):(i + 1) * len(queries)]
        by_depth[k] = ndcg_per_query({q.id: sc for q, sc in zip(queries, part, strict=True)}, qrels,
                                     config.rel_level)
    rows = []
    for k in wanted:
        effective = min(k, longest)
        rows.append(DepthRow(depth=k, ndcg=mean(by_depth[effective].values()),
                             capped_at=effective if effective < k else None))
    first_stage = {q.id: {c.id: float(len(q.candidates) - i) for i, c in enumerate(first_stage_order(q))}
                   for q in queries}
    first_stage_ndcg = ndcg_per_query(first_stage, qrels, config.rel_level)
    return DepthFigures(depths=rows, first_stage=mean(first_stage_ndcg.values()), seconds=timer.seconds())


__all__ = [
    "Job",
    "bm25_scores",
    "clean_figures",
    "depth_check",
    "first_stage_order",
    "group_order",
    "ndcg_per_query",
    "order_check",
    "position_check",
    "rank_all",
    "ranked_to_scores",
    "run_jobs",
    "text_groups",
    "trap_check",
    "typo_check",
    "with_candidates",
]
