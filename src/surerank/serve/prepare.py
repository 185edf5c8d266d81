"""Request preparation: what a validated request ranks, checked against every per-request limit.

The text of each document (``rank_fields``), the limits (413 naming the one crossed, never a silent cut),
the cuts a request asked for (``max_tokens_per_doc``, TEI ``truncate``), the passage cap that
``max_chunks_per_doc`` means for the served ranker, and the notes an answer carries about cut documents.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from surerank.errors import InputError, LimitExceededError
from surerank.ranker import Ranker
from surerank.serve import schemas
from surerank.serve.config import Limits
from surerank.serve.errors import describe_value
from surerank.serve.tokens import budget_tokens, count_tokens, truncate_tokens
from surerank.serve.trust_hook import TrustRequest
from surerank.types import Candidate, Query, RankedList

NON_FINITE_SCORE = -1e30  # what a non-finite score is sent as (JSON has no inf or nan)


@dataclass
class Prepared:
    """A request ready for the scheduler: its query, its token cost, and the documents it cut."""

    query: Query
    tokens: int
    cut: dict[int, int] = field(default_factory=dict)  # index -> original estimated tokens


def document_texts(documents: Sequence[str | schemas.DocumentObject], rank_fields: Sequence[str] | None) -> list[str]:
    """The text ranked for each document; an object without the field(s) it is ranked by is a 422.

    Cohere v1 ``rank_fields``: the named fields, in order; one field ranks its value as is (so
    ``["text"]`` is the default), several are joined as ``field: value`` lines, the YAML-like form Cohere
    recommends for structured documents.  String documents are ranked as they are.
    """
    names = list(rank_fields) if rank_fields else ["text"]
    texts = []
    for i, document in enumerate(documents):
        if isinstance(document, str):
            texts.append(document)
            continue
        sent = document.model_dump(exclude_unset=True)
        values = []
        for name in names:
            if name not in sent:
                hint = ("rank_fields names it" if rank_fields else
                        "a document object needs a string 'text' (or rank_fields naming the fields to rank)")
                raise InputError(f"documents[{i}].{name}: missing; {hint}")
            if not isinstance(sent[name], str):
                raise InputError(f"documents[{i}].{name}: expected a string, got {describe_value(sent[name])}")
            values.append(sent[name])
        texts.append(values[0] if len(names) == 1 else
                     "\n".join(f"{name}: {value}" for name, value in zip(names, values, strict=True)))
    return texts


def check_characters(limits: Limits, query: str, texts: Sequence[str], field_name: str) -> None:
    """The count and character limits, checked before any text is tokenized (cheap, and bounds that work)."""
    if len(texts) > limits.max_documents:
        raise LimitExceededError(
            f"{field_name}: {len(texts)} documents is over the limit max_documents={limits.max_documents}")
    if len(query) > limits.max_query_chars:
        raise LimitExceededError(
            f"query: {len(query)} characters is over the limit max_query_chars={limits.max_query_chars}")
    total_chars = len(query)
    for i, text in enumerate(texts):
        if len(text) > limits.max_document_chars:
            raise LimitExceededError(
                f"{field_name}[{i}]: {len(text)} characters is over the limit "
                f"max_document_chars={limits.max_document_chars}")
        total_chars += len(text)
    if total_chars > limits.max_total_chars:
        raise LimitExceededError(
            f"{field_name}: {total_chars} characters in all is over the limit "
            f"max_total_chars={limits.max_total_chars}")


def prepare(
    limits: Limits,
    query: str,
    texts: Sequence[str],
    field_name: str,
    cut_tokens: int | None,
    left: bool = False,
    cut_hint: str = "max_tokens_per_doc",
) -> Prepared:
    """Check every per-request limit (413 naming it), cut documents only where the request asked."""
    check_characters(limits, query, texts, field_name)
    query_tokens = budget_tokens(query)
    total_tokens = 0
    cut: dict[int, int] = {}
    candidates = []
    doc_limit = limits.max_document_tokens
    for i, text in enumerate(texts):
        # exact word-piece counts only where a text is long enough to cross a limit or a requested cut
        if cut_tokens is not None and len(text) > cut_tokens:
            kept, original = truncate_tokens(text, cut_tokens, left=left)
            if original > cut_tokens:
                text = kept
                cut[i] = original
        if len(text) > doc_limit and (tokens := count_tokens(text)) > doc_limit:
            raise LimitExceededError(
                f"{field_name}[{i}]: {tokens} estimated tokens is over the limit max_document_tokens="
                f"{doc_limit}; set {cut_hint} to cut long documents")
        total_tokens += budget_tokens(text) + query_tokens
        candidates.append(Candidate(id=str(i), text=text))
    if total_tokens > limits.max_request_tokens:
        raise LimitExceededError(
            f"{field_name}: {total_tokens} estimated tokens (query + documents) is over the limit "
            f"max_request_tokens={limits.max_request_tokens}")
    query_object = Query(text=query, candidates=tuple(candidates), id=uuid.uuid4().hex)
    return Prepared(query_object, max(1, total_tokens), cut)


def trust_request(options: schemas.SureRankOptions | None) -> TrustRequest | None:
    """What a request asks of the trust hook; None when it asks for nothing calibrated."""
    if options is None or not (options.probability or options.keep or options.cutoff):
        return None
    return TrustRequest(probability=options.probability, keep=options.keep, cutoff=options.cutoff)


def chunk_cap(model: str, ranker: Ranker, chunks: int) -> tuple[int | None, int, str | None]:
    """Map Cohere v1 ``max_chunks_per_doc`` onto the ranker's passage policy, or refuse (422 naming it).

    Returns the passage cap to rank with (None: the ranker as served already means this), the most chunks
    a document gets scored, and a warning when the model's own cap is lower than the request's.
    Cohere's meaning: a document is split into model-window chunks, at most ``chunks`` are scored, the
    best one decides.
    """
    policy = getattr(ranker, "policy", None)
    if not dataclasses.is_dataclass(policy) or not hasattr(policy, "max_passages"):
        raise InputError(f"max_chunks_per_doc: model {model!r} does not split documents into chunks (its "
                         f"ranker has no long_documents option); leave the field out")
    if policy.mode != "passages":
        if chunks == 1:
            return None, 1, None  # truncate mode scores exactly the first window: one chunk
        raise InputError(f"max_chunks_per_doc: model {model!r} scores one window per document "
                         f"(long_documents={policy.mode!r}), not {chunks} chunks; serve it with "
                         f"--option {model}.long_documents=passages, or send max_chunks_per_doc=1")
    if policy.aggregate != "max":
        raise InputError(f"max_chunks_per_doc: model {model!r} combines chunk scores by "
                         f"{policy.aggregate!r}, not by the best chunk as Cohere does; serve it with "
                         f"--option {model}.aggregate=max")
    if policy.max_passages is not None and policy.max_passages <= chunks:
        if policy.max_passages == chunks:
            return None, chunks, None
        return None, policy.max_passages, (
            f"max_chunks_per_doc: {chunks} is over model {model!r}'s max_passages={policy.max_passages}; "
            f"at most {policy.max_passages} chunks per document were scored")
    return chunks, chunks, None


def finite_score(value: float, warnings: list[str], index: int) -> float:
    """A score JSON can carry: a non-finite one is sent as :data:`NON_FINITE_SCORE`, with a warning."""
    if math.isfinite(value):
        return value
    warnings.append(f"documents[{index}]: the ranker gave a non-finite score ({value}); sent as -1e30")
    return NON_FINITE_SCORE


def truncation_notes(ranked: RankedList, prepared: Prepared, cut_name: str,
                     chunks: int | None = None) -> tuple[list[int], list[str]]:
    """The documents cut (by the request's own cut, or by the model's input length or passage cap), and
    a warning saying which and why."""
    notes: list[str] = []
    by_model = sorted(item.index for item in ranked.items
                      if item.truncation is not None and item.truncation.truncated)
    if prepared.cut:
        notes.append(f"documents {sorted(prepared.cut)} were cut to {cut_name} estimated tokens as requested")
    if by_model:
        dropped = sum(item.truncation.tokens_dropped for item in ranked.items
                      if item.truncation is not None and item.truncation.truncated)
        if chunks is None:
            notes.append(f"documents {by_model} were longer than the model's input and truncated by the ranker "
                         f"({dropped} model tokens not scored)")
        else:
            notes.append(f"documents {by_model} were longer than max_chunks_per_doc={chunks} model windows; "
                         f"only those were scored ({dropped} model tokens not scored)")
    return sorted(set(prepared.cut) | set(by_model)), notes
