"""Minimum Bayes risk (MBR) selection among generated candidates.

A generation task is a :class:`~surerank.types.Query` whose text is the source (or prompt) and whose candidates are
N sampled outputs.  MBR scores each candidate by its expected utility against pseudo-references — the candidates
themselves (default) or a separate sample set in ``query.metadata["references"]`` — and ranks by it: the candidate
the others agree with most comes first.  ``Reranker("mbr", utility="chrf")``.

Utilities (``utility=``): ``"chrf"``, ``"chrf++"``, ``"bleu"`` (sacreBLEU, the ``generation`` extra), ``"exact"``,
``"normalised"`` (answers compared after :func:`~surerank.rankers.generated.answers.normalise_answer`), ``"f1"``
(token F1), ``"embedding"`` (cosine of surerank's ``embedding`` ranker encoder, each distinct text embedded once),
``"ranker:NAME"`` or a ranker object (that ranker's score of the hypothesis with the reference as the query), or a
callable ``u(hyp, ref) -> float``.  ``utility_options`` go to the utility (sacreBLEU options, the embedding
model, the ranker's options).

What it costs, and the options that cut it:
- symmetric utilities (exact, normalised, f1, embedding, a callable with ``symmetric=True``) are computed once per
  unordered pair, and identical texts once: ``cost.details["utility_calls"]`` counts the utilities computed;
- ``aggregate=True``: reference aggregation (Vamvas & Sennrich 2024) — chrF against the mean n-gram counts of the
  references, cosine against the mean embedding (which equals the mean cosine exactly): N utilities, not N²;
- ``prune=True``: confidence-based pruning (Cheng & Vlachos 2023) — references are added in growing batches
  (``prune_schedule``, default 8, 16, 32, …); after each, hypotheses that win against the current best in fewer
  than ``1 - prune_alpha`` of ``bootstrap`` resamples of the references are dropped;
- ``qe=`` with ``qe_top_k=``: two stages — a quality-estimation ranker (any surerank ranker, the source as the query)
  keeps its top k as hypotheses, MBR orders those; the rest follow in QE order, below them.

Scores are expected utilities (chrF/BLEU 0..100, the others 0..1).  Candidates not scored by MBR (pruned, or
outside the QE top k) are placed below every MBR-scored one; ``info["mbr"]`` says which and why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from surerank.errors import InputError
from surerank.ranker import BaseRanker, Scores, ScoringRanker
from surerank.rankers.generated.similarity import (
    STRING_UTILITIES,
    Utility,
    callable_utility,
    cosine_matrix,
    string_utility,
)
from surerank.rankers.nested import RankerRef, make_ranker
from surerank.registry import create
from surerank.types import Candidate, Cost, Query

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ backends

class _Backend:
    """Computes utilities between texts.  ``cellwise`` backends score one pair at a time (and can mirror
    symmetric pairs); the others score blocks (a matrix product, one ranker call per reference)."""

    name = "utility"
    symmetric = False
    aggregatable = False
    cellwise = True

    def prepare(self, queries: list[Query], pools: list[list[str]]) -> tuple[Any, list[Cost]]:
        """Per-call work over every query's distinct texts (embedding them): its state and the cost per query.

        The state is returned, not kept on the backend, so concurrent calls (the service) do not share it.
        """
        return None, [Cost() for _ in pools]

    def features(self, state: Any, texts: list[str]) -> list[Any]:
        raise NotImplementedError

    def pair(self, hyp: Any, ref: Any) -> float:
        raise NotImplementedError

    def block(self, hyps: list[Any], refs: list[Any]) -> tuple[np.ndarray, Cost]:
        raise NotImplementedError

    def against_aggregate(self, hyps: list[Any], refs: list[Any]) -> np.ndarray:
        raise NotImplementedError


class _StringBackend(_Backend):
    def __init__(self, utility: Utility) -> None:
        self.utility = utility
        self.name = utility.name
        self.symmetric = utility.symmetric
        self.aggregatable = utility.aggregate is not None

    def features(self, state: Any, texts: list[str]) -> list[Any]:
        return self.utility.features(texts)

    def pair(self, hyp: Any, ref: Any) -> float:
        return self.utility.pair(hyp, ref)

    def against_aggregate(self, hyps: list[Any], refs: list[Any]) -> np.ndarray:
        assert self.utility.aggregate is not None
        agg = self.utility.aggregate(refs)
        return np.array([self.utility.pair(h, agg) for h in hyps], dtype=float)


class _EmbeddingBackend(_Backend):
    """Cosine of the ``embedding`` ranker's encoder: every distinct text of the call embedded once, in one run."""

    name = "embedding"
    symmetric = True
    aggregatable = True
    cellwise = False

    def __init__(self, ranker: Any) -> None:
        self.ranker = ranker

    def prepare(self, queries: list[Query], pools: list[list[str]]) -> tuple[Any, list[Cost]]:
        distinct = list(dict.fromkeys(t for pool in pools for t in pool))
        if not distinct:
            return ({}, set()), [Cost() for _ in pools]
        encoded = self.ranker.encode(distinct, normalize=True)  # cosine, whatever the model's own similarity
        embedded = {text: vector.astype(np.float64) for text, vector in zip(distinct, encoded.vectors)}
        lengths = dict(zip(distinct, encoded.lengths))
        truncated = {distinct[i] for i in encoded.truncated}
        # each query pays for its own distinct texts (a text shared by two queries is counted in both)
        return (embedded, truncated), [Cost(calls=len(set(pool)), prompt_tokens=sum(lengths[t] for t in set(pool)))
                                       for pool in pools]

    def features(self, state: Any, texts: list[str]) -> list[Any]:
        return [state[0][t] for t in texts]

    @staticmethod
    def truncated(state: Any, texts: list[str]) -> int:
        """How many of these distinct texts were cut to the model's input length."""
        return sum(1 for t in set(texts) if t in state[1])

    def block(self, hyps: list[Any], refs: list[Any]) -> tuple[np.ndarray, Cost]:
        return cosine_matrix(hyps, refs), Cost()

    def against_aggregate(self, hyps: list[Any], refs: list[Any]) -> np.ndarray:
        # mean_j <h, r_j> = <h, mean_j r_j>: the aggregate reference gives the exact expected cosine
        return np.asarray(hyps) @ np.mean(np.asarray(refs), axis=0)


