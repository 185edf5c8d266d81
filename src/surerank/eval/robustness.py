"""A ranker's self-checks on judged data: order sensitivity, typos, lexical traps, reranking depth.

Rerankers are known to flip with the order of their input, to break on a typo in the query, to be
fooled by a non-relevant passage that repeats the query's words, and to get worse when handed more
documents.  :func:`run_robustness` measures each of these for any ranker that follows the
:class:`~surerank.ranker.Ranker` protocol and returns a plain JSON-ready dict; the ``surerank
robustness`` command and the HTML report read that dict.

Every check is a deterministic function of the seeds in :class:`RobustnessConfig`; the ranker is the
only source of variation.  Nothing here knows which model is behind the ranker.
"""

from __future__ import annotations

import functools
import logging
import random
import re
import string
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from surerank.errors import InputError
from surerank.types import Candidate, Query, RankedList

logger = logging.getLogger(__name__)

Qrels = Mapping[str, Mapping[str, int]]
Run = dict[str, dict[str, float]]

SCHEMA = "surerank.robustness/1"
CHECKS = ("order", "position", "typos", "trap", "depth")
TYPO_KINDS = ("insertion", "deletion", "substitution", "swap", "keyboard")
MEASURE = "nDCG@10"

# --------------------------------------------------------------------------------------------------
# Query typos
# --------------------------------------------------------------------------------------------------

# QWERTY keys that touch each letter (same row and the rows above/below): a realistic slip of a finger.
_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_ROW_OFFSETS = (0.0, 0.25, 0.75)  # horizontal stagger of the rows, in key widths


def _keyboard_neighbours() -> dict[str, str]:
    positions = {
        key: (row, col + _ROW_OFFSETS[row])
        for row, keys in enumerate(_KEYBOARD_ROWS)
        for col, key in enumerate(keys)
    }
    neighbours = {}
    for key, (row, x) in positions.items():
        near = [
            other for other, (other_row, other_x) in positions.items()
            if other != key and abs(other_row - row) <= 1 and abs(other_x - x) <= 1.0
        ]
        neighbours[key] = "".join(sorted(near))
    return neighbours


KEYBOARD_NEIGHBOURS: dict[str, str] = _keyboard_neighbours()
_WORD = re.compile(r"[^\W\d_]+")
MIN_WORD_LENGTH = 3


@functools.lru_cache(maxsize=1)
def _stopwords() -> frozenset[str]:
    # bm25s (a core dependency) ships an English list that also covers question words (how, what, does).
    from bm25s.stopwords import STOPWORDS_EN_PLUS

    return frozenset(w.lower() for w in STOPWORDS_EN_PLUS)


@dataclass(frozen=True)
class Typo:
    """One typo applied to one word of a query."""

    kind: str
    text: str
    original: str
    word: str
    typo_word: str
    start: int
    position: int  # character position inside the word that was edited


def content_words(text: str) -> list[tuple[int, int]]:
    """Spans of the words a typo may touch: letters only, at least 3 long, not a stopword."""
    stop = _stopwords()
    return [
        (m.start(), m.end()) for m in _WORD.finditer(text)
        if len(m.group()) >= MIN_WORD_LENGTH and m.group().lower() not in stop
    ]


def _match_case(char: str, like: str) -> str:
    return char.upper() if like.isupper() else char


def _edit_word(word: str, kind: str, rng: random.Random) -> tuple[str, int] | None:
    """Apply one edit of ``kind`` to ``word``; None when the word admits no such edit."""
    letters = string.ascii_lowercase
    if kind == "insertion":
        i = rng.randrange(len(word) + 1)
        like = word[min(i, len(word) - 1)]
        return word[:i] + _match_case(rng.choice(letters), like) + word[i:], i
    if kind == "deletion":
        i = rng.randrange(len(word))
        return word[:i] + word[i + 1:], i
    if kind == "substitution":
        i = rng.randrange(len(word))
        choices = [c for c in letters if c != word[i].lower()]
        return word[:i] + _match_case(rng.choice(choices), word[i]) + word[i + 1:], i
    if kind == "swap":
        spots = [i for i in range(len(word) - 1) if word[i] != word[i + 1]]
        if not spots:
            return None
        i = rng.choice(spots)
        return word[:i] + word[i + 1] + word[i] + word[i + 2:], i
    if kind == "keyboard":
        spots = [i for i, c in enumerate(word) if c.lower() in KEYBOARD_NEIGHBOURS]
        if not spots:
            return None
        i = rng.choice(spots)
        near = KEYBOARD_NEIGHBOURS[word[i].lower()]
        return word[:i] + _match_case(rng.choice(near), word[i]) + word[i + 1:], i
    raise InputError(f"typo kind {kind!r} is unknown; choose from {', '.join(TYPO_KINDS)}")


