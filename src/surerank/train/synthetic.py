"""Queries a corpus does not have: an LLM writes them for its passages (InPars / UDAPDR), a round trip keeps them.

Domain adaptation with no judgments starts here: for each chosen passage an LLM backend (any of
:func:`surerank.llm.make_backend`'s) is asked, with a named and versioned few-shot prompt, for a query the
passage answers; the answer is parsed and cleaned; the query is kept only if its source passage comes back in
the top k for it over the whole pool (:mod:`surerank.train.pool`).  What comes out is what a teacher and a
student train on: RankGPT-style lists (the first stage's BM25 candidates over the corpus, what
``surerank rerank --input`` reads), the source passage of each as a judgment (TREC qrels), every dropped query
with its reason, and a typed summary (:class:`SynthesisResult`) with the counts and the LLM's cost trace.

Deterministic given the seed (which passages, which examples in which order, temperature 0 by default);
resumable: every answer goes to an on-disk judgment cache as it arrives, so a rerun after a kill asks the LLM
only for what it has not answered.  Failed calls, retried attempts and cache hits are counted, never hidden.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from surerank import documents as doc
from surerank.errors import InputError
from surerank.formats import read_corpus
from surerank.llm import Budget, JudgmentCache, LLMBackend, LLMRequest, LLMResponse, Session, make_backend
from surerank.llm.parse import strip_thinking
from surerank.llm.prompts import clip, one_line
from surerank.llm.session import BudgetExhaustedError
from surerank.rankers.nested import RankerRef
from surerank.storage import atomic_open, atomic_write_json
from surerank.train.pool import RoundTrip, Verdict
from surerank.types import Candidate, Cost, Query

logger = logging.getLogger(__name__)

KIND = "surerank.synthetic-queries"
VERSION = 1
PARSE_DROPS = ("failed_call", "empty", "echo", "too_short", "too_long", "copied", "duplicate")


@dataclass(frozen=True)
class Example:
    """One few-shot example: a passage and a query it answers."""

    passage: str
    query: str


#: Made up for surerank in the style of MS MARCO (a web passage, the short question a searcher typed): InPars shows
#: examples from another collection, never the target's own queries (on a test collection those are the test set).
#: Everyday topics, so a model that repeats one is caught as an ``echo`` and no example leans toward a domain.
DEFAULT_EXAMPLES = (
    Example("The Eiffel Tower was built for the 1889 World's Fair in Paris and was the tallest man-made structure "
            "in the world until 1930.",
            "when was the eiffel tower built"),
    Example("Vitamin D is produced in the skin when it is exposed to sunlight, and it helps the body absorb "
            "calcium.",
            "how does the body make vitamin d"),
    Example("A mortgage is a loan used to buy a house, in which the house itself serves as collateral.",
            "what is a mortgage"),
    Example("A first passport application usually takes six to eight weeks to process; an expedited one takes two "
            "to three weeks for an extra fee.",
            "how long does it take to get a passport"),
)


@dataclass(frozen=True)
class QueryPrompt:
    """A named, versioned few-shot prompt.  Name and version go into the summary; the rendered text is in every
    cache key, so a changed prompt (a new version) never reuses the old one's answers."""

    name: str
    version: int
    instruction: str
    passage_label: str = "Document"
    query_label: str = "Relevant query"
    turns: bool = False
    """Chat turns: the instruction as the system message, each example a user turn (its passage alone) and an
    assistant turn (its query), the passage a last user turn; the model's own chat template (read by its backend)
    frames them.  False: InPars' one block of text ending in ``Relevant query:``, which a completion model
    continues; a small chat model shown it in one user message repeats the examples instead (docs/synthetic.md)."""

    def render(self, passage: str, examples: Sequence[Example]) -> str:
        shots = [f"Example {i}:\n{self.passage_label}: {one_line(e.passage)}\n{self.query_label}: {one_line(e.query)}"
                 for i, e in enumerate(examples, start=1)]
        last = f"Example {len(examples) + 1}:\n{self.passage_label}: {passage}\n{self.query_label}:"
        return "\n\n".join([self.instruction, *shots, last])

    def messages(self, passage: str, examples: Sequence[Example]) -> tuple[tuple[str, str], ...]:
        """The (role, text) messages of one request: :meth:`render` as one user message, or chat turns."""
        if not self.turns:
            return (("user", self.render(passage, examples)),)
        shots = [turn for e in examples for turn in (("user", one_line(e.passage)), ("assistant", one_line(e.query)))]
        return (("system", self.instruction), *shots, ("user", passage))