class _RankerBackend(_Backend):
    """A ranker's score of the hypothesis (as a candidate) with the reference as the query."""

    cellwise = False

    def __init__(self, ranker: BaseRanker, symmetric: bool = False) -> None:
        self.ranker = ranker
        self.name = f"ranker:{getattr(ranker, 'name', type(ranker).__name__)}"
        self.symmetric = symmetric

    def features(self, state: Any, texts: list[str]) -> list[Any]:
        return list(texts)

    def block(self, hyps: list[Any], refs: list[Any]) -> tuple[np.ndarray, Cost]:
        candidates = tuple(Candidate(id=str(i), text=t) for i, t in enumerate(hyps))
        queries = [Query(text=ref, candidates=candidates, id=f"ref{j}") for j, ref in enumerate(refs)]
        out = np.zeros((len(hyps), len(refs)))
        cost = Cost()
        for j, ranked in enumerate(self.ranker.rank_many(queries)):
            for item in ranked.items:
                out[item.index, j] = item.score
            cost = cost.add(ranked.cost)
        return out, cost


# ------------------------------------------------------------------------------------------------ one query's utilities

class _Pool:
    """The distinct texts of one query (candidates and references) and the utilities known between them."""

    def __init__(self, backend: _Backend, state: Any, texts: list[str]) -> None:
        self.backend = backend
        self.unique: dict[str, int] = {}
        self.slot = np.array([self.unique.setdefault(t, len(self.unique)) for t in texts], dtype=int)
        self.features = backend.features(state, list(self.unique))
        u = len(self.unique)
        self.values = np.zeros((u, u))
        self.known = np.zeros((u, u), dtype=bool)
        self.calls = 0
        self.cost = Cost()

    def matrix(self, hyps: Sequence[int], refs: Sequence[int]) -> np.ndarray:
        """Utilities of the hypotheses (positions) against the references (positions), computing what is new."""
        rows = np.unique(self.slot[list(hyps)])
        cols = np.unique(self.slot[list(refs)])
        self._fill(rows, cols)
        return self.values[np.ix_(self.slot[list(hyps)], self.slot[list(refs)])]

    def _fill(self, rows: np.ndarray, cols: np.ndarray) -> None:
        sub = ~self.known[np.ix_(rows, cols)]
        if not sub.any():
            return
        symmetric = self.backend.symmetric
        if symmetric:  # copy what the transposed pair already knows
            mirror = self.known[np.ix_(cols, rows)].T & sub
            if mirror.any():
                r, c = np.nonzero(mirror)
                self.values[rows[r], cols[c]] = self.values[cols[c], rows[r]]
                self.known[rows[r], cols[c]] = True
                sub &= ~mirror
        if self.backend.cellwise:
            for r, c in zip(*np.nonzero(sub)):
                i, j = rows[r], cols[c]
                if self.known[i, j]:  # filled as the mirror of an earlier cell of this loop
                    continue
                value = self.backend.pair(self.features[i], self.features[j])
                self.values[i, j] = value
                self.known[i, j] = True
                if symmetric:
                    self.values[j, i] = value
                    self.known[j, i] = True
                self.calls += 1
            return
        need_rows = rows[sub.any(axis=1)]
        need_cols = cols[sub.any(axis=0)]
        block, cost = self.backend.block([self.features[i] for i in need_rows],
                                         [self.features[j] for j in need_cols])
        self.values[np.ix_(need_rows, need_cols)] = block
        self.known[np.ix_(need_rows, need_cols)] = True
        if symmetric:
            self.values[np.ix_(need_cols, need_rows)] = block.T
            self.known[np.ix_(need_cols, need_rows)] = True
        self.calls += block.size
        self.cost = self.cost.add(cost)

    def against_aggregate(self, hyps: Sequence[int], refs: Sequence[int]) -> np.ndarray:
        rows = np.unique(self.slot[list(hyps)])
        values = self.backend.against_aggregate([self.features[i] for i in rows],
                                                [self.features[self.slot[j]] for j in refs])
        self.calls += len(rows)
        lookup = dict(zip(rows.tolist(), values))
        return np.array([lookup[self.slot[h]] for h in hyps])


