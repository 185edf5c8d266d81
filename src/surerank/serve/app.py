"""The ASGI app: Cohere / Jina / TEI rerank endpoints over the batching scheduler.

:func:`create_app` assembles it from a :class:`~surerank.serve.config.ServeConfig`: the served models
(:mod:`.state`), the error answers (:mod:`.errors`), one router per wire format (:mod:`.routes`) and the
gate around it all (:mod:`.gate`); :func:`surerank.serve.server.run` serves it (``surerank serve``).  Only
the public ranker API is used: ``rank_many`` on :class:`~surerank.types.Query` objects, results as
:class:`~surerank.types.RankedList`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI

from surerank import __version__
from surerank.ranker import Ranker
from surerank.serve.config import ServeConfig
from surerank.serve.errors import ErrorAnswers
from surerank.serve.gate import Gate
from surerank.serve.prepare import chunk_cap
from surerank.serve.routes import cohere, info, tei
from surerank.serve.state import ServeState, build_rankers, build_trust_hooks
from surerank.serve.trust_hook import TrustHook

DESCRIPTION = "Rerank search results and RAG context (Cohere, Jina and TEI wire formats)."


def create_app(
    config: ServeConfig,
    rankers: Mapping[str, Ranker] | None = None,
    trust_hooks: Mapping[str, TrustHook] | None = None,
) -> Gate:
    """The ASGI app.  ``rankers`` (by served name) skips building them from the registry."""
    state = ServeState(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(state.load, rankers, trust_hooks)  # model loading blocks: off the loop
        try:
            yield
        finally:
            state.draining = True
            await asyncio.to_thread(state.stop)

    app = FastAPI(title="surerank", version=__version__, lifespan=lifespan, description=DESCRIPTION)
    app.state.surerank = state
    ErrorAnswers(state.metrics).install(app)
    for router in (cohere.router, tei.router, info.router):  # this order is the OpenAPI schema's
        app.include_router(router)
    return Gate(app, state)


# kept importable from here, their home before the split
__all__ = ["build_rankers", "build_trust_hooks", "chunk_cap", "create_app"]
