"""Text Embeddings Inference rerank (``/rerank``): a bare list of ``{index, score, text?}``, best first."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from surerank.scores import sigmoid
from surerank.serve import schemas
from surerank.serve.body import BodyShape
from surerank.serve.guard import GuardedRoute
from surerank.serve.prepare import finite_score, prepare, truncation_notes
from surerank.serve.routes import RERANK_OPTIONS, TRUNCATED_HEADER
from surerank.serve.state import serve_state
from surerank.types import RankedList

TEI_SHAPE = BodyShape("texts", objects=False, closed={(): frozenset(schemas.TEIRerankRequest.model_fields)})


class TEIRoute(GuardedRoute):
    shape = TEI_SHAPE


router = APIRouter(route_class=TEIRoute)


def ranks(body: schemas.TEIRerankRequest, ranked: RankedList) -> list[schemas.TEIRank]:
    """The answer: the sigmoid of each score unless ``raw_scores`` (as TEI does), the text if asked."""
    warnings: list[str] = []  # TEI's bare list has no place for them
    out = []
    for item in ranked.items:
        score = finite_score(item.score, warnings, item.index)
        out.append(schemas.TEIRank(index=item.index, score=score if body.raw_scores else sigmoid(score),
                                   text=body.texts[item.index] if body.return_text else None))
    return out


@router.post("/rerank", response_model=list[schemas.TEIRank], **RERANK_OPTIONS)
async def rerank_tei(body: schemas.TEIRerankRequest, request: Request,
                     response: Response) -> list[schemas.TEIRank]:
    """Text Embeddings Inference rerank: a list of {index, score, text?}, best first."""
    state = serve_state(request)
    model, engine = state.engine(body.model)
    cut = state.config.limits.max_document_tokens if body.truncate else None
    prepared = prepare(state.config.limits, body.query, body.texts, "texts", cut,
                       left=body.truncation_direction.lower() == "left", cut_hint="truncate=true")
    ranked = await state.rank(model, engine, prepared, request)
    truncated, _ = truncation_notes(ranked, prepared, str(cut))
    if truncated:
        response.headers[TRUNCATED_HEADER] = ",".join(map(str, truncated))
    return ranks(body, ranked)