def make_typo(text: str, kind: str, rng: random.Random) -> Typo | None:
    """Put one typo of ``kind`` into one content word of ``text``; None when no word qualifies.

    Only that word changes; the rest of the query, its spacing and punctuation are kept byte for byte.
    """
    if kind not in TYPO_KINDS:
        raise InputError(f"typo kind {kind!r} is unknown; choose from {', '.join(TYPO_KINDS)}")
    spans = content_words(text)
    rng.shuffle(spans)
    for start, end in spans:
        word = text[start:end]
        edited = _edit_word(word, kind, rng)
        if edited is None:
            continue
        new_word, position = edited
        return Typo(kind=kind, text=text[:start] + new_word + text[end:], original=text, word=word,
                    typo_word=new_word, start=start, position=position)
    return None


def typo_rng(seed: int, kind: str, query_id: str) -> random.Random:
    """The generator for one (seed, kind, query): the same typo every run, independent of query order."""
    return random.Random(f"{seed}:{kind}:{query_id}")


# --------------------------------------------------------------------------------------------------
# Configuration and helpers
# --------------------------------------------------------------------------------------------------


@dataclass
class RobustnessConfig:
    """What to measure and how hard; the defaults finish in minutes for a small bi-encoder on DL19."""

    checks: tuple[str, ...] = CHECKS
    depth: int | None = None  # rerank only the first-stage top ``depth`` in the clean/typo/trap runs
    shuffles: int = 5
    order_depth: int | None = None  # candidates per list in the order check (default: ``depth``)
    typo_depth: int | None = None  # first-stage top N reranked in the typo check (default: ``depth``)
    position_list_size: int = 10
    typo_kinds: tuple[str, ...] = TYPO_KINDS
    typo_seeds: tuple[int, ...] = (0, 1, 2)
    depths: tuple[int, ...] = (10, 20, 50, 100)
    rel_level: int = 2
    seed: int = 0
    max_queries: int | None = None
    one_call: bool = True  # every ranking of every check in one rank_many call (see run_robustness)

    def validate(self) -> None:
        unknown = [c for c in self.checks if c not in CHECKS]
        if unknown:
            raise InputError(f"checks: unknown {', '.join(unknown)}; choose from {', '.join(CHECKS)}")
        bad_kinds = [k for k in self.typo_kinds if k not in TYPO_KINDS]
        if bad_kinds:
            raise InputError(
                f"typo_kinds: unknown {', '.join(bad_kinds)}; choose from {', '.join(TYPO_KINDS)}"
            )
        for name in ("depth", "order_depth", "typo_depth", "max_queries"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"{name} must be at least 1, got {value}")
        if self.shuffles < 1:
            raise InputError(f"shuffles must be at least 1, got {self.shuffles}")
        if self.position_list_size < 2:
            raise InputError(f"position_list_size must be at least 2, got {self.position_list_size}")
        if not self.depths or any(d < 1 for d in self.depths):
            raise InputError(f"depths must be positive integers, got {list(self.depths)}")
        if not self.typo_seeds:
            raise InputError("typo_seeds: give at least one seed")


def ndcg_per_query(run: Run, qrels: Qrels, rel_level: int = 2) -> dict[str, float]:
    """nDCG@10 of every query of ``run`` (trec_eval convention, via surerank.eval.metrics)."""
    from surerank.eval.metrics import evaluate

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


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return float(np.mean(values)) if values else None


