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

from surerank.errors import InputError
from surerank.formats import Qrels
from surerank.types import Query

logger = logging.getLogger(__name__)

#: (student, loss) -> where its labels come from, and what the loss is
LOSSES: dict[tuple[str, str], tuple[str, str]] = {
    ("cross-encoder", "mse"): ("teacher", "pointwise MSE on the teacher's scores (CrossEncoder MSELoss)"),
    ("cross-encoder", "listnet"): ("teacher", "listwise ListNet on the teacher's scores (CrossEncoder ListNetLoss)"),
    ("cross-encoder", "bce"): ("judgments", "pointwise BCE on judged positives and mined negatives "
                                            "(CrossEncoder BinaryCrossEntropyLoss)"),
    ("bi-encoder", "kl"): ("teacher", "listwise KL to the teacher's score distribution (DistillKLDivLoss)"),
    ("bi-encoder", "margin-mse"): ("teacher", "MSE on teacher score margins of passage pairs (MarginMSELoss)"),
    ("bi-encoder", "mnrl"): ("judgments", "in-batch and mined negatives for judged positives "
                                          "(MultipleNegativesRankingLoss)"),
}
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
        elif loss == "listnet":
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


__all__ = ["DEFAULT_LOSS", "LOSSES", "Examples", "Mining", "judgment_examples", "split_queries",
           "teacher_examples"]
