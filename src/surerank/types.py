"""The one data model every part of surerank speaks.

Plain dataclasses, no model code: a :class:`Query` with its :class:`Candidate` list goes into a ranker,
a :class:`RankedList` of :class:`RankedItem` comes out.  Later stages (trust, serving, batch) fill the
optional fields (probability, keep/abstain flags) instead of inventing parallel structures.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from surerank.errors import InputError


@dataclass(frozen=True)
class Candidate:
    """One passage or document to be ranked for a query."""

    id: str
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Query:
    """A query and the candidates a first stage retrieved for it."""

    text: str
    candidates: tuple[Candidate, ...] = ()
    id: str = "q0"
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "candidates", tuple(self.candidates))
        _check_unicode(self.text, f"query {self.id!r}: the query text")
        seen: dict[str, int] = {}
        for position, candidate in enumerate(self.candidates):
            _check_unicode(candidate.text, f"query {self.id!r}: documents[{position}] (id {candidate.id!r})")
            if candidate.id in seen:
                raise InputError(
                    f"query {self.id!r}: duplicate candidate id {candidate.id!r} at positions "
                    f"{seen[candidate.id]} and {position}; candidate ids must be unique within a query"
                )
            seen[candidate.id] = position

    @classmethod
    def from_texts(
        cls, text: str, documents: Iterable[str | Candidate | Mapping[str, Any]], id: str = "q0"
    ) -> Query:
        """Build a query from plain strings, dicts with ``text`` (and optional ``id``), or candidates.

        Strings get their position as id, so results can always be mapped back to the input.
        """
        return cls(text=text, candidates=tuple(as_candidates(documents)), id=id)


def _check_unicode(text: Any, where: str) -> None:
    """A lone surrogate (``"\\ud800"``, which JSON and Python strings can hold) cannot be encoded, so a
    tokenizer would fail on it with a TypeError far from the input: refuse it here, naming the text."""
    if isinstance(text, str) and not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise InputError(f"{where}: not valid Unicode (a lone surrogate \\u{ord(text[error.start]):04x} at "
                             f"character {error.start})") from None


def as_candidates(documents: Iterable[str | Candidate | Mapping[str, Any]]) -> Iterator[Candidate]:
    for position, document in enumerate(documents):
        if isinstance(document, Candidate):
            yield document
        elif isinstance(document, str):
            yield Candidate(id=str(position), text=document)
        elif isinstance(document, Mapping):
            if "text" not in document or not isinstance(document["text"], str):
                raise InputError(f"documents[{position}]: a mapping needs a string field 'text'")
            extra = {k: v for k, v in document.items() if k not in ("id", "text")}
            yield Candidate(id=str(document.get("id", position)), text=document["text"], metadata=extra)
        else:
            raise InputError(
                f"documents[{position}]: expected a string, a mapping with 'text', or a Candidate, "
                f"got {type(document).__name__}"
            )


@dataclass
class Truncation:
    """What a ranker did to fit a long candidate into its model: never silent."""

    truncated: bool = False
    tokens_total: int = 0
    tokens_used: int = 0
    passages_scored: int = 1
    strategy: str = "none"

    @property
    def tokens_dropped(self) -> int:
        return max(0, self.tokens_total - self.tokens_used)


@dataclass
class Cost:
    """What ranking one query cost: model calls, tokens, sequential rounds, wall time.

    ``calls``: model calls sent (encoders: batches run).  A call that was retried counts once; its extra
    attempts are in ``retries`` (requests sent = ``calls + retries``).  Answers served from the LLM judgment
    cache are not calls: they are counted in ``cache_hits`` and add no tokens, so a fully cached rerun costs
    ``calls == 0``.  ``prompt_tokens`` / ``completion_tokens``: tokens of the calls sent.  ``rounds``: sequential
    batches of calls that sent anything (the depth that bounds latency).  ``latency_s``: wall time.
    ``details``: the ranker's counts (LLM rankers: failed calls and fallbacks by cause, see docs/llm.md).
    """

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    rounds: int = 0
    latency_s: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    cache_hits: int = 0

    def add(self, other: Cost) -> Cost:
        return Cost(
            calls=self.calls + other.calls,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            rounds=self.rounds + other.rounds,
            latency_s=self.latency_s + other.latency_s,
            details={**self.details, **other.details},
            retries=self.retries + other.retries,
            cache_hits=self.cache_hits + other.cache_hits,
        )


@dataclass
class RankedItem:
    """One candidate's place in a ranked list.

    ``score`` is the ranker's raw score (higher is better, scale is ranker-specific); ``probability``
    is filled only by a calibrator.  ``keep`` and ``abstain`` are filled by the trust layer.
    """

    index: int
    id: str
    rank: int
    score: float
    text: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    probability: float | None = None
    keep: bool | None = None
    truncation: Truncation | None = None


@dataclass
class RankedList:
    """The ranker's answer for one query, best first."""

    query: Query
    items: list[RankedItem]
    ranker: str = ""
    cost: Cost = field(default_factory=Cost)
    abstain: bool | None = None
    confidence: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[RankedItem]:
        return iter(self.items)

    def __getitem__(self, position: int) -> RankedItem:
        return self.items[position]

    @property
    def ids(self) -> list[str]:
        return [item.id for item in self.items]

    @property
    def scores(self) -> list[float]:
        return [item.score for item in self.items]

    def top(self, k: int) -> list[RankedItem]:
        return self.items[:k]

    @property
    def truncated(self) -> bool:
        return any(item.truncation is not None and item.truncation.truncated for item in self.items)

    @classmethod
    def from_scores(
        cls,
        query: Query,
        scores: Sequence[float],
        ranker: str = "",
        cost: Cost | None = None,
        truncations: Sequence[Truncation | None] | None = None,
    ) -> RankedList:
        """Order candidates by score, best first; ties keep the input order (stable sort)."""
        if len(scores) != len(query.candidates):
            raise ValueError(f"{len(scores)} scores for {len(query.candidates)} candidates")
        order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
        items = [
            RankedItem(
                index=i,
                id=query.candidates[i].id,
                rank=rank,
                score=float(scores[i]),
                text=query.candidates[i].text,
                metadata=query.candidates[i].metadata,
                truncation=truncations[i] if truncations is not None else None,
            )
            for rank, i in enumerate(order, start=1)
        ]
        return cls(query=query, items=items, ranker=ranker, cost=cost or Cost())

    @classmethod
    def from_order(
        cls, query: Query, order: Sequence[int], ranker: str = "", cost: Cost | None = None
    ) -> RankedList:
        """Build a list from an order of candidate indices (comparison-based rankers).

        The score is a descending rank-derived value (n - rank + 1) so that score order equals rank order.
        """
        n = len(query.candidates)
        if sorted(order) != list(range(n)):
            raise ValueError("order must be a permutation of the candidate indices")
        scores = [0.0] * n
        for rank, i in enumerate(order, start=1):
            scores[i] = float(n - rank + 1)
        ranked = cls.from_scores(query, scores, ranker=ranker, cost=cost)
        return ranked
