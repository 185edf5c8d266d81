"""Wire schemas: the Cohere v2 / Jina rerank shape, the TEI rerank shape, and surerank's extras.

Unknown request fields are refused (422 naming the field) rather than ignored, so nothing a client asks
for is silently dropped; the few fields that other APIs define and surerank accepts without acting on
are listed and documented (``priority``).  Cohere v1's ``rank_fields`` and ``max_chunks_per_doc`` are
accepted with Cohere's meaning (checked per request in :mod:`surerank.serve.routes.cohere`, where the
served model is known).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# pydantic stops validating a list at max_length + 1 items: no unbounded list of per-item errors
MAX_RANK_FIELDS = 64


class DocumentObject(BaseModel):
    """A document as an object: ``text`` (or the fields ``rank_fields`` names) is ranked; every field is
    echoed back with ``return_documents``.

    ``text`` is optional here only because ``rank_fields`` may name other fields; the app refuses an object
    without the field(s) it ranks (422 naming ``documents[i].field``).
    """

    model_config = ConfigDict(extra="allow")
    text: str | None = Field(None, description="the text to rank (required unless rank_fields names others)")


class SureRankOptions(BaseModel):
    """surerank extras, each opt-in.  Those that need calibration answer 422 when the model has none."""

    model_config = ConfigDict(extra="forbid")
    probability: bool = Field(False, description="add a calibrated probability of relevance per result")
    keep: bool = Field(False, description="add a keep flag per result (cutoff) and an abstain flag per query")
    cutoff: str | None = Field(
        None, max_length=64,
        description="cutoff method for keep flags, as the trust layer names them"
    )
    raw_scores: bool = Field(False, description="add the ranker's raw score per result as 'score'")


class RelevantSpans(BaseModel):
    model_config = ConfigDict(extra="allow")
    mode: Literal["enabled", "disabled"] = "disabled"


class RerankRequest(BaseModel):
    """Cohere v2 (and v1) / Jina rerank request."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, max_length=256, description="a served model name; default: the first")
    query: str = Field(description="the search query")
    documents: list[str | DocumentObject] = Field(description="texts or objects with 'text'")
    top_n: int | None = Field(None, ge=1, description="return only the best top_n results")
    return_documents: bool = Field(
        False, description="echo each document in its result (default false, as Cohere's; Jina's API defaults "
                           "to true)",
    )
    max_tokens_per_doc: int | None = Field(
        None, ge=1,
        description="cut each document after this many (estimated) tokens; reported in meta.warnings",
    )
    rank_fields: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None, min_length=1, max_length=MAX_RANK_FIELDS,
        description="Cohere v1: for object documents, the fields to rank, in this order (one field: its "
                    "value; several: 'field: value' lines); each object must have them as strings",
    )
    max_chunks_per_doc: int | None = Field(
        None, ge=1,
        description="Cohere v1: score at most this many model-window chunks per document, the best chunk "
                    "deciding; needs a model served with long_documents=passages (1 works on any "
                    "windowed model), else 422",
    )
    priority: int | None = Field(None, description="accepted for Cohere compatibility; not used")
    relevant_spans: RelevantSpans | None = Field(None, description="only mode 'disabled' is supported")
    surerank: SureRankOptions | None = Field(None, description="surerank extras, opt-in")


class ResultDocument(BaseModel):
    """The document as sent (an object ranked by ``rank_fields`` may have no ``text``)."""

    model_config = ConfigDict(extra="allow")
    text: str | None = None


class RerankResult(BaseModel):
    index: int = Field(description="position of the document in the request")
    relevance_score: float = Field(description="the ranker's score (higher is more relevant)")
    document: ResultDocument | None = None
    score: float | None = Field(None, description="raw ranker score (surerank.raw_scores)")
    probability: float | None = Field(None, description="calibrated probability (surerank.probability)")
    keep: bool | None = Field(None, description="inside the cutoff (surerank.keep)")
    truncated: bool | None = Field(None, description="present when this document was cut")


class ApiVersion(BaseModel):
    version: str


class BilledUnits(BaseModel):
    search_units: int


class Meta(BaseModel):
    api_version: ApiVersion
    billed_units: BilledUnits
    warnings: list[str] | None = None


class Usage(BaseModel):
    total_tokens: int = Field(description="estimated tokens processed")
    prompt_tokens: int


class SureRankExtras(BaseModel):
    abstain: bool | None = None
    confidence: float | None = None
    cutoff: dict[str, Any] | None = None
    truncated_documents: list[int] | None = None


class RerankResponse(BaseModel):
    id: str
    model: str
    results: list[RerankResult]
    usage: Usage
    meta: Meta
    surerank: SureRankExtras | None = None


class TEIRerankRequest(BaseModel):
    """Text Embeddings Inference ``/rerank`` request."""

    model_config = ConfigDict(extra="forbid")
    query: str
    texts: list[str]
    raw_scores: bool = Field(False, description="false: sigmoid of the raw score, as TEI does")
    return_text: bool = False
    truncate: bool | None = Field(
        None, description="false or absent: a text over max_tokens_per_doc is refused (413); true: cut it",
    )
    truncation_direction: Literal["Left", "Right", "left", "right"] = "Right"
    model: str | None = Field(None, max_length=256, description="surerank extension: a served model name")


class TEIRank(BaseModel):
    index: int
    score: float
    text: str | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str = "surerank"
    ranker: str
    calibrated: bool
    default: bool


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    """Every error: the same message under the keys clients read (Cohere ``message``, Jina and FastAPI
    clients ``detail``, OpenAI-style ``error``)."""

    message: str
    detail: str
    error: str
    error_type: str


class Health(BaseModel):
    status: str
