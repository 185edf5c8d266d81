"""LangChain document compressor backed by ``surerank serve``.

Use it in a ``ContextualCompressionRetriever``; every returned document carries ``relevance_score`` (and
``probability`` / ``keep`` when asked for) in its metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import Document
from langchain_core.documents.compressor import BaseDocumentCompressor
from pydantic import ConfigDict, PrivateAttr

from surerank.serve.client import AsyncSureRankClient, RerankResponse, SureRankClient


class SureRankCompressor(BaseDocumentCompressor):
    """Rerank retrieved documents with a surerank service and keep the best ``top_n``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    base_url: str = "http://127.0.0.1:8080"
    api_key: str | None = None
    model: str | None = None
    top_n: int | None = 3
    timeout: float = 30.0
    max_retries: int = 3
    probability: bool = False
    keep: bool = False
    _client: SureRankClient | None = PrivateAttr(default=None)

    def _options(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "api_key": self.api_key, "model": self.model,
                "timeout": self.timeout, "max_retries": self.max_retries}

    def _documents(self, documents: Sequence[Document], response: RerankResponse) -> list[Document]:
        out = []
        for result in response.results:
            source = documents[result.index]
            metadata = {**source.metadata, "relevance_score": result.relevance_score}
            if result.probability is not None:
                metadata["probability"] = result.probability
            if result.keep is not None:
                metadata["keep"] = result.keep
            out.append(Document(page_content=source.page_content, metadata=metadata, id=source.id))
        return out

    def compress_documents(self, documents: Sequence[Document], query: str,
                           callbacks: Callbacks | None = None) -> Sequence[Document]:
        if not documents:
            return []
        if self._client is None:
            self._client = SureRankClient(**self._options())
        response = self._client.rerank(query, [d.page_content for d in documents], top_n=self.top_n,
                                       probability=self.probability, keep=self.keep)
        return self._documents(documents, response)

    async def acompress_documents(self, documents: Sequence[Document], query: str,
                                  callbacks: Callbacks | None = None) -> Sequence[Document]:
        if not documents:
            return []
        async with AsyncSureRankClient(**self._options()) as client:
            response = await client.rerank(query, [d.page_content for d in documents], top_n=self.top_n,
                                           probability=self.probability, keep=self.keep)
        return self._documents(documents, response)
