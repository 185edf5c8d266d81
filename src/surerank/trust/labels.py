"""Join ranked lists with relevance judgments (TREC qrels) into the arrays the trust maths uses.

Conventions, shared by calibration, abstention and cutoffs:

* a candidate is relevant when its grade is ``>= relevance_level`` (TREC DL counts grade >= 2);
* an unjudged candidate counts as not relevant (``unjudged="nonrelevant"``, the trec_eval convention)
  or is left out of calibration pairs (``unjudged="skip"``);
* ``n_relevant_judged`` counts every relevant judgment of the query, retrieved or not, so a cutoff can
  report what the first stage never retrieved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from surerank.errors import InputError
from surerank.types import RankedList

Qrels = Mapping[str, Mapping[str, int]]
UNJUDGED_POLICIES = ("nonrelevant", "skip")


@dataclass
class LabelledList:
    """One query's ranked scores (best first) with 0/1 relevance and grades."""

    qid: str
    scores: np.ndarray
    labels: np.ndarray  # 1.0 relevant, 0.0 not, nan unjudged
    grades: np.ndarray  # judged grade, nan when unjudged
    n_relevant_judged: int
    probabilities: np.ndarray | None = None

    @property
    def n_relevant_retrieved(self) -> int:
        return int(np.nansum(self.labels))

    def binary_labels(self) -> np.ndarray:
        """Labels with unjudged counted as not relevant."""
        return np.nan_to_num(self.labels, nan=0.0)


def label_list(
    ranked: RankedList, judgments: Mapping[str, int] | None, relevance_level: int = 2
) -> LabelledList:
    """Label one ranked list against the judgments of its query (None: the query has no judgments)."""
    judgments = judgments or {}
    grades = np.array([float(judgments[i.id]) if i.id in judgments else np.nan for i in ranked.items])
    labels = np.where(np.isnan(grades), np.nan, (grades >= relevance_level).astype(float))
    probs = None
    if ranked.items and all(i.probability is not None for i in ranked.items):
        probs = np.array([float(i.probability) for i in ranked.items])  # type: ignore[arg-type]
    return LabelledList(
        qid=ranked.query.id,
        scores=np.array([float(i.score) for i in ranked.items]),
        labels=labels,
        grades=grades,
        n_relevant_judged=sum(1 for g in judgments.values() if g >= relevance_level),
        probabilities=probs,
    )


def label_lists(
    lists: Sequence[RankedList], qrels: Qrels, relevance_level: int = 2, require_judged: bool = True
) -> list[LabelledList]:
    """Label every list whose query has judgments; queries without any judgment are left out.

    With ``require_judged`` an error names the first unjudged query when none at all is judged,
    which is nearly always a qid mismatch between the input and the qrels file.
    """
    out = [label_list(r, qrels[r.query.id], relevance_level) for r in lists if r.query.id in qrels]
    if require_judged and lists and not out:
        raise InputError(
            f"qrels: none of the {len(lists)} query ids (e.g. {lists[0].query.id!r}) has judgments; "
            "check that the qrels file belongs to these queries"
        )
    return out


def calibration_pairs(
    labelled: Sequence[LabelledList], unjudged: str = "nonrelevant", use: str = "score"
) -> tuple[np.ndarray, np.ndarray]:
    """Flatten labelled lists into (value, 0/1 label) arrays for fitting or scoring a calibrator."""
    if unjudged not in UNJUDGED_POLICIES:
        raise InputError(f"unjudged: must be one of {UNJUDGED_POLICIES}, got {unjudged!r}")
    values, labels = [], []
    for lab in labelled:
        v = lab.scores if use == "score" else lab.probabilities
        if v is None:
            raise InputError(f"query {lab.qid!r}: no probabilities on the ranked items; apply a calibrator")
        y = lab.labels
        if unjudged == "skip":
            mask = ~np.isnan(y)
            v, y = v[mask], y[mask]
        else:
            y = np.nan_to_num(y, nan=0.0)
        values.append(v)
        labels.append(y)
    if not values:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(values), np.concatenate(labels)


def ndcg_from_qrels(ranked_ids: Sequence[str], judgments: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k of one ranking (gain = grade, log2 discount, ideal from all judged grades, trec_eval style).

    A small closed form so that trust fitting (u_lin targets) needs no evaluation toolkit; the
    evaluation module's measures remain the reference for reported figures.
    """
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    gains = np.array([max(0, judgments.get(d, 0)) for d in list(ranked_ids)[:k]], dtype=float)
    dcg = float((gains * discounts[: gains.size]).sum())
    ideal = np.sort(np.array([g for g in judgments.values() if g > 0], dtype=float))[::-1][:k]
    idcg = float((ideal * discounts[: ideal.size]).sum())
    return dcg / idcg if idcg > 0 else 0.0
