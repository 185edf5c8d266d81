"""Training examples from first-stage lists: a seeded dev split, labels from a teacher or judgments, and hard
negatives mined from the lists with a margin that keeps likely false negatives out.

Everything here is plain Python (no torch): the columns returned are what sentence-transformers' losses take
(``datasets.Dataset.from_dict`` turns them into a dataset in :mod:`surerank.train.student`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import rankdata

from surerank.aggregate.fusion import normalise
from surerank.errors import InputError
from surerank.formats import Qrels
from surerank.scores import sigmoid
from surerank.types import Query

logger = logging.getLogger(__name__)

#: (student, loss) -> where its labels come from, and what the loss is
LOSSES: dict[tuple[str, str], tuple[str, str]] = {
    ("cross-encoder", "mse"): ("teacher", "pointwise MSE on the teacher's scores (CrossEncoder MSELoss)"),
    ("cross-encoder", "listnet"): ("teacher", "listwise ListNet on the teacher's scores (CrossEncoder ListNetLoss)"),
    ("cross-encoder", "ranknet"): ("teacher", "pairwise RankNet over every pair the teacher's ranking orders, labels "
                                              "n - rank (CrossEncoder RankNetLoss)"),
    ("cross-encoder", "bce-mix"): ("both", "pointwise BCE on soft labels: a judged pair's judgment (grade >= "
                                           "relevance_level), else the teacher's score as a sigmoid of its z-score "
                                           "within the list (CrossEncoder BinaryCrossEntropyLoss)"),
    ("cross-encoder", "bce"): ("judgments", "pointwise BCE on judged positives and mined negatives "
                                            "(CrossEncoder BinaryCrossEntropyLoss)"),
    ("bi-encoder", "kl"): ("teacher", "listwise KL to the teacher's score distribution (DistillKLDivLoss)"),
    ("bi-encoder", "margin-mse"): ("teacher", "MSE on teacher score margins of passage pairs (MarginMSELoss)"),
    ("bi-encoder", "embedding-mse"): ("teacher", "MSE between the student's vector of each training query and "
                                                 "passage and the teacher's, projected to the student's dimensions "
                                                 "(PCA) and turned to match the untrained student (orthogonal "
                                                 "Procrustes) (MSELoss); an embedding teacher only"),
    ("bi-encoder", "mnrl"): ("judgments", "in-batch and mined negatives for judged positives "
                                          "(MultipleNegativesRankingLoss)"),
}
#: the loss that learns the teacher's vectors, not its scores (its examples are texts, :mod:`.embedding_targets`)
EMBEDDING_LOSS = "embedding-mse"
DEFAULT_LOSS = {("cross-encoder", "teacher"): "mse", ("cross-encoder", "judgments"): "bce",
                ("bi-encoder", "teacher"): "kl", ("bi-encoder", "judgments"): "mnrl"}


@dataclass
class Mining:
    """What negative mining kept and dropped (the card records it: nothing is dropped silently)."""

    positives: int = 0
    negatives: int = 0
    judged_negatives: int = 0  # judged non-relevant: kept whatever their score
    dropped_by_margin: int = 0  # unjudged, scored within ``margin`` of the query's weakest positive
    unfiltered: int = 0  # unjudged negatives kept with no score to apply the margin to
    queries_without_positive: int = 0
    scored_by: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Examples:
    """Columns for one split (``{"query": [...], ...}``) and how they were made."""

    columns: dict[str, list[Any]]
    queries: int
    pairs: int  # (query, passage) pairs the loss reads per epoch
    mining: Mining | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0


def split_queries(queries: Sequence[Query], dev_fraction: float, seed: int) -> tuple[list[Query], list[Query]]:
    """A seeded split of whole queries (never the pairs of one query on both sides): train, dev."""
    if not 0 < dev_fraction < 1:
        raise InputError(f"dev_fraction: must be between 0 and 1, got {dev_fraction}")
    if len(queries) < 2:
        raise InputError(f"training needs at least 2 queries (one for the dev split), got {len(queries)}")
    order = list(range(len(queries)))
    random.Random(seed).shuffle(order)
    n_dev = min(len(queries) - 1, max(1, round(len(queries) * dev_fraction)))
    dev = sorted(order[:n_dev])
    train = sorted(order[n_dev:])
    return [queries[i] for i in train], [queries[i] for i in dev]


def teacher_examples(student: str, loss: str, queries: Sequence[Query], scores: Mapping[str, Mapping[str, float]],
                     seed: int, pairs_per_query: int = 16) -> Examples:
    """Columns for a teacher-labelled loss: every pair (pointwise), each list (listwise) or sampled pairs."""
    rng = random.Random(seed)
    cols: dict[str, list[Any]] = {}
    pairs = 0
    for q in queries:
        docs = [(c.text, scores[q.id][c.id]) for c in q.candidates]
        if loss == "mse":
            for text, s in docs:
                _add(cols, query=q.text, passage=text, label=s)
            pairs += len(docs)
        elif loss in ("listnet", "ranknet"):
            _add(cols, query=q.text, docs=[t for t, _ in docs], labels=[s for _, s in docs])
            pairs += len(docs)
        elif loss == "kl":
            row: dict[str, Any] = {"query": q.text}
            row.update({f"passage_{i}": t for i, (t, _) in enumerate(docs)})
            _add(cols, **row, label=[s for _, s in docs])
            pairs += len(docs)
        elif loss == "margin-mse":
            for _ in range(pairs_per_query):
                (ta, sa), (tb, sb) = rng.sample(docs, 2)
                _add(cols, query=q.text, passage_a=ta, passage_b=tb, label=sa - sb)
            pairs += 2 * pairs_per_query
        else:
            raise InputError(f"loss {loss!r} does not learn from a teacher")
    if loss == "kl" and len({len(v) for v in cols.values() if isinstance(v[0], str)}) > 1:
        raise InputError("loss kl: every list needs the same number of candidates")
    return Examples(cols, len(queries), pairs)


def rank_labels(ranking: Sequence[str], ids: Sequence[str]) -> dict[str, float]:
    """``n - position`` of each of ``ids`` in ``ranking`` (the teacher's order, best first) restricted to ``ids``:
    the teacher's first gets ``n - 1``, its last 0."""
    wanted = set(ids)
    kept = [d for d in ranking if d in wanted]
    if len(kept) != len(wanted):
        raise InputError(f"teacher order: ranks {len(kept)} of the list's {len(wanted)} candidates; score the "
                         "whole list again (a new --teacher-cache)")
    return {d: float(len(kept) - 1 - i) for i, d in enumerate(kept)}


def tied_rank_labels(scores: Mapping[str, float]) -> tuple[dict[str, float], int]:
    """``n - rank`` by score, where tied scores share their best rank (a tie stays a tie: RankNet makes no pair
    of it), and the number of tied pairs."""
    ids = list(scores)
    values = np.array([scores[d] for d in ids], dtype=float)
    best_rank = rankdata(-values, method="min")  # 1 + how many score strictly higher
    _, counts = np.unique(values, return_counts=True)
    return ({d: float(len(ids) - r) for d, r in zip(ids, best_rank)},
            int(sum(int(c) * (int(c) - 1) // 2 for c in counts)))


def labels_from_teacher(queries: Sequence[Query], scores: Mapping[str, Mapping[str, float]],
                   orders: Mapping[str, Sequence[str]], mode: str, loss: str
                   ) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """What a teacher-labelled loss learns of each candidate, and what the card says of it.

    ``mode="scores"``: the teacher's scores as they are, except for ``ranknet``, whose labels are ``n - rank`` by
    score (ties share a rank).  ``mode="order"`` (a comparison-based teacher, whose scores only encode its
    ranking): ``n - position`` in the list the teacher returned, for every loss (its own tie-breaks kept)."""
    out: dict[str, dict[str, float]] = {}
    tied = 0
    for q in queries:
        ids = [c.id for c in q.candidates]
        if mode == "order":
            if q.id not in orders:
                raise InputError(f"teacher order: query {q.id!r} has no ranked list in the teacher cache")
            out[q.id] = rank_labels(orders[q.id], ids)
        elif loss == "ranknet":
            out[q.id], ties = tied_rank_labels({d: scores[q.id][d] for d in ids})
            tied += ties
        else:
            out[q.id] = {d: scores[q.id][d] for d in ids}
    if mode == "order":
        what = "n - position in the teacher's ranked list (its scores are not read)"
    elif loss == "ranknet":
        what = "n - rank by the teacher's score (tied scores share a rank: no pair)"
    else:
        what = "the teacher's scores"
    info: dict[str, Any] = {"mode": mode, "labels": what}
    if mode == "scores" and loss == "ranknet":
        info["tied_pairs"] = tied
    return out, info


def soft_labels(scores: Sequence[float]) -> list[float]:
    """A teacher's scores of one list in [0, 1], in the same order: the sigmoid of each score's z-score within
    the list.  Why not min-max: it forces the list's best to 1 and its worst to 0 whatever the list holds, and
    one outlier squeezes the rest together; the z-score is free of the teacher's scale and shift, puts the
    list's mean at 1/2 and leaves 0 and 1 to the judgments.  A constant list gets 1/2 everywhere."""
    z = normalise({i: float(s) for i, s in enumerate(scores)}, "zscore")
    return [sigmoid(z[i]) for i in range(len(scores))]


def mixed_examples(queries: Sequence[Query], labels: Mapping[str, Mapping[str, float]], qrels: Qrels,
                   relevance_level: int = 2, judgment_weight: float = 1.0) -> Examples:
    """Pointwise soft-label rows for ``bce-mix``: every candidate of each list, labelled by its judgment (1 when
    its grade is ``>= relevance_level``, else 0; mixed with the teacher's soft label by ``judgment_weight``) or,
    unjudged, by the teacher's :func:`soft_labels`.  ``info`` counts the labels from each source."""
    cols: dict[str, list[Any]] = {}
    info = {"judged": 0, "judged_relevant": 0, "teacher": 0, "queries_without_judgments": 0, "constant_lists": 0,
            "relevance_level": relevance_level, "judgment_weight": judgment_weight,
            "teacher_mapping": "sigmoid of the z-score within the list"}
    for q in queries:
        judged = qrels.get(q.id, {})
        info["queries_without_judgments"] += not any(c.id in judged for c in q.candidates)
        raw = [labels[q.id][c.id] for c in q.candidates]
        info["constant_lists"] += len(set(raw)) == 1
        for c, soft in zip(q.candidates, soft_labels(raw)):
            if c.id in judged:
                relevant = float(judged[c.id] >= relevance_level)
                label = judgment_weight * relevant + (1.0 - judgment_weight) * soft
                info["judged"] += 1
                info["judged_relevant"] += int(relevant)
            else:
                label = soft
                info["teacher"] += 1
            _add(cols, query=q.text, passage=c.text, label=label)
    if info["constant_lists"]:
        logger.warning("bce-mix: the teacher scored every candidate alike in %d lists; their unjudged pairs get 1/2",
                       info["constant_lists"])
    return Examples(cols, len(queries), info["judged"] + info["teacher"], info=info)


def _add(cols: dict[str, list[Any]], **row: Any) -> None:
    for key, value in row.items():
        cols.setdefault(key, []).append(value)


def _negatives(q: Query, judged: Mapping[str, int], positives: list[str], score: Mapping[str, float] | None,
               margin: float, mining: Mining) -> list[str]:
    """The list's candidates usable as negatives for ``q``: judged non-relevant ones, and unjudged ones scored
    at least ``margin`` below the weakest positive (an unjudged passage the scorer ranks near a positive is
    likely relevant too: a false negative teaches the student to push relevant passages down)."""
    floor = min(score[p] for p in positives) - margin if score is not None else None
    out = []
    for c in q.candidates:
        if c.id in positives:
            continue
        if c.id in judged:
            mining.judged_negatives += 1
            out.append(c.text)
        elif floor is None:
            mining.unfiltered += 1
            out.append(c.text)
        elif score[c.id] <= floor:
            out.append(c.text)
        else:
            mining.dropped_by_margin += 1
    return out


def _margin_scores(q: Query, teacher: Mapping[str, Mapping[str, float]] | None) -> tuple[dict[str, float] | None, str]:
    """Scores the margin is applied to: the teacher's, else the first stage's (``bm25_score``), else none."""
    if teacher is not None:
        return dict(teacher[q.id]), "teacher"
    first = {c.id: c.metadata.get("bm25_score") for c in q.candidates}
    if all(isinstance(s, float) for s in first.values()):
        return first, "first stage (bm25_score)"  # type: ignore[return-value]
    return None, "none (no scores: unjudged negatives unfiltered)"


def judgment_examples(student: str, loss: str, queries: Sequence[Query], qrels: Qrels, seed: int,
                      negatives: int = 4, margin: float = 0.0,
                      teacher: Mapping[str, Mapping[str, float]] | None = None) -> Examples:
    """Columns for a judgment-labelled loss: each judged positive in a list with ``negatives`` mined negatives
    (bce: pointwise 1/0 rows; mnrl: (query, positive, negative) triplets)."""
    rng = random.Random(seed)
    mining = Mining()
    cols: dict[str, list[Any]] = {}
    pairs = 0
    for q in queries:
        judged = {c.id: qrels[q.id][c.id] for c in q.candidates if c.id in qrels.get(q.id, {})}
        positives = [d for d, g in judged.items() if g > 0]
        if not positives:
            mining.queries_without_positive += 1
            continue
        score, mining.scored_by = _margin_scores(q, teacher)
        negs = _negatives(q, {d: g for d, g in judged.items() if g <= 0}, positives, score, margin, mining)
        texts = {c.id: c.text for c in q.candidates}
        for p in positives:
            mining.positives += 1
            chosen = rng.sample(negs, min(negatives, len(negs)))
            mining.negatives += len(chosen)
            if loss == "bce":
                _add(cols, query=q.text, passage=texts[p], label=1.0)
                for n in chosen:
                    _add(cols, query=q.text, passage=n, label=0.0)
            elif loss == "mnrl":
                for n in chosen or [None]:
                    if n is not None:
                        _add(cols, query=q.text, positive=texts[p], negative=n)
            else:
                raise InputError(f"loss {loss!r} does not learn from judgments")
            pairs += 1 + len(chosen)
    if mining.queries_without_positive:
        logger.warning("judgments: %d queries have no judged-relevant candidate in their list; left out",
                       mining.queries_without_positive)
    if not cols:
        raise InputError("judgments: no query has a judged-relevant candidate with a negative in its list")
    return Examples(cols, len(queries) - mining.queries_without_positive, pairs, mining)


__all__ = ["DEFAULT_LOSS", "EMBEDDING_LOSS", "LOSSES", "Examples", "Mining", "judgment_examples", "labels_from_teacher",
           "mixed_examples", "rank_labels", "soft_labels", "split_queries", "teacher_examples", "tied_rank_labels"]
