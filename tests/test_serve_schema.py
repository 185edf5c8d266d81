"""schemathesis against the running service's OpenAPI schema: valid and invalid requests generated
from it never get a 5xx, and valid ones get answers that match the documented response schemas."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance

from serve_support import Server

KEY = "schema-key"
# a deterministic scorer that accepts any text; bm25 currently fails on documents without any token
# (bm25s indexes an empty vocabulary), which this very test found and which is reported to its owner
SCHEMA_RANKER = "serve_support:OverlapRanker"


@pytest.fixture(scope="module")
def served():
    server = Server("--model", f"lex={SCHEMA_RANKER}", "--max-documents", "50",
                    env={"SURERANK_API_KEYS": KEY})
    yield server
    server.stop()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_schema_fuzzing_finds_no_server_error(served, mode):
    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/rerank", "/v2/rerank", "/rerank", "/v1/models"}
    checks = [not_a_server_error, status_code_conformance, response_schema_conformance]
    for operation in operations:
        if mode == GenerationMode.NEGATIVE and operation.method.upper() != "POST":
            continue  # the GET endpoints take no input, so there is nothing invalid to send
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=10, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case):
            case.call_and_validate(base_url=served.url, headers={"Authorization": f"Bearer {KEY}"},
                                   checks=checks)

        check()


def test_openapi_documents_the_wire_details(served):
    """The schema clients and fuzzers read: `detail` in every error body, Cohere v1's rank_fields and
    max_chunks_per_doc accepted, a document object's `text` optional (rank_fields may name other fields)."""
    import httpx

    components = httpx.get(f"{served.url}/openapi.json", timeout=10).json()["components"]["schemas"]
    assert {"message", "detail", "error", "error_type"} <= set(components["ErrorBody"]["required"])
    request = components["RerankRequest"]["properties"]
    assert {"rank_fields", "max_chunks_per_doc"} <= set(request)
    assert "text" not in components["DocumentObject"].get("required", [])
    assert "Jina" in request["return_documents"]["description"]  # the one default that differs from Jina's


_BAD_TEXT = st.one_of(st.none(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),  # JSON has no inf
                      st.booleans(), st.lists(st.text(max_size=3), max_size=2),
                      st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@pytest.fixture(scope="module")
def in_process():
    from fastapi.testclient import TestClient

    from serve_support import OverlapRanker
    from surerank.serve import ModelConfig, ServeConfig, create_app

    config = ServeConfig(models=(ModelConfig("lex", "serve_support:OverlapRanker"),), warmup=False)
    with TestClient(create_app(config, rankers={"lex": OverlapRanker()})) as client:
        yield client


@given(n=st.integers(1, 6), data=st.data(), bad=_BAD_TEXT,
       shape=st.sampled_from(["object", "bare", "missing", "query", "tei"]))
@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_non_string_text_is_422_naming_its_path(in_process, n, data, bad, shape):
    """Whatever non-string stands where a text belongs, the 422 names its path and what was sent."""
    i = data.draw(st.integers(0, n - 1))
    documents: list = [f"doc {k}" for k in range(n)]
    body: dict = {"query": "q", "documents": documents}
    path, path_tei = f"documents[{i}].text", f"texts[{i}]"
    if shape == "object":
        documents[i] = {"text": bad, "source": "s"}
    elif shape == "bare":
        documents[i], path = bad, f"documents[{i}]"
    elif shape == "missing":
        documents[i] = {"title": "no text"}
    elif shape == "query":
        body["query"], path = bad, "query"
    if shape == "tei":
        texts = list(documents)
        texts[i] = bad
        response = in_process.post("/rerank", json={"query": "q", "texts": texts})
        path = path_tei
    else:
        response = in_process.post("/v1/rerank", json=body)
    if shape == "bare" and isinstance(bad, dict):
        path = f"documents[{i}].text"  # an object in a document's place: its text is missing or not a string
    assert response.status_code == 422, response.text
    message = response.json()["message"]
    assert message.startswith(f"{path}: "), message
    assert ("missing" in message) or (" got " in message), message
    assert response.json()["detail"] == message
