"""The service's own routes: liveness, readiness, Prometheus metrics and the served models."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from surerank.serve import schemas
from surerank.serve.errors import ERROR_RESPONSES
from surerank.serve.guard import require_key
from surerank.serve.state import serve_state

router = APIRouter()


@router.get("/v1/models", response_model=schemas.ModelList, tags=["info"],
            dependencies=[Depends(require_key)], responses={401: ERROR_RESPONSES[401]})
async def models(request: Request) -> schemas.ModelList:
    """The served models; the first is used when a request names none."""
    config = serve_state(request).config
    return schemas.ModelList(data=[
        schemas.ModelCard(id=m.name, ranker=m.ranker, calibrated=m.calibration is not None,
                          default=m.name == config.default_model) for m in config.served_models()])


@router.get("/health", response_model=schemas.Health, tags=["info"])
async def health() -> schemas.Health:
    """Liveness: the process answers."""
    return schemas.Health(status="ok")


@router.get("/ready", response_model=schemas.Health, tags=["info"], responses={503: {"model": schemas.Health}})
async def ready(request: Request) -> schemas.Health | JSONResponse:
    """Readiness: models loaded, workers alive, not shutting down."""
    state = serve_state(request)
    if state.draining:
        return JSONResponse({"status": "draining"}, status_code=503, headers={"Retry-After": "5"})
    if not state.ready or not all(e.alive for e in state.engines.values()):
        return JSONResponse({"status": "not ready"}, status_code=503, headers={"Retry-After": "1"})
    return schemas.Health(status="ready")


@router.get("/metrics", tags=["info"], include_in_schema=False)
async def metrics(request: Request) -> Response:
    state = serve_state(request)
    state.refresh_queue_gauges()
    payload, content_type = state.metrics.render()
    return Response(payload, media_type=content_type)
