"""LlamaIndex node postprocessor backed by ``surerank serve``: nodes come back best first, scored."""

from __future__ import annotations

from typing import Any

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from surerank.serve.client import AsyncSureRankClient, RerankResponse, SureRankClient


class SureRankPostprocessor(BaseNodePostprocessor):
    """Rerank retrieved nodes with a surerank service and keep the best ``top_n``."""

    base_url: str = Field(default="http://127.0.0.1:8080", description="the surerank service")
    api_key: str | None = Field(default=None, description="Bearer API key, if the service needs one")
    model: str | None = Field(default=None, description="served model name; default: the service's first")
    top_n: int | None = Field(default=3, description="nodes kept; None keeps all, reordered")
    timeout: float = Field(default=30.0)
    max_retries: int = Field(default=3)
    _client: SureRankClient | None = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "SureRankPostprocessor"

    def _options(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "api_key": self.api_key, "model": self.model,
                "timeout": self.timeout, "max_retries": self.max_retries}

    @staticmethod
    def _texts(nodes: list[NodeWithScore]) -> list[str]:
        return [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]

    @staticmethod
    def _nodes(nodes: list[NodeWithScore], response: RerankResponse) -> list[NodeWithScore]:
        return [NodeWithScore(node=nodes[r.index].node, score=r.relevance_score) for r in response.results]

    def _postprocess_nodes(self, nodes: list[NodeWithScore],
                           query_bundle: QueryBundle | None = None) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("SureRankPostprocessor needs the query (query_bundle or query_str)")
        if not nodes:
            return []
        if self._client is None:
            self._client = SureRankClient(**self._options())
        response = self._client.rerank(query_bundle.query_str, self._texts(nodes), top_n=self.top_n)
        return self._nodes(nodes, response)

    async def _apostprocess_nodes(self, nodes: list[NodeWithScore],
                                  query_bundle: QueryBundle | None = None) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("SureRankPostprocessor needs the query (query_bundle or query_str)")
        if not nodes:
            return []
        async with AsyncSureRankClient(**self._options()) as client:
            response = await client.rerank(query_bundle.query_str, self._texts(nodes), top_n=self.top_n)
        return self._nodes(nodes, response)
