"""IR metrics with trec_eval conventions, computed by ir_measures (pytrec_eval underneath).

Conventions: nDCG uses graded gains (gain = grade, log2 discount, ideal DCG over all judged documents
of the query); binary measures (MAP, MRR, Recall, P) count ``grade >= rel_level`` as relevant
(TREC DL: 2).  As in trec_eval, only queries present in both the run and the judgments are averaged.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from surerank.errors import InputError

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


@dataclass
class EvalResult:
    """Mean of each measure over the evaluated queries, and the value of each query."""

    aggregate: dict[str, float]
    per_query: dict[str, dict[str, float]]
    queries_evaluated: int
    queries_without_judgments: list[str] = field(default_factory=list)

    def values(self, measure: str) -> dict[str, float]:
        return {qid: values[measure] for qid, values in self.per_query.items()}


def evaluate(
    run: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    measures: Sequence[str] = DEFAULT_MEASURES,
    rel_level: int = 2,
) -> EvalResult:
    """Evaluate a run ``{qid: {docid: score}}`` against judgments ``{qid: {docid: grade}}``."""
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
                      queries_without_judgments=missing)


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
