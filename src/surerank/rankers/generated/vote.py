"""Self-consistency: majority vote over the answers of N sampled generations (Wang et al. 2023).

A query's candidates are N generations (chains of thought, short answers); each one's answer is extracted
(``extract=``: a regular expression — group 1 if it has one, else the match, the last occurrence by default — or a
callable ``text -> answer | None``; default: the whole text), normalised with
:func:`~surerank.rankers.generated.answers.normalise_answer` (numbers ``"1,000"`` / ``"1000.0"`` / ``"1e3"`` as
one, case, whitespace, punctuation; each switchable) and counted.  A candidate's score is its answer's **vote
share** (votes / N), so a calibrator can map it to a probability of being right.

Order: answers by vote share; answers with equal shares are ordered by a second feature — the best
``logprob_field`` value (candidate metadata, e.g. the sequence log-probability) among their candidates when every
candidate has one, else the earliest input position; within an answer, candidates by the same feature.
Candidates with no extractable answer score 0 and come last; ``info["vote"]`` counts them, and they are warned
about once per list.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar

from surerank.errors import InputError
from surerank.ranker import BaseRanker
from surerank.rankers.generated.answers import normalise_answer, regex_extractor
from surerank.types import Cost, Query, RankedItem, RankedList

logger = logging.getLogger(__name__)


class VoteRanker(BaseRanker):
    """Majority vote over normalised answers; the score is the vote share (see the module docstring)."""

    name: ClassVar[str] = "vote"

    def __init__(
        self,
        extract: str | Callable[[str], str | None] | None = None,
        occurrence: str = "last",
        case: bool = True,
        whitespace: bool = True,
        punctuation: bool = True,
        articles: bool = False,
        numbers: bool = True,
        tie_break: str = "logprob",
        logprob_field: str = "logprob",
    ) -> None:
        if tie_break not in ("logprob", "input"):
            raise InputError(f"tie_break: must be 'logprob' or 'input', got {tie_break!r}")
        if extract is None:
            self.extract: Callable[[str], str | None] = _whole
        elif isinstance(extract, str):
            self.extract = regex_extractor(extract, occurrence)
        elif callable(extract):
            self.extract = extract
        else:
            raise InputError(f"extract: expected a regular expression or a callable, got {type(extract).__name__}")
        self.pattern = extract if isinstance(extract, str) else None
        self.normalise = {"case": case, "whitespace": whitespace, "punctuation": punctuation, "articles": articles,
                          "numbers": numbers}
        self.tie_break, self.logprob_field = tie_break, logprob_field

    def describe(self) -> dict[str, Any]:
        return {"ranker": self.name, "extract": self.pattern if self.pattern is not None else (
            "whole text" if self.extract is _whole else "callable"), **self.normalise, "tie_break": self.tie_break}

    def answer(self, text: str) -> str | None:
        """The normalised answer of one generation (None when none can be extracted)."""
        raw = self.extract(text)
        if raw is None:
            return None
        if not isinstance(raw, str):
            raise InputError(f"extract: the extractor returned {type(raw).__name__}; expected a string or None")
        key = normalise_answer(raw, **self.normalise)
        return key if key else None

    def _rank_queries(self, queries: list[Query]) -> list[RankedList]:
        return [self._rank_one(q) for q in queries]

    def _rank_one(self, query: Query) -> RankedList:
        n = len(query.candidates)
        answers = [self.answer(c.text) for c in query.candidates]
        second = self._second_feature(query)
        groups: dict[str, list[int]] = {}
        for i, a in enumerate(answers):
            if a is not None:
                groups.setdefault(a, []).append(i)
        for members in groups.values():
            members.sort(key=lambda i: (-second[i], i))
        # an answer's rank key: votes, then its best member's second feature, then its earliest position
        ranked_groups = sorted(groups.items(), key=lambda kv: (-len(kv[1]), -max(second[i] for i in kv[1]),
                                                               min(kv[1])))
        order = [i for _, members in ranked_groups for i in members]
        unanswered = [i for i in range(n) if answers[i] is None]
        order += sorted(unanswered, key=lambda i: (-second[i], i))
        share = {i: len(members) / n for members in groups.values() for i in members}
        items = [RankedItem(index=i, id=query.candidates[i].id, rank=rank, score=share.get(i, 0.0),
                            text=query.candidates[i].text, metadata=query.candidates[i].metadata)
                 for rank, i in enumerate(order, start=1)]
        counts = sorted(((len(m), a) for a, m in groups.items()), key=lambda t: -t[0])
        top = ranked_groups[0] if ranked_groups else None
        info: dict[str, Any] = {
            "answers": {a: c for c, a in counts},
            "winner": top[0] if top else None,
            "share": len(top[1]) / n if top else 0.0,
            "tied": bool(top) and sum(1 for m in groups.values() if len(m) == len(top[1])) > 1,
            "tie_break": "logprob" if self._uses_logprob(query) else "input order",
            "no_answer": len(unanswered),
        }
        if unanswered:
            logger.warning("vote, query %s: %d of %d candidates have no extractable answer; they score 0 and come "
                           "last", query.id, len(unanswered), n)
        return RankedList(query=query, items=items, ranker=self.name, cost=Cost(), info={"vote": info})

    def _uses_logprob(self, query: Query) -> bool:
        return self.tie_break == "logprob" and all(
            _number(c.metadata.get(self.logprob_field)) is not None for c in query.candidates)

    def _second_feature(self, query: Query) -> list[float]:
        """Log-probabilities when every candidate has one, else 0 (ties then fall to the input order)."""
        if not self._uses_logprob(query):
            if self.tie_break == "logprob" and any(self.logprob_field in c.metadata for c in query.candidates):
                missing = [c.id for c in query.candidates if _number(c.metadata.get(self.logprob_field)) is None]
                raise InputError(f"query {query.id!r}: candidates {missing[:5]} lack a numeric "
                                 f"{self.logprob_field!r} while others have one; give it to all or none")
            return [0.0] * len(query.candidates)
        return [float(c.metadata[self.logprob_field]) for c in query.candidates]


def _whole(text: str) -> str:
    return text


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if value == value else None  # NaN is not a log-probability