def asked_passage(request: LLMRequest) -> str:
    """The passage a request of these prompts asks a query for: its last message, or that message's last
    ``Document:`` line when the prompt is one message.  What a stand-in query writer reads."""
    last = request.messages[-1][1] if request.messages else request.text()
    found = re.findall(r"^Document: (.*)$", last, re.M)
    return found[-1] if found else last


#: ``inpars-chat`` (the default): the same pairs as chat turns, for instruct models.  ``inpars-vanilla``: InPars'
#: prompt (document / relevant query pairs, then the passage) in one message, with a one-line instruction.
PROMPTS = {
    "inpars-chat": QueryPrompt("inpars-chat", 1, "You write search queries. For each document, answer with one short "
                               "search query that the document answers, on one line, and nothing else.", turns=True),
    "inpars-vanilla": QueryPrompt("inpars-vanilla", 1, "Write a short search query that the last document answers. "
                                  "Answer with the query only, on one line."),
}


#: An answer is a query of 2 to 32 words; one of 6 words or more that is a run of the passage's words is a copy.
QUERY_WORDS = (2, 32)
COPY_WORDS = 6
#: The counts of a run, by stage: passages in the corpus, chosen, passed over for having no text; requests made
#: (sent or answered from the cache) and left unasked by the call budget; answers, parsed queries, kept queries.
#: asked = answered + failed calls; answered = parsed + the parse drops; parsed = kept + the round trip's drops.
COUNTS = ("passages", "passages_asked", "skipped_empty", "asked", "not_asked", "answered", "parsed", "kept")


@dataclass
class SynthesisConfig:
    """One run's settings, recorded in the summary."""

    passages: int | None = None
    """How many passages to sample, seeded (None: every passage that has text)."""
    queries_per_passage: int = 1
    """Requests per passage, each with its own seeded choice of examples (so answers differ at temperature 0)."""
    seed: int = 0
    prompt: str = "inpars-chat"
    examples: Sequence[Example] | None = None
    """The user's few-shot examples (None: :data:`DEFAULT_EXAMPLES`); ``shots`` of them go into each prompt
    (0: zero-shot, the instruction alone)."""
    shots: int = 3
    max_words: int = 200
    """Words of a passage shown to the model (the rest is cut)."""
    max_tokens: int = 48
    temperature: float = 0.0
    filter: RankerRef | None = None
    k: int = 10
    depth: int = 100
    """The round trip (:class:`surerank.train.pool.RoundTrip`): the source within ``k`` of ``depth`` first-stage
    candidates under ``filter`` (None: BM25 over the corpus; else a ranker spec re-ranking the candidates)."""
    drop_copies: bool = True
    """Drop a query that copies a run of :data:`COPY_WORDS` or more of the passage's words."""
    max_calls: int | None = None
    """A call budget over the whole run (cache hits count, so a rerun stops at the same place)."""
    group: int = 16
    """Passages per round of calls: the progress callback's step."""

    def __post_init__(self) -> None:
        if self.prompt not in PROMPTS:
            raise InputError(f"prompt: unknown {self.prompt!r}; choose one of {', '.join(PROMPTS)}")
        for name in ("queries_per_passage", "max_tokens", "group", "k"):
            if getattr(self, name) < 1:
                raise InputError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.shots < 0:
            raise InputError(f"shots: must be >= 0 (0: the instruction alone), got {self.shots}")
        if self.passages is not None and self.passages < 1:
            raise InputError(f"passages: must be >= 1 or None (all), got {self.passages}")
        if self.examples is not None and not self.examples:
            raise InputError("examples: give at least one (passage, query) example, or None for the default set")

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("examples", "filter")}
        out["examples"] = "default" if self.examples is None else [asdict(e) for e in self.examples]
        out["filter"] = self.filter if self.filter is None or isinstance(self.filter, (str, Mapping)) \
            else type(self.filter).__name__
        return out


