"""Cohere v2 and v1 rerank (``/v2/rerank``, ``/v1/rerank``; Jina's rerank API is the v1 shape), with
surerank's opt-in extras (calibrated probabilities, keep flags, cutoffs, raw scores)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from fastapi import APIRouter, Request, Response

from surerank.errors import InputError
from surerank.ranker import Ranker
from surerank.serve import schemas
from surerank.serve.body import BodyShape
from surerank.serve.guard import GuardedRoute
from surerank.serve.prepare import (
    Prepared,
    chunk_cap,
    document_texts,
    finite_score,
    prepare,
    truncation_notes,
    trust_request,
)
from surerank.serve.routes import RERANK_OPTIONS, TRUNCATED_HEADER
from surerank.serve.state import ServeState, serve_state
from surerank.serve.trust_hook import TrustRequest
from surerank.types import RankedItem, RankedList

# the objects whose keys are fixed (extra="forbid"): the guard names unknown keys before pydantic would
# build one error per key
COHERE_SHAPE = BodyShape("documents", objects=True, closed={
    (): frozenset(schemas.RerankRequest.model_fields), ("surerank",): frozenset(schemas.SureRankOptions.model_fields)})


class CohereRoute(GuardedRoute):
    shape = COHERE_SHAPE


router = APIRouter(route_class=CohereRoute)


@dataclass(frozen=True)
class ChunkPlan:
    """What ``max_chunks_per_doc`` means for the served model: the ranker variant to rank with (None: the
    served one), the most chunks scored per document, and a warning when the model caps lower."""

    variant: Ranker | None = None
    scored: int | None = None
    warning: str | None = None


def plan_chunks(state: ServeState, model: str, chunks: int | None, trust: TrustRequest | None) -> ChunkPlan:
    """The :class:`ChunkPlan` of a request, or a 422 when it cannot mean Cohere's chunks here."""
    if chunks is None:
        return ChunkPlan()
    cap, scored, warning = chunk_cap(model, state.rankers[model], chunks)
    if cap is not None and trust is not None:  # fewer chunks scored = other scores than the fit saw
        raise InputError(f"max_chunks_per_doc: model {model!r} was calibrated scoring its own passage cap; "
                         f"probabilities, keep flags and cutoffs for {cap} chunks per document would be "
                         f"off; send either max_chunks_per_doc or surerank.probability/keep/cutoff")
    return ChunkPlan(state.variant(model, cap) if cap is not None else None, scored, warning)


def result(body: schemas.RerankRequest, item: RankedItem, warnings: list[str],
           truncated: set[int]) -> schemas.RerankResult:
    """One ranked document on the wire; fields a request did not ask for are None (left out)."""
    score = finite_score(item.score, warnings, item.index)
    document = None
    if body.return_documents:
        sent = body.documents[item.index]
        document = schemas.ResultDocument.model_validate(
            {"text": sent} if isinstance(sent, str) else sent.model_dump(exclude_unset=True))
    return schemas.RerankResult(
        index=item.index, relevance_score=score, document=document,
        score=score if body.surerank is not None and body.surerank.raw_scores else None,
        probability=item.probability, keep=item.keep, truncated=True if item.index in truncated else None)


def response_body(body: schemas.RerankRequest, model: str, version: str, ranked: RankedList, prepared: Prepared,
                  truncated: list[int], warnings: list[str]) -> schemas.RerankResponse:
    """The whole answer; ``surerank`` extras only when the request sent ``surerank`` or a document was cut."""
    items = ranked.items[: body.top_n] if body.top_n is not None else ranked.items
    truncated_set = set(truncated)
    results = [result(body, item, warnings, truncated_set) for item in items]  # may add warnings: first
    extras = None
    if body.surerank is not None or truncated:
        extras = schemas.SureRankExtras(abstain=ranked.abstain, confidence=ranked.confidence,
                                        cutoff=ranked.info.get("cutoff"), truncated_documents=truncated or None)
    n = len(body.documents)
    tokens = prepared.tokens if n else 0
    return schemas.RerankResponse(
        id=prepared.query.id, model=model, results=results,
        usage=schemas.Usage(total_tokens=tokens, prompt_tokens=tokens),
        meta=schemas.Meta(api_version=schemas.ApiVersion(version=version),
                          billed_units=schemas.BilledUnits(search_units=math.ceil(n / 100)),
                          warnings=warnings or None),
        surerank=extras)


async def rerank(body: schemas.RerankRequest, request: Request, response: Response,
                 version: str) -> schemas.RerankResponse:
    """Both versions: check what the request asks of the model, rank it through the scheduler, answer."""
    state = serve_state(request)
    model, engine = state.engine(body.model)
    if body.relevant_spans is not None and body.relevant_spans.mode == "enabled":
        raise InputError("relevant_spans: mode 'enabled' is not supported by surerank")
    trust = trust_request(body.surerank)
    hook = state.hooks[model]
    if trust is not None:
        hook.check(trust)
    texts = document_texts(body.documents, body.rank_fields)
    chunks = plan_chunks(state, model, body.max_chunks_per_doc, trust)
    prepared = prepare(state.config.limits, body.query, texts, "documents", body.max_tokens_per_doc)
    ranked = await state.rank(model, engine, prepared, request, chunks.variant)
    if trust is not None:
        ranked = hook.apply(ranked, trust)
    truncated, warnings = truncation_notes(ranked, prepared, str(body.max_tokens_per_doc), chunks.scored)
    if chunks.warning:
        warnings.append(chunks.warning)
    if truncated:
        response.headers[TRUNCATED_HEADER] = ",".join(map(str, truncated))
    return response_body(body, model, version, ranked, prepared, truncated, warnings)


@router.post("/v2/rerank", response_model=schemas.RerankResponse, **RERANK_OPTIONS)
async def rerank_v2(body: schemas.RerankRequest, request: Request, response: Response) -> schemas.RerankResponse:
    """Cohere v2 rerank (the official SDK's ``ClientV2.rerank`` works unchanged)."""
    return await rerank(body, request, response, "2")


@router.post("/v1/rerank", response_model=schemas.RerankResponse, **RERANK_OPTIONS)
async def rerank_v1(body: schemas.RerankRequest, request: Request, response: Response) -> schemas.RerankResponse:
    """Cohere v1 / Jina rerank."""
    return await rerank(body, request, response, "1")
