"""IR metrics with trec_eval conventions, computed by ir_measures (pytrec_eval underneath).

Conventions: nDCG uses graded gains (gain = grade, log2 discount, ideal DCG over all judged documents
of the query); binary measures (MAP, MRR, Recall, P) count ``grade >= rel_level`` as relevant
(TREC DL: 2).  As in trec_eval, only queries present in both the run and the judgments are averaged.

Ties: trec_eval (and so :func:`evaluate`) sorts a run by score and orders documents with equal scores
by docid, descending; it never reads the rank column.  A ranker's own order between tied documents is
then lost, and the figure can differ from the order the ranker returned.  :func:`evaluate_ranking`
evaluates an explicit order (first = best) instead, and :func:`find_ties` says how many ties a run has.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from surerank.errors import InputError

if TYPE_CHECKING:
    from surerank.types import RankedList

logger = logging.getLogger(__name__)

DEFAULT_MEASURES = ("nDCG@10", "MAP", "MRR@10", "R@100")
_NAME = re.compile(r"^(ndcg|map|ap|mrr|rr|recall|r|p)(?:@(\d+))?$", re.IGNORECASE)


def to_ir_measure(name: str, rel_level: int = 2):
    """Map a readable measure name (``nDCG@10``, ``MAP``, ``MRR@10``, ``R@100``, ``P@10``) to ir_measures."""
    import ir_measures

    match = _NAME.match(name.strip())
    if not match:
        raise InputError(f"unknown measure {name!r}; use nDCG@k, MAP, MRR@k, R@k or P@k")
    kind, cutoff = match.group(1).lower(), match.group(2)
    base = {
        "ndcg": ir_measures.nDCG,
        "map": ir_measures.AP(rel=rel_level),
        "ap": ir_measures.AP(rel=rel_level),
        "mrr": ir_measures.RR(rel=rel_level),
        "rr": ir_measures.RR(rel=rel_level),
        "recall": ir_measures.R(rel=rel_level),
        "r": ir_measures.R(rel=rel_level),
        "p": ir_measures.P(rel=rel_level),
    }[kind]
    if cutoff is None and kind in ("recall", "r", "p"):
        raise InputError(f"measure {name!r} needs a cutoff, e.g. {name}@100")
    return base @ int(cutoff) if cutoff else base


@dataclass(frozen=True)
class Ties:
    """Documents sharing a score within one query's ranking.

    trec_eval orders them by docid (descending), so with ties its figure need not be the figure of the
    order a ranker returned.
    """

    queries: int  # queries looked at
    queries_with_ties: int  # queries with at least one group of tied scores
    groups: int  # groups of >= 2 documents with one score, over all queries
    documents: int  # documents in those groups

    def __bool__(self) -> bool:
        return self.groups > 0

    def describe(self) -> str:
        """One line for a command's output, e.g. ``3 of 43 queries have tied scores (5 groups, 11 docs)``."""
        return (f"{self.queries_with_ties} of {self.queries} queries have tied scores "
                f"({self.groups} groups, {self.documents} documents)")


def find_ties(run: Mapping[str, Mapping[str, float]]) -> Ties:
    """Count groups of equal scores within each query of ``run`` (exact float equality)."""
    from collections import Counter

    with_ties = groups = documents = 0
    for docs in run.values():
        sizes = [n for n in Counter(float(v) for v in docs.values()).values() if n > 1]
        with_ties += bool(sizes)
        groups += len(sizes)
        documents += sum(sizes)
    return Ties(queries=len(run), queries_with_ties=with_ties, groups=groups, documents=documents)


@dataclass
class EvalResult:
    """Mean of each measure over the evaluated queries, and the value of each query.

    ``ties`` counts the tied scores among the evaluated queries; ``order`` says how they were ordered:
    ``"trec_eval"`` (by docid, as trec_eval does) or ``"rank"`` (the order the ranker returned).
    """

    aggregate: dict[str, float]
    per_query: dict[str, dict[str, float]]
    queries_evaluated: int
    queries_without_judgments: list[str] = field(default_factory=list)
    ties: Ties = field(default_factory=lambda: Ties(0, 0, 0, 0))
    order: str = "trec_eval"

    def values(self, measure: str) -> dict[str, float]:
        return {qid: values[measure] for qid, values in self.per_query.items()}