@dataclass
class SynthesisResult:
    """The typed summary (``kind`` ``surerank.synthetic-queries``): the :data:`COUNTS`, dropped queries by
    reason, the LLM's cost trace (``details``: failures and retries by cause) and cache, the filter, the files."""

    prompt: dict[str, Any]
    backend: dict[str, Any]
    config: dict[str, Any]
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    dropped: dict[str, int] = field(default_factory=dict)
    cost: Cost = field(default_factory=Cost)
    cache: dict[str, Any] = field(default_factory=dict)
    filter: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    files: dict[str, str] = field(default_factory=dict)
    complete: bool = True
    """False when the call budget ran out before every request was made."""

    @property
    def seconds_per_query(self) -> float | None:
        """Wall seconds of the whole run per query asked (None when nothing was asked)."""
        asked = self.counts.get("asked", 0)
        return self.seconds / asked if asked else None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": KIND, "version": VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Any, where: str = "synthetic summary") -> SynthesisResult:
        doc.header(data, KIND, [VERSION], where)
        counts = doc.get(data, "counts", "object", where)
        dropped = doc.get(data, "dropped", "object", where)
        for name in COUNTS:
            doc.get(counts, name, "int", where, "counts", minimum=0)
        for reason in dropped:
            doc.get(dropped, reason, "int", where, "dropped", minimum=0)
        return cls(prompt=doc.get(data, "prompt", "object", where), backend=doc.get(data, "backend", "object", where),
                   config=doc.get(data, "config", "object", where), counts=dict(counts), dropped=dict(dropped),
                   cost=Cost(**doc.get(data, "cost", "object", where)), cache=doc.get(data, "cache", "object", where),
                   filter=doc.get(data, "filter", "object", where), seconds=doc.get(data, "seconds", "number", where),
                   files=doc.get(data, "files", "object", where), complete=doc.get(data, "complete", "bool", where))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SynthesisResult:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"{path}: not a readable synthetic-queries summary ({e})") from e
        return cls.from_dict(data, str(path))


# --- parsing ----------------------------------------------------------------------------------------------
_NUMBERING = re.compile(r"^\s*(?:\d+\s*[.)]|[-*•])\s*")
_LABEL = re.compile(r"^\s*(?:example\s*\d+\s*:\s*)?(?:relevant\s+)?(?:search\s+)?(?:query|question)\s*\d*\s*[:\-]\s*",
                    re.IGNORECASE)
_NEXT = re.compile(r"\b(?:document|example\s*\d+|passage)\s*:", re.IGNORECASE)
_QUOTES = "\"'`“”‘’«»"
_WORD = re.compile(r"\w+")


def parse_query(text: str | None, passage: str, config: SynthesisConfig) -> tuple[str | None, str | None]:
    """The query an answer gives and None, or None and why not (``empty``, ``echo``, ``too_short``,
    ``too_long``, ``copied``).  Reads the first line that is not a preamble (``Here is a query:``), drops numbering, a
    ``Query:`` label and quotes, and stops where a model goes on to write the next example."""
    lines = [line.strip() for line in strip_thinking(text).splitlines() if line.strip()]
    while len(lines) > 1 and lines[0].endswith(":"):
        lines.pop(0)
    if not lines:
        return None, "empty"
    line = _LABEL.sub("", _NUMBERING.sub("", lines[0]))
    if _NEXT.match(line):
        return None, "echo"  # the answer writes out a prompt's example instead of a query
    line = _NEXT.split(line, maxsplit=1)[0].strip().strip(_QUOTES).strip()
    words = line.split()
    if not words:
        return None, "empty"
    if len(words) < QUERY_WORDS[0]:
        return None, "too_short"
    if len(words) > QUERY_WORDS[1]:
        return None, "too_long"
    if config.drop_copies and _copied(line, passage, COPY_WORDS):
        return None, "copied"
    return " ".join(words), None