class _Timer:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return round(time.perf_counter() - self.start, 3)


# --------------------------------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------------------------------


def _rank(ranker: Any, queries: list[Query], progress: Callable[[str], None]) -> list[RankedList]:
    ranked = ranker.rank_many(queries)
    if len(ranked) != len(queries):
        raise RuntimeError(f"ranker returned {len(ranked)} lists for {len(queries)} queries")
    progress(f"ranked {len(queries)} lists")
    return ranked


@dataclass(frozen=True)
class _Job:
    """One ranking to do: a query, how deep to rerank, and an optional replacement query text."""

    query: Query
    depth: int | None
    text: str | None = None


def _run_jobs(ranker: Any, jobs: Sequence[_Job], progress: Callable[[str], None]) -> list[dict[str, float]]:
    """All jobs in one ``rank_many`` call (a batching ranker encodes a repeated passage once).

    Each result is the scores of one job's query: the reranked head, then the first-stage tail.
    """
    batch, tails = [], []
    for j, job in enumerate(jobs):
        ordered = first_stage_order(job.query)
        head = ordered if job.depth is None else ordered[: job.depth]
        batch.append(with_candidates(job.query, head, f"#job{j}", job.text))
        tails.append([c.id for c in ordered])
    ranked = _rank(ranker, batch, progress)
    return [ranked_to_scores(r, tail) for r, tail in zip(ranked, tails, strict=True)]


def _summary(per_query: Mapping[str, float]) -> dict[str, Any]:
    return {MEASURE: _mean(per_query.values()), "n_queries": len(per_query)}


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
                progress: Callable[[str], None]) -> dict[str, Any]:
    """Rerank M shuffles of each list; Kendall tau to the unshuffled output and top-1 flip rate.

    Candidates with identical texts count as one item (see :func:`text_groups`): the orders compared
    are orders of distinct texts, so tie-breaks between copies of one passage are not order sensitivity.
    """
    from scipy.stats import kendalltau  # lazily: the CLI imports this module to build its help
    timer = _Timer()
    depth = config.order_depth or config.depth
    rng = np.random.default_rng(config.seed)
    lists = [first_stage_order(q)[:depth] if depth else first_stage_order(q) for q in queries]
    batch = []
    for query, cands in zip(queries, lists, strict=True):
        batch.append(with_candidates(query, cands, "#ref"))
        for m in range(config.shuffles):
            batch.append(with_candidates(query, [cands[i] for i in rng.permutation(len(cands))], f"#s{m}"))
    ranked = _rank(ranker, batch, progress)
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
        per_query[query.id] = {"kendall_tau": _mean(taus) if taus else 1.0, "top1_flip_rate": _mean(flips)}
        taus_all.extend(taus)
        flips_all.extend(flips)
    return {
        "shuffles": config.shuffles,
        "depth": depth,
        "duplicate_groups": duplicate_groups,
        "duplicate_items": duplicate_items,
        "kendall_tau_mean": _mean(taus_all),
        "kendall_tau_min": float(min(taus_all)) if taus_all else None,
        "top1_flip_rate": _mean(flips_all),
        "n_queries": len(queries),
        "per_query": per_query,
        "seconds": timer.seconds(),
    }


def _grade(qrels: Qrels, qid: str, doc_id: str) -> int | None:
    grade = qrels.get(qid, {}).get(doc_id)
    return None if grade is None else int(grade)