# ------------------------------------------------------------------------------------------------ the ranker

class MBRRanker(ScoringRanker):
    """Expected utility of each candidate against pseudo-references (see the module docstring)."""

    name: ClassVar[str] = "mbr"

    def __init__(
        self,
        utility: str | Callable[[str, str], float] | BaseRanker = "chrf",
        utility_options: Mapping[str, Any] | None = None,
        symmetric: bool | None = None,
        include_self: bool = True,
        aggregate: bool = False,
        prune: bool = False,
        prune_alpha: float = 0.99,
        prune_schedule: Sequence[int] | None = None,
        bootstrap: int = 500,
        qe: RankerRef | None = None,
        qe_top_k: int | None = None,
        seed: int = 0,
    ) -> None:
        options = dict(utility_options or {})
        self.backend = self._backend(utility, options, symmetric)
        if aggregate and prune:
            raise InputError("aggregate and prune: choose one (pruning needs the pairwise utilities)")
        if aggregate and not self.backend.aggregatable:
            raise InputError(f"aggregate: the {self.backend.name!r} utility has no aggregate reference; "
                             "it is available for chrf, chrf++ and embedding")
        if aggregate and not include_self:
            raise InputError("aggregate: the aggregate reference includes every candidate; use include_self=True")
        if not 0.0 < prune_alpha < 1.0:
            raise InputError(f"prune_alpha: must lie strictly between 0 and 1, got {prune_alpha!r}")
        if not isinstance(bootstrap, int) or bootstrap < 10:
            raise InputError(f"bootstrap: must be an integer >= 10, got {bootstrap!r}")
        if prune_schedule is not None and (not prune_schedule or any(
                not isinstance(s, int) or s < 2 for s in prune_schedule) or list(prune_schedule) != sorted(
                set(prune_schedule))):
            raise InputError(f"prune_schedule: increasing integers >= 2 expected, got {prune_schedule!r}")
        if (qe is None) != (qe_top_k is None):
            raise InputError("qe and qe_top_k go together: the QE ranker keeps its top qe_top_k for MBR")
        if qe_top_k is not None and (not isinstance(qe_top_k, int) or qe_top_k < 1):
            raise InputError(f"qe_top_k: must be a positive integer, got {qe_top_k!r}")
        self.qe = make_ranker(qe, "qe") if qe is not None else None
        self.qe_top_k = qe_top_k
        self.include_self, self.aggregate, self.prune = include_self, aggregate, prune
        self.prune_alpha, self.prune_schedule, self.bootstrap = prune_alpha, prune_schedule, bootstrap
        self.seed = seed

    @staticmethod
    def _backend(utility: Any, options: dict[str, Any], symmetric: bool | None) -> _Backend:
        backend: _Backend
        if isinstance(utility, str) and utility in STRING_UTILITIES:
            backend = _StringBackend(string_utility(utility, **options))
        elif utility == "embedding":
            backend = _EmbeddingBackend(create("embedding", **options))
        elif isinstance(utility, str) and utility.startswith("ranker:"):
            backend = _RankerBackend(make_ranker({"name": utility.split(":", 1)[1], **options}, "utility"))
        elif isinstance(utility, str):
            backend = _StringBackend(string_utility(utility))  # raises, naming the known utilities
        elif hasattr(utility, "rank_many"):
            backend = _RankerBackend(utility)
        elif callable(utility):
            backend = _StringBackend(callable_utility(utility, symmetric=bool(symmetric)))
        else:
            raise InputError(f"utility: expected a name, a ranker or a callable, got {type(utility).__name__}")
        if symmetric is not None:
            backend.symmetric = bool(symmetric)
        return backend

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ranker": self.name, "utility": self.backend.name, "symmetric": self.backend.symmetric,
                               "include_self": self.include_self, "aggregate": self.aggregate, "prune": self.prune}
        if self.prune:
            out.update(prune_alpha=self.prune_alpha, prune_schedule=self.prune_schedule, bootstrap=self.bootstrap,
                       seed=self.seed)
        if self.qe is not None:
            out.update(qe=self.qe.describe(), qe_top_k=self.qe_top_k)
        return out

    # ---------------------------------------------------------------------------------------------- scoring

    def score(self, queries: list[Query]) -> list[Scores]:
        references = [_references(q) for q in queries]
        pools = [[c.text for c in q.candidates] + refs for q, refs in zip(queries, references)]
        state, prep_costs = self.backend.prepare(queries, pools)
        qe_lists = self.qe.rank_many(queries) if self.qe is not None else [None] * len(queries)
        out = []
        for qi, query in enumerate(queries):
            out.append(self._score_query(query, references[qi], pools[qi], state, prep_costs[qi], qe_lists[qi]))
        return out

    def _score_query(self, query: Query, references: list[str], texts: list[str], state: Any,
                     prep_cost: Cost, qe_list: Any) -> Scores:
        n = len(query.candidates)
        pool = _Pool(self.backend, state, texts)
        refs = list(range(n, n + len(references))) if references else list(range(n))
        info: dict[str, Any] = {"utility": self.backend.name, "references": "metadata" if references else "candidates",
                                "n_references": len(refs)}
        cost = prep_cost
        hyps = list(range(n))
        below: dict[int, float] = {}  # candidates not scored by MBR, with the value that orders them
        if qe_list is not None:
            cost = cost.add(qe_list.cost)
            qe_order = [item.index for item in qe_list.items]
            hyps = sorted(qe_order[: self.qe_top_k])
            rest = qe_order[self.qe_top_k:]
            below = {i: -float(k) for k, i in enumerate(rest)}
            info["qe"] = {"ranker": qe_list.ranker, "top_k": self.qe_top_k, "kept": [query.candidates[i].id
                                                                                     for i in hyps]}
        self_excluded = not self.include_self and not references
        values: dict[int, float] = {}
        if self.aggregate:
            values = dict(zip(hyps, pool.against_aggregate(hyps, refs)))
            info["aggregate"] = True
        elif self.prune:
            values, pruned, steps = self._pruned(pool, hyps, refs, self_excluded, query.id)
            below.update(pruned)
            info["prune"] = {"alpha": self.prune_alpha, "steps": steps,
                             "pruned": {query.candidates[i].id: round(v, 6) for i, v in pruned.items()}}
        else:
            values = dict(zip(hyps, _expected(pool.matrix(hyps, refs), hyps, refs, self_excluded)))
        no_reference = [i for i, v in values.items() if np.isnan(v)]
        if no_reference:
            logger.warning("mbr, query %s: %d candidates have no reference besides themselves "
                           "(include_self=False with one candidate); their expected utility is set to 0",
                           query.id, len(no_reference))
            info["no_reference"] = len(no_reference)
            for i in no_reference:
                values[i] = 0.0
        scores = np.zeros(n)
        for i, v in values.items():
            scores[i] = v
        lowered = _place_below(scores, values, below)
        if lowered:
            info["scores_lowered"] = lowered
        ordered = sorted(values.values(), reverse=True)
        info["margin"] = float(ordered[0] - ordered[1]) if len(ordered) > 1 else None
        utility_cost = pool.cost
        cost = cost.add(utility_cost)
        cost.details = {**cost.details, "utility_calls": pool.calls,
                        "utility_pairs": len(hyps) * len(refs)}
        if isinstance(self.backend, _EmbeddingBackend):
            truncated = self.backend.truncated(state, texts)
            if truncated:
                logger.warning("mbr, query %s: %d texts longer than the embedding model's input were truncated",
                               query.id, truncated)
                info["texts_truncated"] = truncated
        return Scores(values=scores, cost=cost, info={"mbr": info})

    def _pruned(self, pool: _Pool, hyps: list[int], refs: list[int], self_excluded: bool,
                query_id: str) -> tuple[dict[int, float], dict[int, float], list[dict[str, int]]]:
        """Cheng & Vlachos (2023): grow the references, drop hypotheses unlikely to beat the current best."""
        rng = np.random.default_rng(self.seed)
        order = [refs[k] for k in rng.permutation(len(refs))]
        schedule = [s for s in (self.prune_schedule or _doubling(len(refs))) if s < len(refs)] + [len(refs)]
        active = list(hyps)
        pruned: dict[int, float] = {}
        steps: list[dict[str, int]] = []
        means = np.zeros(len(active))
        for size in schedule:
            current = order[:size]
            matrix = pool.matrix(active, current).astype(float)
            if self_excluded:
                matrix[np.equal.outer(np.array(active), np.array(current))] = np.nan
            with np.errstate(invalid="ignore"):
                means = np.nanmean(matrix, axis=1) if self_excluded else matrix.mean(axis=1)
            steps.append({"references": size, "hypotheses": len(active)})
            if size == len(refs) or len(active) == 1:
                break
            weights = rng.multinomial(size, np.full(size, 1.0 / size), size=self.bootstrap).T.astype(float)
            filled = np.nan_to_num(matrix, nan=0.0)
            counts = (~np.isnan(matrix)).astype(float) @ weights if self_excluded else np.full(
                (len(active), self.bootstrap), float(size))
            with np.errstate(invalid="ignore", divide="ignore"):
                boot = (filled @ weights) / counts
            best = int(np.nanargmax(means))
            wins = np.nanmean(boot >= boot[best], axis=1)
            keep = wins >= 1.0 - self.prune_alpha
            keep[best] = True
            for position in np.nonzero(~keep)[0]:
                pruned[active[position]] = float(means[position])
            active = [h for h, k in zip(active, keep) if k]
        return dict(zip(active, means.tolist())), pruned, steps