def _key(text: str) -> str:
    """A query's words, lower-cased: what makes two queries the same."""
    return " ".join(_WORD.findall(text.lower()))


def _copied(query: str, passage: str, min_words: int) -> bool:
    """A query of at least ``min_words`` words that is a run of the passage's own words, in order: a copied
    sentence teaches a student to match strings, not to rank."""
    q = _WORD.findall(query.lower())
    if len(q) < min_words:
        return False
    return f" {' '.join(q)} " in f" {' '.join(_WORD.findall(passage.lower()))} "


# --- the run ----------------------------------------------------------------------------------------------
@dataclass
class _Asked:
    """One request: the passage it is for and which of that passage's queries it is."""

    index: int
    passage: Candidate
    text: str
    number: int
    request: LLMRequest
    examples: tuple[Example, ...]
    """The examples the prompt showed: an answer that repeats one's query or copies its passage is an ``echo``."""

    def echoes(self, query: str) -> bool:
        return any(_key(query) == _key(e.query) or _copied(query, e.passage, COPY_WORDS) for e in self.examples)


def choose_passages(corpus: Sequence[Candidate], config: SynthesisConfig) -> tuple[list[int], int]:
    """Indices of the passages to ask for (corpus order; a seeded sample when ``passages`` is set) and how many
    passages were skipped as empty."""
    eligible = [i for i, c in enumerate(corpus) if c.text.strip()]
    skipped = len(corpus) - len(eligible)
    if config.passages is None or config.passages >= len(eligible):
        return eligible, skipped
    picked = np.random.default_rng(config.seed).choice(len(eligible), size=config.passages, replace=False)
    return [eligible[i] for i in sorted(int(p) for p in picked)], skipped


def build_requests(corpus: Sequence[Candidate], chosen: Sequence[int], config: SynthesisConfig) -> list[_Asked]:
    """Every request of the run, in order; the examples of request ``j`` of passage ``i`` are drawn from a
    generator seeded by (seed, i, j), so a rerun builds the same prompts (and hits the cache)."""
    prompt = PROMPTS[config.prompt]
    examples = list(config.examples or DEFAULT_EXAMPLES)
    shots = min(config.shots, len(examples))
    out = []
    for i in chosen:
        text, _ = clip(corpus[i].text, config.max_words)
        for j in range(config.queries_per_passage):
            order = np.random.default_rng([config.seed, i, j]).permutation(len(examples))[:shots]
            shown = [examples[int(k)] for k in order]
            request = LLMRequest(messages=prompt.messages(text, shown), max_tokens=config.max_tokens,
                                 temperature=config.temperature)
            out.append(_Asked(index=i, passage=corpus[i], text=text, number=j, request=request,
                              examples=tuple(shown)))
    return out


@dataclass
class SynthesisProgress:
    """What a run has done so far: handed to the ``progress`` callback (a CLI's bar) after each group."""

    asked: int = 0
    total: int = 0
    answered: int = 0
    parsed: list[tuple[_Asked, str]] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    records: list[dict[str, Any]] = field(default_factory=list)
    exhausted: bool = False


def _read_answers(progress: SynthesisProgress, asked: Sequence[_Asked], responses: Sequence[LLMResponse],
                  config: SynthesisConfig) -> None:
    seen = {(a.passage.id, _key(q)) for a, q in progress.parsed}
    for a, response in zip(asked, responses):
        progress.asked += 1
        reason: str | None = None
        query = None
        if not response.ok:
            reason = "failed_call"
        else:
            progress.answered += 1
            query, reason = parse_query(response.text, a.text, config)
            if query is not None and a.echoes(query):
                query, reason = None, "echo"
            elif query is not None and (a.passage.id, _key(query)) in seen:
                query, reason = None, "duplicate"
        if query is None:
            progress.dropped[reason or "empty"] += 1
            progress.records.append({"passage": a.passage.id, "number": a.number, "reason": reason,
                                     "answer": response.text, "cause": response.cause})
            continue
        seen.add((a.passage.id, _key(query)))
        progress.parsed.append((a, query))