def position_check(ranker: Any, queries: list[Query], qrels: Qrels, config: RobustnessConfig,
                   progress: Callable[[str], None]) -> dict[str, Any]:
    """Top-1 accuracy with one relevant passage placed at each position among judged non-relevant ones.

    Per query the positive is its best-graded relevant candidate (first-stage order breaks ties) and the
    negatives are its highest first-stage judged grade-0 candidates: hard negatives, known non-relevant.
    A ranker without position bias has the same accuracy at every position.
    """
    timer = _Timer()
    size = config.position_list_size
    batch, positives, used, skipped = [], [], [], []
    for query in queries:
        ordered = first_stage_order(query)
        graded = [(c, _grade(qrels, query.id, c.id)) for c in ordered]
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
        return {"list_size": size, "n_queries": 0, "skipped": skipped, "positions": [],
                "top1_accuracy": [], "seconds": timer.seconds()}
    ranked = _rank(ranker, batch, progress)
    hits = np.zeros((len(used), size))
    for qi, positive in enumerate(positives):
        for p in range(size):
            hits[qi, p] = float(ranked[qi * size + p].ids[:1] == [positive])
    accuracy = hits.mean(axis=0)
    return {
        "list_size": size,
        "positions": list(range(1, size + 1)),
        "top1_accuracy": [float(a) for a in accuracy],
        "spread": float(accuracy.max() - accuracy.min()),
        "n_queries": len(used),
        "skipped": skipped,
        "seconds": timer.seconds(),
    }


def typo_check(ranker: Any, queries: list[Query], qrels: Qrels, clean: Mapping[str, float],
               config: RobustnessConfig, progress: Callable[[str], None]) -> dict[str, Any]:
    """nDCG@10 after one typo in one content word, per typo kind, averaged over seeds.

    ``clean`` is the ranker's nDCG@10 at ``config.depth``; at another ``typo_depth`` the clean
    reference is rerun at that depth, so a delta only ever compares equal depths.
    """
    timer = _Timer()
    depth = config.typo_depth or config.depth
    jobs: list[_Job] = []
    if depth != config.depth:
        jobs += [_Job(q, depth) for q in queries]
    examples = []
    keys: list[tuple[str, int, str]] = []
    skipped: dict[str, set[str]] = {kind: set() for kind in config.typo_kinds}
    for kind in config.typo_kinds:
        for seed in config.typo_seeds:
            for query in queries:
                typo = make_typo(query.text, kind, typo_rng(seed, kind, query.id))
                if typo is None:
                    skipped[kind].add(query.id)
                    continue
                jobs.append(_Job(query, depth, typo.text))
                keys.append((kind, seed, query.id))
                if seed == config.typo_seeds[0] and sum(e["kind"] == kind for e in examples) < 3:
                    examples.append({"kind": kind, "seed": seed, "qid": query.id, "query": query.text,
                                     "typo": typo.text})
    scored = _run_jobs(ranker, jobs, progress) if jobs else []
    if depth != config.depth:
        clean_run = {q.id: scores for q, scores in zip(queries, scored[: len(queries)], strict=True)}
        clean = ndcg_per_query(clean_run, qrels, config.rel_level)
        scored = scored[len(queries):]
    runs: dict[tuple[str, int], Run] = {}
    for (kind, seed, qid), scores in zip(keys, scored, strict=True):
        runs.setdefault((kind, seed), {})[qid] = scores
    kinds: dict[str, Any] = {}
    for kind in config.typo_kinds:
        per_seed = []
        per_query_delta: dict[str, list[float]] = {}
        perturbed_ids: set[str] = set()
        for seed in config.typo_seeds:
            if (kind, seed) not in runs:
                continue
            values = ndcg_per_query(runs[(kind, seed)], qrels, config.rel_level)
            deltas = {qid: values[qid] - clean[qid] for qid in values}
            for qid, d in deltas.items():
                per_query_delta.setdefault(qid, []).append(d)
            perturbed_ids.update(values)
            per_seed.append({"seed": seed, MEASURE: _mean(values.values()),
                             "clean": _mean(clean[q] for q in values), "delta": _mean(deltas.values()),
                             "n_queries": len(values)})
        deltas_mean = {q: float(np.mean(v)) for q, v in per_query_delta.items()}
        kinds[kind] = {
            MEASURE: _mean(s[MEASURE] for s in per_seed),
            "clean": _mean(s["clean"] for s in per_seed),
            "delta": _mean(s["delta"] for s in per_seed),
            "delta_std_over_seeds": float(np.std([s["delta"] for s in per_seed])) if per_seed else None,
            "queries_hurt": sum(d < -1e-9 for d in deltas_mean.values()),
            "queries_helped": sum(d > 1e-9 for d in deltas_mean.values()),
            "n_queries": len(perturbed_ids),
            "skipped": sorted(skipped[kind]),
            "per_seed": per_seed,
        }
    all_deltas = [k["delta"] for k in kinds.values() if k["delta"] is not None]
    return {"seeds": list(config.typo_seeds), "depth": depth, "kinds": kinds, "delta_mean": _mean(all_deltas),
            "examples": examples, "seconds": timer.seconds()}


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
            from surerank.registry import create

            bm25 = create("bm25")
        for query, ranked in zip(missing, bm25.rank_many(missing), strict=True):
            scores[query.id] = {item.id: float(item.score) for item in ranked}
    return scores