def evaluate(
    run: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    measures: Sequence[str] = DEFAULT_MEASURES,
    rel_level: int = 2,
) -> EvalResult:
    """Evaluate a run ``{qid: {docid: score}}`` against judgments ``{qid: {docid: grade}}``.

    As trec_eval: documents are sorted by score, ties by docid descending (``result.ties`` counts them);
    use :func:`evaluate_ranking` for the order a ranker returned.
    """
    import ir_measures

    judged = [qid for qid in run if qid in qrels]
    if run and not judged:
        raise InputError(
            f"none of the {len(run)} query ids in the run appear in the judgments "
            f"(run ids look like {sorted(run)[:3]}, judgment ids like {sorted(qrels)[:3]}); "
            "are the run and the qrels from the same collection?"
        )
    missing = [qid for qid in run if qid not in qrels]
    if missing:
        logger.warning("%d run queries have no judgments and are not evaluated: %s", len(missing), missing[:5])
    by_name = {name: to_ir_measure(name, rel_level) for name in measures}
    by_measure = {str(m): name for name, m in by_name.items()}
    per_query: dict[str, dict[str, float]] = {qid: {} for qid in judged}
    run_judged = {qid: dict(run[qid]) for qid in judged}
    qrels_dict = {qid: dict(qrels[qid]) for qid in judged}  # ir_measures also yields qrels-only queries
    for metric in ir_measures.iter_calc(list(by_name.values()), qrels_dict, run_judged):
        per_query[metric.query_id][by_measure[str(metric.measure)]] = float(metric.value)
    for qid in judged:  # queries with an empty ranking score 0 on every measure, as in trec_eval -c
        for name in measures:
            per_query[qid].setdefault(name, 0.0)
    aggregate = {
        name: float(np.mean([per_query[q][name] for q in judged])) if judged else math.nan for name in measures
    }
    return EvalResult(aggregate=aggregate, per_query=per_query, queries_evaluated=len(judged),
                      queries_without_judgments=missing, ties=find_ties(run_judged))


def evaluate_ranking(
    rankings: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, int]],
    measures: Sequence[str] = DEFAULT_MEASURES,
    rel_level: int = 2,
    scores: Mapping[str, Mapping[str, float]] | None = None,
) -> EvalResult:
    """Evaluate explicit orders ``{qid: [docid, ...]}`` (first = best), whatever their scores.

    The orders are turned into strictly decreasing scores, so no tie is left for trec_eval's docid
    rule.  ``scores`` (optional, ``{qid: {docid: score}}``) are only counted for ``result.ties``.
    """
    for qid, ids in rankings.items():
        if len(set(ids)) != len(ids):
            raise InputError(f"query {qid!r}: a document appears twice in the ranking")
    result = evaluate(run_from_order(rankings), qrels, measures, rel_level)
    judged = {qid: scores[qid] for qid in (scores or {}) if qid in qrels and qid in rankings}
    result.ties = find_ties(judged)
    result.order = "rank"
    return result


def evaluate_lists(
    lists: Iterable[RankedList],
    qrels: Mapping[str, Mapping[str, int]],
    measures: Sequence[str] = DEFAULT_MEASURES,
    rel_level: int = 2,
) -> EvalResult:
    """Evaluate ranked lists in the order they were returned (``item.rank``), ties in their scores counted."""
    lists = list(lists)
    rankings = {r.query.id: [item.id for item in sorted(r.items, key=lambda item: item.rank)] for r in lists}
    scores = {r.query.id: {item.id: float(item.score) for item in r.items} for r in lists}
    return evaluate_ranking(rankings, qrels, measures, rel_level, scores=scores)


@dataclass
class PairedTest:
    measure: str
    mean_difference: float
    p_value: float
    queries: int
    test: str


def paired_test(
    per_query: Mapping[str, float], baseline: Mapping[str, float], measure: str = "",
    test: str = "t-test", permutations: int = 10_000, seed: int = 0,
) -> PairedTest:
    """Two-sided paired test over the queries both runs were evaluated on.

    ``t-test`` is Student's paired t-test (what trec_eval users report); ``permutation`` is a
    sign-flip randomisation test, free of the normality assumption.
    """
    common = sorted(set(per_query) & set(baseline))
    if len(common) < 2:
        raise InputError(f"a paired test needs at least 2 common queries, got {len(common)}")
    a = np.array([per_query[q] for q in common])
    b = np.array([baseline[q] for q in common])
    diff = a - b
    if test == "t-test":
        from scipy.stats import ttest_rel

        p = 1.0 if np.allclose(diff, 0) else float(ttest_rel(a, b).pvalue)
    elif test == "permutation":
        rng = np.random.default_rng(seed)
        signs = rng.choice([-1.0, 1.0], size=(permutations, len(diff)))
        observed = abs(diff.mean())
        p = float((np.abs((signs * diff).mean(axis=1)) >= observed - 1e-12).sum() + 1) / (permutations + 1)
    else:
        raise InputError(f"unknown test {test!r}; use 't-test' or 'permutation'")
    return PairedTest(measure=measure, mean_difference=float(diff.mean()), p_value=p, queries=len(common), test=test)


def run_from_order(ids_per_query: Mapping[str, Iterable[str]]) -> dict[str, dict[str, float]]:
    """A run whose scores encode a given order (first = highest), for orders without scores."""
    run = {}
    for qid, ids in ids_per_query.items():
        ids = list(ids)
        run[qid] = {doc: float(len(ids) - i) for i, doc in enumerate(ids)}
    return run