def _ask(session: Session, asked: Sequence[_Asked], config: SynthesisConfig,
         progress_hook: Callable[[SynthesisProgress], None] | None) -> SynthesisProgress:
    """Send the requests a group of passages at a time; stop (and say so) when the call budget runs out."""
    progress = SynthesisProgress(total=len(asked))
    per_group = config.group * config.queries_per_passage
    for start in range(0, len(asked), per_group):
        chunk = asked[start:start + per_group]
        try:
            responses = session.run([a.request for a in chunk], partial=True)
        except BudgetExhaustedError:
            responses = []
        _read_answers(progress, chunk[:len(responses)], responses, config)
        if progress_hook is not None:
            progress_hook(progress)
        if len(responses) < len(chunk):
            progress.exhausted = True
            break
    return progress


def _backend_with_cache(backend: str | LLMBackend, options: Mapping[str, Any] | None, cache: Path) -> LLMBackend:
    """The backend, answering through an on-disk judgment cache (``cache``, unless it already has one): what
    makes a killed run resumable without asking again."""
    options = dict(options or {})
    if not isinstance(backend, LLMBackend):
        options.setdefault("cache", str(cache))
        return make_backend(backend, **options)
    if backend.cache is None:
        logger.info("synthetic queries: %s answers through the cache %s", backend.name, cache)
        backend.cache = JudgmentCache(cache)
    elif backend.cache.path == ":memory:":
        logger.warning("synthetic queries: %s's judgment cache is in memory; a killed run will ask again",
                       backend.name)
    return backend


def synthesise(corpus: Sequence[Candidate] | str | os.PathLike[str], out: str | os.PathLike[str],
               backend: str | LLMBackend = "openai", config: SynthesisConfig | None = None, *,
               backend_options: Mapping[str, Any] | None = None, cache: str | os.PathLike[str] | None = None,
               progress: Callable[[SynthesisProgress], None] | None = None) -> SynthesisResult:
    """Write synthetic training queries for a corpus (a file :func:`surerank.formats.read_corpus` reads, or
    candidates) into folder ``out``: ``queries.json`` (RankGPT-style lists of the kept queries), ``qrels.txt``
    (each query's source passage, grade 1), ``dropped.jsonl`` (every dropped query and why), ``summary.json``
    (the :class:`SynthesisResult` returned).  ``cache``: the LLM judgment cache (default ``out/llm-cache.sqlite``);
    ``progress`` is called after each group of passages."""
    start = time.perf_counter()
    config = config or SynthesisConfig()
    docs = list(read_corpus(corpus)) if isinstance(corpus, (str, os.PathLike)) else list(corpus)
    if not docs:
        raise InputError("corpus: no passages")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    llm = _backend_with_cache(backend, backend_options, Path(cache) if cache else folder / "llm-cache.sqlite")
    round_trip = RoundTrip(docs, k=config.k, depth=config.depth, ranker=config.filter)
    chosen, skipped = choose_passages(docs, config)
    asked = build_requests(docs, chosen, config)
    session = Session(llm, Budget(max_calls=config.max_calls))
    logger.info("synthetic queries: asking %s for %d queries of %d passages", llm.name, len(asked), len(chosen))
    done = _ask(session, asked, config, progress)
    verdicts = round_trip.check([Query(text=q, id=_qid(a)) for a, q in done.parsed],
                                [a.passage.id for a, _ in done.parsed])
    counts = {"passages": len(docs), "passages_asked": len(chosen), "skipped_empty": skipped, "asked": done.asked,
              "not_asked": len(asked) - done.asked, "answered": done.answered, "parsed": len(done.parsed), "kept": 0}
    result = SynthesisResult(
        prompt={"name": config.prompt, "version": PROMPTS[config.prompt].version,
                "examples": "default" if config.examples is None else "given"},
        backend=llm.describe(), config=config.to_json(), counts=counts, cost=session.finish(),
        complete=not done.exhausted, filter={**round_trip.describe(), "cost": asdict(round_trip.cost)})
    result.cache = {"path": str(llm.cache.path) if llm.cache else None, "hits": result.cost.cache_hits,
                    "entries": len(llm.cache) if llm.cache else 0}
    _finish(result, done, verdicts, folder)
    result.seconds = time.perf_counter() - start
    atomic_write_json(folder / "summary.json", result.to_dict(), indent=1)
    _report(result)
    return result