def _references(query: Query) -> list[str]:
    refs = query.metadata.get("references") if query.metadata else None
    if refs is None:
        return []
    if isinstance(refs, str) or not isinstance(refs, Sequence) or not all(isinstance(r, str) for r in refs):
        raise InputError(f"query {query.id!r}: metadata 'references' must be a list of strings")
    if not refs:
        raise InputError(f"query {query.id!r}: metadata 'references' is empty; omit it to use the candidates")
    return list(refs)


def _expected(matrix: np.ndarray, hyps: list[int], refs: list[int], self_excluded: bool) -> np.ndarray:
    """Mean utility per hypothesis; without its own column when the candidate is not its own reference."""
    if not self_excluded:
        return matrix.mean(axis=1)
    mask = np.equal.outer(np.array(hyps), np.array(refs))
    counts = (~mask).sum(axis=1)
    sums = np.where(mask, 0.0, matrix).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _doubling(total: int) -> list[int]:
    sizes, size = [], 8
    while size < total:
        sizes.append(size)
        size *= 2
    return sizes


def _place_below(scores: np.ndarray, scored: dict[int, float], below: dict[int, float]) -> int:
    """Give the candidates MBR did not finish scores under every MBR score, in the order of their own values.

    A value already below the floor is kept; one that is not is lowered (returned: how many were).
    """
    if not below:
        return 0
    floor = min(scored.values())
    step = 1e-6 * max(1.0, abs(floor))
    previous = floor
    lowered = 0
    for i in sorted(below, key=lambda k: (-below[k], k)):
        value = below[i]
        if value >= previous:
            value = previous - step
            lowered += 1
        scores[i] = value
        previous = value
    return lowered