def trap_check(queries: list[Query], qrels: Qrels, clean: Mapping[str, float], config: RobustnessConfig,
               bm25: Any | None = None) -> dict[str, Any]:
    """nDCG@10 on queries whose best judged non-relevant (grade 0) passage out-scores every relevant one
    under BM25: the lexical trap.  The ranker's figure beside BM25's, on the slice and on the rest."""
    timer = _Timer()
    lexical = bm25_scores(queries, bm25)
    trap, rest, margins = [], [], {}
    for query in queries:
        by_doc = lexical[query.id]
        graded = {d: _grade(qrels, query.id, d) for d in by_doc}
        relevant = [by_doc[d] for d, g in graded.items() if g is not None and g >= config.rel_level]
        non_relevant = [by_doc[d] for d, g in graded.items() if g == 0]
        if not relevant or not non_relevant:
            continue
        margin = max(non_relevant) - max(relevant)
        margins[query.id] = float(margin)
        (trap if margin > 0 else rest).append(query.id)
    bm25_run = {qid: dict(lexical[qid]) for qid in trap + rest}
    bm25_ndcg = ndcg_per_query(bm25_run, qrels, config.rel_level) if bm25_run else {}
    return {
        "definition": "best judged grade-0 candidate has a higher BM25 score than the best relevant one "
                      f"(grade >= {config.rel_level})",
        "n_queries": len(trap),
        "n_rest": len(rest),
        "qids": trap,
        "ranker": {"trap": _mean(clean[q] for q in trap), "rest": _mean(clean[q] for q in rest)},
        "bm25": {"trap": _mean(bm25_ndcg[q] for q in trap), "rest": _mean(bm25_ndcg[q] for q in rest)},
        "bm25_margin": margins,
        "seconds": timer.seconds(),
    }


def depth_check(ranker: Any, queries: list[Query], qrels: Qrels, config: RobustnessConfig,
                progress: Callable[[str], None], known: Mapping[int | None, Mapping[str, float]]) -> dict:
    """nDCG@10 when reranking the first-stage top k, for each k in ``depths``."""
    timer = _Timer()
    longest = max(len(q.candidates) for q in queries)
    wanted = sorted(set(config.depths))
    todo = sorted({min(k, longest) for k in wanted} - set(known))
    jobs = [_Job(q, k) for k in todo for q in queries]
    scored = _run_jobs(ranker, jobs, progress) if jobs else []
    by_depth: dict[int | None, Mapping[str, float]] = dict(known)
    for i, k in enumerate(todo):
        part = scored[i * len(queries):(i + 1) * len(queries)]
        by_depth[k] = ndcg_per_query({q.id: sc for q, sc in zip(queries, part, strict=True)}, qrels,
                                     config.rel_level)
    rows = []
    for k in wanted:
        effective = min(k, longest)
        rows.append({"depth": k, MEASURE: _mean(by_depth[effective].values()),
                     "capped_at": effective if effective < k else None})
    first_stage = {q.id: {c.id: float(len(q.candidates) - i) for i, c in enumerate(first_stage_order(q))}
                   for q in queries}
    first_stage_ndcg = ndcg_per_query(first_stage, qrels, config.rel_level)
    return {"depths": rows, "first_stage": _mean(first_stage_ndcg.values()), "seconds": timer.seconds()}