def _qid(asked: _Asked) -> str:
    return f"syn-{asked.passage.id}-{asked.number}"


def _finish(result: SynthesisResult, done: SynthesisProgress, verdicts: Sequence[Verdict], folder: Path) -> None:
    """Count the round trip's drops and write the lists, the judgments and the dropped queries."""
    dropped = Counter(done.dropped)
    records = list(done.records)
    lists = []
    for (asked, query), verdict in zip(done.parsed, verdicts):
        if verdict.kept:
            lists.append(_training_list(verdict, asked))
            continue
        dropped[verdict.reason or ""] += 1
        records.append({"passage": asked.passage.id, "number": asked.number, "reason": verdict.reason,
                        "query": query, "source_rank": verdict.rank})
    result.counts["kept"] = len(lists)
    result.dropped = dict(sorted(dropped.items()))
    files = {"lists": folder / "queries.json", "qrels": folder / "qrels.txt", "dropped": folder / "dropped.jsonl",
             "summary": folder / "summary.json"}
    atomic_write_json(files["lists"], lists)
    with atomic_open(files["qrels"]) as handle:
        handle.writelines(f"{entry['qid']} 0 {entry['source']} 1\n" for entry in lists)
    with atomic_open(files["dropped"]) as handle:
        handle.writelines(json.dumps(record) + "\n" for record in records)
    result.files = {name: str(path) for name, path in files.items()}


def _training_list(verdict: Verdict, asked: _Asked) -> dict[str, Any]:
    """One kept query as a RankGPT-style entry: the first stage's candidates, the source passage named."""
    qid = verdict.query.id
    hits = [{"qid": qid, "docid": c.id, "rank": rank, "score": float(c.metadata.get("bm25_score", 0.0)),
             "content": c.text} for rank, c in enumerate(verdict.query.candidates, start=1)]
    return {"qid": qid, "query": verdict.query.text, "source": asked.passage.id, "source_rank": verdict.rank,
            "hits": hits}


def _report(result: SynthesisResult) -> None:
    """One line of counts, and one warning naming every cause when anything failed, was retried or dropped."""
    n = result.counts
    logger.info("synthetic queries: %d asked, %d answered, %d parsed, %d kept (%d from the cache) in %.1f s",
                n["asked"], n["answered"], n["parsed"], n["kept"], result.cost.cache_hits, result.seconds)
    details = result.cost.details
    problems = []
    if details.get("errors"):
        problems.append(f"{details['errors']} calls failed ({details.get('failures')})")
    if result.cost.retries:
        problems.append(f"{result.cost.retries} attempts retried ({details.get('retry_causes')})")
    if result.dropped:
        problems.append(f"dropped {sum(result.dropped.values())} queries ({result.dropped})")
    if not result.complete:
        problems.append(f"the call budget ran out: {n['not_asked']} requests not asked")
    if problems:
        logger.warning("synthetic queries: %s", "; ".join(problems))


__all__ = ["COPY_WORDS", "COUNTS", "DEFAULT_EXAMPLES", "KIND", "PARSE_DROPS", "PROMPTS", "QUERY_WORDS", "VERSION",
           "Example", "QueryPrompt", "SynthesisConfig", "SynthesisProgress", "SynthesisResult", "asked_passage",
           "build_requests", "choose_passages", "parse_query", "synthesise"]