class _Recorder:
    """Stands in for the ranker while the checks say what they will ask; answers in input order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.batches: list[list[Query]] = []

    def rank_many(self, queries: Iterable[Query]) -> list[RankedList]:
        batch = list(queries)
        self.batches.append(batch)
        return [RankedList.from_order(q, list(range(len(q.candidates))), ranker=self.name) for q in batch]

    def size(self) -> int:
        return sum(len(b) for b in self.batches)


class _Replayer:
    """Hands back the real ranker's answers, batch by batch, checking they answer the same requests."""

    def __init__(self, name: str, batches: list[list[Query]], answers: list[RankedList]) -> None:
        self.name = name
        self._batches = iter(batches)
        self._answers = iter(answers)

    def rank_many(self, queries: Iterable[Query]) -> list[RankedList]:
        batch, expected = list(queries), next(self._batches)
        out = [next(self._answers) for _ in expected]
        for asked, recorded, answer in zip(batch, expected, out, strict=True):
            if asked.id != recorded.id or asked.text != recorded.text or sorted(answer.ids) != sorted(
                    c.id for c in asked.candidates):
                raise RuntimeError(f"robustness replay out of step at query {asked.id!r}")
        return out


def _checks(ranker: Any, judged: list[Query], qrels: Qrels, config: RobustnessConfig, bm25: Any | None,
            say: Callable[[str], None]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    say(f"clean run over {len(judged)} queries")
    jobs = [_Job(q, config.depth) for q in judged]
    clean_run = {q.id: sc for q, sc in zip(judged, _run_jobs(ranker, jobs, say), strict=True)}
    clean = ndcg_per_query(clean_run, qrels, config.rel_level)
    result["clean"] = {**_summary(clean), "depth": config.depth, "per_query": clean}
    if "order" in config.checks:
        say("order sensitivity")
        result["order"] = order_check(ranker, judged, config, say)
    if "position" in config.checks:
        say("position bias")
        result["position"] = position_check(ranker, judged, qrels, config, say)
    if "typos" in config.checks:
        say("typos")
        result["typos"] = typo_check(ranker, judged, qrels, clean, config, say)
    if "trap" in config.checks:
        say("lexical trap slice")
        result["trap"] = trap_check(judged, qrels, clean, config, bm25)
    if "depth" in config.checks:
        say("reranking depth")
        longest = max(len(q.candidates) for q in judged)
        known = {min(config.depth or longest, longest): clean}
        result["depth"] = depth_check(ranker, judged, qrels, config, say, known)
    return result


def run_robustness(ranker: Any, queries: Sequence[Query], qrels: Qrels,
                   config: RobustnessConfig | None = None, *, bm25: Any | None = None,
                   dataset: str = "", progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the configured checks; returns a JSON-ready dict (schema ``surerank.robustness/1``).

    Queries without judgments are left out (their count is reported), never scored as zero.
    """
    config = config or RobustnessConfig()
    config.validate()
    say = progress or (lambda message: logger.info("robustness: %s", message))
    judged = [q for q in queries if qrels.get(q.id) and q.candidates]
    unjudged = [q.id for q in queries if not (qrels.get(q.id) and q.candidates)]
    if config.max_queries:
        judged = judged[: config.max_queries]
    if not judged:
        raise InputError("no query has both candidates and relevance judgments (check that qrels ids match)")
    timer = _Timer()
    name = getattr(ranker, "name", type(ranker).__name__)
    describe = ranker.describe() if hasattr(ranker, "describe") else {"ranker": name}
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "ranker": name,
        "ranker_config": describe,
        "dataset": dataset,
        "n_queries": len(judged),
        "unjudged_queries": unjudged,
        "config": asdict(config),
    }
    if config.one_call:
        # Every ranking the checks ask for is fixed by the seeds, not by the ranker's answers: record
        # them with a stand-in, rank them all in one rank_many call (a batching ranker then encodes each
        # distinct passage once), and replay the answers to the same checks.
        recorder = _Recorder(name)
        _checks(recorder, judged, qrels, config, bm25, lambda message: None)
        say(f"{name}: ranking {recorder.size()} lists in one call")
        answers = _rank(ranker, [q for batch in recorder.batches for q in batch], say)
        result.update(_checks(_Replayer(name, recorder.batches, answers), judged, qrels, config, bm25, say))
    else:
        result.update(_checks(ranker, judged, qrels, config, bm25, say))
    result["seconds"] = timer.seconds()
    return result


# --------------------------------------------------------------------------------------------------
# A plain-text table for the terminal
# --------------------------------------------------------------------------------------------------


def _fmt(value: Any, signed: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:+.4f}" if signed else f"{value:.4f}"
    return str(value)


def format_table(results: Sequence[Mapping[str, Any]]) -> str:
    """One column per ranker, one row per figure: what ``surerank robustness`` prints."""
    rows: list[tuple[str, list[str]]] = []

    def add(label: str, getter: Callable[[Mapping[str, Any]], Any], signed: bool = False) -> None:
        values = []
        for r in results:
            try:
                values.append(_fmt(getter(r), signed))
            except (KeyError, TypeError, IndexError):
                values.append("-")
        if any(v != "-" for v in values):
            rows.append((label, values))

    add(f"{MEASURE} (clean)", lambda r: r["clean"][MEASURE])
    add("order: Kendall tau (mean)", lambda r: r["order"]["kendall_tau_mean"])
    add("order: Kendall tau (min)", lambda r: r["order"]["kendall_tau_min"])
    add("order: top-1 flip rate", lambda r: r["order"]["top1_flip_rate"])
    add("order: duplicate texts (groups)", lambda r: r["order"]["duplicate_groups"] or None)
    add("position: top-1 acc @1", lambda r: r["position"]["top1_accuracy"][0])
    add("position: top-1 acc @last", lambda r: r["position"]["top1_accuracy"][-1])
    add("position: spread (max-min)", lambda r: r["position"]["spread"])
    kinds = sorted({k for r in results for k in r.get("typos", {}).get("kinds", {})}, key=TYPO_KINDS.index)
    for kind in kinds:
        add(f"typo {kind}: delta {MEASURE}", lambda r, k=kind: r["typos"]["kinds"][k]["delta"], signed=True)
    add("trap slice: queries", lambda r: r["trap"]["n_queries"])
    add(f"trap slice: ranker {MEASURE}", lambda r: r["trap"]["ranker"]["trap"])
    add(f"trap slice: bm25 {MEASURE}", lambda r: r["trap"]["bm25"]["trap"])
    add(f"rest: ranker {MEASURE}", lambda r: r["trap"]["ranker"]["rest"])
    add(f"rest: bm25 {MEASURE}", lambda r: r["trap"]["bm25"]["rest"])
    depths = sorted({row["depth"] for r in results for row in r.get("depth", {}).get("depths", [])})
    for d in depths:
        add(f"depth {d}: {MEASURE}",
            lambda r, d=d: next(row[MEASURE] for row in r["depth"]["depths"] if row["depth"] == d))
    add("seconds", lambda r: r["seconds"])
    header = ["figure"] + [str(r.get("ranker", "?")) for r in results]
    width0 = max(len(header[0]), *(len(label) for label, _ in rows)) if rows else len(header[0])
    widths = [max(len(header[i + 1]), *(len(v[i]) for _, v in rows)) if rows else len(header[i + 1])
              for i in range(len(results))]
    def line(first: str, cells: Sequence[str]) -> str:
        return "  ".join([first.ljust(width0)] + [c.rjust(w) for c, w in zip(cells, widths, strict=True)])

    lines = [line(header[0], header[1:]), line("-" * width0, ["-" * w for w in widths])]
    lines += [line(label, values) for label, values in rows]
    return "\n".join(lines)


__all__ = [
    "CHECKS", "KEYBOARD_NEIGHBOURS", "SCHEMA", "TYPO_KINDS", "RobustnessConfig", "Typo", "content_words",
    "format_table", "make_typo", "ndcg_per_query", "run_robustness", "typo_rng",
]
